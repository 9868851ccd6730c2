"""Plain records of the mapping layer: per-call and cumulative statistics, map snapshots."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["IntegrationStats", "MapStats", "VoxelMapSnapshot", "VoxelMapState"]


@dataclasses.dataclass(frozen=True)
class IntegrationStats:
    """What one ``integrate`` / ``integrate_points`` call did."""

    points: int  # points offered (valid depth pixels after stride)
    dropped_points: int  # non-finite or outside the key range
    new_voxels: int
    updated_voxels: int  # existing voxels hit by this frame
    evicted_radius: int
    missed_voxels: int  # voxels that got a free-space miss this frame
    cleared_free_space: int  # removed for reaching miss_threshold
    evicted_capacity: int
    size: int  # voxels after the call
    elapsed_s: float


@dataclasses.dataclass(frozen=True)
class MapStats:
    """Counters since construction (or ``clear``)."""

    frames: int = 0  # integrate / integrate_points calls
    integrated_points: int = 0
    dropped_points: int = 0
    inserted_voxels: int = 0
    evicted_radius: int = 0
    evicted_capacity: int = 0
    cleared_free_space: int = 0
    semantic_updates: int = 0  # update_semantics calls


@dataclasses.dataclass(frozen=True, eq=False)
class VoxelMapSnapshot:
    """An immutable copy of the live voxels (arrays are read-only copies)."""

    keys: npt.NDArray[np.int32]  # (N, 3) integer voxel coordinates
    positions: npt.NDArray[np.float32]  # (N, 3) map frame, metres
    colors: npt.NDArray[np.uint8]  # (N, 3) RGB
    counts: npt.NDArray[np.uint32]  # (N,)
    last_seen_ns: npt.NDArray[np.int64]  # (N,)
    features: npt.NDArray[np.float16] | None  # (N, D), None if not requested
    feature_weights: npt.NDArray[np.float32]  # (N,)
    clip_features: npt.NDArray[np.float16] | None  # (N, clip_dim) MaskCLIP channel, None if not requested
    clip_weights: npt.NDArray[np.float32]  # (N,)
    base_prob: npt.NDArray[np.float32]  # (N,) mean p(base), where base_prob_weights > 0
    base_prob_weights: npt.NDArray[np.float32]  # (N,)
    voxel_size_m: float
    feature_dim: int
    version: int
    layout_version: int
    stamp_ns: int  # stamp of the last integrated frame (0 before any)
    sensor_origin: npt.NDArray[np.float64]  # (3,) sensor position at the last integration

    @property
    def size(self) -> int:
        return int(self.positions.shape[0])


@dataclasses.dataclass(frozen=True)
class VoxelMapState:
    """The whole content of a map (``LocalVoxelMap.state`` / ``load_state``, map files).

    ``arrays``: every stored column of the live rows by ``voxel_map.STATE_NAMES`` (no MaskCLIP
    arrays when that channel is off); ``stamp_ns`` and ``sensor_origin``: the newest frame's
    stamp and sensor position (radius eviction resumes from there).
    """

    arrays: Mapping[str, npt.NDArray[Any]]
    voxel_size_m: float
    feature_dim: int
    stamp_ns: int
    sensor_origin: tuple[float, float, float]

    @property
    def voxels(self) -> int:
        return int(self.arrays["packed_keys"].shape[0])

    @property
    def clip_dim(self) -> int:
        """Width of the MaskCLIP channel (0 when the map had it off)."""
        c = self.arrays.get("clip_features")
        return 0 if c is None else int(c.shape[1])
