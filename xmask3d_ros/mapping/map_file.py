"""Map files: the whole voxel map (geometry, colour, occupancy and every semantic channel) in
one safetensors file, so a map built on one run (or offline from a bag) is queried on another.

safetensors holds plain arrays and string metadata, so reading a file runs no code from it.
The metadata names the format, the map frame, the voxel size, the feature width, the newest
stamp and the sensor origin; the receiving map checks them and the arrays
(:meth:`LocalVoxelMap.load_state`), and every refusal says what differs. Files are written
atomically: a crash never leaves half a map.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from xmask3d_ros.files import atomic_write
from xmask3d_ros.mapping.records import VoxelMapState

__all__ = ["MAP_FILE_FORMAT", "MapFileError", "MapFileInfo", "read_map_file", "write_map_file"]

MAP_FILE_FORMAT = "xmask3d_ros.voxel_map/1"


class MapFileError(ValueError):
    """A map file that cannot be read or written, or whose content does not fit."""


@dataclasses.dataclass(frozen=True)
class MapFileInfo:
    """What a map file says about itself."""

    path: Path
    frame_id: str
    voxel_size_m: float
    feature_dim: int
    clip_dim: int
    voxels: int
    stamp_ns: int


def write_map_file(path: str | Path, state: VoxelMapState, *, frame_id: str) -> MapFileInfo:
    """Write ``state`` (a map in frame ``frame_id``) to ``path`` (atomically)."""
    from safetensors.numpy import save_file

    info = MapFileInfo(path=Path(path), frame_id=str(frame_id), voxel_size_m=state.voxel_size_m,
                       feature_dim=state.feature_dim, clip_dim=state.clip_dim,
                       voxels=state.voxels, stamp_ns=int(state.stamp_ns))
    meta = {"format": MAP_FILE_FORMAT, "frame_id": info.frame_id,
            "voxel_size_m": repr(float(info.voxel_size_m)), "feature_dim": str(info.feature_dim),
            "stamp_ns": str(info.stamp_ns),
            "sensor_origin": json.dumps([float(x) for x in state.sensor_origin])}
    try:
        atomic_write(path, lambda p: save_file(dict(state.arrays), str(p), metadata=meta))
    except OSError as err:
        raise MapFileError(f"cannot write the map to {path}: {err}") from err
    return info


def read_map_file(path: str | Path) -> tuple[MapFileInfo, VoxelMapState]:
    """The file's info and content; raises :class:`MapFileError` naming what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"no map file at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no iteration protocol
    except (SafetensorError, OSError, ValueError) as err:
        raise MapFileError(f"{path} is not a readable safetensors file: {err}") from err
    if meta.get("format") != MAP_FILE_FORMAT:
        raise MapFileError(f"{path} is not an xmask3d_ros map file (format "
                           f"{meta.get('format')!r}, expected {MAP_FILE_FORMAT!r})")
    if "packed_keys" not in arrays:
        raise MapFileError(f"{path} has no packed_keys array")
    try:
        origin = [float(x) for x in json.loads(meta["sensor_origin"])]
        state = VoxelMapState(arrays=arrays, voxel_size_m=float(meta["voxel_size_m"]),
                              feature_dim=int(meta["feature_dim"]), stamp_ns=int(meta["stamp_ns"]),
                              sensor_origin=tuple(origin))  # type: ignore[arg-type]
        info = MapFileInfo(path=path, frame_id=meta["frame_id"], voxel_size_m=state.voxel_size_m,
                           feature_dim=state.feature_dim, clip_dim=state.clip_dim,
                           voxels=state.voxels, stamp_ns=state.stamp_ns)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise MapFileError(f"{path}: bad or missing metadata ({type(err).__name__}: {err})") from err
    return info, state
