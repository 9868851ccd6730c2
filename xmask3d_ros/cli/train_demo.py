"""``xmask3d-train-demo [--config YAML] [--set key=value ...]``: the demo checkpoint's recipe.

Generates the synthetic rooms, pretrains the tiny CLIP, trains XMask3D on base labels (and the
ablation beside it), evaluates on held-out rooms with every class name and writes the checkpoint
folder with its model card (:mod:`xmask3d_ros.training.demo_recipe`). Steps whose outputs are up
to date are skipped, so a rerun after an interruption continues.
Exit status: 0 done, 1 recipe failure, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmask3d-train-demo", description="Train the demo "
                                "checkpoint from scratch on synthetic rooms (CPU, ~40 min).")
    p.add_argument("--config", type=Path, default=None,
                   help="recipe YAML (default: the shipped config/train/demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value, e.g. --set train.epochs=2 --set out_dir=/tmp/demo")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xmask3d_ros.config.paths import config_dir
    from xmask3d_ros.config.schema import ConfigError, load_config
    from xmask3d_ros.config.training import DemoRecipeCfg

    try:
        path = args.config or config_dir() / "train" / "demo.yaml"
        cfg = load_config(DemoRecipeCfg, path, args.overrides)
    except ConfigError as err:
        print(f"xmask3d-train-demo: {err}", file=sys.stderr)
        return 2
    from xmask3d_ros.data.scannet_layout import ScanNetFormatError
    from xmask3d_ros.model.errors import WeightsError
    from xmask3d_ros.training.demo_recipe import ablation_table, run_recipe

    try:
        result = run_recipe(cfg)
    except (ScanNetFormatError, WeightsError, RuntimeError, OSError, ValueError) as err:
        print(f"xmask3d-train-demo: {err}", file=sys.stderr)
        return 1
    print(ablation_table(result.rows))
    print(f"checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
