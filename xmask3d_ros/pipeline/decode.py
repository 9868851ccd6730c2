"""ROS message fields -> numpy arrays and geometry records (no ROS imports).

Duck-typed on the message fields, so the same functions decode rclpy messages (``data`` is an
``array.array`` / ``bytes``) and rosbags messages (``data`` is a numpy array). Every failure is a
:class:`DecodeError` whose ``reason`` is a short counter key for the callers' statistics.

- ``sensor_msgs/Image``: colour ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``; depth
  ``16UC1``/``mono16`` (millimetres) and ``32FC1`` (metres). ``step`` padding and
  ``is_bigendian`` are honoured.
- ``sensor_msgs/CompressedImage``: JPEG/PNG colour (Pillow), and image_transport's
  ``compressedDepth`` format: a 12-byte header (int32 format enum, two float32 quantisation
  parameters ``a``, ``b``) followed by a PNG. ``16UC1`` stores the millimetres losslessly;
  ``32FC1`` stores quantised inverse depth ``q = a / depth + b`` (0 = invalid), decoded as
  ``depth = a / (q - b)``.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.camera import DEPTH_ENCODINGS, PinholeCamera
from xmask3d_ros.geometry.camera import decode_depth as _decode_depth_array
from xmask3d_ros.geometry.tf_buffer import TransformRecord

__all__ = [
    "COLOR_ENCODINGS",
    "DecodeError",
    "camera_from_info",
    "decode_compressed_depth",
    "decode_compressed_rgb",
    "decode_depth",
    "decode_rgb",
    "stamp_ns",
    "transforms_from_tf",
]

# encoding -> (channels, index order producing R, G, B)
COLOR_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)), "mono8": (1, (0, 0, 0)),
}  # fmt: skip
_DEPTH_DTYPES = {"16UC1": "u2", "mono16": "u2", "32FC1": "f4"}
_COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")  # compression format enum, depthQuantA, depthQuantB


class DecodeError(ValueError):
    """A message could not be decoded; ``reason`` is a short key for counters and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def stamp_ns(header: Any) -> int:
    """``std_msgs/Header`` (or anything with ``.stamp``, or a Time itself) -> integer nanoseconds."""
    stamp = getattr(header, "stamp", header)
    try:
        sec, nsec = int(stamp.sec), int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as err:
        raise DecodeError("bad_stamp", f"cannot read a stamp from {type(header).__name__}") from err
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise DecodeError("bad_stamp", f"invalid stamp sec={sec} nanosec={nsec}")
    return sec * 1_000_000_000 + nsec


def _buffer(data: Any) -> npt.NDArray[np.uint8]:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)  # bytes, bytearray, array.array, memoryview


