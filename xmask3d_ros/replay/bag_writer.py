"""Write synthetic RGB-D sequences as rosbag2 (MCAP or sqlite3) with ``rosbags`` (no rclpy).

Topics (RealSense-like names, configurable in :class:`~xmask3d_ros.config.synthetic.BagCfg`):

- ``/camera/color/image_raw``                  sensor_msgs/Image rgb8
- ``/camera/aligned_depth_to_color/image_raw`` sensor_msgs/Image 16UC1 (mm, 0 = invalid)
- ``/camera/color/camera_info``                sensor_msgs/CameraInfo (plumb_bob, zero distortion)
- ``/tf``         tf2_msgs/TFMessage: ``odom -> base_link`` at every image stamp
- ``/tf_static``  tf2_msgs/TFMessage: ``base_link -> camera_link -> camera_color_optical_frame``,
  written once, offered QoS reliable + transient-local + keep-last 1 (as tf2's static broadcaster)

Images and camera_info carry the optical frame and the same stamp; the bag (receive) time of
every message equals its header stamp. The pose chain is exact: ``T_odom_base`` is the
rendered ``T_world_cam`` times the inverse of the static ``T_base_optical``, so looking up
``odom -> optical`` at an image stamp gives the renderer's camera pose. ``camera_link`` is
x forward / z up; the optical frame is rotated by the standard REP-103 rotation (optical x = -y,
y = -z, z = +x of camera_link). Ground truth goes beside the bag: ``<bag>.gt.npz``
(:mod:`xmask3d_ros.data.ground_truth`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.config.synthetic import BagCfg
from xmask3d_ros.data.classes import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_RAW_IDS,
    raw_to_scannet20,
    raw_to_synthetic,
)
from xmask3d_ros.data.ground_truth import GroundTruth, ground_truth_path, save_ground_truth
from xmask3d_ros.data.synthetic.scene import Frame, Room, SurfacePoints, render_frame
from xmask3d_ros.replay.messages import (
    camera_info_msg,
    depth_to_mm,
    image_msg,
    tf_message,
    transform_stamped_msg,
)

__all__ = [
    "R_CAMERA_OPTICAL",
    "SyntheticBagWriter",
    "room_ground_truth",
    "static_transforms",
    "write_synthetic_bag",
]

# Columns: optical x (right) = -y, optical y (down) = -z, optical z (forward) = +x of camera_link.
R_CAMERA_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

_NEVER = QosTime(sec=0, nsec=0)  # rosbag2 / rmw: 0 = default (no deadline, infinite lifespan)
_STATIC_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  _NEVER, _NEVER, QosLiveliness.AUTOMATIC, _NEVER, False)
_SENSOR_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                  _NEVER, _NEVER, QosLiveliness.AUTOMATIC, _NEVER, False)
_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def static_transforms(cfg: BagCfg) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(T_base_camera, T_camera_optical)`` 4x4 of the static mount."""
    T_bc = np.eye(4)
    T_bc[:3, 3] = cfg.base_to_camera_xyz_m
    T_co = np.eye(4)
    T_co[:3, :3] = R_CAMERA_OPTICAL
    T_co[:3, 3] = cfg.camera_to_optical_xyz_m
    return T_bc, T_co


