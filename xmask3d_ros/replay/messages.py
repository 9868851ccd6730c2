"""rosbags message builders for the camera topics (no rclpy): numpy arrays -> ROS 2 messages.

All builders take the typestore explicitly (``get_typestore(Stores.ROS2_JAZZY)`` by default in
the bag writer) and stamps as integer nanoseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.transforms import SE3

__all__ = [
    "IMAGE_ENCODINGS",
    "camera_info_msg",
    "depth_to_mm",
    "header_msg",
    "image_msg",
    "split_stamp",
    "tf_message",
    "transform_stamped_msg",
]

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "32FC1": (np.float32, 1),
}  # fmt: skip


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """Nanoseconds -> (sec, nanosec) as in builtin_interfaces/Time."""
    if stamp_ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {stamp_ns}")
    return int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)


def header_msg(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header."""
    sec, nsec = split_stamp(stamp_ns)
    Time = ts.types["builtin_interfaces/msg/Time"]
    return ts.types["std_msgs/msg/Header"](stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def depth_to_mm(depth_m: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """(H, W) metres -> uint16 millimetres; 0, NaN, inf and > 65.535 m become 0 (invalid)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mm = np.rint(d * 1000.0)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


def image_msg(ts: Any, image: npt.ArrayLike, stamp_ns: int, frame_id: str, encoding: str) -> Any:
    """sensor_msgs/Image from an (H, W[, C]) array of the encoding's dtype (little-endian)."""
    if encoding not in IMAGE_ENCODINGS:
        known = ", ".join(IMAGE_ENCODINGS)
        raise ValueError(f"unsupported encoding {encoding!r}; expected one of {known}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(image)
    shape_ok = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if arr.dtype != dtype or not shape_ok:
        raise ValueError(
            f"{encoding} image must be {np.dtype(dtype).name} with {channels} channel(s), got "
            f"{arr.dtype} {arr.shape}"
        )
    height, width = arr.shape[:2]
    data = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    return ts.types["sensor_msgs/msg/Image"](
        header=header_msg(ts, stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * channels * np.dtype(dtype).itemsize,
        data=data.view(np.uint8).reshape(-1),
    )


def camera_info_msg(ts: Any, K: npt.ArrayLike, width: int, height: int, stamp_ns: int,
                    frame_id: str, distortion: Sequence[float] = (0.0,) * 5) -> Any:
    """sensor_msgs/CameraInfo (plumb_bob; rectified images: R = I, P = [K | 0])."""
    Km = np.asarray(K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = Km
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return ts.types["sensor_msgs/msg/CameraInfo"](
        header=header_msg(ts, stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.asarray(distortion, dtype=np.float64),
        k=Km.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1),
        binning_x=0, binning_y=0, roi=roi,
    )


def transform_stamped_msg(ts: Any, T_parent_child: npt.ArrayLike, parent: str, child: str,
                          stamp_ns: int) -> Any:
    """geometry_msgs/TransformStamped of ``child`` in ``parent`` (4x4 ``T_parent_child``)."""
    se3 = SE3.from_matrix(T_parent_child)
    q, t = se3.quaternion, se3.translation
    Vector3 = ts.types["geometry_msgs/msg/Vector3"]
    Quaternion = ts.types["geometry_msgs/msg/Quaternion"]
    transform = ts.types["geometry_msgs/msg/Transform"](
        translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    return ts.types["geometry_msgs/msg/TransformStamped"](
        header=header_msg(ts, stamp_ns, parent), child_frame_id=child, transform=transform
    )


def tf_message(ts: Any, transforms: Sequence[Any]) -> Any:
    """tf2_msgs/TFMessage."""
    return ts.types["tf2_msgs/msg/TFMessage"](transforms=list(transforms))
