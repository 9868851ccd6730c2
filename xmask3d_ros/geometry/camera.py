"""Pinhole camera: depth decoding, back-projection, projection and the reference visibility test.

Frames follow REP-103 optical convention: z forward, x right, y down. Pixel ``(row, col)`` has
its centre at image coordinates ``(v, u) = (row, col)`` (the OpenCV / CameraInfo convention, so
ScanNet's cx = 319.5 is the centre of a 640-wide image).

Distortion is not modelled: :meth:`PinholeCamera.from_camera_info` rejects non-zero distortion
coefficients rather than silently producing points that are wrong by up to several pixels at the
image border. Feed rectified images (``image_rect``, image_proc) and pass ``rectified=True`` with
the CameraInfo ``P`` matrix, or use a driver that publishes undistorted images with zero ``D``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEPTH_ENCODINGS",
    "PinholeCamera",
    "decode_depth",
]

# Encodings accepted by decode_depth -> scale to metres. mono16 is what some drivers label
# millimetre depth with (same bytes as 16UC1).
DEPTH_ENCODINGS: dict[str, float] = {"16UC1": 1e-3, "mono16": 1e-3, "32FC1": 1.0}


def decode_depth(
    raw: npt.NDArray[Any],
    encoding: str,
    *,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
) -> npt.NDArray[np.float32]:
    """(H, W) raw depth -> (H, W) float32 metres with every invalid pixel set to 0.

    ``16UC1``/``mono16``: uint16 millimetres; ``32FC1``: float metres. Zero, NaN, +-inf, negative
    and out-of-range (outside ``[min_depth_m, max_depth_m]``) pixels become 0, the single
    "no measurement" value every later stage tests for. Defaults equal ``DepthCfg``'s.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(
            f"unsupported depth encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}"
        )
    if not 0.0 <= min_depth_m < max_depth_m:
        raise ValueError(f"need 0 <= min_depth_m < max_depth_m, got {min_depth_m}, {max_depth_m}")
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"depth image must be (H, W), got shape {raw.shape}")
    if encoding == "32FC1":
        if raw.dtype.kind != "f":
            raise ValueError(f"32FC1 depth must be a float array, got dtype {raw.dtype}")
        depth = raw.astype(np.float32, copy=True)
    else:
        if raw.dtype != np.uint16:
            raise ValueError(f"{encoding} depth must be a uint16 array (millimetres), got {raw.dtype}")
        depth = raw.astype(np.float32) * np.float32(DEPTH_ENCODINGS[encoding])
    with np.errstate(invalid="ignore"):
        # NaN compares False, so `~(in range)` catches NaN/inf/negative/zero in one pass.
        ok = (depth >= np.float32(max(min_depth_m, np.finfo(np.float32).tiny))) & (
            depth <= np.float32(max_depth_m)
        )
    depth[~ok] = 0.0
    return depth


