"""xmask3d-train / xmask3d-eval end to end on the tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from xmask3d_ros.cli import evaluate as eval_cli
from xmask3d_ros.cli import train as train_cli

from .conftest import data_overrides


def test_train_resume_and_evaluate(synth_root: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "train.yaml"
    out = tmp_path / "run"
    cfg.write_text(yaml.safe_dump({
        "model_config": "tiny", "out_dir": str(out), "epochs": 1, "batch_size": 2,
        "max_iters_per_epoch": 1, "seed": 3, "progress": False,
        "data": data_overrides(synth_root),
    }))
    assert train_cli.main([str(cfg), "--set", "epochz=1"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert train_cli.main([str(cfg)]) == 0
    ckpt = out / "checkpoints" / "epoch_1"
    assert (ckpt / "model.safetensors").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
    assert train_cli.main([str(cfg), "--resume", "auto"]) == 0  # already complete: no-op
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
    assert train_cli.main([str(cfg), "--set", "epochs=3", "--resume", str(ckpt)]) == 1
    assert "resume needs the same" in capsys.readouterr().err

    rep = tmp_path / "rep"
    assert eval_cli.main([str(cfg), str(ckpt), "--out", str(rep), "--max-scenes", "1",
                          "--set", "eval.mode=view"]) == 0
    assert "| hIoU | mIoU base |" in capsys.readouterr().out
    data = json.loads((rep / "metrics.json").read_text())
    assert data["scenes"] == 1 and (rep / "confusion.png").is_file()
    assert eval_cli.main([str(cfg), str(tmp_path / "nope")]) == 1
