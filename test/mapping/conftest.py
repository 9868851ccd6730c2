"""Helpers of the mapping tests: an exact ray-caster of axis-aligned boxes and look-at poses.

Exposed as fixtures because the test folders are not packages (pytest importlib mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3

# 160x120 with the field of view of a 640x480 Kinect-style camera (fx 577.87 / 4).
SMALL_CAM = PinholeCamera(fx=144.47, fy=144.47, cx=79.5, cy=59.5, width=160, height=120)


@dataclasses.dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    rgb: tuple[int, int, int] = (200, 120, 40)


@dataclasses.dataclass(frozen=True)
class BoxWorld:
    """A room (the inside of ``room``) with solid axis-aligned boxes in it."""

    room: Box
    boxes: tuple[Box, ...] = ()

    def moved(self, index: int, offset: Sequence[float]) -> BoxWorld:
        b = self.boxes[index]
        o = np.asarray(offset, dtype=float)
        nb = Box(tuple(np.add(b.lo, o)), tuple(np.add(b.hi, o)), b.rgb)  # type: ignore[arg-type]
        return BoxWorld(self.room, self.boxes[:index] + (nb,) + self.boxes[index + 1 :])

    def render(
        self, cam: PinholeCamera, T_map_cam: SE3, *, noise_m: float = 0.0, seed: int = 0
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        """Exact z-depth (float32 metres) and a colour image (box colour, room checkerboard)."""
        u = (np.arange(cam.width) - cam.cx) / cam.fx
        v = (np.arange(cam.height) - cam.cy) / cam.fy
        d_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)
        d = d_cam.reshape(-1, 3) @ T_map_cam.rotation.T  # unit camera-z, so t is z-depth
        o = T_map_cam.translation
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = (np.asarray(self.room.lo) - o) * inv
            t2 = (np.asarray(self.room.hi) - o) * inv
            depth = np.min(np.maximum(t1, t2), axis=1)  # exit point of the room
            color = np.zeros((d.shape[0], 3))
            p = o + d * depth[:, None]
            checker = (np.floor(p / 0.5).sum(axis=1) % 2)[:, None]
            color[:] = 90 + 80 * checker
            for b in self.boxes:
                t1 = (np.asarray(b.lo) - o) * inv
                t2 = (np.asarray(b.hi) - o) * inv
                tn = np.max(np.minimum(t1, t2), axis=1)
                tf = np.min(np.maximum(t1, t2), axis=1)
                hit = (tf >= tn) & (tn > 1e-6) & (tn < depth)
                depth = np.where(hit, tn, depth)
                color[hit] = b.rgb
        depth = depth.reshape(cam.height, cam.width)
        if noise_m:
            depth = depth + np.random.default_rng(seed).normal(0.0, noise_m, depth.shape)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        return color.reshape(cam.height, cam.width, 3).astype(np.uint8), depth

    def posed(self, cam: PinholeCamera, T_map_cam: SE3, stamp_ns: int, **kw: Any) -> PosedFrame:
        rgb, depth = self.render(cam, T_map_cam, **kw)
        return PosedFrame(RgbdFrame(rgb, depth, cam, stamp_ns, "cam_optical"), T_map_cam)


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, 0, 1)) -> SE3:
    """T_map_cam of an optical frame (z forward, x right, y down) at ``eye`` looking at ``target``."""
    eye_a = np.asarray(eye, dtype=float)
    fwd = np.asarray(target, dtype=float) - eye_a
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=float))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return SE3(np.stack([right, down, fwd], axis=1), eye_a)


@pytest.fixture
def small_cam() -> PinholeCamera:
    return SMALL_CAM


@pytest.fixture
def box_world() -> Callable[..., BoxWorld]:
    """Factory: ``box_world(room=Box(...), boxes=(Box(...), ...))``."""

    def make(room: Box | None = None, boxes: Sequence[Box] = ()) -> BoxWorld:
        return BoxWorld(room or Box((-3.0, -3.0, 0.0), (3.0, 3.0, 2.5)), tuple(boxes))

    return make


@pytest.fixture
def box_cls() -> type[Box]:
    return Box


@pytest.fixture
def pose_look_at() -> Callable[..., SE3]:
    return look_at


def brute_force_voxels(points: npt.NDArray[np.float32], colors: npt.NDArray[np.uint8], voxel: float
                       ) -> dict[str, npt.NDArray[Any]]:
    """Independent group-by: np.unique over (N, 3) int coords, means by np.add.at, sorted by key."""
    coords = np.floor(points / np.float32(voxel)).astype(np.int64)
    uniq, inv, cnt = np.unique(coords, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    psum = np.zeros((uniq.shape[0], 3))
    csum = np.zeros((uniq.shape[0], 3))
    np.add.at(psum, inv, points.astype(np.float64))
    np.add.at(csum, inv, colors.astype(np.float64))
    return {"keys": uniq, "positions": psum / cnt[:, None], "colors": csum / cnt[:, None],
            "counts": cnt}


@pytest.fixture
def brute_force() -> Callable[..., dict[str, npt.NDArray[Any]]]:
    return brute_force_voxels
