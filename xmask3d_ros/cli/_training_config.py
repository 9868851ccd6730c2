"""What ``xmask3d-train`` and ``xmask3d-eval`` share: loading the training config."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xmask3d_ros.config.training import TrainCfg


def load_training_config(prog: str, path: Path, overrides: Sequence[str]) -> TrainCfg | None:
    """The validated config (torch threads applied), or None after printing the config error."""
    from xmask3d_ros.config.schema import ConfigError, load_config
    from xmask3d_ros.config.training import TrainCfg

    try:
        cfg = load_config(TrainCfg, path, overrides)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return None
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    return cfg
