"""pipeline/ingest.py FrameAssembler: decode, sync, TF wait queue; fake and rosbags messages."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.config.perception import load_perception_config
from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.ground_truth import load_ground_truth
from xmask3d_ros.data.synthetic import generate_room, render_frame
from xmask3d_ros.geometry.tf_buffer import TfBuffer, TransformRecord
from xmask3d_ros.pipeline.decode import camera_from_info, transforms_from_tf
from xmask3d_ros.pipeline.ingest import FrameAssembler, resize_nearest
from xmask3d_ros.replay.bag_writer import write_synthetic_bag

S = 1_000_000_000
T0 = 100 * S
TS = get_typestore(Stores.ROS2_JAZZY)


def _header(ns: int, frame: str = "cam_optical") -> NS:
    return NS(stamp=NS(sec=ns // S, nanosec=ns % S), frame_id=frame)


def _rgb(ns: int, w: int = 8, h: int = 6, encoding: str = "rgb8") -> NS:
    arr = np.full((h, w, 3), (ns // 10_000_000) % 256, np.uint8)
    return NS(header=_header(ns), height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3,
              data=arr.tobytes())


def _depth(ns: int, w: int = 8, h: int = 6) -> NS:
    mm = (np.arange(w * h, dtype=np.uint16).reshape(h, w) * 10 + 500).astype("<u2")
    return NS(header=_header(ns), height=h, width=w, encoding="16UC1", is_bigendian=0, step=w * 2,
              data=mm.tobytes())


def _info(ns: int, w: int = 8, h: int = 6) -> NS:
    return NS(header=_header(ns), width=w, height=h, distortion_model="plumb_bob", d=[0.0] * 5,
              k=[10.0, 0, (w - 1) / 2, 0, 10.0, (h - 1) / 2, 0, 0, 1], p=[0.0] * 12)


def _cfg(*overrides: str) -> Any:
    return load_perception_config(None, ["node.tf_wait_max_age_s=0.5", "node.tf_wait_queue_size=4",
                                          *overrides])


def _tf(buf: TfBuffer, ns: int, x: float) -> None:
    buf.set_transform(TransformRecord("odom", "cam_optical", ns, (x, 0, 0), (0, 0, 0, 1)))


def _feed(fa: FrameAssembler, ns: int, **kw: Any) -> None:
    fa.add_rgb(_rgb(ns, **kw))
    fa.add_depth(_depth(ns))
    fa.add_camera_info(_info(ns))


def test_sync_then_pose_at_image_stamp() -> None:
    buf = TfBuffer()
    fa = FrameAssembler(_cfg(), buf)
    _tf(buf, T0, 0.0)
    _tf(buf, T0 + S, 1.0)
    _feed(fa, T0 + S // 4)
    (pf,) = fa.poll()
    # interpolated at the image stamp, not 'latest'
    np.testing.assert_allclose(pf.T_map_cam.translation, [0.25, 0, 0], atol=1e-12)
    assert pf.stamp_ns == T0 + S // 4 and pf.frame.frame_id == "cam_optical"
    assert pf.frame.depth_m[0, 0] == pytest.approx(0.5)
    assert fa.stats["received_rgb"] == 1 and fa.stats["synced"] == 1 and fa.stats["posed"] == 1
    assert fa.poll() == []


def test_waits_for_future_tf_then_drops_by_age_and_past() -> None:
    buf = TfBuffer()
    fa = FrameAssembler(_cfg(), buf)
    _feed(fa, T0)  # no TF at all yet: unknown frame -> wait
    assert fa.poll() == [] and fa.pending() == 1
    _tf(buf, T0 - S // 10, 0.0)  # TF older than the image: future extrapolation -> wait
    assert fa.poll() == [] and fa.pending() == 1
    _tf(buf, T0 + S // 10, 2.0)
    (pf,) = fa.poll()
    np.testing.assert_allclose(pf.T_map_cam.translation, [1.0, 0, 0])
    # a frame older than the TF history: past extrapolation -> dropped at once
    fa2 = FrameAssembler(_cfg(), buf)
    _feed(fa2, T0 - S)
    assert fa2.poll() == [] and fa2.stats["tf_dropped_past"] == 1 and fa2.pending() == 0
    assert "past" in (fa2.last_error or "")
    # never-arriving TF: kept until now is more than tf_wait_max_age_s past the stamp
    fa3 = FrameAssembler(_cfg(), TfBuffer())
    _feed(fa3, T0)
    assert fa3.poll(now_ns=T0 + S // 4) == [] and fa3.pending() == 1
    assert fa3.poll(now_ns=T0 + S) == [] and fa3.pending() == 0
    assert fa3.stats["tf_dropped_age"] == 1
    # ... or relative to the newest image stamp seen (bag replay, no clock)
    fa4 = FrameAssembler(_cfg(), TfBuffer())
    for k in range(4):
        _feed(fa4, T0 + k * S // 5)
    assert fa4.poll() == [] and fa4.stats["tf_dropped_age"] == 1 and fa4.pending() == 3


def test_queue_overflow_and_reset() -> None:
    fa = FrameAssembler(_cfg(), TfBuffer())
    for k in range(6):
        _feed(fa, T0 + k * S // 100)
    assert fa.pending() == 4 and fa.stats["tf_queue_overflow"] == 2
    fa.reset()
    assert fa.pending() == 0 and fa.stats["resets"] == 1
    _feed(fa, T0 - 10 * S)  # time went backwards: accepted after reset
    assert fa.pending() == 1 and fa.stats["sync_older_than_last_emitted"] == 0


def test_decode_errors_and_sync_drops_are_counted() -> None:
    fa = FrameAssembler(_cfg(), TfBuffer())
    fa.add_rgb(_rgb(T0, encoding="yuv422"))
    bad_info = _info(T0)
    bad_info.d = [0.1, 0, 0, 0, 0]
    fa.add_camera_info(bad_info)
    assert fa.stats["decode_error_unknown_encoding"] == 1
    assert fa.stats["decode_error_nonzero_distortion"] == 1
    assert "yuv422" in (fa.last_error or "") or "distortion" in (fa.last_error or "")
    _feed(fa, T0 + S)
    fa.add_rgb(_rgb(T0 + S // 2))  # older than the emitted set
    assert fa.stats["sync_older_than_last_emitted"] == 1 and fa.stats["synced"] == 1


def test_depth_size_mismatch_resized_or_rejected() -> None:
    buf = TfBuffer()
    _tf(buf, T0, 0.0)
    fa = FrameAssembler(_cfg("sync.mode=exact"), buf)
    fa.add_rgb(_rgb(T0, w=16, h=12))
    fa.add_depth(_depth(T0, w=8, h=6))
    fa.add_camera_info(_info(T0, w=8, h=6))
    (pf,) = fa.poll()
    assert pf.frame.depth_m.shape == (12, 16) and pf.frame.camera.width == 16
    assert fa.stats["depth_resized"] == 1
    np.testing.assert_array_equal(pf.frame.depth_m[::2, ::2], pf.frame.depth_m[1::2, 1::2])
    fa.add_rgb(_rgb(T0 + 1, w=8, h=8))
    fa.add_depth(_depth(T0 + 1, w=8, h=6))
    fa.add_camera_info(_info(T0 + 1, w=8, h=8))
    assert fa.stats["rejected_size_mismatch"] == 1 and fa.pending() == 0
    np.testing.assert_array_equal(resize_nearest(np.arange(4).reshape(2, 2), 4, 4),
                                  np.repeat(np.repeat(np.arange(4).reshape(2, 2), 2, 0), 2, 1))


def test_add_synced_and_zero_stamp() -> None:
    buf = TfBuffer()
    _tf(buf, T0, 0.0)
    fa = FrameAssembler(_cfg(), buf)
    assert fa.add_synced(_rgb(T0), _depth(T0), _info(T0))
    assert len(fa.poll()) == 1 and fa.stats["received_synced"] == 1
    assert not fa.add_synced(_rgb(0), _depth(0), _info(0))
    assert fa.stats["rejected_zero_stamp"] == 1


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    cfg = from_dict(SyntheticCfg, {"camera": {"width": 32, "height": 24},
                                   "ground_truth": {"point_spacing_m": 0.3}})
    room = generate_room(3, cfg)
    path = tmp_path_factory.mktemp("bag") / "room"
    gt_path = write_synthetic_bag(path, room, 3, storage="mcap")
    return path, (room, load_ground_truth(gt_path))


def test_rosbags_messages_give_generator_frames(small_bag: tuple[Path, Any]) -> None:
    path, (room, gt) = small_bag
    buf = TfBuffer()
    fa = FrameAssembler(load_perception_config(None), buf)
    posed = []
    with AnyReader([path], default_typestore=TS) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype == "tf2_msgs/msg/TFMessage":
                for rec in transforms_from_tf(msg):
                    buf.set_transform(rec, static=conn.topic == "/tf_static")
            elif conn.msgtype == "sensor_msgs/msg/CameraInfo":
                fa.add_camera_info(msg)
                cam = camera_from_info(msg)
            elif "depth" in conn.topic:
                fa.add_depth(msg)
            else:
                fa.add_rgb(msg)
            posed += fa.poll()
    assert [p.stamp_ns for p in posed] == gt.stamps_ns.tolist()
    for p, T in zip(posed, gt.T_world_cam):
        np.testing.assert_allclose(p.T_map_cam.matrix, T, atol=1e-9)
        ref = render_frame(room, T, cam.K, cam.width, cam.height)
        assert p.frame.rgb.shape == (24, 32, 3)
        np.testing.assert_array_equal(p.frame.rgb, ref.rgb)
        np.testing.assert_allclose(p.frame.depth_m[p.frame.depth_m > 0],
                                   ref.depth_m[p.frame.depth_m > 0], atol=6e-4)
    assert fa.stats["posed"] == 3 and fa.stats["sync_dropped"] == 0
