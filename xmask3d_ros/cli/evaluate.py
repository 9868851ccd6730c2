"""``xmask3d-eval CONFIG CHECKPOINT [--set key=value ...] [--out DIR]``: evaluate a checkpoint.

CONFIG is a training YAML (its ``data`` and ``eval`` sections are used); CHECKPOINT a folder
written by ``save_pretrained`` / the trainer (``config.yaml`` + ``model.safetensors``). Writes
``metrics.md``, ``metrics.json`` and ``confusion.png`` into ``--out`` (default
``<out_dir>/eval/final``) and prints the markdown table. Exit status: 0 done, 1 data or weights
error, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmask3d-eval", description="mIoU base/novel and hIoU of "
                                "an XMask3D checkpoint on the val split of a training config.")
    p.add_argument("config", type=Path, help="training config YAML (data + eval sections)")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (config.yaml + "
                   "model.safetensors)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value, e.g. --set eval.convention=scannet")
    p.add_argument("--out", type=Path, default=None, help="report folder")
    p.add_argument("--max-scenes", type=int, default=None, help="evaluate the first N scenes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xmask3d_ros.cli._training_config import load_training_config

    cfg = load_training_config("xmask3d-eval", args.config, args.overrides)
    if cfg is None:
        return 2
    from xmask3d_ros.data.scannet_layout import ScanNetFormatError
    from xmask3d_ros.model.build import from_pretrained
    from xmask3d_ros.model.errors import WeightsError
    from xmask3d_ros.training.evaluator import evaluate, write_reports
    from xmask3d_ros.training.trainer import resolve_device
    from xmask3d_ros.training.views import ViewDataset

    try:
        model = from_pretrained(args.checkpoint).to(resolve_device(cfg.device))
        ds = ViewDataset(cfg.data, cfg.data.val_split, seed=cfg.seed)
        ev = evaluate(model, ds, cfg.eval, max_scenes=args.max_scenes)
        out = args.out or Path(cfg.out_dir) / "eval" / "final"
        files = write_reports(ev, out, f"{args.checkpoint} on {cfg.data.val_split} "
                              f"({cfg.data.partition})")
    except (ScanNetFormatError, WeightsError, ValueError, OSError) as err:
        print(f"xmask3d-eval: {err}", file=sys.stderr)
        return 1
    print(files[0].read_text(encoding="utf-8"))
    print(f"xmask3d-eval: reports in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
