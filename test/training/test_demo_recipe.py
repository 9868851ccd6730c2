"""The demo recipe end to end in miniature: rooms, CLIP, two trainings, four evaluations, the
packaged checkpoint; a rerun reuses every finished step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from xmask3d_ros.config.schema import ConfigError, from_dict
from xmask3d_ros.config.training import DemoDataCfg, DemoRecipeCfg
from xmask3d_ros.model.build import from_pretrained
from xmask3d_ros.training.demo_recipe import ABLATIONS, run_recipe


def _cfg(tmp: Path) -> DemoRecipeCfg:
    return from_dict(DemoRecipeCfg, {
        "out_dir": str(tmp / "run"), "checkpoint_dir": str(tmp / "models" / "demo"),
        "workers": 2,
        "data": {"root": str(tmp / "data"), "train_seed": 3, "train_rooms": 2, "val_seed": 9,
                 "val_rooms": 1, "frames_per_room": 3, "width": 64, "height": 48,
                 "point_spacing_m": 0.08},
        "clip": {"steps": 4, "batch_views": 4, "warmup_steps": 1, "min_region_pixels": 10},
        "tune": {"seed": 20, "rooms": 1, "base_ratios": [0.65, 0.95], "novel_ratios": [0.35]},
        "train": {"model_config": "tiny", "epochs": 1, "batch_size": 1, "progress": False,
                  "model_overrides": ["clip.arch.text_width=32", "loss.num_points=256",
                                      "loss.mask_contra_start_epoch=0"],
                  "data": {"label_set": "synthetic", "label_source": "image",
                           "partition": "synthetic_B15N4", "min_visible": 20,
                           "min_labelled": 5, "border_px": 2},
                  "eval": {"convention": "scannet", "mode": "scene"}},
    })


def test_seed_ranges_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        from_dict(DemoDataCfg, {"train_seed": 0, "train_rooms": 10, "val_seed": 5})


@pytest.mark.slow
def test_recipe_in_miniature(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    result = run_recipe(cfg)
    folder = result.checkpoint
    assert folder == tmp_path / "models" / "demo"
    assert {p.name for p in folder.iterdir()} == {
        "config.yaml", "model.safetensors", "clip.safetensors", "vocabulary.yaml",
        "recipe.yaml", "metrics.json", "MODEL_CARD.md"}
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["clip"]["weights_path"] == "clip.safetensors"  # relative: the folder travels
    model = from_pretrained(folder)  # resolves the CLIP beside it
    assert model.cfg.clip.weights_path == str(folder / "clip.safetensors")
    assert all(v.dtype == torch.float32 for v in model.trainable_state_dict().values()
               if v.is_floating_point())
    vocab = yaml.safe_load((folder / "vocabulary.yaml").read_text())
    assert vocab["novel"] == ["sofa", "bookshelf", "desk", "toilet"]
    # the trained classes travel with the weights: map queries gate with them (ClassRule)
    assert sorted(saved["binary"]["base_classes"]) == sorted(vocab["base"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [g["base_ratio"] for g in metrics["ensemble_tuning"]] == [0.65, 0.95]
    best = max(metrics["ensemble_tuning"], key=lambda g: g["hiou"])
    assert saved["ensemble"]["base_ratio"] == best["base_ratio"]  # the chosen ratio ships
    assert set(metrics["rows"]) == {k for k, _ in ABLATIONS}
    for row in metrics["rows"].values():
        assert 0.0 <= row["miou_base"] <= 1.0
    # the pure-3D row classifies other features than the full model: not a copy
    assert metrics["rows"]["no_2d_branch"] != metrics["rows"]["full"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "base labels only" in card and "without the 2D mask branch" in card
    assert np.isfinite(result.clip_accuracy["base"])

    # a rerun reuses the rooms, the CLIP and both finished trainings
    clip_mtime = (Path(cfg.out_dir) / "clip.safetensors").stat().st_mtime_ns
    again = run_recipe(cfg)
    assert (Path(cfg.out_dir) / "clip.safetensors").stat().st_mtime_ns == clip_mtime
    ckpt = result.rows and Path(cfg.out_dir) / "train_full" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch_1"]  # not retrained
    # the card keeps the times of the run that did the work
    for step in ("rooms", "clip", "train"):
        assert again.seconds[step] == result.seconds[step]
    assert metrics["rows"]["full"]["miou_base"] == pytest.approx(
        again.rows["full"].miou_base)