@functools.lru_cache(maxsize=16)
def _ray_grid(
    fx: float, fy: float, cx: float, cy: float, width: int, height: int, stride: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Per sampled pixel (flattened, row-major): x/z, y/z and the full-resolution flat index."""
    cols = np.arange(0, width, stride)
    rows = np.arange(0, height, stride)
    x = ((cols - cx) / fx).astype(np.float32)
    y = ((rows - cy) / fy).astype(np.float32)
    xr = np.broadcast_to(x[None, :], (rows.size, cols.size)).ravel().copy()
    yr = np.broadcast_to(y[:, None], (rows.size, cols.size)).ravel().copy()
    full = (rows[:, None] * width + cols[None, :]).ravel().astype(np.int64)
    for a in (xr, yr, full):
        a.setflags(write=False)
    return xr, yr, full


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    """Undistorted pinhole intrinsics for a ``width`` x ``height`` image (pixels)."""

    fx: float  # focal length along x (columns), pixels
    fy: float  # focal length along y (rows), pixels
    cx: float  # principal point column, pixels (pixel-centre convention)
    cy: float  # principal point row, pixels
    width: int  # image columns
    height: int  # image rows
    distortion_model: str = "plumb_bob"  # CameraInfo.distortion_model, kept for messages
    distortion: tuple[float, ...] = ()  # CameraInfo.d; all zero (or empty) by construction

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics must be finite with fx, fy > 0, got fx, fy, cx, cy = {vals}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if any(float(c) != 0.0 for c in self.distortion):
            raise ValueError(
                f"distortion model {self.distortion_model!r} with non-zero coefficients "
                f"{list(self.distortion)} is not supported: this package assumes undistorted images; "
                "subscribe to a rectified image (image_proc) and pass rectified=True"
            )
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "distortion", tuple(float(c) for c in self.distortion))

    @classmethod
    def from_camera_info(
        cls,
        k: Sequence[float],
        width: int,
        height: int,
        distortion_model: str,
        d: Sequence[float],
        *,
        p: Sequence[float] | None = None,
        rectified: bool = False,
    ) -> PinholeCamera:
        """From ``sensor_msgs/CameraInfo`` fields (``k`` row-major 3x3, ``p`` row-major 3x4).

        With ``rectified=True`` the image is taken to be rectified upstream: intrinsics come from
        ``P`` (required) and ``D`` (which describes the raw image) is ignored. Otherwise ``K`` is
        used and any non-zero ``D`` raises ValueError naming the model and coefficients.
        """
        if rectified:
            if p is None or len(p) != 12:
                raise ValueError("rectified=True needs the 12 values of CameraInfo.p")
            P = np.asarray(p, dtype=np.float64).reshape(3, 4)
            if P[0, 3] != 0.0 or P[1, 3] != 0.0:
                raise ValueError(f"P has a stereo baseline term (Tx, Ty) = {P[:2, 3].tolist()}; "
                                 "only a monocular or left camera is supported")
            K = P[:, :3]
            d = ()
        else:
            if len(k) != 9:
                raise ValueError(f"CameraInfo.k must have 9 values, got {len(k)}")
            K = np.asarray(k, dtype=np.float64).reshape(3, 3)
        if not np.any(K):
            raise ValueError("camera is uncalibrated (CameraInfo K/P is all zero)")
        if not np.all(np.isfinite(K)):
            raise ValueError(f"camera matrix contains non-finite values: {K.tolist()}")
        if K[0, 1] != 0.0 or K[1, 0] != 0.0 or np.any(K[2] != np.array([0.0, 0.0, 1.0])):
            raise ValueError(f"camera matrix must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
        return cls(
            fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
            width=width, height=height, distortion_model=distortion_model,
            distortion=tuple(float(c) for c in d),
        )

    @property
    def K(self) -> npt.NDArray[np.float64]:
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int, *, align_corners: bool = False) -> PinholeCamera:
        """The same camera at another resolution (e.g. ScanNet colour 1296x968 -> depth 640x480).

        Default keeps pixel centres consistent with area/bilinear resizing:
        ``c' = (c + 0.5) * s - 0.5``. ``align_corners=True`` reproduces the reference's
        ``adjust_intrinsic`` (``c' = c * (W' - 1) / (W - 1)``), about a quarter pixel off at 2x.
        """
        sx, sy = width / self.width, height / self.height
        if align_corners:
            cx = self.cx * (width - 1) / (self.width - 1)
            cy = self.cy * (height - 1) / (self.height - 1)
        else:
            cx = (self.cx + 0.5) * sx - 0.5
            cy = (self.cy + 0.5) * sy - 0.5
        return dataclasses.replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=cx, cy=cy,
                                   width=width, height=height)

    def _check_depth(self, depth_m: npt.NDArray[Any]) -> npt.NDArray[Any]:
        depth_m = np.asarray(depth_m)
        if depth_m.shape != (self.height, self.width):
            raise ValueError(
                f"depth image is {depth_m.shape[::-1] if depth_m.ndim == 2 else depth_m.shape} "
                f"(W, H) but the camera is {self.width}x{self.height}; use PinholeCamera.scaled()"
            )
        return depth_m

    def backproject(
        self, depth_m: npt.NDArray[Any], stride: int = 1
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Valid depth pixels -> points in the optical frame.

        ``depth_m``: (H, W) metres, 0 = invalid (non-finite or <= 0 are also skipped). Every
        ``stride``-th row and column is sampled. Returns ``points`` (N, 3) float32 and
        ``pixel_index`` (N,) int64 flat indices ``row * W + col`` into the full-resolution image
        (``rgb.reshape(-1, 3)[pixel_index]`` gives the colours; ``divmod(idx, W)`` the pixel).
        """
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        stride = int(stride)
        depth_m = self._check_depth(depth_m)
        xr, yr, full = _ray_grid(self.fx, self.fy, self.cx, self.cy, self.width, self.height, stride)
        sub = depth_m if stride == 1 else depth_m[::stride, ::stride]
        z = np.ascontiguousarray(sub, dtype=np.float32).ravel()
        with np.errstate(invalid="ignore"):
            sel = np.flatnonzero(z > 0.0)  # NaN > 0 is False
        z = z[sel]
        keep = np.isfinite(z)  # +inf passed the > 0 test
        if not keep.all():
            sel, z = sel[keep], z[keep]
        points = np.empty((sel.size, 3), dtype=np.float32)
        np.multiply(xr[sel], z, out=points[:, 0])
        np.multiply(yr[sel], z, out=points[:, 1])
        points[:, 2] = z
        return points, (sel.astype(np.int64) if stride == 1 else full[sel])

    def project(
        self, points_cam: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]]:
        """(N, 3) optical-frame points -> ``uv`` (N, 2) float (u = column, v = row) and ``z`` (N,).

        Same float dtype as the input (float32 stays float32). Points with z <= 0 get NaN uv.
        """
        p = np.asarray(points_cam)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {p.shape}")
        dtype = np.float32 if p.dtype == np.float32 else np.float64
        p = p.astype(dtype, copy=False)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = np.where(z > 0, 1.0 / z, np.nan).astype(dtype, copy=False)
        uv = np.empty((p.shape[0], 2), dtype=dtype)
        uv[:, 0] = p[:, 0] * inv_z * dtype(self.fx) + dtype(self.cx)
        uv[:, 1] = p[:, 1] * inv_z * dtype(self.fy) + dtype(self.cy)
        return uv, z

    def visible_pixels(
        self,
        points_cam: npt.ArrayLike,
        depth_m: npt.NDArray[Any],
        *,
        border_px: int = 10,
        depth_tolerance_rel: float = 0.25,
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """The reference visibility test (reference-notes 1.7), also returning the pixels.

        A point is visible when its projection, rounded to the nearest pixel (half to even, as
        ``np.round`` in the reference), lies at least ``border_px`` from every border and the depth
        image there satisfies ``|depth - z| <= depth_tolerance_rel * depth``; zero depth rejects.
        Returns ``visible`` (N,) bool and ``rows``, ``cols`` (N,) int32 (-1 where not in image).
        """
        depth_m = self._check_depth(depth_m)
        uv, z = self.project(points_cam)
        n = uv.shape[0]
        rows = np.full(n, -1, dtype=np.int32)
        cols = np.full(n, -1, dtype=np.int32)
        b = int(border_px)
        with np.errstate(invalid="ignore"):
            ru, rv = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            inside = (
                (z > 0) & (ru >= b) & (ru < self.width - b) & (rv >= b) & (rv < self.height - b)
            )
        idx = np.flatnonzero(inside)
        c = ru[idx].astype(np.int32)
        r = rv[idx].astype(np.int32)
        rows[idx], cols[idx] = r, c
        d = depth_m[r, c].astype(np.float64)
        zi = z[idx].astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = (d > 0) & (np.abs(d - zi) <= depth_tolerance_rel * d)
        visible = np.zeros(n, dtype=bool)
        visible[idx[ok]] = True
        return visible, rows, cols

    def visible_mask(
        self,
        points_cam: npt.ArrayLike,
        depth_m: npt.NDArray[Any],
        border_px: int = 10,
        depth_tolerance_rel: float = 0.25,
    ) -> npt.NDArray[np.bool_]:
        """(N,) bool: :meth:`visible_pixels` without the pixel coordinates."""
        return self.visible_pixels(
            points_cam, depth_m, border_px=border_px, depth_tolerance_rel=depth_tolerance_rel
        )[0]
