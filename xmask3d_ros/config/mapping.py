"""Config of the mapping layer: the bounded local voxel map (``LocalVoxelMap``).

Memory per voxel is ``LocalVoxelMap.bytes_per_voxel(D)`` = 73 + 4 * D bytes with the MaskCLIP
channel (2121 B at D = 512, 3145 B at D = 768; 73 + 2 * D without it; see
xmask3d_ros/mapping/voxel_map.py), so ``max_voxels`` is the memory knob: the default 300 000 is
~0.9 GB of map at D = 768 (~0.6 GB at D = 512).
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import ConfigError, param

__all__ = ["MapCfg"]


@dataclass(frozen=True)
class MapCfg:
    """The bounded local voxel map: resolution, bounds, eviction and free-space clearing."""

    voxel_size_m: float = param(
        0.05, "Voxel edge length (metres); 2 cm works, memory grows as its inverse square.",
        ge=0.005, le=1.0,
    )
    stride_px: int = param(
        2, "Every stride_px-th depth row and column is integrated (1 = every pixel).", ge=1, le=16
    )
    radius_m: float = param(
        8.0, "Voxels whose position is farther than this from the sensor are evicted.", gt=0.0
    )
    max_voxels: int = param(
        300_000, "Hard cap on the number of voxels; the excess is evicted by 'eviction'.",
        ge=1, le=50_000_000,
    )
    clip_channel: bool = param(
        True,
        "Keep a second feature channel per voxel, the mean MaskCLIP embedding of the masks that "
        "covered it (+2 D bytes per voxel). Queries need it for the model's MaskCLIP ensemble, "
        "which carries most of its novel-class recognition.",
    )
    eviction: str = param(
        "farthest",
        "Order of capacity eviction. farthest: farthest from the sensor first (ties: oldest "
        "last_seen, then smallest key); oldest: oldest last_seen first (ties: farthest, then "
        "smallest key).",
        choices=("farthest", "oldest"),
    )
    free_space_clearing: bool = param(
        True, "Voxels that a depth image sees through get misses and are removed (moved objects)."
    )
    miss_threshold: int = param(
        3, "A voxel is removed after this many misses without a hit in between.", ge=1, le=255
    )
    clearing_margin_voxels: float = param(
        2.0,
        "Absolute see-through margin in voxel sizes: a miss needs measured depth > voxel depth "
        "+ max(this * voxel_size_m, clearing_margin_rel * measured depth).",
        ge=0.0, le=100.0,
    )
    clearing_margin_rel: float = param(
        0.05, "Relative see-through margin (fraction of the measured depth), see above.",
        ge=0.0, le=1.0,
    )
    clearing_window_px: int = param(
        1,
        "Measured depth for clearing is the minimum over a (2w+1)^2 pixel window, and any invalid "
        "pixel in it vetoes; protects edges and surfaces seen at grazing angles.",
        ge=0, le=10,
    )
    clearing_border_px: int = param(
        2, "Voxels projecting closer than this to the image border are never missed.", ge=0
    )
    clearing_min_depth_m: float = param(
        0.3, "Voxels closer than this to the camera (z, metres) are never missed.", ge=0.0
    )
    clearing_max_depth_m: float = param(
        6.0, "Voxels farther than this from the camera (z, metres) are never missed.", gt=0.0
    )

    def __post_init__(self) -> None:
        if not self.clearing_min_depth_m < self.clearing_max_depth_m:
            raise ConfigError(
                f"clearing_min_depth_m ({self.clearing_min_depth_m}) must be smaller than "
                f"clearing_max_depth_m ({self.clearing_max_depth_m})"
            )
        if not self.radius_m > self.voxel_size_m:
            raise ConfigError(
                f"radius_m ({self.radius_m}) must be larger than voxel_size_m ({self.voxel_size_m})"
            )
