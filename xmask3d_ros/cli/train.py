"""``xmask3d-train CONFIG [--set key=value ...] [--resume auto|DIR]``: train XMask3D.

CONFIG is a training YAML (``config/train/*.yaml``, schema :class:`~xmask3d_ros.config.
training.TrainCfg`). Writes ``<out_dir>/metrics.csv`` (one row per iteration),
``<out_dir>/checkpoints/epoch_<E>/`` (safetensors model + optimiser state, resumable) and, with
``eval_every_epochs``, ``<out_dir>/eval.csv`` plus ``<out_dir>/eval/epoch_<E>/`` reports.
Exit status: 0 done, 1 data/training error, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmask3d-train", description="Train XMask3D on "
                                "ScanNet-layout scenes (ScanNet, ScanNet200, synthetic rooms).")
    p.add_argument("config", type=Path, help="training config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set epochs=2 --set data.root=/data")
    p.add_argument("--resume", default=None, metavar="auto|DIR",
                   help="resume from a checkpoint folder, or 'auto' = the newest in out_dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xmask3d_ros.cli._training_config import load_training_config

    cfg = load_training_config("xmask3d-train", args.config, args.overrides)
    if cfg is None:
        return 2
    from xmask3d_ros.data.scannet_layout import ScanNetFormatError
    from xmask3d_ros.model.errors import WeightsError
    from xmask3d_ros.model.xmask3d import XMask3D
    from xmask3d_ros.training.evaluator import evaluate, write_reports
    from xmask3d_ros.training.trainer import Trainer, latest_checkpoint
    from xmask3d_ros.training.views import ViewDataset

    try:
        val = (ViewDataset(cfg.data, cfg.data.val_split, seed=cfg.seed)
               if cfg.eval_every_epochs else None)

        def run_eval(model: XMask3D, epoch: int) -> dict[str, float]:
            assert val is not None
            ev = evaluate(model, val, cfg.eval)
            write_reports(ev, Path(cfg.out_dir) / "eval" / f"epoch_{epoch}", f"epoch {epoch}")
            r = ev.result
            print(f"eval epoch {epoch}: hIoU {r.hiou:.3f} base {r.miou_base:.3f} "
                  f"novel {r.miou_novel:.3f}", file=sys.stderr)
            return {"hiou": r.hiou, "miou_base": r.miou_base, "miou_novel": r.miou_novel,
                    "miou_all": r.miou_all}

        trainer = Trainer(cfg, val_set=val, evaluate=run_eval)
        resume = args.resume
        if resume == "auto":
            resume = latest_checkpoint(cfg.out_dir)
        trainer.fit(resume=resume)
    except (ScanNetFormatError, WeightsError, ValueError, OSError) as err:
        print(f"xmask3d-train: {err}", file=sys.stderr)
        return 1
    print(f"xmask3d-train: done, checkpoints in {Path(cfg.out_dir) / 'checkpoints'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
