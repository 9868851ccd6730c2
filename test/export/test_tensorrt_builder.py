"""The TensorRT engine builder up to the device boundary.

Without a GPU (and without TensorRT, whose PyPI wheels need pypi.nvidia.com), the API sequence
is checked against a stand-in module that records every call: parser, builder config,
workspace, fp16 flag, optimisation profile from the manifest's dimension ranges, timing cache.
What this does not exercise: TensorRT's own parsing of our graphs, engine building, and
running engines (``test_real_tensorrt_engine_matches_torch`` does, on a CUDA machine).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import (
    EngineMismatchError,
    ExportError,
    MissingEngineError,
    TensorRTUnavailableError,
)
from xmask3d_ros.export.graphs import DimRange, ExportParts, sample_inputs
from xmask3d_ros.export.manifest import EngineEntry, Manifest
from xmask3d_ros.export.tensorrt_builder import (
    EngineBuildConfig,
    build_engine,
    check_engine_entry,
    engine_file,
    import_tensorrt,
    profile_shapes,
    tensorrt_status,
    torch_dtype,
)

FUSION_INPUTS = [
    {"name": "feat_2d", "shape": ["num_points", 64], "dtype": "float32"},
    {"name": "feat_3d", "shape": ["num_points", 64], "dtype": "float32"},
    {"name": "covered", "shape": ["num_points"], "dtype": "bool"},
]
DIMS = {"num_points": DimRange(1, 50_000, 400_000)}


def fake_tensorrt(version: str = "10.3.0", *, parse_ok: bool = True, build_ok: bool = True) -> Any:
    """A stand-in ``tensorrt`` module recording the builder calls in ``trt.calls``."""
    calls: list[tuple[Any, ...]] = []

    class Logger:
        WARNING = "warning"

        def __init__(self, level: str) -> None:
            calls.append(("Logger", level))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"cache:" + self.data

    class Profile:
        def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...],
                      hi: tuple[int, ...]) -> None:
            calls.append(("set_shape", name, lo, opt, hi))

    class Config:
        def __init__(self) -> None:
            self._cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("pool", pool, size))

        def set_flag(self, flag: str) -> None:
            calls.append(("flag", flag))

        def add_optimization_profile(self, profile: Profile) -> None:
            calls.append(("add_profile",))

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.append(("create_timing_cache", data))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> None:
            calls.append(("set_timing_cache", ignore_mismatch))
            self._cache = cache

        def get_timing_cache(self) -> TimingCache:
            assert self._cache is not None
            return self._cache

        def __setattr__(self, key: str, value: Any) -> None:
            if key == "builder_optimization_level":
                calls.append(("opt_level", value))
            object.__setattr__(self, key, value)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags: int) -> str:
            calls.append(("create_network", flags))
            return "network"

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: str, config: Config) -> bytes | None:
            calls.append(("build",))
            return b"ENGINE" if build_ok else None

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network: str, logger: Logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, i: int) -> str:
            return "Unsupported ONNX op GridSample"

    return types.SimpleNamespace(
        __version__=version, calls=calls, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=types.SimpleNamespace(FP16="fp16"),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0),
        DataType=types.SimpleNamespace(FLOAT=0, HALF=1, INT32=3, INT64=10, BOOL=4),
    )


def test_profile_shapes_from_manifest_inputs() -> None:
    shapes = profile_shapes(FUSION_INPUTS, DIMS)
    assert shapes["feat_2d"] == ((1, 64), (50_000, 64), (400_000, 64))
    assert shapes["covered"] == ((1,), (50_000,), (400_000,))
    static = [{"name": "image", "shape": [1, 3, 64, 64]}]
    assert profile_shapes(static, {}) == {}  # static inputs need no profile
    mixed = [{"name": "mask_logits", "shape": ["batch", "num_masks", 16, 16]}]
    got = profile_shapes(mixed, {"batch": [1, 1, 2], "num_masks": DimRange(1, 8, 8)})
    assert got["mask_logits"] == ((1, 1, 16, 16), (1, 8, 16, 16), (2, 8, 16, 16))
    with pytest.raises(ValueError, match="no range for dimension 'num_points'"):
        profile_shapes(FUSION_INPUTS, {})


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_engine_api_sequence(tmp_path: Path, precision: str) -> None:
    trt = fake_tensorrt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    config = EngineBuildConfig(precision=precision, workspace_bytes=1 << 30,
                               optimization_level=4, timing_cache=str(cache))
    entry = build_engine(
        tmp_path / "fusion.onnx", tmp_path / engine_file("fusion", precision),
        inputs=FUSION_INPUTS, dims=DIMS, config=config, trt=trt,
        device_name="Orin", compute_capability="8.7",
    )
    calls = trt.calls
    assert ("create_network", 0) in calls  # TensorRT 10: explicit batch is the only mode
    assert ("parse", str(tmp_path / "fusion.onnx")) in calls
    assert ("pool", "workspace", 1 << 30) in calls and ("opt_level", 4) in calls
    assert (("flag", "fp16") in calls) == (precision == "fp16")
    assert ("set_shape", "feat_2d", (1, 64), (50_000, 64), (400_000, 64)) in calls
    assert calls.count(("add_profile",)) == 1
    assert ("create_timing_cache", b"old") in calls and ("set_timing_cache", False) in calls
    assert calls.index(("set_timing_cache", False)) < calls.index(("build",))
    assert cache.read_bytes() == b"cache:old"  # written back after the build
    assert (tmp_path / f"fusion.{precision}.engine").read_bytes() == b"ENGINE"
    assert entry.precision == precision and entry.size_bytes == 6
    assert entry.tensorrt_version == "10.3.0" and entry.compute_capability == "8.7"
    assert entry.profiles["covered"] == [[1], [50_000], [400_000]]


def test_build_engine_tensorrt8_and_failures(tmp_path: Path) -> None:
    trt = fake_tensorrt("8.6.2")
    config = EngineBuildConfig(precision="fp16")
    build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", inputs=FUSION_INPUTS, dims=DIMS,
                 config=config, trt=trt, device_name="Orin", compute_capability="8.7")
    assert ("create_network", 1) in trt.calls  # 1 << EXPLICIT_BATCH on TensorRT 8
    assert not any(c[0] == "create_timing_cache" for c in trt.calls)  # no cache configured
    with pytest.raises(ExportError, match="cannot parse it: Unsupported ONNX op GridSample"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", inputs=FUSION_INPUTS, dims=DIMS,
                     config=config, trt=fake_tensorrt(parse_ok=False), device_name="x",
                     compute_capability="8.7")
    with pytest.raises(ExportError, match="failed to build a fp16 engine"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.engine", inputs=FUSION_INPUTS, dims=DIMS,
                     config=config, trt=fake_tensorrt(build_ok=False), device_name="x",
                     compute_capability="8.7")
    with pytest.raises(ValueError, match="precision"):
        EngineBuildConfig(precision="int4")
    with pytest.raises(ValueError, match="optimization_level"):
        EngineBuildConfig(optimization_level=9)


def test_engine_entry_checks(tmp_path: Path, exported: tuple[Path, Manifest]) -> None:
    manifest = Manifest.load(exported[0])
    trt = fake_tensorrt("10.3.0")
    with pytest.raises(MissingEngineError, match="no fp16 TensorRT engine for graph 'fusion'"):
        check_engine_entry(tmp_path, manifest, "fusion", "fp16", trt, ("Orin", "8.7"))
    engine = tmp_path / "fusion.fp16.engine"
    engine.write_bytes(b"ENGINE")
    from xmask3d_ros.export.manifest import file_sha256

    manifest.graphs["fusion"].engines["fp16"] = EngineEntry(
        "fp16", engine.name, file_sha256(engine), 6, "10.3.0", "Orin", "8.7", {})
    assert check_engine_entry(tmp_path, manifest, "fusion", "fp16", trt, ("Orin", "8.7")) == engine
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0, this is 10.7.0"):
        check_engine_entry(tmp_path, manifest, "fusion", "fp16", fake_tensorrt("10.7.0"),
                           ("Orin", "8.7"))
    with pytest.raises(EngineMismatchError, match="compute capability 8.7 .Orin., this GPU is 9.0"):
        check_engine_entry(tmp_path, manifest, "fusion", "fp16", trt, ("H100", "9.0"))
    engine.write_bytes(b"ENGINF")
    with pytest.raises(EngineMismatchError, match="fusion.fp16.engine: sha256"):
        check_engine_entry(tmp_path, manifest, "fusion", "fp16", trt, ("Orin", "8.7"))
    engine.unlink()
    with pytest.raises(MissingEngineError, match="fusion.fp16.engine does not exist"):
        check_engine_entry(tmp_path, manifest, "fusion", "fp16", trt, ("Orin", "8.7"))


def test_dtype_table() -> None:
    trt = fake_tensorrt()
    assert torch_dtype(trt.DataType.FLOAT, trt) is torch.float32
    assert torch_dtype(trt.DataType.BOOL, trt) is torch.bool
    assert torch_dtype(trt.DataType.INT64, trt) is torch.int64


def test_status_without_tensorrt_or_gpu() -> None:
    usable, reason = tensorrt_status()
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        assert not usable and "tensorrt is not importable" in reason
        with pytest.raises(TensorRTUnavailableError, match="not importable"):
            import_tensorrt()
        return
    assert usable == torch.cuda.is_available()
    if not usable:
        assert "CUDA" in reason


def test_real_tensorrt_engine_matches_torch(
    tmp_path: Path, parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    """On a machine with TensorRT and a GPU: build fp32 engines of small graphs and run them."""
    usable, reason = tensorrt_status()
    if not usable:
        pytest.skip(f"needs TensorRT and a CUDA device: {reason}")
    from xmask3d_ros.export.bundle import export_model
    from xmask3d_ros.export.graphs import build_graphs
    from xmask3d_ros.export.runtime import TensorRTHeadRuntime

    names = ("fusion", "classifier", "binary_head")
    manifest = export_model(tiny_cfg, tmp_path, parts=parts, names=names,
                            parity_cases=("random",), precisions=("fp32",))
    rt = TensorRTHeadRuntime(tiny_cfg, tmp_path, manifest, names, precision="fp32")
    graphs = build_graphs(parts, tiny_cfg)
    for name in names:
        spec = graphs[name]
        x = sample_inputs(spec, {"num_points": 1000, "num_labels": 7}, seed=2)
        got = rt.run(name, **dict(zip(spec.input_names, x, strict=True)))
        for key, ref in zip(spec.output_names, spec.run(*x), strict=True):
            assert float((got[key].cpu() - ref).abs().max()) < 1e-3, (name, key)
