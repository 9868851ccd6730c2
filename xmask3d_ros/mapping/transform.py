"""Rigid transforms of float32 point arrays, column by column (no BLAS)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.transforms import SE3

__all__ = ["transform_columns", "transform_points"]


def transform_columns(T: SE3, points: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    """(N, 3) float32 points -> ``T.apply(points)`` as three contiguous float32 columns.

    Same float32 arithmetic as ``SE3.apply`` (up to FMA rounding), without the BLAS call: an
    (N, 3) x (3, 3) GEMM is memory-bound, and OpenBLAS' threads make it 5-30x slower on a loaded
    2-core machine. Columns, because the next steps (voxel keys, sums) work per axis.
    """
    R = T.rotation.astype(np.float32)
    t = T.translation.astype(np.float32)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    tmp = np.empty(points.shape[0], dtype=np.float32)
    out = []
    for i in range(3):
        o = np.multiply(x, R[i, 0], dtype=np.float32)
        o += np.multiply(y, R[i, 1], out=tmp)
        o += np.multiply(z, R[i, 2], out=tmp)
        o += t[i]
        out.append(o)
    return out


def transform_points(T: SE3, points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(N, 3) float32 points -> (N, 3) float32 ``T.apply(points)`` (see :func:`transform_columns`)."""
    out = np.empty((points.shape[0], 3), dtype=np.float32)
    for i, c in enumerate(transform_columns(T, points)):
        out[:, i] = c
    return out
