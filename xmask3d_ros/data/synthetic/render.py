"""Vectorised ray casting of primitives into RGB-D + label + instance images.

Camera convention: REP-103 optical frame (x right, y down, z forward), pose ``T_world_cam``
(camera-to-world 4x4), pinhole ``K`` with pixel centres at integer coordinates (OpenCV /
ScanNet). Rays are scaled to unit camera-z, so the hit parameter is the metric z-depth that a
depth camera reports. The loop runs over primitives, each tested against all rays of its
screen-space bounding rectangle at once (``cull=True``); ``cull=False`` tests every ray against
every primitive (the naive reference used by the benchmark).

Lighting is view-independent (ambient + Lambert from a point light with soft fall-off), so the
colour of a surface point is the same in every frame and in the ground-truth point cloud.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.synthetic.shapes import Part, Primitive
from xmask3d_ros.data.synthetic.texture import NoiseField, albedo

__all__ = ["Light", "camera_rays", "raycast", "render_parts", "shade_points", "screen_rect"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Light:
    """A point light (world position, m) plus ambient term; colours scale the albedo."""

    position: tuple[float, float, float]
    ambient: float = 0.45
    diffuse: float = 0.75
    falloff_m: float = 4.0  # distance at which the diffuse term has dropped to half
    tint: tuple[float, float, float] = (1.0, 0.97, 0.92)  # warm indoor light


def camera_rays(T_world_cam: npt.ArrayLike, K: npt.ArrayLike, width: int, height: int
                ) -> tuple[F64, F32]:
    """World origin (3,) float64 and planar (3, H, W) float32 directions with unit camera-z."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    v = ((np.arange(height) - K[1, 2]) / K[1, 1])[:, None]
    u = (np.arange(width) - K[0, 2])[None, :] / K[0, 0] - K[0, 1] * v / K[0, 0]  # skew: 0 in practice
    R = T[:3, :3]
    dirs = np.empty((3, height, width), dtype=np.float32)
    for k in range(3):
        dirs[k] = R[k, 0] * u + R[k, 1] * v + R[k, 2]
    return T[:3, 3].copy(), dirs


def screen_rect(prim: Primitive, T_world_cam: F64, K: F64, width: int, height: int,
                near: float) -> tuple[int, int, int, int] | None:
    """Pixel rectangle ``(v0, v1, u0, u1)`` (end-exclusive) that can see ``prim``, or None.

    Conservative: the projection of the 8 bounding-box corners; a box straddling the near plane
    gets the full image.
    """
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    pc = (prim.corners() - t) @ R
    z = pc[:, 2]
    if np.all(z <= near):
        return None
    if np.any(z <= near):
        return 0, height, 0, width
    u = K[0, 0] * pc[:, 0] / z + K[0, 1] * pc[:, 1] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    u0, u1 = max(0, int(np.floor(u.min()))), min(width, int(np.ceil(u.max())) + 1)
    v0, v1 = max(0, int(np.floor(v.min()))), min(height, int(np.ceil(v.max())) + 1)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def raycast(prims: Sequence[Primitive], T_world_cam: npt.ArrayLike, K: npt.ArrayLike,
            width: int, height: int, *, near: float = 0.05, cull: bool = True
            ) -> tuple[F32, npt.NDArray[np.int32], F64, F32]:
    """First hit per pixel.

    Returns ``depth`` (H, W) float32 (inf on a miss), ``index`` (H, W) int32 of the hit
    primitive (-1 on a miss), and the rays (origin (3,), planar directions (3, H, W)).
    """
    T = np.asarray(T_world_cam, dtype=np.float64)
    Km = np.asarray(K, dtype=np.float64)
    origin, dirs = camera_rays(T, Km, width, height)
    best = np.full((height, width), np.inf, dtype=np.float32)
    index = np.full((height, width), -1, dtype=np.int32)
    for k, prim in enumerate(prims):
        rect = screen_rect(prim, T, Km, width, height, near) if cull else (0, height, 0, width)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        t = prim.intersect(origin, dirs[:, v0:v1, u0:u1], near)
        closer = t < best[v0:v1, u0:u1]
        best[v0:v1, u0:u1][closer] = t[closer]
        index[v0:v1, u0:u1][closer] = k
    return best, index, origin, dirs


def shade_points(part: Part, points: F64, normals: F64, light: Light, noise: NoiseField,
                 local: F64 | None = None) -> F32:
    """Lit colour (N, 3) float32 in [0, 1] of world points on ``part`` with outward normals
    (``local``: the same points in the primitive frame, when already known)."""
    prim = part.prim
    q = prim.to_local(points) if local is None else local
    base = albedo(part.material, q, prim.half, noise)
    to_light = np.asarray(light.position) - points
    dist = np.linalg.norm(to_light, axis=1)
    lambert = np.maximum((normals * to_light).sum(1) / np.maximum(dist, 1e-9), 0.0)
    gain = light.ambient + light.diffuse * lambert / (1.0 + (dist / light.falloff_m) ** 2)
    lit = base * (gain[:, None] * np.asarray(light.tint)).astype(np.float32)
    return np.clip(lit, 0.0, 1.0).astype(np.float32, copy=False)


def render_parts(parts: Sequence[Part], light: Light, noise: NoiseField,
                 T_world_cam: npt.ArrayLike, K: npt.ArrayLike, width: int, height: int, *,
                 near: float = 0.05, cull: bool = True
                 ) -> tuple[npt.NDArray[np.uint8], F32, npt.NDArray[np.uint16],
                            npt.NDArray[np.uint16]]:
    """Render ``parts``: rgb (H, W, 3) uint8, depth (H, W) float32 m (0 = no hit),
    label (H, W) uint16 raw class id (0 = no hit), instance (H, W) uint16 (0 = no hit)."""
    depth, index, origin, dirs = raycast(
        [p.prim for p in parts], T_world_cam, K, width, height, near=near, cull=cull
    )
    flat = index.ravel()
    hit = np.flatnonzero(flat >= 0)
    rgb = np.zeros((height * width, 3), dtype=np.uint8)
    if hit.size:
        # Group hit pixels by primitive once (stable sort), then shade each group vectorised.
        order = hit[np.argsort(flat[hit], kind="stable")]
        ids = flat[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        dep = depth.ravel()[order].astype(np.float64)
        pts = np.empty((len(order), 3))
        for k in range(3):  # gather per plane: fancy-indexing (3, N) then transposing is slow
            pts[:, k] = origin[k] + dep * dirs[k].ravel()[order]
        for s, e in zip(starts, ends):
            part = parts[ids[s]]
            p = pts[s:e]
            q = part.prim.to_local(p)
            n = part.prim.normal_local(q) @ part.prim.R.T
            col = shade_points(part, p, n, light, noise, q)
            rgb[order[s:e]] = np.rint(col * 255.0).astype(np.uint8)
    label_lut = np.array([0] + [p.label_id for p in parts], dtype=np.uint16)
    inst_lut = np.array([0] + [p.instance_id for p in parts], dtype=np.uint16)
    label = label_lut[index + 1]
    instance = inst_lut[index + 1]
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    return rgb.reshape(height, width, 3), depth, label, instance
