"""Geometric primitives with analytic ray intersection, normals, signed distance and sampling.

Each primitive lives in its own local frame: ``p_world = R @ p_local + center``. Boxes are
centred with half-extents ``half``; cylinders have their axis along local z (radius ``radius``,
half-height ``half[2]``); quads are rectangles in the local z = 0 plane with normal local +z.
Ray directions are planar float32 arrays ``(3, ...)`` in world (x, y, z planes: elementwise
maths on contiguous planes is much faster than (N, 3) rows); :meth:`Primitive.intersect` returns the ray
parameter ``t`` of the first hit beyond ``near`` (``inf`` on a miss), so with directions scaled
to unit camera-z, ``t`` is the depth. Solids are hit from outside only (the camera never sits
inside furniture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.synthetic.texture import Material

__all__ = ["Box", "Cylinder", "Part", "Primitive", "Quad", "rot_z"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
_TINY = np.float32(1e-12)


def rot_z(yaw: float) -> F64:
    """(3, 3) rotation about world z by ``yaw`` radians."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _nonzero(d: F32) -> F32:
    """Replace exact zeros so slab divisions give +-inf instead of NaN."""
    return np.where(d == 0.0, _TINY, d)


def _grid(len_a: float, len_b: float, spacing: float, rng: np.random.Generator) -> F64:
    """Stratified-jittered (M, 2) samples over a centred ``len_a x len_b`` rectangle."""
    na, nb = max(1, math.ceil(len_a / spacing)), max(1, math.ceil(len_b / spacing))
    ia, ib = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    cells = np.stack([ia.ravel(), ib.ravel()], 1).astype(np.float64)
    uv = (cells + rng.random(cells.shape)) / np.array([na, nb])
    return (uv - 0.5) * np.array([len_a, len_b])


