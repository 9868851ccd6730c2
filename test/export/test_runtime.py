"""The runtime switch: ONNX Runtime gives PyTorch's outputs through the same interface, and a
missing file or a config/weights/file mismatch is refused at construction, naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import (
    EngineMismatchError,
    MissingEngineError,
    TensorRTUnavailableError,
)
from xmask3d_ros.export.graphs import GRAPH_NAMES, ExportParts, GraphSpec, sample_inputs
from xmask3d_ros.export.manifest import MANIFEST_FILE, CheckpointRef, Manifest
from xmask3d_ros.export.parity import NOISE_FACTOR
from xmask3d_ros.export.runtime import (
    HeadRuntime,
    OnnxHeadRuntime,
    TorchHeadRuntime,
    build_head_runtime,
    required_graphs,
)
from xmask3d_ros.export.tensorrt_builder import tensorrt_status
from xmask3d_ros.model.heads import cosine_logits

ATOL = 1e-4
DIMS = {"batch": 1, "num_labels": 6, "num_masks": 5, "num_points": 300}


@pytest.fixture(scope="module")
def runtimes(
    exported: tuple[Path, Manifest], parts: ExportParts, tiny_cfg: ModelConfig
) -> tuple[HeadRuntime, HeadRuntime]:
    folder, _ = exported
    ort_rt = build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)
    torch_rt = build_head_runtime(tiny_cfg, parts=parts, kind="torch")
    assert isinstance(ort_rt, OnnxHeadRuntime) and isinstance(torch_rt, TorchHeadRuntime)
    return torch_rt, ort_rt


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def test_switch_from_the_config(
    exported: tuple[Path, Manifest], parts: ExportParts, cfg_with: Callable[..., ModelConfig]
) -> None:
    cfg = cfg_with("runtime.head_runtime=onnxruntime", f"runtime.engine_dir={exported[0]}")
    rt = build_head_runtime(cfg, parts=parts)
    assert rt.kind == "onnxruntime" and rt.graphs == GRAPH_NAMES  # incl. optional clip_image
    assert "clip_image" not in required_graphs(cfg)
    assert build_head_runtime(cfg_with(), parts=parts).kind == "torch"


def test_onnxruntime_matches_torch_graph_by_graph(
    runtimes: tuple[HeadRuntime, HeadRuntime], graphs: dict[str, GraphSpec]
) -> None:
    torch_rt, ort_rt = runtimes
    for name, spec in graphs.items():
        named = dict(zip(spec.input_names, sample_inputs(spec, DIMS, seed=5), strict=True))
        a, b = torch_rt.run(name, **named), ort_rt.run(name, **named)
        assert list(a) == list(b) == list(spec.output_names)
        for key in a:
            if (name, key) == ("feature_projections", "s5"):
                continue  # ill-conditioned in PyTorch itself in the tiny config (parity.py)
            assert _max_abs(a[key], b[key]) < ATOL, (name, key)


def test_composites_match_the_model(
    runtimes: tuple[HeadRuntime, HeadRuntime], parts: ExportParts
) -> None:
    torch_rt, ort_rt = runtimes
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 120, 160, generator=gen)
    prefix = torch.randn(1, 64, generator=gen)
    with torch.no_grad():
        ref = parts.mask_branch(image, prefix)
        noisy = parts.mask_branch(image * (1 + 1e-6 * torch.randn(image.shape, generator=gen)),
                                  prefix)
    t = torch_rt.mask_branch(image, prefix)
    o = ort_rt.mask_branch(image, prefix)
    assert torch.equal(t.pred_masks, ref.pred_masks) and torch.equal(t.mask_embed, ref.mask_embed)
    for key in ("pred_masks", "mask_embed", "mask_features"):
        # the tiny 2D chain carries the ill-conditioned s5: compare with PyTorch's own spread
        noise = _max_abs(getattr(noisy, key), getattr(ref, key))
        assert _max_abs(getattr(o, key), getattr(ref, key)) <= max(ATOL, NOISE_FACTOR * noise), key

    clip = parts.clip
    names = ["chair", "a wooden table", "sofa", "toilet"]
    text = clip.encode_text(names)
    assert _max_abs(ort_rt.encode_text(clip.tokenizer(names)), text) < ATOL
    masks = ref.pred_masks[:, :5]
    assert _max_abs(ort_rt.mask_embeddings(image, masks), clip.mask_embeddings(image, masks)) < ATOL
    assert ort_rt.mask_embeddings(image, masks[:, :0]).shape == (1, 0, 64)
    dense = clip.dense_features(image)
    cls, patches = ort_rt.image_features(image)
    assert _max_abs(cls, dense.cls) < ATOL and _max_abs(patches, dense.patches) < ATOL

    feat_2d, feat_3d = torch.randn(2, 500, 64, generator=gen)
    covered = torch.rand(500, generator=gen) < 0.6
    with torch.no_grad():
        fused = parts.fusion(feat_2d, feat_3d, covered)
    assert _max_abs(ort_rt.fuse(feat_2d, feat_3d, covered), fused) < 1e-5
    scale = parts.mask_branch.mask_decoder.post_mask_embed.scale()
    with torch.no_grad():
        logits = cosine_logits(fused, text, scale)
    assert _max_abs(ort_rt.classify(fused, text), logits) < ATOL
    voxels = torch.randn(700, 32, generator=gen)
    assert parts.binary_head is not None
    with torch.no_grad():
        binary = parts.binary_head(voxels)[:, 0]
    assert _max_abs(ort_rt.binary_logits(voxels), binary) < 1e-5
    assert ort_rt.fuse(feat_2d[:0], feat_3d[:0], covered[:0]).shape == (0, 64)
    assert ort_rt.classify(fused, text[:0]).shape == (500, 0)


def test_missing_file_is_refused_at_construction(
    export_copy: Callable[[], Path], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    folder = export_copy()
    (folder / "unet.onnx").unlink()
    with pytest.raises(MissingEngineError, match=r"unet\.onnx does not exist"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(MissingEngineError, match=str(folder / MANIFEST_FILE)):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)


def test_graph_missing_from_manifest(
    export_copy: Callable[[], Path], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    folder = export_copy()
    data = json.loads((folder / MANIFEST_FILE).read_text())
    del data["graphs"]["maskclip"]
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(MissingEngineError, match="no graph 'maskclip'"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)


def test_optional_graph_may_be_left_out(
    export_copy: Callable[[], Path], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    folder = export_copy()
    manifest = Manifest.load(folder)
    del manifest.graphs["clip_image"]
    manifest.save(folder)
    (folder / "clip_image.onnx").unlink()
    rt = build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)
    assert rt.graphs == required_graphs(tiny_cfg)
    with pytest.raises(KeyError, match="no graph 'clip_image'"):
        rt.image_features(torch.rand(1, 3, 64, 64))


def test_changed_files_are_refused(
    export_copy: Callable[[], Path], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    folder = export_copy()
    path = folder / "fusion.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(EngineMismatchError, match=r"fusion\.onnx: sha256"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)
    path.write_bytes(bytes(data) + b"x")
    with pytest.raises(EngineMismatchError, match=r"fusion\.onnx: \d+ bytes"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=folder)


def test_weights_mismatch_is_refused(
    exported: tuple[Path, Manifest], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    bias = parts.fusion.linear.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.add_(1e-3)
    try:
        match = r"manifest\.json: weights_sha256 .* other weights"
        with pytest.raises(EngineMismatchError, match=match):
            build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=exported[0])
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_checkpoint_mismatch_is_refused(
    export_copy: Callable[[], Path], parts: ExportParts, cfg_with: Callable[..., ModelConfig],
    tmp_path: Path,
) -> None:
    from safetensors.torch import save_file

    folder = export_copy()
    ckpt = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(ckpt))
    manifest = Manifest.load(folder)
    manifest.checkpoint = CheckpointRef("/elsewhere/model.safetensors", "ab" * 32)
    manifest.save(folder)
    cfg = cfg_with(f"weights_path={ckpt}")
    with pytest.raises(EngineMismatchError, match=r"checkpoint\.sha256 abab.*model\.safetensors"):
        build_head_runtime(cfg, parts=parts, kind="onnxruntime", engine_dir=folder)


def test_config_mismatch_names_the_key(
    exported: tuple[Path, Manifest], parts: ExportParts, cfg_with: Callable[..., ModelConfig]
) -> None:
    cfg = cfg_with("mask_generator.mask_threshold=0.4")
    match = r"mask_generator\.mask_threshold: 0\.5 in the export, 0\.4 now"
    with pytest.raises(EngineMismatchError, match=match):
        build_head_runtime(cfg, parts=parts, kind="onnxruntime", engine_dir=exported[0])


def test_start_up_errors_name_the_setting(
    exported: tuple[Path, Manifest], parts: ExportParts, tiny_cfg: ModelConfig, tmp_path: Path
) -> None:
    with pytest.raises(MissingEngineError, match="runtime.engine_dir: empty"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime")
    with pytest.raises(MissingEngineError, match="does not exist"):
        build_head_runtime(tiny_cfg, parts=parts, kind="onnxruntime", engine_dir=tmp_path / "no")
    with pytest.raises(ValueError, match="needs the model's parts"):
        build_head_runtime(tiny_cfg, kind="torch")
    with pytest.raises(ValueError, match="pass parts="):
        build_head_runtime(tiny_cfg, kind="onnxruntime", engine_dir=exported[0])
    with pytest.raises(ValueError, match="head_runtime"):
        build_head_runtime(tiny_cfg, parts=parts, kind="openvino")


def test_tensorrt_refused_at_construction_without_engines(
    exported: tuple[Path, Manifest], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    usable, reason = tensorrt_status()
    expected = MissingEngineError if usable else TensorRTUnavailableError
    with pytest.raises(expected) as info:
        build_head_runtime(tiny_cfg, parts=parts, kind="tensorrt", engine_dir=exported[0])
    msg = str(info.value)
    assert ("no fp32 TensorRT engine" in msg) if usable else (msg == reason)
