"""Vectorised rigid transforms (SE(3)) with ROS quaternion order (x, y, z, w).

Conventions:
- ``T_a_b`` maps points expressed in frame ``b`` into frame ``a`` (``p_a = T_a_b.apply(p_b)``),
  so ``T_a_c = T_a_b @ T_b_c``.
- Quaternions are ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``, Hamilton product.
- Quaternion inputs are validated like tf2 does on ``setTransform``: non-finite values raise
  ``ValueError``; a squared norm within ``QUAT_NORM_TOLERANCE`` of 1 is silently normalised
  (float32 wire data is never exactly unit); anything further from unit (e.g. an all-zero
  quaternion from a mis-filled message) raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "QUAT_NORM_TOLERANCE",
    "ROTATION_TOLERANCE",
    "SE3",
    "is_valid_pose",
    "matrix_to_quaternion",
    "normalize_quaternion",
    "quaternion_to_matrix",
    "slerp",
]

# tf2's QUATERNION_NORMALIZATION_TOLERANCE on |x^2 + y^2 + z^2 + w^2 - 1| (setTransform rejects
# beyond it).
QUAT_NORM_TOLERANCE = 1e-2
# Max |R^T R - I| entry (and |det R - 1|) accepted for a rotation matrix; ScanNet pose files
# carry ~6 significant digits, so orthonormality errors of ~1e-6 are normal.
ROTATION_TOLERANCE = 1e-4

FloatArray = npt.NDArray[np.floating[Any]]


def normalize_quaternion(q: npt.ArrayLike, *, tolerance: float = QUAT_NORM_TOLERANCE) -> FloatArray:
    """(..., 4) xyzw -> (..., 4) float64 unit quaternions.

    Raises ValueError on non-finite input or a squared norm further than ``tolerance`` from 1.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have shape (..., 4) in (x, y, z, w) order, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"quaternion contains non-finite values: {q.tolist()}")
    norm2 = np.sum(q * q, axis=-1, keepdims=True)
    if np.any(np.abs(norm2 - 1.0) > tolerance):
        bad = np.ravel(np.sqrt(norm2))[:4].tolist()
        raise ValueError(
            f"quaternion is not unit (norm {bad}; squared norm must be within {tolerance} of 1, "
            f"as tf2 requires); expected (x, y, z, w), got {np.reshape(q, (-1, 4))[:4].tolist()}"
        )
    return q / np.sqrt(norm2)


