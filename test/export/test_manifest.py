"""manifest.json round-trips and records the config, weights and file hashes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import EngineMismatchError, MissingEngineError
from xmask3d_ros.export.graphs import ExportParts, build_parts
from xmask3d_ros.export.manifest import (
    MANIFEST_FILE,
    EngineEntry,
    Manifest,
    checkpoint_ref,
    config_sha256,
    file_sha256,
    weights_sha256,
)
from xmask3d_ros.export.onnx_export import files_sha256


def test_manifest_round_trips(exported: tuple[Path, Manifest], tmp_path: Path) -> None:
    folder, manifest = exported
    loaded = Manifest.load(folder)
    assert loaded == manifest
    # engines survive the round trip too
    loaded.graphs["fusion"].engines["fp16"] = EngineEntry(
        precision="fp16", file="fusion.fp16.engine", sha256="0" * 64, size_bytes=1,
        tensorrt_version="10.3.0", device_name="Orin", compute_capability="8.7",
        profiles={"feat_2d": [[1, 64], [50000, 64], [400000, 64]]},
    )
    loaded.save(tmp_path)
    again = Manifest.load(tmp_path)
    assert again == loaded and again.graphs["fusion"].engines["fp16"].compute_capability == "8.7"
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert data["format_version"] == 1 and data["dims"]["num_masks"] == [1, 8, 8]


def test_manifest_records_the_hashes(
    exported: tuple[Path, Manifest], parts: ExportParts, tiny_cfg: ModelConfig
) -> None:
    folder, manifest = exported
    assert manifest.config_sha256 == config_sha256(tiny_cfg)
    assert manifest.weights_sha256 == weights_sha256(parts.modules())
    assert manifest.checkpoint.sha256 == "" and manifest.checkpoint.path == ""  # random init
    assert manifest.config["mask_generator"]["num_queries"] == 8
    assert "runtime" not in manifest.config and "loss" not in manifest.config
    for entry in manifest.graphs.values():
        path = folder / entry.file
        assert entry.sha256 == files_sha256([path]) == file_sha256(path)
        assert entry.size_bytes == path.stat().st_size
    assert manifest.versions["torch"] == torch.__version__ and "onnxruntime" in manifest.versions


def test_config_hash_follows_graph_relevant_keys_only(cfg_with: Callable[..., ModelConfig]) -> None:
    base = config_sha256(cfg_with())
    for key in ("runtime.head_runtime=onnxruntime", "runtime.engine_dir=/x", "binary.gating=soft",
                "ensemble.base_ratio=0.5", "loss.binary=1.0", "clip.prompt_template=a {}",
                "name=other", "backbone3d.voxel_size_m=0.1"):
        assert config_sha256(cfg_with(key)) == base, key
    for key in ("mask_generator.mask_threshold=0.4", "diffusion.noise_seed=1",
                "diffusion.timestep=10", "binary.enabled=false"):
        assert config_sha256(cfg_with(key)) != base, key


def test_weights_hash(parts: ExportParts, tiny_cfg: ModelConfig) -> None:
    h = weights_sha256(parts.modules())
    assert weights_sha256(build_parts(tiny_cfg, seed=0).modules()) == h  # same seed, same hash
    bias = parts.fusion.linear.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.add_(1e-6)
        try:
            assert weights_sha256(parts.modules()) != h
        finally:
            bias.copy_(saved)  # (x + d) - d is not x in float32
    assert weights_sha256(parts.modules()) == h


def test_checkpoint_ref_hashes_the_file(
    tmp_path: Path, cfg_with: Callable[..., ModelConfig]
) -> None:
    from safetensors.torch import save_file

    file = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(4.0)}, str(file))
    ref = checkpoint_ref(cfg_with(f"weights_path={tmp_path}"))  # a folder resolves to the file
    assert ref.path == str(file) and ref.sha256 == file_sha256(file)


def test_bad_manifests_are_refused_naming_the_file(
    tmp_path: Path, exported: tuple[Path, Manifest]
) -> None:
    with pytest.raises(MissingEngineError, match=str(tmp_path / MANIFEST_FILE)):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="not valid JSON"):
        Manifest.load(tmp_path)
    data = exported[1].to_dict()
    data["format_version"] = 99
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="format_version 99"):
        Manifest.load(tmp_path)
    del data["weights_sha256"]
    data["format_version"] = 1
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="weights_sha256"):
        Manifest.load(tmp_path)
