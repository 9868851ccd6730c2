"""Procedural synthetic rooms rendered to RGB-D with exact poses, intrinsics and labels.

Modules: ``shapes`` (primitives + analytic ray intersection), ``texture`` (procedural materials),
``render`` (vectorised ray casting), ``furniture`` / ``layout`` (room generation), ``trajectory``
(camera path), ``scene`` (rooms, frames, ground-truth points), ``export`` (ScanNet layout).
"""

from xmask3d_ros.data.synthetic.scene import (
    Frame,
    Room,
    SurfacePoints,
    default_intrinsics,
    generate_room,
    render_frame,
)

__all__ = ["Frame", "Room", "SurfacePoints", "default_intrinsics", "generate_room", "render_frame"]
