"""Synthetic rosbag2 files (replay/bag_writer.py) read back by rosbags, mcap and real rclpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.synthetic import BagCfg, SyntheticCfg
from xmask3d_ros.data.classes import SYNTHETIC_CLASSES, raw_to_scannet20
from xmask3d_ros.data.ground_truth import ground_truth_path, load_ground_truth
from xmask3d_ros.data.synthetic import generate_room, render_frame
from xmask3d_ros.replay.bag_writer import SyntheticBagWriter, write_synthetic_bag
from xmask3d_ros.replay.messages import depth_to_mm, image_msg

N_FRAMES = 3
TOPICS = {
    "/camera/color/image_raw": "sensor_msgs/msg/Image",
    "/camera/aligned_depth_to_color/image_raw": "sensor_msgs/msg/Image",
    "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/tf_static": "tf2_msgs/msg/TFMessage",
}
TS = get_typestore(Stores.ROS2_JAZZY)


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = from_dict(SyntheticCfg, {"camera": {"width": 40, "height": 30},
                                   "ground_truth": {"point_spacing_m": 0.15}})
    room = generate_room(8, cfg)
    path = tmp_path_factory.mktemp(request.param) / "room"
    gt_path = write_synthetic_bag(path, room, N_FRAMES, storage=request.param)
    messages: dict[str, list[tuple[int, bytes, Any]]] = {t: [] for t in TOPICS}
    with AnyReader([path], default_typestore=TS) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            messages[conn.topic].append((t, bytes(raw), reader.deserialize(raw, conn.msgtype)))
    return {"storage": request.param, "path": path, "room": room, "gt": load_ground_truth(gt_path),
            "gt_path": gt_path, "messages": messages, "qos": qos, "types": types}


def _image_array(msg: Any) -> np.ndarray:
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.encoding == "rgb8":
        return data.reshape(msg.height, msg.width, 3)
    assert msg.encoding == "16UC1" and not msg.is_bigendian and msg.step == msg.width * 2
    return data.view("<u2").reshape(msg.height, msg.width)


def test_topics_types_counts_and_static_qos(bag: dict[str, Any]) -> None:
    assert bag["types"] == TOPICS
    counts = {t: len(m) for t, m in bag["messages"].items()}
    assert counts == {**{t: N_FRAMES for t in TOPICS}, "/tf_static": 1}
    (static_qos,) = bag["qos"]["/tf_static"]
    assert static_qos.durability == QosDurability.TRANSIENT_LOCAL
    assert static_qos.reliability == QosReliability.RELIABLE and static_qos.depth == 1
    assert bag["gt_path"] == ground_truth_path(bag["path"])


def test_images_match_the_renderer_and_stamps_frames_are_consistent(bag: dict[str, Any]) -> None:
    room, gt, msgs = bag["room"], bag["gt"], bag["messages"]
    assert gt.stamps_ns.tolist() == [t for t, _, _ in msgs["/camera/color/image_raw"]]
    for i in range(N_FRAMES):
        frame = render_frame(room, gt.T_world_cam[i], gt.K, 40, 30)
        stamp = int(gt.stamps_ns[i])
        for topic in ("/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw",
                      "/camera/color/camera_info"):
            t, _, msg = msgs[topic][i]
            assert t == stamp == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert msg.header.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(_image_array(msgs["/camera/color/image_raw"][i][2]), frame.rgb)
        depth = _image_array(msgs["/camera/aligned_depth_to_color/image_raw"][i][2])
        assert np.abs(depth / 1000.0 - frame.depth_m).max() <= 0.0005 + 1e-6
        info = msgs["/camera/color/camera_info"][i][2]
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), gt.K)
        assert (info.width, info.height, info.distortion_model) == (40, 30, "plumb_bob")
        assert np.all(np.asarray(info.d) == 0) and len(info.d) == 5


def _matrix(tf: Any) -> np.ndarray:
    q, t = tf.transform.rotation, tf.transform.translation
    x, y, z, w = q.x, q.y, q.z, q.w
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (t.x, t.y, t.z)
    return T


def test_tf_chain_composes_to_the_rendered_camera_pose(bag: dict[str, Any]) -> None:
    gt, msgs = bag["gt"], bag["messages"]
    (_, _, static), = msgs["/tf_static"]
    edges = {(tf.header.frame_id, tf.child_frame_id): _matrix(tf) for tf in static.transforms}
    T_cam_opt = edges[("camera_link", "camera_color_optical_frame")]
    T_base_opt = edges[("base_link", "camera_link")] @ T_cam_opt
    # camera_link is x-forward / z-up: the optical z axis is camera_link's x axis.
    np.testing.assert_allclose(T_cam_opt[:3, 2], [1, 0, 0], atol=1e-12)
    for i, (t, _, msg) in enumerate(msgs["/tf"]):
        (tf,) = msg.transforms
        assert (tf.header.frame_id, tf.child_frame_id) == ("odom", "base_link") and t == gt.stamps_ns[i]
        np.testing.assert_allclose(_matrix(tf) @ T_base_opt, gt.T_world_cam[i], atol=1e-9)
    np.testing.assert_allclose(gt.T_world_cam, bag["room"].camera_poses(N_FRAMES), atol=1e-12)


def test_ground_truth_file(bag: dict[str, Any]) -> None:
    gt, room = bag["gt"], bag["room"]
    sp = room.sample_surface_points()
    np.testing.assert_array_equal(gt.points, sp.points)
    np.testing.assert_array_equal(gt.label_scannet20, raw_to_scannet20(gt.label))
    assert gt.class_names == SYNTHETIC_CLASSES and gt.frame_id == "odom"
    assert gt.instance_classes[int(gt.instance[0])] in SYNTHETIC_CLASSES
    assert gt.image_size == (40, 30) and gt.room_type == room.room_type and gt.seed == 8


def test_mcap_reader_decodes_the_same_messages(bag: dict[str, Any]) -> None:
    if bag["storage"] != "mcap":
        pytest.skip("the mcap library reads MCAP storage only")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (file,) = bag["path"].glob("*.mcap")
    seen: dict[str, int] = {}
    with file.open("rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.name == TOPICS[channel.topic]
            k = seen.get(channel.topic, 0)
            seen[channel.topic] = k + 1
            t, raw, ours = bag["messages"][channel.topic][k]
            assert message.log_time == t and bytes(message.data) == raw
            if channel.topic == "/camera/color/image_raw":
                assert bytes(decoded.data) == bytes(np.asarray(ours.data))
                assert (decoded.width, decoded.height, decoded.encoding) == (40, 30, "rgb8")
            if channel.topic == "/tf_static":
                assert "transient_local" in channel.metadata["offered_qos_profiles"]
    assert seen == {t: len(m) for t, m in bag["messages"].items()}


def test_real_rclpy_deserialises_images_and_camera_info(bag: dict[str, Any]) -> None:
    serialization = pytest.importorskip("rclpy.serialization")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    msgs = bag["messages"]
    for topic in ("/camera/color/image_raw", "/camera/aligned_depth_to_color/image_raw"):
        for _, raw, ours in msgs[topic]:
            img = serialization.deserialize_message(raw, sensor_msgs.Image)
            got = (img.height, img.width, img.encoding, img.step)
            assert got == (ours.height, ours.width, ours.encoding, ours.step)
            assert img.header.frame_id == "camera_color_optical_frame"
            data = np.frombuffer(bytes(img.data), np.uint8)
            np.testing.assert_array_equal(data, np.asarray(ours.data))
    _, raw, ours = msgs["/camera/color/camera_info"][0]
    info = serialization.deserialize_message(raw, sensor_msgs.CameraInfo)
    np.testing.assert_allclose(np.asarray(info.k), ours.k)
    assert info.distortion_model == "plumb_bob" and info.header.stamp.sec == ours.header.stamp.sec


def test_real_rclpy_deserialises_tf(bag: dict[str, Any]) -> None:
    serialization = pytest.importorskip("rclpy.serialization")
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    for topic in ("/tf_static", "/tf"):
        _, raw, ours = bag["messages"][topic][0]
        try:
            import tf2_msgs.msg as tf2_msgs  # type: ignore[import-not-found]
        except ImportError:
            # No tf2_msgs wheel: check every TransformStamped element with rclpy instead.
            transforms = [serialization.deserialize_message(
                bytes(TS.serialize_cdr(t, "geometry_msgs/msg/TransformStamped")),
                geometry_msgs.TransformStamped) for t in ours.transforms]
        else:
            transforms = serialization.deserialize_message(raw, tf2_msgs.TFMessage).transforms
        assert len(transforms) == len(ours.transforms)
        for got, want in zip(transforms, ours.transforms):
            assert got.header.frame_id == want.header.frame_id
            assert got.child_frame_id == want.child_frame_id
            assert got.header.stamp.sec == want.header.stamp.sec
            r, w = got.transform.rotation, want.transform.rotation
            assert (r.x, r.y, r.z, r.w) == (w.x, w.y, w.z, w.w)
            assert got.transform.translation.z == want.transform.translation.z


def test_writer_checks_sizes_stamps_and_existing_paths(tmp_path: Path) -> None:
    room = generate_room(1)
    frame = render_frame(room, room.camera_poses(1)[0], room.intrinsics(16, 12), 16, 12)
    with SyntheticBagWriter(tmp_path / "b", frame.K, 16, 12, storage="sqlite3") as w:
        w.write_frame(10, frame)
        with pytest.raises(ValueError, match="stamps must increase"):
            w.write_frame(10, frame)
        with pytest.raises(ValueError, match="opened for 16x12"):
            w.write_frame(20, render_frame(room, frame.T_world_cam, room.intrinsics(8, 6), 8, 6))
    with pytest.raises(Exception, match="exists"):
        SyntheticBagWriter(tmp_path / "b", frame.K, 16, 12)
    with pytest.raises(ValueError, match="storage"):
        SyntheticBagWriter(tmp_path / "c", frame.K, 16, 12, cfg=BagCfg(), storage="rosbag1")


def test_message_builders_reject_wrong_arrays() -> None:
    with pytest.raises(ValueError, match="rgb8 image must be uint8 with 3"):
        image_msg(TS, np.zeros((4, 4), np.uint8), 0, "f", "rgb8")
    with pytest.raises(ValueError, match="unsupported encoding"):
        image_msg(TS, np.zeros((4, 4), np.uint8), 0, "f", "yuv422")
    mm = depth_to_mm(np.array([[0.0, np.nan, np.inf, 1.2344, 70.0, -1.0]]))
    assert mm.tolist() == [[0, 0, 0, 1234, 0, 0]]
