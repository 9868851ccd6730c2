"""Configs of the geometry layer: depth validity, visibility test, TF buffer and synchroniser.

The geometry functions take plain numbers (``decode_depth(..., min_depth_m=cfg.min_depth_m)``);
these dataclasses are where those numbers are declared, documented, range-checked and loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import ConfigError, param

__all__ = ["DepthCfg", "SyncCfg", "TfCfg", "VisibilityCfg"]


@dataclass(frozen=True)
class DepthCfg:
    """Which depth readings count as measurements (others become 0 and never become points)."""

    min_depth_m: float = param(
        0.1, "Depth below this (metres) is invalid: sensor minimum range / self-occlusion.", ge=0.0
    )
    max_depth_m: float = param(
        10.0, "Depth above this (metres) is invalid: noise grows with the square of range.", gt=0.0
    )

    def __post_init__(self) -> None:
        if not self.min_depth_m < self.max_depth_m:
            raise ConfigError(
                f"min_depth_m ({self.min_depth_m}) must be smaller than max_depth_m ({self.max_depth_m})"
            )


@dataclass(frozen=True)
class VisibilityCfg:
    """The reference's point visibility test (reference-notes 1.7)."""

    border_px: int = param(
        10, "Projected points closer than this (pixels) to any image border are not visible.", ge=0
    )
    depth_tolerance_rel: float = param(
        0.25,
        "A point is visible when |depth(pixel) - z| <= this fraction of depth(pixel) (occlusion test).",
        gt=0.0,
        le=1.0,
    )


@dataclass(frozen=True)
class TfCfg:
    """Own TF buffer (used when tf2_ros is not importable, and in replay)."""

    cache_duration_s: float = param(
        10.0, "History kept per dynamic TF edge (seconds), as tf2's cache_time.", gt=0.0, le=3600.0
    )
    lookup_tolerance_s: float = param(
        0.01,
        "A lookup up to this far (seconds) outside an edge's history uses its nearest sample "
        "instead of failing; 0 is tf2's strict behaviour.",
        ge=0.0,
        le=1.0,
    )

    @property
    def lookup_tolerance_ns(self) -> int:
        """``lookup_tolerance_s`` as the integer nanoseconds ``TfBuffer.lookup`` takes."""
        return int(round(self.lookup_tolerance_s * 1e9))

    def __post_init__(self) -> None:
        if not self.lookup_tolerance_s < self.cache_duration_s:
            raise ConfigError(
                f"lookup_tolerance_s ({self.lookup_tolerance_s}) must be smaller than "
                f"cache_duration_s ({self.cache_duration_s})"
            )


@dataclass(frozen=True)
class SyncCfg:
    """RGB / depth / camera_info synchronisation (message_filters semantics)."""

    queue_size: int = param(10, "Messages kept per input stream while waiting for a match.", ge=1, le=1000)
    slop_s: float = param(
        0.05, "Largest stamp spread (seconds) of a matched set in approximate mode.", ge=0.0, le=10.0
    )
    mode: str = param(
        "approximate",
        "approximate: ApproximateTime policy within slop_s; exact: identical stamps only.",
        choices=("approximate", "exact"),
    )

    def __post_init__(self) -> None:
        if self.mode == "approximate" and self.slop_s <= 0.0:
            raise ConfigError(f"slop_s must be > 0 in approximate mode, got {self.slop_s}")

