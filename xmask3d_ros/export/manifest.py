"""``manifest.json`` of an export folder: what was exported from which config and weights.

One JSON file beside the graphs records, per graph: file, sha256, size, exporter, opset, the
inputs/outputs as written (names, shapes with symbolic dimensions, dtypes), the parity figures
and the TensorRT engines built from it (precision, file, sha256, TensorRT version, GPU,
optimisation profiles). At the top: the model config's graph-relevant part and its hash, the
weights hash, the source checkpoint, the dimension ranges and the tool versions.

Hashes (all sha256, hex):

* ``config_sha256``: canonical JSON of :func:`graph_config`, the config without the keys that
  cannot change a graph (where things run, training losses, inference rules applied outside the
  graphs, file paths: the weights hash covers what the files hold);
* ``weights_sha256``: every tensor of the exported parts' state dicts (name, shape, float32
  bytes, in order); it covers SD, CLIP and the project weights, whatever files they came from;
* ``checkpoint.sha256``: the project checkpoint file's bytes, when the export used one.

:func:`check_manifest` is what the runtimes call at start-up: it refuses a folder whose
manifest, files, config or weights do not match, naming the file, the key and both values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.schema import to_dict
from xmask3d_ros.export.errors import EngineMismatchError, MissingEngineError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "CheckpointRef",
    "EngineEntry",
    "GraphEntry",
    "Manifest",
    "check_manifest",
    "checkpoint_ref",
    "config_sha256",
    "file_sha256",
    "graph_config",
    "weights_sha256",
]

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
# Config keys that cannot change an exported graph (dotted; a section name drops the section).
_NOT_IN_GRAPHS = (
    "name", "weights_path", "allow_random_init", "runtime", "loss", "ensemble",
    "binary.gating", "binary.threshold", "binary.mask_threshold",
    "clip.weights_path", "clip.prompt_template", "clip.text_cache_size",
    "diffusion.unet_path", "diffusion.vae_path", "diffusion.checkpoint_projections",
    "captioner.uncond_path", "backbone3d", "binary3d.backend", "binary3d.voxel_size_m",
)


def graph_config(cfg: ModelConfig) -> dict[str, Any]:
    """The part of ``cfg`` the graphs depend on (nested plain dict)."""
    data = to_dict(cfg)
    for key in _NOT_IN_GRAPHS:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return data


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def config_sha256(cfg: ModelConfig) -> str:
    return hashlib.sha256(_canonical(graph_config(cfg))).hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def weights_sha256(modules: Mapping[str, nn.Module]) -> str:
    """sha256 over ``<part>.<key>``, shape and float32 bytes of every state-dict tensor.

    Floating tensors are hashed as float32 on CPU, so a model moved to CUDA or cast to fp16 for
    running still matches the export it came from (the cast is not lossless the other way:
    an fp16 copy hashes differently from its fp32 source, as it should).
    """
    h = hashlib.sha256()
    for part, module in modules.items():
        for key, value in module.state_dict().items():
            t = value.detach()
            t = t.float() if t.is_floating_point() else t
            h.update(f"{part}.{key}|{tuple(t.shape)}|{t.dtype}\n".encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy
    return h.hexdigest()


@dataclass(frozen=True)
class CheckpointRef:
    """The project checkpoint an export came from (empty path: random init / none)."""

    path: str = ""  # the .safetensors file as given at export time (informative)
    sha256: str = ""  # of its bytes; empty without a file


def checkpoint_ref(cfg: ModelConfig) -> CheckpointRef:
    """The project checkpoint of ``cfg`` (``weights_path``: a folder or a .safetensors file)."""
    if not cfg.weights_path:
        return CheckpointRef()
    p = Path(cfg.weights_path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    return CheckpointRef(str(p), file_sha256(p))


@dataclass
class EngineEntry:
    """One TensorRT engine built from a graph."""

    precision: str  # fp32 | fp16
    file: str
    sha256: str
    size_bytes: int
    tensorrt_version: str
    device_name: str  # GPU the engine was built on (engines are device-specific)
    compute_capability: str  # e.g. "8.7" (Orin), "9.0" (H100)
    profiles: dict[str, list[list[int]]]  # input -> [min, opt, max] shapes
    build_seconds: float = 0.0


@dataclass
class GraphEntry:
    """One exported graph."""

    file: str
    sha256: str
    size_bytes: int
    exporter: str
    opset: int
    inputs: list[dict[str, Any]]  # {"name", "shape", "dtype"} as written in the ONNX file
    outputs: list[dict[str, Any]]
    external_data: list[str] = field(default_factory=list)
    parity: list[dict[str, Any]] = field(default_factory=list)  # ParityResult.to_dict()
    engines: dict[str, EngineEntry] = field(default_factory=dict)  # precision -> engine
    notes: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """The whole export folder's description (``manifest.json``)."""

    model_name: str
    config_sha256: str
    weights_sha256: str
    checkpoint: CheckpointRef
    opset: int
    config: dict[str, Any]  # graph_config(cfg): lets a mismatch name the differing keys
    dims: dict[str, list[int]]  # symbol -> [min, opt, max]
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # torch, onnx, onnxruntime, ...
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> Manifest:
        try:
            version = int(data.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise EngineMismatchError(
                    f"{source}: format_version {version}, this code reads {FORMAT_VERSION}; "
                    "re-run xmask3d-export"
                )
            graphs = {}
            for name, g in data["graphs"].items():
                engines = {p: EngineEntry(**e) for p, e in g.get("engines", {}).items()}
                graphs[name] = GraphEntry(**{**g, "engines": engines})
            return cls(
                model_name=data["model_name"],
                config_sha256=data["config_sha256"],
                weights_sha256=data["weights_sha256"],
                checkpoint=CheckpointRef(**data["checkpoint"]),
                opset=int(data["opset"]),
                config=dict(data["config"]),
                dims={k: list(v) for k, v in data["dims"].items()},
                graphs=graphs,
                versions=dict(data.get("versions", {})),
                format_version=version,
            )
        except (KeyError, TypeError) as err:
            raise EngineMismatchError(f"{source}: not a valid export manifest ({err!r})") from err

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise MissingEngineError(
                f"{path} does not exist: runtime.engine_dir must be a folder written by "
                "xmask3d-export (ONNX graphs + manifest.json)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise EngineMismatchError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, source=str(path))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} in the export, {b!r} now"]


def check_manifest(
    folder: str | Path,
    cfg: ModelConfig,
    *,
    graphs: Sequence[str],
    weights: str | None,
    verify_files: bool = True,
) -> Manifest:
    """Load ``folder``'s manifest and refuse it unless it fits ``cfg`` and ``weights``.

    ``graphs``: names that must be present; ``weights``: the running model's
    :func:`weights_sha256` (None skips that check, e.g. when only the checkpoint file is
    known); ``verify_files``: re-hash each ONNX file (seconds for the paper config's 5 GB).
    Raises :class:`MissingEngineError` / :class:`EngineMismatchError` naming file and key.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    path = folder / MANIFEST_FILE
    want = config_sha256(cfg)
    if manifest.config_sha256 != want:
        diffs = _diff_keys(manifest.config, graph_config(cfg))
        raise EngineMismatchError(
            f"{path}: config_sha256 {manifest.config_sha256[:12]} != {want[:12]} of the model "
            f"config ({cfg.name}); differing keys: {'; '.join(diffs[:6]) or 'unknown'}. "
            "Re-export with xmask3d-export for this config"
        )
    ckpt = checkpoint_ref(cfg) if cfg.weights_path else None
    recorded = manifest.checkpoint.sha256
    if ckpt is not None and recorded and ckpt.sha256 != recorded:
        raise EngineMismatchError(
            f"{path}: checkpoint.sha256 {manifest.checkpoint.sha256[:12]} "
            f"({manifest.checkpoint.path}) != {ckpt.sha256[:12]} of weights_path {ckpt.path}; "
            "the graphs were exported from other weights"
        )
    if weights is not None and weights != manifest.weights_sha256:
        raise EngineMismatchError(
            f"{path}: weights_sha256 {manifest.weights_sha256[:12]} != {weights[:12]} of the "
            "running model: the graphs were exported from other weights (checkpoint, SD or "
            "CLIP); re-run xmask3d-export with this model's weights"
        )
    for name in graphs:
        entry = manifest.graphs.get(name)
        if entry is None:
            raise MissingEngineError(
                f"{path}: no graph {name!r} (has {', '.join(manifest.graphs) or 'none'})"
            )
        files = [folder / entry.file, *(folder / d for d in entry.external_data)]
        for f in files:
            if not f.is_file():
                raise MissingEngineError(f"{f} does not exist (graph {name!r}, listed in {path})")
        size = sum(f.stat().st_size for f in files)
        if size != entry.size_bytes:
            raise EngineMismatchError(
                f"{files[0]}: {size} bytes, {path} says {entry.size_bytes} (graph {name!r})"
            )
        if verify_files:
            from xmask3d_ros.export.onnx_export import files_sha256

            digest = files_sha256(files)
            if digest != entry.sha256:
                raise EngineMismatchError(
                    f"{files[0]}: sha256 {digest[:12]} != {entry.sha256[:12]} in {path} "
                    f"(graph {name!r}): the file changed after export"
                )
    return manifest