class SyntheticBagWriter:
    """Streams rendered frames into a new rosbag2 at ``path`` (which must not exist).

    Use as a context manager or call :meth:`close`; ``stamps_ns`` and ``poses`` collect what was
    written (for the ground-truth file).
    """

    def __init__(self, path: str | Path, K: npt.ArrayLike, width: int, height: int, *,
                 cfg: BagCfg | None = None, storage: str | None = None,
                 typestore: Any = None) -> None:
        self.cfg = cfg or BagCfg()
        self.path = Path(path)
        kind = storage or self.cfg.storage
        if kind not in _STORAGE:
            raise ValueError(f"storage must be one of {', '.join(_STORAGE)}, got {kind!r}")
        self.ts = typestore or get_typestore(Stores.ROS2_JAZZY)
        self.K = np.asarray(K, dtype=np.float64)
        self.width, self.height = int(width), int(height)
        T_bc, T_co = static_transforms(self.cfg)
        self._T_bc, self._T_co = T_bc, T_co
        self._T_optical_base = np.linalg.inv(T_bc @ T_co)
        self.stamps_ns: list[int] = []
        self.poses: list[npt.NDArray[np.float64]] = []
        self._writer = Writer(self.path, version=9, storage_plugin=_STORAGE[kind])
        self._writer.open()
        c = self.cfg
        add = self._writer.add_connection
        self._color = add(c.color_topic, "sensor_msgs/msg/Image", typestore=self.ts,
                          offered_qos_profiles=[_SENSOR_QOS])
        self._depth = add(c.depth_topic, "sensor_msgs/msg/Image", typestore=self.ts,
                          offered_qos_profiles=[_SENSOR_QOS])
        self._info = add(c.info_topic, "sensor_msgs/msg/CameraInfo", typestore=self.ts,
                         offered_qos_profiles=[_SENSOR_QOS])
        self._tf = add("/tf", "tf2_msgs/msg/TFMessage", typestore=self.ts,
                       offered_qos_profiles=[_SENSOR_QOS])
        self._tf_static = add("/tf_static", "tf2_msgs/msg/TFMessage", typestore=self.ts,
                              offered_qos_profiles=[_STATIC_QOS])
        self._static_written = False
        self._closed = False

    def _put(self, conn: Any, msg: Any, stamp_ns: int) -> None:
        self._writer.write(conn, stamp_ns, self.ts.serialize_cdr(msg, msg.__msgtype__))

    def write_static(self, stamp_ns: int) -> None:
        """The static mount on /tf_static (written automatically before the first frame)."""
        c = self.cfg
        msg = tf_message(self.ts, [
            transform_stamped_msg(self.ts, self._T_bc, c.base_frame, c.camera_frame, stamp_ns),
            transform_stamped_msg(self.ts, self._T_co, c.camera_frame, c.optical_frame, stamp_ns),
        ])
        self._put(self._tf_static, msg, stamp_ns)
        self._static_written = True

    def write_frame(self, stamp_ns: int, frame: Frame) -> None:
        """TF, camera_info, colour and depth of one frame, all stamped ``stamp_ns``."""
        if frame.rgb.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame.rgb.shape[1]}x{frame.rgb.shape[0]}, bag was opened "
                             f"for {self.width}x{self.height}")
        if self.stamps_ns and stamp_ns <= self.stamps_ns[-1]:
            raise ValueError(f"stamps must increase: {stamp_ns} after {self.stamps_ns[-1]}")
        if not self._static_written:
            self.write_static(stamp_ns)
        c, ts = self.cfg, self.ts
        T_odom_base = frame.T_world_cam @ self._T_optical_base
        self._put(self._tf, tf_message(ts, [
            transform_stamped_msg(ts, T_odom_base, c.map_frame, c.base_frame, stamp_ns)]), stamp_ns)
        self._put(self._info, camera_info_msg(ts, self.K, self.width, self.height, stamp_ns,
                                              c.optical_frame), stamp_ns)
        self._put(self._color, image_msg(ts, frame.rgb, stamp_ns, c.optical_frame, "rgb8"), stamp_ns)
        self._put(self._depth, image_msg(ts, depth_to_mm(frame.depth_m), stamp_ns, c.optical_frame,
                                         "16UC1"), stamp_ns)
        self.stamps_ns.append(int(stamp_ns))
        self.poses.append(np.asarray(frame.T_world_cam, dtype=np.float64))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    def __enter__(self) -> SyntheticBagWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def room_ground_truth(room: Room, poses: npt.ArrayLike, stamps_ns: npt.ArrayLike,
                      K: npt.ArrayLike, width: int, height: int, cfg: BagCfg | None = None,
                      points: SurfacePoints | None = None) -> GroundTruth:
    """The ground truth of ``room`` for a bag; ``points`` defaults to fresh surface samples at
    the configured spacing (pass them when already computed)."""
    cfg = cfg or BagCfg()
    sp = points if points is not None else room.sample_surface_points()
    return GroundTruth(
        points=sp.points, colors=sp.colors, normals=sp.normals, label=sp.label,
        label_scannet20=raw_to_scannet20(sp.label), label_synthetic=raw_to_synthetic(sp.label),
        instance=sp.instance, class_names=SYNTHETIC_CLASSES,
        class_raw_ids=np.asarray(SYNTHETIC_RAW_IDS, dtype=np.uint16),
        instance_classes=room.layout.instance_classes,
        T_world_cam=np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4),
        stamps_ns=np.asarray(stamps_ns, dtype=np.int64), K=np.asarray(K, dtype=np.float64),
        image_size=(int(width), int(height)), frame_id=cfg.map_frame,
        optical_frame=cfg.optical_frame, room_size_m=np.asarray(room.size_m, dtype=np.float64),
        room_type=room.room_type, seed=room.seed,
    )


def write_synthetic_bag(path: str | Path, room: Room, n_frames: int, *,
                        width: int | None = None, height: int | None = None,
                        storage: str | None = None, cfg: BagCfg | None = None,
                        progress: Callable[[int], None] | None = None) -> Path:
    """Render ``n_frames`` of ``room`` into a new bag at ``path`` plus ``<path>.gt.npz``.

    Returns the ground-truth path. Stamps start at ``cfg.start_time_ns`` and follow the
    room's camera fps.
    """
    cfg = cfg or room.cfg.bag
    w, h = width or room.cfg.camera.width, height or room.cfg.camera.height
    K = room.intrinsics(w, h)
    stamps = cfg.start_time_ns + np.rint(room.stamps_s(n_frames) * 1e9).astype(np.int64)
    with SyntheticBagWriter(path, K, w, h, cfg=cfg, storage=storage) as bag:
        for stamp, T in zip(stamps, room.camera_poses(n_frames)):
            bag.write_frame(int(stamp), render_frame(room, T, K, w, h))
            if progress is not None:
                progress(1)
    gt = room_ground_truth(room, bag.poses, bag.stamps_ns, K, w, h, cfg)
    return save_ground_truth(ground_truth_path(path), gt)
