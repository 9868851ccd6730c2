"""Mapping layer: the bounded local voxel map (integration, visibility, per-voxel semantics).

Pure numpy; imports only ``geometry`` and ``config``.
"""

from xmask3d_ros.mapping.keys import pack_keys, point_keys, unpack_keys
from xmask3d_ros.mapping.records import IntegrationStats, MapStats, VoxelMapSnapshot
from xmask3d_ros.mapping.voxel_map import LocalVoxelMap

__all__ = [
    "IntegrationStats",
    "LocalVoxelMap",
    "MapStats",
    "VoxelMapSnapshot",
    "pack_keys",
    "point_keys",
    "unpack_keys",
]
