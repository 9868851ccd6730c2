"""Synthetic rooms: generation, frame rendering and labelled ground-truth surface points.

``generate_room(seed, cfg)`` draws a room (layout, materials, camera path) from independent
seeded streams, so e.g. a different trajectory config leaves the furniture unchanged.
``render_frame(room, T_world_cam, K, width, height)`` renders one RGB-D frame with per-pixel raw
class ids and instance ids; ``room.sample_surface_points(spacing_m)`` gives the labelled,
coloured surface samples that serve as the scene's ground truth (ScanNet ``.pth`` points, bag
``.gt.npz``). Frames: world z-up (the room spans [0, Lx] x [0, Ly] x [0, H]), cameras REP-103
optical, poses camera-to-world.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.classes import raw_to_scannet20
from xmask3d_ros.data.synthetic.layout import Layout, generate_layout
from xmask3d_ros.data.synthetic.render import render_parts, shade_points
from xmask3d_ros.data.synthetic.shapes import Part, Quad
from xmask3d_ros.data.synthetic.texture import NoiseField
from xmask3d_ros.data.synthetic.trajectory import Trajectory, make_trajectory

__all__ = ["Frame", "Room", "SurfacePoints", "default_intrinsics", "generate_room", "render_frame"]

F64 = npt.NDArray[np.float64]
# Offset along the normal used to decide whether a surface sample is exposed (m). Objects stand
# 1 cm off the walls, so 2 cm also drops the hidden wall patch behind them and their backs.
_EXPOSED_EPS_M = 0.02


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered RGB-D frame (all images H x W, same optical frame)."""

    rgb: npt.NDArray[np.uint8]  # (H, W, 3)
    depth_m: npt.NDArray[np.float32]  # (H, W) z-depth in metres, 0 where nothing is hit
    label: npt.NDArray[np.uint16]  # (H, W) raw class id (data/classes.py), 0 = nothing hit
    instance: npt.NDArray[np.uint16]  # (H, W) instance id, 0 = nothing hit
    K: F64  # (3, 3) intrinsics
    T_world_cam: F64  # (4, 4) camera-to-world pose of the optical frame


@dataclass(frozen=True, eq=False)
class SurfacePoints:
    """Labelled, coloured samples of the exposed room surfaces in the world frame."""

    points: npt.NDArray[np.float32]  # (N, 3) m
    colors: npt.NDArray[np.uint8]  # (N, 3) RGB, the colour the renderer gives that point
    normals: npt.NDArray[np.float32]  # (N, 3) unit, outward
    label: npt.NDArray[np.uint16]  # (N,) raw class id
    instance: npt.NDArray[np.uint16]  # (N,) instance id

    def __len__(self) -> int:
        return len(self.points)

    def scannet20(self) -> npt.NDArray[np.uint8]:
        """(N,) ScanNet-20 indices (255 = ignore), as stored in OpenScene ``.pth`` files."""
        return raw_to_scannet20(self.label)


