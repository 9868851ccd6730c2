"""Mapping layer: the bounded local voxel map (integration, visibility, per-voxel semantics).

Pure numpy; imports only ``geometry`` and ``config``.
"""

from xmask3d_ros.mapping.keys import pack_keys, point_keys, unpack_keys
from xmask3d_ros.mapping.map_file import MapFileError, MapFileInfo, read_map_file, write_map_file
from xmask3d_ros.mapping.records import IntegrationStats, MapStats, VoxelMapSnapshot, VoxelMapState
from xmask3d_ros.mapping.voxel_map import LocalVoxelMap, MapStateError

__all__ = [
    "IntegrationStats",
    "LocalVoxelMap",
    "MapFileError",
    "MapFileInfo",
    "MapStateError",
    "MapStats",
    "VoxelMapSnapshot",
    "VoxelMapState",
    "pack_keys",
    "point_keys",
    "read_map_file",
    "unpack_keys",
    "write_map_file",
]
