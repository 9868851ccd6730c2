"""Typed configuration of every tunable (dataclasses + YAML), in one place.

Import the classes you need from their modules (``xmask3d_ros.config.perception``,
``xmask3d_ros.config.model``); this package itself only re-exports the loader machinery so that
importing it stays cheap.
"""

from xmask3d_ros.config.schema import (
    ConfigError,
    from_dict,
    load_config,
    param,
    save_config,
    section,
    to_dict,
)

__all__ = ["ConfigError", "from_dict", "load_config", "param", "save_config", "section", "to_dict"]