def default_intrinsics(width: int, height: int, focal_px_at_640: float = 577.870605) -> F64:
    """(3, 3) pinhole K: ScanNet's focal length scaled to ``width``, centred principal point."""
    f = focal_px_at_640 * width / 640.0
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Room:
    """A generated room: its layout (parts, instances, light), texture noise and camera path."""

    seed: int
    cfg: SyntheticCfg
    layout: Layout
    noise: NoiseField
    trajectory: Trajectory
    _sample_seed: np.random.SeedSequence

    @property
    def parts(self) -> tuple[Part, ...]:
        return self.layout.parts

    @property
    def size_m(self) -> tuple[float, float, float]:
        return self.layout.size_m

    @property
    def room_type(self) -> str:
        return self.layout.room_type

    @cached_property
    def _solids(self) -> list[tuple[Part, F64, F64]]:
        out = []
        for part in self.parts:
            if not isinstance(part.prim, Quad):
                lo, hi = part.prim.aabb()
                out.append((part, lo, hi))
        return out

    def distance(self, points: npt.ArrayLike) -> F64:
        """(N,) distance (m) from world points to the nearest surface (negative inside a solid)."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return np.min([part.prim.sdf(p) for part in self.parts], axis=0)

    def stamps_s(self, n_frames: int) -> F64:
        """(n,) frame times (s) at the configured fps, starting at 0."""
        return np.arange(n_frames, dtype=np.float64) / self.cfg.camera.fps

    def camera_poses(self, n_frames: int) -> F64:
        """(n, 4, 4) ``T_world_cam`` of the first ``n_frames`` frames."""
        return self.trajectory.poses(self.stamps_s(n_frames))

    def intrinsics(self, width: int | None = None, height: int | None = None) -> F64:
        """(3, 3) K for ``width x height`` (default: the configured camera size)."""
        cam = self.cfg.camera
        return default_intrinsics(width or cam.width, height or cam.height, cam.focal_px_at_640)

    def sample_surface_points(self, spacing_m: float | None = None) -> SurfacePoints:
        """Samples (about one per ``spacing_m^2``) of every exposed surface, labelled and lit.

        A sample is kept when the space 2 cm in front of it (along its normal) is inside the
        room and outside every solid, which drops faces resting on the floor or on each other
        and wall patches hidden behind doors, pictures and furniture. Deterministic per room.
        """
        spacing = spacing_m or self.cfg.ground_truth.point_spacing_m
        rng = np.random.default_rng(self._sample_seed)
        size = np.asarray(self.size_m)
        chunks = []
        for k, part in enumerate(self.parts):
            p, n = part.prim.sample_surface(spacing, rng)
            q = p + _EXPOSED_EPS_M * n
            keep = np.all((q > 0.0) & (q < size), axis=1)
            for other, lo, hi in self._solids:
                if other is part:
                    continue
                near = keep & np.all((q >= lo) & (q <= hi), axis=1)
                if near.any():
                    idx = np.flatnonzero(near)
                    keep[idx[other.prim.contains(q[idx], 1e-6)]] = False
            p, n = p[keep], n[keep]
            col = shade_points(part, p, n, self.layout.light, self.noise)
            chunks.append((p, n, col, part.label_id, part.instance_id, k))
        pts = np.concatenate([c[0] for c in chunks]).astype(np.float32)
        return SurfacePoints(
            points=pts,
            colors=np.rint(np.concatenate([c[2] for c in chunks]) * 255).astype(np.uint8),
            normals=np.concatenate([c[1] for c in chunks]).astype(np.float32),
            label=np.concatenate([np.full(len(c[0]), c[3], np.uint16) for c in chunks]),
            instance=np.concatenate([np.full(len(c[0]), c[4], np.uint16) for c in chunks]),
        )

    def render(self, T_world_cam: npt.ArrayLike, K: npt.ArrayLike | None = None,
               width: int | None = None, height: int | None = None, *, cull: bool = True) -> Frame:
        """Shorthand for :func:`render_frame` with the configured camera defaults."""
        w, h = width or self.cfg.camera.width, height or self.cfg.camera.height
        return render_frame(self, T_world_cam, self.intrinsics(w, h) if K is None else K, w, h,
                            cull=cull)


def generate_room(seed: int, cfg: SyntheticCfg | None = None) -> Room:
    """A deterministic room for ``seed`` (layout, textures, path from independent streams)."""
    cfg = cfg or SyntheticCfg()
    s_layout, s_noise, s_traj, s_sample = np.random.SeedSequence(int(seed)).spawn(4)
    layout = generate_layout(np.random.default_rng(s_layout), cfg.room)
    noise = NoiseField(int(s_noise.generate_state(1)[0]))

    def distance(p: F64) -> F64:
        return np.min([part.prim.sdf(p) for part in layout.parts], axis=0)

    traj = make_trajectory(np.random.default_rng(s_traj), cfg.trajectory, layout.size_m, distance)
    return Room(int(seed), cfg, layout, noise, traj, s_sample)


def render_frame(room: Room, T_world_cam: npt.ArrayLike, K: npt.ArrayLike, width: int,
                 height: int, *, cull: bool = True) -> Frame:
    """Render ``room`` from ``T_world_cam`` (4x4 camera-to-world, optical frame) with ``K``."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    Km = np.asarray(K, dtype=np.float64)
    if T.shape != (4, 4) or Km.shape != (3, 3):
        raise ValueError(f"expected T_world_cam (4, 4) and K (3, 3), got {T.shape} and {Km.shape}")
    rgb, depth, label, inst = render_parts(
        room.parts, room.layout.light, room.noise, T, Km, int(width), int(height),
        near=room.cfg.camera.near_m, cull=cull,
    )
    return Frame(rgb, depth, label, inst, Km.copy(), T.copy())
