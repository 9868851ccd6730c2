"""Write synthetic rooms in the ScanNet on-disk layout (OpenScene preprocessing).

``ScanNetSceneWriter`` takes rendered frames one by one (so a caller rendering once can feed
several writers); :func:`export_scannet_scene` renders and writes a whole scene. Label images
hold raw ids (NYU40 where the class exists there, see data/classes.py); the 3D file holds the
ground-truth surface samples with ScanNet-20 labels (synthetic-only classes become 255, as
their real counterparts do).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.scannet_layout import (
    read_matrix,
    scale_intrinsics,
    scene_2d_dir,
    scene_3d_path,
    write_intrinsics,
    write_scannet_2d_frame,
    write_scannet_3d,
)
from xmask3d_ros.data.synthetic.scene import Frame, Room, SurfacePoints, render_frame

__all__ = ["ScanNetSceneWriter", "export_scannet_scene"]


class ScanNetSceneWriter:
    """Writes one scene under ``root`` (``scannet_2d/<scene>/...``, ``scannet_3d/<split>/...``)."""

    def __init__(self, root: str | Path, scene: str, *, split: str = "train",
                 jpeg_quality: int = 95) -> None:
        self.root, self.scene, self.split = Path(root), scene, split
        self.jpeg_quality = jpeg_quality
        self.scene_dir = scene_2d_dir(self.root, scene)
        self.frames_written = 0

    def write_intrinsics(self, K: npt.ArrayLike) -> Path:
        """The global ``scannet_2d/intrinsics.txt`` when absent or equal, else a per-scene one."""
        global_path = self.root / "scannet_2d" / "intrinsics.txt"
        K4 = np.eye(4)
        K4[:3, :3] = np.asarray(K, dtype=np.float64)
        if not global_path.is_file():
            return write_intrinsics(global_path, K)
        if np.allclose(read_matrix(global_path), K4, atol=1e-6):
            return global_path
        return write_intrinsics(self.scene_dir / "intrinsics.txt", K)

    def write_frame(self, index: int, frame: Frame, color: npt.ArrayLike | None = None) -> None:
        """Frame ``index``; ``color`` replaces ``frame.rgb`` (a colour image of another size)."""
        write_scannet_2d_frame(
            self.scene_dir, index, rgb=frame.rgb if color is None else color,
            depth_m=frame.depth_m, T_world_cam=frame.T_world_cam, label=frame.label,
            jpeg_quality=self.jpeg_quality,
        )
        self.frames_written += 1

    def write_points(self, points: SurfacePoints) -> Path:
        """The scene's 3D file from ground-truth surface samples."""
        return write_scannet_3d(scene_3d_path(self.root, self.split, self.scene),
                                points.points, points.colors, points.scannet20())


def export_scannet_scene(root: str | Path, scene: str, room: Room, n_frames: int, *,
                         width: int | None = None, height: int | None = None,
                         color_size: tuple[int, int] | None = None,
                         progress: Callable[[int], None] | None = None) -> ScanNetSceneWriter:
    """Render ``n_frames`` of ``room`` and write them plus its 3D file in the ScanNet layout.

    ``color_size`` (w, h) renders the colour images at another resolution than depth and
    labels (as raw ScanNet exports have); ``intrinsics.txt`` then describes the colour image.
    """
    cam = room.cfg.camera
    w, h = width or cam.width, height or cam.height
    K = room.intrinsics(w, h)
    writer = ScanNetSceneWriter(root, scene, split=room.cfg.scannet.split,
                                jpeg_quality=room.cfg.scannet.jpeg_quality)
    K_color = K if color_size is None else scale_intrinsics(K, color_size[0] / w, color_size[1] / h)
    writer.write_intrinsics(K_color)
    for i, T in enumerate(room.camera_poses(n_frames)):
        frame = render_frame(room, T, K, w, h)
        color = None
        if color_size is not None:
            color = render_frame(room, T, K_color, color_size[0], color_size[1]).rgb
        writer.write_frame(i, frame, color)
        if progress is not None:
            progress(1)
    writer.write_points(room.sample_surface_points())
    return writer
