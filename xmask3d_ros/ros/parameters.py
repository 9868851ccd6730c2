"""Every ``PerceptionConfig`` field as a ROS parameter with a descriptor, and back.

Parameter names are the dotted config keys (``node.map_frame``, ``pipeline.keyframe.max_interval_s``),
so ``config/perception.yaml`` is both the library config and the node's ``--params-file``.
Descriptors carry the field's documentation, its range (FloatingPointRange / IntegerRange from the
``param(..., ge=, le=, gt=, lt=)`` constraint; a strict bound is written as the inclusive ROS bound
and enforced strictly by the on-set callback), the allowed choices in the description, and
``read_only`` for everything that cannot change while the node runs.

Dynamic parameters (settable at run time, e.g. ``ros2 param set``): see :data:`DYNAMIC`. All others
are read-only (the map, the model and the subscriptions are built from them at start-up).
A set request is validated by rebuilding the whole config with the new values (ranges, choices,
cross-field checks such as ``depth.min_depth_m < depth.max_depth_m``); a bad value is refused with
the validator's message as the reason and the old value stays.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)

from xmask3d_ros.config.perception import DYNAMIC_PARAMETERS, PerceptionConfig, ros_parameters
from xmask3d_ros.config.schema import ConfigError, field_constraint, field_doc, from_dict

__all__ = ["DYNAMIC", "ParamSpec", "PerceptionParameters", "config_from_values", "param_specs"]

# Parameters that may change while the node runs (declared in the config layer, documented in
# the README's generated parameter table); the node reads them on every use.
DYNAMIC: frozenset[str] = DYNAMIC_PARAMETERS

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ROS_TYPE = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: its dotted name, Python type, default and descriptor."""

    name: str
    type: type
    default: Any
    descriptor: ParameterDescriptor


def _descriptor(cls: type, field: str, name: str, tp: type) -> ParameterDescriptor:
    c = field_constraint(cls, field)
    desc = ParameterDescriptor(name=name, type=_ROS_TYPE[tp])
    text = field_doc(cls, field)
    if c is not None:
        if c.choices is not None:
            text += " (one of: " + ", ".join(str(x) for x in c.choices) + ")"
        lo = c.ge if c.ge is not None else c.gt
        hi = c.le if c.le is not None else c.lt
        if c.gt is not None or c.lt is not None:
            text += f" (must be {c.describe()})"
        if tp is float and (lo is not None or hi is not None):
            desc.floating_point_range = [
                FloatingPointRange(
                    from_value=float(lo) if lo is not None else -math.inf,
                    to_value=float(hi) if hi is not None else math.inf,
                    step=0.0,
                )
            ]
        elif tp is int and (lo is not None or hi is not None):
            desc.integer_range = [
                IntegerRange(
                    from_value=int(math.ceil(lo)) if lo is not None else _INT64_MIN,
                    to_value=int(math.floor(hi)) if hi is not None else _INT64_MAX,
                    step=1,
                )
            ]
    dynamic = name in DYNAMIC
    desc.read_only = not dynamic
    desc.additional_constraints = "dynamic" if dynamic else "read-only: set at start-up"
    desc.description = text
    return desc


def param_specs(cfg: PerceptionConfig | None = None) -> list[ParamSpec]:
    """Every config field as a ParamSpec, defaults from ``cfg`` (or the config defaults)."""
    cfg = cfg if cfg is not None else PerceptionConfig()
    values = ros_parameters(cfg)
    out: list[ParamSpec] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            name = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(tp):
                walk(typing.cast(type, tp), name + ".")
            else:
                out.append(ParamSpec(name, tp, values[name], _descriptor(cls, f.name, name, tp)))

    walk(PerceptionConfig, "")
    return out


def config_from_values(values: Mapping[str, Any], *, source: str = "ROS parameters") -> PerceptionConfig:
    """Dotted name -> value (as in :func:`ros_parameters`) back to a validated config."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        node = nested
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(PerceptionConfig, nested, source=source)


class PerceptionParameters:
    """Declares the parameters on a node and keeps the validated config in step with them.

    ``node`` is an rclpy Node. After construction ``config`` is the config built from the declared
    values (defaults from ``defaults``, overridden by ``--params-file`` / ``-p``); an invalid
    start-up value raises ConfigError naming it. ``on_change(config, changed_names)`` is called
    after each accepted set (from the post-set callback).
    """

    def __init__(
        self,
        node: Any,
        defaults: PerceptionConfig | None = None,
        *,
        on_change: Callable[[PerceptionConfig, frozenset[str]], None] | None = None,
    ) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._on_change = on_change
        self.specs = {s.name: s for s in param_specs(defaults)}
        node.declare_parameters(
            "", [(s.name, s.default, s.descriptor) for s in self.specs.values()]
        )
        self._values = {n: node.get_parameter(n).value for n in self.specs}
        self._config = config_from_values(self._values, source="start-up parameters")
        node.add_on_set_parameters_callback(self._validate)
        if hasattr(node, "add_post_set_parameters_callback"):
            node.add_post_set_parameters_callback(self._apply)

    @property
    def config(self) -> PerceptionConfig:
        with self._lock:
            return self._config

    def validate(self, params: Iterable[Any]) -> tuple[PerceptionConfig | None, str]:
        """The config with ``params`` applied, or (None, reason). No side effects."""
        with self._lock:
            values = dict(self._values)
        for p in params:
            spec = self.specs.get(p.name)
            if spec is None:
                continue  # use_sim_time and other parameters not ours
            if spec.descriptor.read_only:
                return None, f"{p.name} is read-only (set at start-up)"
            value = p.value
            if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
                return None, f"{p.name}: expected {spec.type.__name__}, got {type(value).__name__}"
            values[p.name] = value
        try:
            return config_from_values(values, source="set_parameters"), ""
        except ConfigError as err:
            return None, str(err)

    def _validate(self, params: list[Any]) -> SetParametersResult:
        cfg, reason = self.validate(params)
        return SetParametersResult(successful=cfg is not None, reason=reason)

    def _apply(self, params: list[Any]) -> None:
        changed = frozenset(p.name for p in params if p.name in self.specs)
        if not changed:
            return
        with self._lock:
            for p in params:
                if p.name in self.specs:
                    v = p.value
                    self._values[p.name] = float(v) if self.specs[p.name].type is float else v
            self._config = config_from_values(self._values, source="set_parameters")
            cfg = self._config
        if self._on_change is not None:
            self._on_change(cfg, changed)