def _image_rows(msg: Any, bytes_per_pixel: int) -> npt.NDArray[np.uint8]:
    """(H, W * bytes_per_pixel) uint8 view of the pixel bytes, padding after each row removed."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise DecodeError("empty_image", f"image is {width}x{height}")
    row = width * bytes_per_pixel
    if step < row:
        raise DecodeError("bad_step", f"step {step} < width {width} x {bytes_per_pixel} bytes")
    buf = _buffer(msg.data)
    need = step * (height - 1) + row
    if buf.size < need:
        raise DecodeError(
            "truncated_data", f"{msg.encoding} {width}x{height} needs {need} bytes, got {buf.size}"
        )
    if buf.size < step * height:  # last row's padding missing: pad so the reshape works
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    return buf[: step * height].reshape(height, step)[:, :row]


def decode_rgb(msg: Any) -> npt.NDArray[np.uint8]:
    """``sensor_msgs/Image`` colour -> (H, W, 3) uint8 RGB (a copy owned by the caller)."""
    enc = str(msg.encoding)
    if enc not in COLOR_ENCODINGS:
        raise DecodeError(
            "unknown_encoding",
            f"colour encoding {enc!r} is not supported; expected one of {', '.join(COLOR_ENCODINGS)}",
        )
    channels, order = COLOR_ENCODINGS[enc]
    rows = _image_rows(msg, channels)
    pix = rows.reshape(rows.shape[0], -1, channels)
    return np.ascontiguousarray(pix[:, :, list(order)])


def decode_depth(msg: Any, *, min_depth_m: float, max_depth_m: float) -> npt.NDArray[np.float32]:
    """``sensor_msgs/Image`` depth -> (H, W) float32 metres, invalid pixels 0."""
    enc = str(msg.encoding)
    if enc not in _DEPTH_DTYPES:
        raise DecodeError(
            "unknown_encoding",
            f"depth encoding {enc!r} is not supported; expected one of {', '.join(DEPTH_ENCODINGS)}",
        )
    dt = np.dtype(_DEPTH_DTYPES[enc]).newbyteorder(">" if int(msg.is_bigendian) else "<")
    rows = _image_rows(msg, dt.itemsize)
    raw = np.ascontiguousarray(rows).view(dt).astype(dt.newbyteorder("="))
    return _decode_depth_array(raw, enc, min_depth_m=min_depth_m, max_depth_m=max_depth_m)


def _open_image(data: Any, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(_buffer(data).tobytes()))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DecodeError("corrupt_compressed", f"{what}: cannot decode the image data ({err})") from err
    return img


def decode_compressed_rgb(msg: Any) -> npt.NDArray[np.uint8]:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG colour) -> (H, W, 3) uint8 RGB."""
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise DecodeError("unknown_format", f"format {msg.format!r} is depth, not a colour image")
    img = _open_image(msg.data, f"compressed colour ({msg.format!r})")
    if img.format not in ("JPEG", "PNG"):
        raise DecodeError("unknown_format", f"compressed colour is {img.format}, expected JPEG or PNG")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def decode_compressed_depth(
    msg: Any, *, min_depth_m: float, max_depth_m: float
) -> npt.NDArray[np.float32]:
    """image_transport ``compressedDepth`` ``CompressedImage`` -> (H, W) float32 metres, invalid 0."""
    fmt = str(msg.format)
    if "compressedDepth" not in fmt:
        raise DecodeError("unknown_format", f"format {fmt!r} is not image_transport compressedDepth")
    if "rvl" in fmt.lower():
        raise DecodeError("unsupported_compression", f"compressedDepth RVL is not supported ({fmt!r})")
    enc = fmt.split(";")[0].strip()
    if enc not in ("16UC1", "32FC1"):
        raise DecodeError("unknown_encoding", f"compressedDepth encoding {enc!r}; expected 16UC1 or 32FC1")
    buf = _buffer(msg.data)
    if buf.size <= _COMPRESSED_DEPTH_HEADER.size:
        raise DecodeError("truncated_data", f"compressedDepth message has only {buf.size} bytes")
    _, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack(buf[: _COMPRESSED_DEPTH_HEADER.size].tobytes())
    img = _open_image(buf[_COMPRESSED_DEPTH_HEADER.size :], f"compressedDepth ({fmt!r})")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise DecodeError("corrupt_compressed", f"compressedDepth PNG is not single-channel: {arr.shape}")
    q = arr.astype(np.uint16) if arr.dtype != np.uint16 else arr
    if enc == "16UC1":
        return _decode_depth_array(q, "16UC1", min_depth_m=min_depth_m, max_depth_m=max_depth_m)
    if not (np.isfinite(quant_a) and np.isfinite(quant_b)):
        raise DecodeError("corrupt_compressed", f"bad depth quantisation a={quant_a}, b={quant_b}")
    qf = q.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(q > 0, np.float32(quant_a) / (qf - np.float32(quant_b)), 0.0).astype(np.float32)
    return _decode_depth_array(depth, "32FC1", min_depth_m=min_depth_m, max_depth_m=max_depth_m)


def camera_from_info(msg: Any, *, rectified: bool = False) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera` (K, or P with ``rectified=True``)."""
    k = [float(v) for v in msg.k]
    d = [float(v) for v in msg.d]
    p = [float(v) for v in msg.p]
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise DecodeError("bad_camera_info", f"CameraInfo size is {width}x{height}")
    if not rectified and any(v != 0.0 for v in d):
        raise DecodeError(
            "nonzero_distortion",
            f"distortion model {msg.distortion_model!r} with non-zero coefficients {d}: feed "
            "rectified images (image_proc) with zero D",
        )
    if not any((p if rectified else k)):
        raise DecodeError("uncalibrated", "CameraInfo K/P is all zero (camera not calibrated)")
    try:
        return PinholeCamera.from_camera_info(
            k, width, height, str(msg.distortion_model), d, p=p, rectified=rectified
        )
    except ValueError as err:
        raise DecodeError("invalid_k", f"invalid CameraInfo: {err}") from err


def transforms_from_tf(msg: Any) -> list[TransformRecord]:
    """``tf2_msgs/TFMessage`` -> one :class:`TransformRecord` per ``TransformStamped``."""
    out = []
    for ts in msg.transforms:
        t, r = ts.transform.translation, ts.transform.rotation
        out.append(
            TransformRecord(
                parent_frame=str(ts.header.frame_id), child_frame=str(ts.child_frame_id),
                stamp_ns=stamp_ns(ts.header), translation=(float(t.x), float(t.y), float(t.z)),
                rotation_xyzw=(float(r.x), float(r.y), float(r.z), float(r.w)),
            )
        )
    return out