@dataclass(frozen=True, eq=False)
class Primitive:
    """Base class: a rigidly placed shape. ``half`` (3,) bounds the shape in its local frame."""

    center: F64  # (3,) world position of the local origin
    half: F64  # (3,) half-extents of the local bounding box
    R: F64  # (3, 3) local -> world rotation

    def to_local(self, p: npt.ArrayLike) -> F64:
        """(N, 3) world points -> local frame."""
        d = np.asarray(p, dtype=np.float64) - self.center
        # Column-wise products: much faster than an (N, 3) @ (3, 3) matmul for large N.
        R = self.R
        return np.stack([d[:, 0] * R[0, k] + d[:, 1] * R[1, k] + d[:, 2] * R[2, k] for k in range(3)], 1)

    def corners(self) -> F64:
        """(8, 3) world corners of the local bounding box (for culling and AABBs)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        return (signs * self.half) @ self.R.T + self.center

    def aabb(self) -> tuple[F64, F64]:
        """World axis-aligned bounds ``(lo (3,), hi (3,))``."""
        c = self.corners()
        return c.min(0), c.max(0)

    def _local_rays(self, origin: F64, dirs: F32) -> tuple[F64, list[F32]]:
        """Origin (3,) and planar directions [dx, dy, dz] (each (...)) in the local frame."""
        o = (origin - self.center) @ self.R
        R = self.R.astype(np.float32)
        d = [R[0, k] * dirs[0] + R[1, k] * dirs[1] + R[2, k] * dirs[2] for k in range(3)]
        return o, d

    def intersect(self, origin: F64, dirs: F32, near: float) -> F32:  # pragma: no cover
        raise NotImplementedError

    def normal_local(self, q: F64) -> F64:  # pragma: no cover
        """(N, 3) outward unit normals in the local frame at local surface points ``q``."""
        raise NotImplementedError

    def normal_at(self, p: npt.ArrayLike) -> F64:
        """(N, 3) outward unit normals in world at world surface points."""
        return self.normal_local(self.to_local(p)) @ self.R.T

    def sdf(self, p: npt.ArrayLike) -> F64:  # pragma: no cover
        raise NotImplementedError

    def sample_local(self, spacing: float, rng: np.random.Generator) -> tuple[F64, F64]:
        raise NotImplementedError  # pragma: no cover

    def sample_surface(self, spacing_m: float, rng: np.random.Generator) -> tuple[F64, F64]:
        """About one point per ``spacing_m^2`` of surface: world ``(points (M,3), normals (M,3))``."""
        p, n = self.sample_local(spacing_m, rng)
        return p @ self.R.T + self.center, n @ self.R.T

    def contains(self, p: npt.ArrayLike, margin: float = 0.0) -> npt.NDArray[np.bool_]:
        """(N,) True where points are inside the solid by more than ``margin`` (quads: never)."""
        return self.sdf(p) < -margin


@dataclass(frozen=True, eq=False)
class Box(Primitive):
    """Oriented box centred at ``center`` with half-extents ``half``."""

    def intersect(self, origin: F64, dirs: F32, near: float) -> F32:
        o, d = self._local_rays(origin, dirs)
        t_near = np.full(d[0].shape, -np.inf, dtype=np.float32)
        t_far = np.full(d[0].shape, np.inf, dtype=np.float32)
        for k in range(3):  # slab method, one axis at a time on planar arrays
            inv = 1.0 / _nonzero(d[k])
            t1 = (-self.half[k] - o[k]) * inv
            t2 = (self.half[k] - o[k]) * inv
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
        t = np.where(t_near > near, t_near, t_far)
        return np.where((t_far >= t_near) & (t > near), t, np.float32(np.inf))

    def normal_local(self, q: F64) -> F64:
        ax = np.argmax(np.abs(q) / self.half, axis=1)
        n = np.zeros_like(q)
        rows = np.arange(len(q))
        n[rows, ax] = np.sign(q[rows, ax])
        return n

    def sdf(self, p: npt.ArrayLike) -> F64:
        q = np.abs(self.to_local(p)) - self.half
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        return outside + np.minimum(q.max(axis=1), 0.0)

    def sample_local(self, spacing: float, rng: np.random.Generator) -> tuple[F64, F64]:
        pts, nrm = [], []
        for k in range(3):
            i, j = [a for a in range(3) if a != k]
            for s in (-1.0, 1.0):
                uv = _grid(2 * self.half[i], 2 * self.half[j], spacing, rng)
                p = np.zeros((len(uv), 3))
                p[:, i], p[:, j], p[:, k] = uv[:, 0], uv[:, 1], s * self.half[k]
                n = np.zeros_like(p)
                n[:, k] = s
                pts.append(p)
                nrm.append(n)
        return np.concatenate(pts), np.concatenate(nrm)


@dataclass(frozen=True, eq=False)
class Cylinder(Primitive):
    """Capped cylinder, axis local z, radius ``half[0]`` (= ``half[1]``), half-height ``half[2]``."""

    @property
    def radius(self) -> float:
        return float(self.half[0])

    def intersect(self, origin: F64, dirs: F32, near: float) -> F32:
        o, (dx, dy, dz) = self._local_rays(origin, dirs)
        r, hh = float(self.half[0]), float(self.half[2])
        a = np.maximum(dx * dx + dy * dy, _TINY)
        b = o[0] * dx + o[1] * dy
        c = o[0] ** 2 + o[1] ** 2 - r * r
        disc = b * b - a * c
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z_side = o[2] + t_side * dz
        best = np.where((disc >= 0) & (np.abs(z_side) <= hh) & (t_side > near), t_side, np.inf)
        dz = _nonzero(dz)
        for s in (-hh, hh):
            tc = (s - o[2]) / dz
            xc, yc = o[0] + tc * dx, o[1] + tc * dy
            ok = (xc * xc + yc * yc <= r * r) & (tc > near)
            best = np.where(ok & (tc < best), tc, best)
        return best.astype(np.float32, copy=False)

    def normal_local(self, q: F64) -> F64:
        rho = np.hypot(q[:, 0], q[:, 1])
        cap = np.abs(np.abs(q[:, 2]) - self.half[2]) < np.abs(rho - self.half[0])
        safe = np.maximum(rho, 1e-12)
        n = np.stack([q[:, 0] / safe, q[:, 1] / safe, np.zeros_like(rho)], 1)
        n[cap] = 0.0
        n[cap, 2] = np.sign(q[cap, 2])
        return n

    def sdf(self, p: npt.ArrayLike) -> F64:
        q = self.to_local(p)
        d = np.stack([np.hypot(q[:, 0], q[:, 1]) - self.half[0], np.abs(q[:, 2]) - self.half[2]], 1)
        return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(axis=1), 0.0)

    def sample_local(self, spacing: float, rng: np.random.Generator) -> tuple[F64, F64]:
        r, hh = self.half[0], self.half[2]
        side = _grid(2 * math.pi * r, 2 * hh, spacing, rng)
        theta = side[:, 0] / r
        p_side = np.stack([r * np.cos(theta), r * np.sin(theta), side[:, 1]], 1)
        n_side = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], 1)
        pts, nrm = [p_side], [n_side]
        for s in (-1.0, 1.0):
            xy = _grid(2 * r, 2 * r, spacing, rng)
            xy = xy[np.hypot(xy[:, 0], xy[:, 1]) <= r]
            pts.append(np.column_stack([xy, np.full(len(xy), s * hh)]))
            nrm.append(np.tile([0.0, 0.0, s], (len(xy), 1)))
        return np.concatenate(pts), np.concatenate(nrm)


@dataclass(frozen=True, eq=False)
class Quad(Primitive):
    """Rectangle ``|x| <= half[0], |y| <= half[1]`` in the local z = 0 plane, normal local +z."""

    @staticmethod
    def make(center: npt.ArrayLike, normal: npt.ArrayLike, u_axis: npt.ArrayLike,
             half_u: float, half_v: float) -> Quad:
        """A quad from its centre, unit normal and in-plane u axis (v = normal x u)."""
        n = np.asarray(normal, dtype=np.float64)
        u = np.asarray(u_axis, dtype=np.float64)
        R = np.column_stack([u, np.cross(n, u), n])
        return Quad(np.asarray(center, dtype=np.float64), np.array([half_u, half_v, 0.0]), R)

    def intersect(self, origin: F64, dirs: F32, near: float) -> F32:
        o, (dx, dy, dz) = self._local_rays(origin, dirs)
        t = -o[2] / _nonzero(dz)
        x, y = o[0] + t * dx, o[1] + t * dy
        ok = (np.abs(x) <= self.half[0]) & (np.abs(y) <= self.half[1]) & (t > near)
        return np.where(ok, t, np.float32(np.inf)).astype(np.float32, copy=False)

    def normal_local(self, q: F64) -> F64:
        return np.broadcast_to(np.array([0.0, 0.0, 1.0]), (len(q), 3)).copy()

    def sdf(self, p: npt.ArrayLike) -> F64:
        q = self.to_local(p)
        dx = np.maximum(np.abs(q[:, 0]) - self.half[0], 0.0)
        dy = np.maximum(np.abs(q[:, 1]) - self.half[1], 0.0)
        return np.sqrt(dx * dx + dy * dy + q[:, 2] ** 2)

    def contains(self, p: npt.ArrayLike, margin: float = 0.0) -> npt.NDArray[np.bool_]:
        return np.zeros(len(np.asarray(p)), dtype=bool)

    def sample_local(self, spacing: float, rng: np.random.Generator) -> tuple[F64, F64]:
        uv = _grid(2 * self.half[0], 2 * self.half[1], spacing, rng)
        p = np.column_stack([uv, np.zeros(len(uv))])
        return p, np.tile([0.0, 0.0, 1.0], (len(p), 1))


@dataclass(frozen=True, eq=False)
class Part:
    """A primitive with its semantics: raw class id (see data/classes.py), instance and texture."""

    prim: Primitive
    material: Material
    label_id: int  # raw (NYU40-style) class id
    instance_id: int  # 1.. per object; 0 is reserved for "nothing hit"
