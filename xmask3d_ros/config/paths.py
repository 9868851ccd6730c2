"""Where the shipped YAML configs live: the source tree, a colcon install or a pip install."""

from __future__ import annotations

import sys
from pathlib import Path

from xmask3d_ros.config.schema import ConfigError

__all__ = ["config_dir", "demo_checkpoint_dir", "resolve_model_config", "share_dir"]


def _share_candidates(folder: str) -> list[Path]:
    """Where a shipped ``folder`` (config, models) may be, most specific first.

    A source checkout (``<repo>/<folder>`` beside the package), then
    ``<prefix>/share/xmask3d_ros/<folder>`` for the colcon install space this package was
    imported from (``install/xmask3d_ros/lib/python3.x/site-packages/xmask3d_ros`` -> four
    levels up) and for ``sys.prefix`` (pip's data_files).
    """
    package = Path(__file__).resolve().parent.parent
    candidates = [package.parent / folder]
    if len(package.parents) > 3:
        candidates.append(package.parents[3] / "share" / "xmask3d_ros" / folder)
    candidates.append(Path(sys.prefix) / "share" / "xmask3d_ros" / folder)
    return candidates


def share_dir(folder: str, marker: str) -> Path:
    """The first shipped ``folder`` holding ``marker`` (a file or folder inside it)."""
    candidates = _share_candidates(folder)
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"<install>: cannot find the shipped {folder}/{marker} (searched {searched})")


def config_dir() -> Path:
    """The folder holding perception.yaml and model/*.yaml."""
    return share_dir("config", "perception.yaml")


def demo_checkpoint_dir() -> Path:
    """The committed demo checkpoint (``models/demo``: config.yaml, model.safetensors,
    clip.safetensors, MODEL_CARD.md), from the checkout or the install space."""
    return share_dir("models", "demo/model.safetensors") / "demo"


def resolve_model_config(name_or_path: str) -> Path:
    """Map a model config name ('tiny', 'paper') or a path to an existing YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"node.model_config: file {path} does not exist")
        return path
    shipped = config_dir() / "model" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
        raise ConfigError(
            f"node.model_config: unknown model config {name_or_path!r}: not 'demo', not a checkpoint "
            f"folder (config.yaml + model.safetensors), not a YAML path, not a shipped config "
            f"(shipped: {', '.join(names)})"
        )
    return shipped
