"""Frame records handed from the ROS / replay adapters to the pipeline and the map.

``RgbdFrame`` is one synchronised RGB-D capture in the camera's optical frame; ``PosedFrame``
adds ``T_map_cam`` (optical-frame points -> map frame), looked up at the image stamp.
Both validate shapes and dtypes on construction, so later stages can trust them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.transforms import SE3

__all__ = ["PosedFrame", "RgbdFrame"]


@dataclasses.dataclass(frozen=True, eq=False)
class RgbdFrame:
    """One RGB-D capture, colour registered to depth (same size, same optical frame).

    Arrays are stored as given (no copy); callers must not modify them afterwards.
    """

    rgb: npt.NDArray[np.uint8]  # (H, W, 3) uint8, RGB channel order
    depth_m: npt.NDArray[np.float32]  # (H, W) float32 metres, 0 = no measurement
    camera: PinholeCamera  # intrinsics of both images (width = W, height = H)
    stamp_ns: int  # capture time, nanoseconds (header.stamp)
    frame_id: str  # optical frame of the camera (REP-103 '_optical' frame)

    def __post_init__(self) -> None:
        if not isinstance(self.camera, PinholeCamera):
            raise ValueError(f"camera must be a PinholeCamera, got {type(self.camera).__name__}")
        rgb, depth, cam = self.rgb, self.depth_m, self.camera
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            shape = getattr(rgb, "shape", None)
            raise ValueError(f"rgb must be an (H, W, 3) array, got shape {shape}")
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
        if not isinstance(depth, np.ndarray) or depth.ndim != 2:
            raise ValueError(f"depth_m must be an (H, W) array, got shape {getattr(depth, 'shape', None)}")
        if depth.dtype != np.float32:
            raise ValueError(
                f"depth_m must be float32 metres, got {depth.dtype} (use geometry.decode_depth)"
            )
        if rgb.shape[:2] != depth.shape:
            raise ValueError(
                f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but depth is {depth.shape[1]}x{depth.shape[0]} "
                "(W x H); register and resize colour to depth first"
            )
        if (cam.width, cam.height) != (depth.shape[1], depth.shape[0]):
            raise ValueError(
                f"camera is {cam.width}x{cam.height} but the images are "
                f"{depth.shape[1]}x{depth.shape[0]} (W x H); use PinholeCamera.scaled()"
            )
        if isinstance(self.stamp_ns, (bool, np.bool_)) or not isinstance(
            self.stamp_ns, (int, np.integer)
        ):
            raise ValueError(f"stamp_ns must be an int (nanoseconds), got {self.stamp_ns!r}")
        if not isinstance(self.frame_id, str):
            raise ValueError(f"frame_id must be a str, got {type(self.frame_id).__name__}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))

    @property
    def width(self) -> int:
        return self.camera.width

    @property
    def height(self) -> int:
        return self.camera.height


@dataclasses.dataclass(frozen=True, eq=False)
class PosedFrame:
    """An ``RgbdFrame`` with its camera pose in the map frame at the image stamp."""

    frame: RgbdFrame
    T_map_cam: SE3  # maps optical-frame points into the map frame: p_map = T_map_cam.apply(p_cam)

    def __post_init__(self) -> None:
        if not isinstance(self.frame, RgbdFrame):
            raise ValueError(f"frame must be an RgbdFrame, got {type(self.frame).__name__}")
        if not isinstance(self.T_map_cam, SE3):
            raise ValueError(f"T_map_cam must be an SE3, got {type(self.T_map_cam).__name__}")

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def sensor_origin(self) -> npt.NDArray[np.float64]:
        """(3,) float64 position of the optical centre in the map frame."""
        return self.T_map_cam.translation
