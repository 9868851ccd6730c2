"""Typed configuration: frozen dataclasses checked against YAML, with errors that name the key.

Every tunable of the project is a field declared with :func:`param` (a scalar with its
documentation and allowed range or choices) or :func:`section` (a nested dataclass). The loader
walks the type hints, so an unknown key, a wrong type or an out-of-range value fails with one
line such as::

    mapping.voxel_size_m: 0.0 is out of range, expected > 0 (config/perception.yaml)

Sequences are stored as tuples so configs stay hashable and immutable.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

_META_KEY = "xmask3d"


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class _Constraint:
    doc: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.ge is not None:
            parts.append(f">= {self.ge}")
        if self.lt is not None:
            parts.append(f"< {self.lt}")
        if self.le is not None:
            parts.append(f"<= {self.le}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        return " and ".join(parts) if parts else "any value"

    def violated_by(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return True
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values: tuple[Any, ...] = (value,)
        elif isinstance(value, tuple) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            values = value  # bounds apply element-wise to numeric tuples
        else:
            return False
        return any(
            (self.gt is not None and not v > self.gt)
            or (self.ge is not None and not v >= self.ge)
            or (self.lt is not None and not v < self.lt)
            or (self.le is not None and not v <= self.le)
            for v in values
        )


def param(
    default: Any,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A documented scalar or tuple field with an allowed range (numbers) or a set of choices."""
    meta = {_META_KEY: _Constraint(doc=doc, gt=gt, ge=ge, lt=lt, le=le, choices=choices)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (immutable) default for sequence parameters")
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[T], doc: str, *, default: typing.Callable[[], T] | None = None) -> Any:
    """A nested config section, defaulting to ``default()`` or else ``cls()``."""
    return dataclasses.field(
        default_factory=default or cls, metadata={_META_KEY: _Constraint(doc=doc)}
    )


def field_doc(cls: type, name: str) -> str:
    """The documentation string of field ``name`` of config class ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            constraint = f.metadata.get(_META_KEY)
            return constraint.doc if constraint else ""
    raise KeyError(name)


def field_constraint(cls: type, name: str) -> _Constraint | None:
    """The range/choices constraint of field ``name`` (used to build ROS parameter descriptors)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get(_META_KEY)
    raise KeyError(name)


def check_range(cls: type, name: str, value: Any, *, key: str, source: str) -> None:
    """Raise ConfigError if ``value`` violates the declared constraint of ``cls.name``."""
    constraint = field_constraint(cls, name)
    if constraint is not None and constraint.violated_by(value):
        raise ConfigError(
            f"{key}: {value!r} is out of range, expected {constraint.describe()} ({source})"
        )


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type hint ``tp``; convert lists to tuples and ints to floats."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key}: expected a mapping (section {tp.__name__}), got "
                f"{type(value).__name__} ({source})"
            )
        return _build(tp, value, key, source)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({source})")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed, expected one of "
                f"{', '.join(repr(a) for a in allowed)} ({source})"
            )
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r} ({source})"
            )
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(
                f"{key}: expected {len(args)} items ({_type_name(tp)}), got {len(value)} ({source})"
            )
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            return _YAML11_BOOLS[value.lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r} ({source})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r} ({source})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{key}: expected float, got {type(value).__name__} {value!r} ({source})"
            )
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # a bare off/on/yes/no in a YAML file
            raise ConfigError(
                f"{key}: expected str, got bool {value!r} ({source}); YAML reads a bare "
                "off/on/yes/no as a boolean: quote it, e.g. 'off'"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r} ({source})")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)} ({source})")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            key = f"{prefix}.{name}" if prefix else str(name)
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key}: unknown key in {cls.__name__}{hint} "
                f"(known: {', '.join(sorted(fields))}) ({source})"
            )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        coerced = _coerce(value, hints[name], key, source)
        check_range(cls, name, coerced, key=key, source=source)
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except ConfigError as err:  # cross-field checks in __post_init__ name their own keys
        where = f"{prefix}: " if prefix else ""
        raise ConfigError(f"{where}{err} ({source})") from None


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str = "<dict>") -> T:
    """Build and validate config ``cls`` from a (possibly partial) nested mapping."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"<root>: expected a mapping, got {type(data).__name__} ({source})")
    return _build(cls, data, "", source)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The nested plain-Python form of a config (tuples become lists), ready for YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return typing.cast(dict[str, Any], plain(cfg))


_YAML11_BOOLS = {"on": True, "yes": True, "off": False, "no": False}


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"{text}: an override must look like key.path=value (command line)")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"{text}: empty key in override (command line)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {err} (command line)") from None
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        # gating=off is the word "off" (a bool field still accepts it, see _coerce)
        value = raw.strip()
    return path, value


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"<file>: config file {path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"<file>: {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping at the top of {path}, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    section_key: str | None = None,
) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level section of it) plus overrides.

    ``overrides`` are ``key.path=value`` strings as given on a command line (``--set``); they
    go through the same validation as the file.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = read_yaml(path)
        source = str(path)
        if section_key is not None:
            if section_key not in data:
                raise ConfigError(f"{section_key}: section missing in {path}")
            data = data[section_key] or {}
    for text in overrides:
        keys, value = parse_override(text)
        patch: dict[str, Any] = value
        for k in reversed(keys):
            patch = {k: patch}
        data = merge(data, patch)
        if source == "defaults" or "overrides" not in source:
            source = f"{source} + overrides"
    return from_dict(cls, data, source=source)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (the inverse of :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
