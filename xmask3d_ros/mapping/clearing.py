"""Free-space test: which map voxels a depth image sees through (vectorised).

A voxel at camera depth ``z`` projecting to pixel ``(r, c)`` is *seen through* when the depth
camera measured a surface clearly behind it on that ray:

    d_min(r, c) - z > max(k * voxel_size, rel * d_min(r, c))

where ``d_min`` is the minimum measured depth over the ``(2w+1)^2`` window around the pixel and is
0 (no verdict) if any pixel of the window has no measurement. The window minimum is what keeps
walls seen at grazing angles and object silhouettes intact: the exact ray through a voxel lies
within half a pixel of the rounded pixel, and for a planar surface the depth along rays inside a
pixel cell is bounded below by the depths at the neighbouring pixel centres (1/depth is affine in
pixel coordinates), so a voxel lying on any surface the window sees cannot be "seen through";
the margin then absorbs depth noise and voxel-mean offsets off the surface, which grow with depth
(``rel``) and are at least a voxel (``k``). Projection and pixel rounding (``np.rint``) are the
geometry layer's (``PinholeCamera.project``, as in ``visible_pixels``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.camera import PinholeCamera

__all__ = ["min_filter_depth", "see_through"]


def min_filter_depth(depth_m: npt.NDArray[np.float32], window_px: int) -> npt.NDArray[np.float32]:
    """(H, W) depth -> (H, W) minimum over a ``(2w+1)^2`` window; 0 wherever the window has a 0.

    Invalid pixels (0, NaN, inf, negative) count as 0 and pixels whose window leaves the image
    get 0 too, so the result is a conservative lower bound of the surface depth.
    """
    d = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0)).astype(np.float32, copy=False)
    w = int(window_px)
    if w <= 0:
        return d
    h, wd = d.shape
    if h <= 2 * w or wd <= 2 * w:
        return np.zeros_like(d)
    # Separable min: rows then columns; the border band (window leaves the image) becomes 0.
    tmp = np.zeros_like(d)
    inner = d[:, w : wd - w].copy()
    for s in range(1, w + 1):
        np.minimum(inner, d[:, w - s : wd - w - s], out=inner)
        np.minimum(inner, d[:, w + s : wd - w + s], out=inner)
    tmp[:, w : wd - w] = inner
    out = np.zeros_like(d)
    inner = tmp[w : h - w].copy()
    for s in range(1, w + 1):
        np.minimum(inner, tmp[w - s : h - w - s], out=inner)
        np.minimum(inner, tmp[w + s : h - w + s], out=inner)
    out[w : h - w] = inner
    return out


def see_through(
    points_cam: npt.NDArray[np.float32],
    camera: PinholeCamera,
    depth_min: npt.NDArray[np.float32],
    *,
    margin_abs_m: float,
    margin_rel: float,
    border_px: int,
    min_depth_m: float,
    max_depth_m: float,
) -> npt.NDArray[np.bool_]:
    """(N, 3) optical-frame points -> (N,) bool: the depth image saw a surface clearly behind them.

    ``depth_min`` is the output of :func:`min_filter_depth` for the frame. Points outside the
    image (with ``border_px``), outside ``[min_depth_m, max_depth_m]`` in z, or on pixels without
    a measurement are never seen through.
    """
    uv, z = camera.project(points_cam)
    b = int(border_px)
    with np.errstate(invalid="ignore"):
        ru = np.rint(uv[:, 0])
        rv = np.rint(uv[:, 1])
        cand = (
            (z >= min_depth_m) & (z <= max_depth_m)
            & (ru >= b) & (ru < camera.width - b) & (rv >= b) & (rv < camera.height - b)
        )
    idx = np.flatnonzero(cand)
    out = np.zeros(z.shape[0], dtype=bool)
    if idx.size == 0:
        return out
    d = depth_min[rv[idx].astype(np.intp), ru[idx].astype(np.intp)]
    margin = np.maximum(np.float32(margin_abs_m), np.float32(margin_rel) * d)
    hit = (d > 0) & (d - z[idx] > margin)
    out[idx[hit]] = True
    return out
