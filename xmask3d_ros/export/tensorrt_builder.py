"""TensorRT engines from the exported ONNX graphs (TensorRT Python API, imported lazily).

Per graph and precision: parse the ONNX file (``OnnxParser.parse_from_file``, so external
weight files load), a builder config with a workspace limit, the FP16 flag for ``fp16``
engines (I/O tensors stay float32, as in the ONNX graph), the builder optimisation level, one
optimisation profile spanning every symbolic dimension's (min, opt, max) from the manifest,
and a timing cache shared by all builds of a folder (read before, written after: a rebuild on
the same GPU skips most kernel timing). Engines are written as ``<graph>.<precision>.engine``
and recorded in the manifest with their TensorRT version and GPU, which the runtime checks.

The device boundary: ``trt.Builder`` initialises CUDA, so everything up to it (profile shapes,
the plan of what to build, argument checks) runs without a GPU, and the API sequence itself is
unit-tested against a stand-in module. On PyPI, ``tensorrt`` (11.4) and ``tensorrt-cu12`` are
stubs whose ``*-libs`` dependency downloads from pypi.nvidia.com at install time; the
``tensorrt-cu12-bindings`` wheel alone installs but does not import (no libnvinfer /
libnvonnxparser). On Jetson, JetPack ships TensorRT with its Python bindings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xmask3d_ros.export.errors import (
    EngineMismatchError,
    ExportError,
    MissingEngineError,
    TensorRTUnavailableError,
)
from xmask3d_ros.export.graphs import DimRange
from xmask3d_ros.export.manifest import MANIFEST_FILE, EngineEntry, Manifest, file_sha256

__all__ = [
    "PRECISIONS",
    "EngineBuildConfig",
    "build_engine",
    "build_engines",
    "check_engine_entry",
    "engine_file",
    "import_tensorrt",
    "profile_shapes",
    "require_cuda",
    "tensorrt_status",
    "torch_dtype",
]

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class EngineBuildConfig:
    """Builder settings shared by every engine of one export."""

    precision: str = "fp16"  # fp32 | fp16
    workspace_bytes: int = 4 << 30  # builder scratch memory limit (Orin: keep <= 2 GiB)
    optimization_level: int = 3  # TensorRT builder_optimization_level 0..5 (default 3)
    timing_cache: str = ""  # file read before and written after each build; empty = none

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes: {self.workspace_bytes} must be > 0")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level: {self.optimization_level} not in 0..5")


def import_tensorrt() -> Any:
    """``import tensorrt`` or :class:`TensorRTUnavailableError` saying why."""
    try:
        import tensorrt
    except (ImportError, OSError) as err:
        raise TensorRTUnavailableError(
            f"tensorrt is not importable ({type(err).__name__}: {err}); install TensorRT's Python "
            "bindings (JetPack ships them; on x86 `pip install tensorrt-cu12` needs "
            "pypi.nvidia.com) or use runtime.head_runtime: onnxruntime"
        ) from err
    return tensorrt


def require_cuda() -> torch.device:
    """The CUDA device engines run on, or :class:`TensorRTUnavailableError`."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "TensorRT needs a CUDA device and torch.cuda.is_available() is False (CPU-only torch "
            "or no GPU); use runtime.head_runtime: onnxruntime or torch here"
        )
    return torch.device("cuda", torch.cuda.current_device())


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): whether engines can be built and run on this machine."""
    try:
        trt = import_tensorrt()
        require_cuda()
    except TensorRTUnavailableError as err:
        return False, str(err)
    return True, f"tensorrt {trt.__version__} on {torch.cuda.get_device_name()}"


def _device_info(device: torch.device) -> tuple[str, str]:
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def torch_dtype(trt_dtype: Any, trt: Any) -> torch.dtype:
    """TensorRT tensor dtype -> torch dtype (the ones the graphs use)."""
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32,
             "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
    for name, dtype in table.items():
        if hasattr(trt.DataType, name) and trt_dtype == getattr(trt.DataType, name):
            return dtype
    raise TypeError(f"TensorRT dtype {trt_dtype} has no torch counterpart here")


def engine_file(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.engine"


def profile_shapes(
    inputs: Sequence[Mapping[str, Any]], dims: Mapping[str, DimRange | Sequence[int]]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input that has a symbolic dimension.

    ``inputs``: the manifest's ``{"name", "shape"}`` entries (ints or symbol names);
    ``dims``: symbol -> DimRange or [min, opt, max]. Static inputs need no profile.
    """
    out = {}
    for t in inputs:
        shape = list(t["shape"])
        if all(isinstance(d, int) for d in shape):
            continue
        per = []
        for which in range(3):
            concrete = []
            for d in shape:
                if isinstance(d, int):
                    concrete.append(d)
                    continue
                if d not in dims:
                    raise ValueError(f"input {t['name']!r}: no range for dimension {d!r}")
                r = dims[d]
                bounds = (r.min, r.opt, r.max) if isinstance(r, DimRange) else tuple(r)
                concrete.append(int(bounds[which]))
            per.append(tuple(concrete))
        out[str(t["name"])] = (per[0], per[1], per[2])
    return out


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    inputs: Sequence[Mapping[str, Any]],
    dims: Mapping[str, DimRange | Sequence[int]],
    config: EngineBuildConfig,
    trt: Any,
    device_name: str,
    compute_capability: str,
) -> EngineEntry:
    """Build one engine with the TensorRT API ``trt`` (the module, or a stand-in in tests)."""
    profiles = profile_shapes(inputs, dims)
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)  # the device boundary: initialises CUDA
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT cannot parse it: {'; '.join(errors[:5])}")
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    cfg.builder_optimization_level = config.optimization_level
    if config.precision == "fp16":
        cfg.set_flag(trt.BuilderFlag.FP16)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        cfg.add_optimization_profile(profile)
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cfg.set_timing_cache(cfg.create_timing_cache(data), False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build a {config.precision} engine")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.write_bytes(bytes(cfg.get_timing_cache().serialize()))
    return EngineEntry(
        precision=config.precision,
        file=engine_path.name,
        sha256=file_sha256(engine_path),
        size_bytes=engine_path.stat().st_size,
        tensorrt_version=str(trt.__version__),
        device_name=device_name,
        compute_capability=compute_capability,
        profiles={k: [list(s) for s in v] for k, v in profiles.items()},
        build_seconds=time.perf_counter() - start,
    )


def build_engines(
    folder: str | Path,
    manifest: Manifest,
    *,
    precisions: Sequence[str] = ("fp16", "fp32"),
    graphs: Sequence[str] | None = None,
    workspace_bytes: int = 4 << 30,
    log: Any = None,
) -> Manifest:
    """Build engines for ``graphs`` (default all) in every precision; records them in place.

    Needs tensorrt and a CUDA device (raises :class:`TensorRTUnavailableError` otherwise, before
    anything is built). The timing cache is ``<folder>/timing.cache``.
    """
    trt = import_tensorrt()
    name, cc = _device_info(require_cuda())
    folder = Path(folder)
    for graph in graphs or list(manifest.graphs):
        entry = manifest.graphs[graph]
        for precision in precisions:
            config = EngineBuildConfig(precision=precision, workspace_bytes=workspace_bytes,
                                       timing_cache=str(folder / "timing.cache"))
            engine = build_engine(
                folder / entry.file, folder / engine_file(graph, precision),
                inputs=entry.inputs, dims=manifest.dims, config=config, trt=trt,
                device_name=name, compute_capability=cc,
            )
            entry.engines[precision] = engine
            if log is not None:
                log(f"engine {graph} {precision}: {engine.size_bytes / 1e6:.1f} MB, "
                    f"{engine.build_seconds:.1f} s")
    return manifest


def check_engine_entry(
    folder: str | Path,
    manifest: Manifest,
    graph: str,
    precision: str,
    trt: Any,
    device: torch.device | tuple[str, str],
    *,
    verify_files: bool = True,
) -> Path:
    """The engine file of ``graph``/``precision``, refused unless it fits this TensorRT and GPU.

    ``device``: the CUDA device, or (name, compute capability) directly.
    """
    where = Path(folder) / MANIFEST_FILE
    entry = manifest.graphs[graph].engines.get(precision)
    if entry is None:
        have = ", ".join(manifest.graphs[graph].engines) or "none"
        raise MissingEngineError(
            f"{where}: no {precision} TensorRT engine for graph {graph!r} (built: {have}); run "
            "xmask3d-export on this machine with TensorRT and a GPU"
        )
    path = Path(folder) / entry.file
    if not path.is_file():
        raise MissingEngineError(f"{path} does not exist (graph {graph!r}, listed in {where})")
    if entry.tensorrt_version != str(trt.__version__):
        raise EngineMismatchError(
            f"{path}: built with TensorRT {entry.tensorrt_version}, this is {trt.__version__}; "
            "engines do not move between TensorRT versions: rebuild them"
        )
    _, cc = device if isinstance(device, tuple) else _device_info(device)
    if entry.compute_capability != cc:
        raise EngineMismatchError(
            f"{path}: built for compute capability {entry.compute_capability} "
            f"({entry.device_name}), this GPU is {cc}: rebuild the engines on this device"
        )
    if verify_files:
        digest = file_sha256(path)
        if digest != entry.sha256:
            raise EngineMismatchError(
                f"{path}: sha256 {digest[:12]} != {entry.sha256[:12]} in {where}"
            )
    return path
