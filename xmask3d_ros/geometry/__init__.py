"""Geometry layer: rigid transforms, pinhole camera, TF buffer and time synchroniser.

Pure numpy (no rclpy, no tf2); the ros/ and replay/ layers feed it plain numbers and arrays.
"""

from xmask3d_ros.geometry.camera import PinholeCamera, decode_depth
from xmask3d_ros.geometry.sync import SyncStats, TimeSynchronizer
from xmask3d_ros.geometry.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FutureExtrapolationError,
    InvalidTransformError,
    PastExtrapolationError,
    TfBuffer,
    TransformError,
    TransformRecord,
    UnknownFrameError,
)
from xmask3d_ros.geometry.transforms import (
    SE3,
    is_valid_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
)

__all__ = [
    "SE3",
    "ConnectivityError",
    "ExtrapolationError",
    "FutureExtrapolationError",
    "InvalidTransformError",
    "PastExtrapolationError",
    "PinholeCamera",
    "SyncStats",
    "TfBuffer",
    "TimeSynchronizer",
    "TransformError",
    "TransformRecord",
    "UnknownFrameError",
    "decode_depth",
    "is_valid_pose",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "slerp",
]
