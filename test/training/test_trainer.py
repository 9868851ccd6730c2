"""Seeded tiny training: 4 iterations straight == 2 + checkpoint/resume + 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.training import TrainCfg
from xmask3d_ros.training.trainer import Trainer, cosine_factor, latest_checkpoint

from .conftest import data_overrides


def _cfg(root: Path, out: Path) -> TrainCfg:
    return from_dict(TrainCfg, {
        "model_config": "tiny", "out_dir": str(out), "epochs": 2, "batch_size": 1,
        "seed": 11, "progress": False, "keep_checkpoints": 0,
        "data": data_overrides(root),
    })


def test_cosine_schedule() -> None:
    assert cosine_factor(0, 10) == 1.0 and cosine_factor(10, 10) == pytest.approx(0.0)
    assert cosine_factor(5, 10) == pytest.approx(0.5)


def test_resume_reproduces_the_loss_curve(synth_root: Path, tmp_path: Path) -> None:  # one thread: conftest
    torch.manual_seed(0)
    t0 = time.perf_counter()
    straight = Trainer(_cfg(synth_root, tmp_path / "a")).fit()
    per_iter = (time.perf_counter() - t0) / 4
    assert len(straight) == 4  # 2 scenes x batch 1 x 2 epochs
    print(f"tiny training iteration: {per_iter:.2f} s")

    torch.manual_seed(123)  # global RNG differs: resume must restore what matters
    first = Trainer(_cfg(synth_root, tmp_path / "b")).fit(stop_epoch=1)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "epoch_1"
    assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "config.yaml",
                                                  "optimizer.safetensors", "state.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["iteration"] == 2
    torch.manual_seed(999)
    resumed = Trainer(_cfg(synth_root, tmp_path / "b")).fit(resume=ckpt)
    assert len(first) == 2 and len(resumed) == 4
    for a, b in zip(straight, resumed):
        assert a["loss"] == b["loss"], (a, b)  # bit-identical
        assert a["lr_3d"] == pytest.approx(b["lr_3d"])
    lines = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,iteration,lr_3d,loss") and len(lines) == 5


def test_metrics_csv_widens_when_a_loss_switches_on(synth_root: Path, tmp_path: Path) -> None:
    cfg = from_dict(TrainCfg, {
        "model_config": "tiny", "out_dir": str(tmp_path), "epochs": 2, "batch_size": 2,
        "seed": 11, "progress": False, "checkpoint_every_epochs": 5,
        "model_overrides": ["loss.mask_contra_start_epoch=1", "loss.num_points=256"],
        "data": data_overrides(synth_root),
    })
    Trainer(cfg).fit()
    import csv

    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "loss_3d_contra" in rows[0]
    assert rows[0]["loss_3d_contra"] == "" and float(rows[1]["loss_3d_contra"]) >= 0.0
    assert rows[0]["loss"] and rows[1]["loss"]  # the earlier row survived the rewrite


def test_balanced_class_weights() -> None:
    from xmask3d_ros.training.trainer import balanced_class_weights

    w = balanced_class_weights(np.array([400, 100, 0, 25]), 0.5)
    raw = np.array([400, 100, 25], dtype=float) ** -0.5  # 1/20, 1/10, 1/5
    np.testing.assert_allclose(w[[0, 1, 3]].numpy(), raw / raw.mean(), rtol=1e-6)
    assert float(w[2]) == 1.0 and float(w[4]) == 1.0  # absent class, null column
    assert torch.equal(balanced_class_weights(np.array([5, 5]), 0.0), torch.ones(3))


def test_label_counts_follow_the_label_source(synth_root: Path) -> None:
    from PIL import Image

    from xmask3d_ros.config.training import DataCfg
    from xmask3d_ros.data.scannet_layout import read_scannet_2d_scene
    from xmask3d_ros.training.views import ViewDataset

    ds = ViewDataset(from_dict(DataCfg, data_overrides(synth_root)), "train")
    counts = ds.base_label_counts()
    p = ds.partition
    want = np.zeros(p.num_base, dtype=np.int64)  # brute force over every label pixel
    for name in ds.scene_names:
        for f in read_scannet_2d_scene(synth_root, name).frames:
            raw = np.asarray(Image.open(f.label_path)).ravel()
            for r in raw:
                idx = ds._lut[int(r)]
                if 0 <= idx < len(p.labels.classes) and p.labels.classes[idx] in p.base:
                    want[p.base_names_ordered().index(p.labels.classes[idx])] += 1
    np.testing.assert_array_equal(counts, want)