def quaternion_to_matrix(q: npt.ArrayLike) -> FloatArray:
    """(..., 4) xyzw quaternions -> (..., 3, 3) float64 rotation matrices (validated, normalised)."""
    q = normalize_quaternion(q)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        [1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)],
        [2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)],
        [2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _check_rotation(R: FloatArray, tolerance: float) -> None:
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrix must have shape (..., 3, 3), got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("rotation matrix contains non-finite values")
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(initial=0.0)
    det = np.linalg.det(R) if R.size else np.ones(R.shape[:-2])
    if err > tolerance or np.any(np.abs(det - 1.0) > tolerance):
        raise ValueError(
            f"not a rotation matrix: max |R^T R - I| = {err:.3g}, det = {np.ravel(det)[:4].tolist()} "
            f"(tolerance {tolerance})"
        )


def matrix_to_quaternion(R: npt.ArrayLike, *, tolerance: float = ROTATION_TOLERANCE) -> FloatArray:
    """(..., 3, 3) rotation matrices -> (..., 4) float64 xyzw quaternions, unit norm, w >= 0.

    Shepperd's method: each matrix uses the branch with the largest pivot, so it is stable near
    180-degree rotations. Raises ValueError if an input is not a rotation within ``tolerance``.
    """
    R = np.asarray(R, dtype=np.float64)
    _check_rotation(R, tolerance)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    # Candidate 4*q_i^2 for each branch: (w, x, y, z).
    pivots = np.stack(
        [1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1
    )
    branch = np.argmax(pivots, axis=-1)
    s = np.sqrt(np.maximum(np.take_along_axis(pivots, branch[..., None], -1)[..., 0], 1e-300))
    r = R
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    half = 0.5 * s
    inv = 0.5 / s
    cand = np.stack(
        [
            np.stack([d21 * inv, d02 * inv, d10 * inv, half], -1),  # w largest
            np.stack([half, s01 * inv, s02 * inv, d21 * inv], -1),  # x largest
            np.stack([s01 * inv, half, s12 * inv, d02 * inv], -1),  # y largest
            np.stack([s02 * inv, s12 * inv, half, d10 * inv], -1),  # z largest
        ],
        axis=-2,
    )
    q = np.take_along_axis(cand, branch[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def slerp(q0: npt.ArrayLike, q1: npt.ArrayLike, alpha: npt.ArrayLike) -> FloatArray:
    """Spherical linear interpolation of xyzw quaternions, broadcasting over leading axes.

    ``alpha`` = 0 gives ``q0``, 1 gives ``q1`` (up to sign); the shorter arc is taken. Nearly
    parallel inputs fall back to normalised lerp (the slerp weights are 0/0 there).
    Returns (..., 4) float64 unit quaternions.
    """
    a = normalize_quaternion(q0)
    b = normalize_quaternion(q1)
    t = np.asarray(alpha, dtype=np.float64)[..., None]
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0, -b, b)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    out = w0 * a + w1 * b
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def is_valid_pose(T: npt.ArrayLike, *, tolerance: float = ROTATION_TOLERANCE) -> Any:
    """Whether (..., 4, 4) matrices are finite rigid transforms; returns bool or a bool array.

    ScanNet marks frames without tracking with ``-inf`` pose matrices; those, NaNs, a bottom row
    other than (0, 0, 0, 1) and non-orthonormal rotations are all invalid.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"pose must have shape (..., 4, 4), got {T.shape}")
    finite = np.all(np.isfinite(T), axis=(-2, -1))
    Tc = np.where(finite[..., None, None], T, np.eye(4))  # keep the linear algebra NaN-free
    bottom = np.all(np.abs(Tc[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])) <= tolerance, axis=-1)
    R = Tc[..., :3, :3]
    ortho = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-2, -1)) <= tolerance
    det_ok = np.abs(np.linalg.det(R) - 1.0) <= tolerance
    valid = finite & bottom & ortho & det_ok
    return bool(valid) if valid.ndim == 0 else valid


def _readonly(a: FloatArray) -> FloatArray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class SE3:
    """A rigid transform ``T_a_b``: ``p_a = rotation @ p_b + translation``.

    Attributes are read-only float64 arrays: ``rotation`` (3, 3), ``translation`` (3,). Construct
    through the classmethods, which validate; the raw constructor only checks shapes/finiteness.
    """

    rotation: FloatArray  # (3, 3) float64, orthonormal, det +1
    translation: FloatArray  # (3,) float64, metres

    def __post_init__(self) -> None:
        R = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64)
        if R.shape != (3, 3) or t.shape != (3,):
            raise ValueError(f"SE3 needs rotation (3, 3) and translation (3,), got {R.shape}, {t.shape}")
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise ValueError("SE3 rotation/translation contain non-finite values")
        object.__setattr__(self, "rotation", _readonly(R))
        object.__setattr__(self, "translation", _readonly(t))

    @classmethod
    def _trusted(cls, R: FloatArray, t: FloatArray) -> SE3:
        """Internal fast path for already-validated float64 arrays the caller no longer uses."""
        obj = object.__new__(cls)
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(obj, "rotation", R)
        object.__setattr__(obj, "translation", t)
        return obj

    @classmethod
    def identity(cls) -> SE3:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, T: npt.ArrayLike, *, tolerance: float = ROTATION_TOLERANCE) -> SE3:
        """From a (4, 4) homogeneous matrix; ValueError names why it is not a rigid transform."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"expected a (4, 4) matrix, got shape {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError("pose matrix contains non-finite values (ScanNet marks lost tracking with -inf)")
        if np.abs(T[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tolerance:
            raise ValueError(f"pose matrix bottom row must be (0, 0, 0, 1), got {T[3].tolist()}")
        _check_rotation(T[:3, :3], tolerance)
        return cls(T[:3, :3], T[:3, 3])

    @classmethod
    def from_quat_trans(cls, q_xyzw: npt.ArrayLike, t: npt.ArrayLike) -> SE3:
        """From an xyzw quaternion (normalised per module rules) and a (3,) translation."""
        return cls(quaternion_to_matrix(q_xyzw), np.asarray(t, dtype=np.float64))

    @property
    def matrix(self) -> FloatArray:
        """(4, 4) float64 homogeneous matrix (a fresh, writable copy)."""
        T = np.eye(4)
        T[:3, :3] = self.rotation
        T[:3, 3] = self.translation
        return T

    @property
    def quaternion(self) -> FloatArray:
        """(4,) float64 xyzw, unit, w >= 0."""
        return matrix_to_quaternion(self.rotation, tolerance=1e-3)

    def inverse(self) -> SE3:
        Rt = self.rotation.T
        return SE3(Rt, -Rt @ self.translation)

    def __matmul__(self, other: SE3) -> SE3:
        if not isinstance(other, SE3):
            return NotImplemented
        return SE3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def apply(self, points: npt.ArrayLike) -> FloatArray:
        """Transform (..., 3) points; float32 in -> float32 out (computed in float32), else float64."""
        p = np.asarray(points)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {p.shape}")
        dtype = np.float32 if p.dtype == np.float32 else np.float64
        p = p.astype(dtype, copy=False)
        out = p @ self.rotation.T.astype(dtype)
        out += self.translation.astype(dtype)
        return out

    @staticmethod
    def interpolate(a: SE3, b: SE3, alpha: float) -> SE3:
        """Slerp the rotation and lerp the translation; ``alpha`` 0 -> ``a``, 1 -> ``b``."""
        q = slerp(a.quaternion, b.quaternion, alpha)
        t = (1.0 - alpha) * a.translation + alpha * b.translation
        return SE3(quaternion_to_matrix(q), t)

    def allclose(self, other: SE3, *, atol: float = 1e-9) -> bool:
        """Element-wise closeness of the two 4x4 matrices."""
        return bool(np.allclose(self.matrix, other.matrix, atol=atol, rtol=0.0))

    def __repr__(self) -> str:
        q = np.round(self.quaternion, 6).tolist()
        t = np.round(self.translation, 6).tolist()
        return f"SE3(q_xyzw={q}, t={t})"
