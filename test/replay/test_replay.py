"""replay/reader.py + replay/run.py: a synthetic bag replayed equals the pipeline fed directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.config.perception import load_perception_config
from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.classes import SYNTHETIC_CLASSES, SYNTHETIC_RAW_IDS
from xmask3d_ros.data.ground_truth import load_ground_truth
from xmask3d_ros.data.synthetic import generate_room, render_frame
from xmask3d_ros.geometry.camera import PinholeCamera, decode_depth
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.pipeline import GroundTruthSegmenter, PerceptionPipeline, TableTextEncoder
from xmask3d_ros.replay.bag_writer import write_synthetic_bag
from xmask3d_ros.replay.messages import camera_info_msg, image_msg, tf_message, transform_stamped_msg
from xmask3d_ros.replay.reader import BagError, open_bag, select_topics
from xmask3d_ros.replay.run import replay_bag
from xmask3d_ros.replay.messages import depth_to_mm

N = 4
W, H = 32, 24
TS = get_typestore(Stores.ROS2_JAZZY)
LABELS = ["wall", "floor", "chair", "table"]
CLASS_NAMES = dict(zip(SYNTHETIC_RAW_IDS, SYNTHETIC_CLASSES))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = from_dict(SyntheticCfg, {"camera": {"width": W, "height": H},
                                   "ground_truth": {"point_spacing_m": 0.3}})
    room = generate_room(5, cfg)
    root = tmp_path_factory.mktemp("bags")
    paths = {}
    for storage in ("mcap", "sqlite3"):
        paths[storage] = root / storage
        gt_path = write_synthetic_bag(paths[storage], room, N, storage=storage)
    gt = load_ground_truth(gt_path)
    K = room.intrinsics(W, H)
    frames = [render_frame(room, T, K, W, H) for T in gt.T_world_cam]
    labels = {int(s): f.label for s, f in zip(gt.stamps_ns, frames)}
    return {"room": room, "paths": paths, "gt": gt, "frames": frames, "labels": labels, "K": K}


def _models(scene: dict[str, Any]) -> tuple[GroundTruthSegmenter, TableTextEncoder]:
    enc = TableTextEncoder(SYNTHETIC_CLASSES, 32, seed=1)
    seg = GroundTruthSegmenter(enc, CLASS_NAMES, lambda p: scene["labels"][p.stamp_ns])
    return seg, enc


def _cfg() -> Any:
    return load_perception_config(None, ["pipeline.mode=sync"])


def _replay(scene: dict[str, Any], storage: str, **kw: Any) -> Any:
    seg, enc = _models(scene)
    return replay_bag(scene["paths"][storage], _cfg(), segmenter=seg, text_encoder=enc,
                      labels=LABELS, **kw)


def _sorted(keys: np.ndarray, *vals: np.ndarray) -> list[np.ndarray]:
    order = np.lexsort(keys.T[::-1])
    return [keys[order], *(v[order] for v in vals)]


def test_replay_equals_direct_pipeline(scene: dict[str, Any]) -> None:
    rep = _replay(scene, "mcap")
    assert (rep.frames_read, rep.frames_synced, rep.frames_posed, rep.frames_used) == (N, N, N, N)
    assert rep.topics.depth == "/camera/aligned_depth_to_color/image_raw"
    assert rep.topics.tf == ("/tf",) and rep.topics.tf_static == ("/tf_static",)
    assert sum(rep.dropped.values()) == 0 and rep.snapshot.size > 0
    seg, enc = _models(scene)
    K = scene["K"]
    cam = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], W, H)
    gt = scene["gt"]
    with PerceptionPipeline(_cfg(), seg, enc) as pipe:
        for f, s, T in zip(scene["frames"], gt.stamps_ns, gt.T_world_cam):
            # the bag stores millimetres: the direct path gets the same quantisation
            depth = decode_depth(depth_to_mm(f.depth_m), "16UC1")
            frame = RgbdFrame(f.rgb, depth, cam, int(s), gt.optical_frame)
            pipe.step(PosedFrame(frame, SE3.from_matrix(T)))
        direct = pipe.snapshot()
        ans = pipe.query(LABELS)
    assert rep.keyframes == pipe.stats.keyframes
    a_keys, a_col = _sorted(rep.snapshot.keys, rep.snapshot.colors)
    b_keys, b_col = _sorted(direct.keys, direct.colors)
    np.testing.assert_array_equal(a_keys, b_keys)
    np.testing.assert_array_equal(a_col, b_col)
    ra = _sorted(np.floor(rep.answer.positions / direct.voxel_size_m).astype(np.int64),
                 rep.answer.voxel_label)
    rb = _sorted(np.floor(ans.positions / direct.voxel_size_m).astype(np.int64), ans.voxel_label)
    np.testing.assert_array_equal(ra[1], rb[1])
    assert "read" in rep.summary() and rep.timings_ms["pipeline"] > 0


def test_mcap_and_sqlite3_identical_and_cuts(scene: dict[str, Any]) -> None:
    a, b = _replay(scene, "mcap"), _replay(scene, "sqlite3")
    for x, y in ((a.snapshot.keys, b.snapshot.keys), (a.snapshot.colors, b.snapshot.colors),
                 (a.snapshot.counts, b.snapshot.counts), (a.answer.voxel_label, b.answer.voxel_label)):
        np.testing.assert_array_equal(x, y)
    every = _replay(scene, "mcap", every=2)
    assert every.frames_used == N // 2 and every.dropped["skipped_every"] == N - N // 2
    period = (int(scene["gt"].stamps_ns[1]) - int(scene["gt"].stamps_ns[0])) / 1e9
    cut = _replay(scene, "mcap", start_s=period * 0.5, duration_s=period * 2)
    assert cut.frames_read == 2 and cut.frames_used == 2


def _write(path: Path, topics: dict[str, str], storage: str = "mcap", rgb_encoding: str = "rgb8",
           stamps_ns: tuple[int, ...] = (1_000_000_000, 1_100_000_000)) -> None:
    """A tiny bag with the given topics: one 4x3 frame per header stamp (log time in order)."""
    from rosbags.rosbag2 import StoragePlugin

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    K = np.array([[5.0, 0, 1.5], [0, 5.0, 1.0], [0, 0, 1]])
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {t: w.add_connection(t, ty, typestore=TS) for t, ty in topics.items()}
        for k, s in enumerate(stamps_ns):
            log_ns = 1_000_000_000 + k * 100_000_000
            for t, c in conns.items():
                if "depth" in t:
                    msg = image_msg(TS, np.full((3, 4), 1000, np.uint16), s, "cam", "16UC1")
                elif "info" in t:
                    msg = camera_info_msg(TS, K, 4, 3, s, "cam")
                elif "tf" in t:
                    msg = tf_message(TS, [transform_stamped_msg(TS, np.eye(4), "odom", "cam", s)])
                else:
                    msg = image_msg(TS, np.zeros((3, 4, 3), np.uint8), s, "cam", "rgb8")
                    msg.encoding = rgb_encoding
                w.write(c, log_ns, TS.serialize_cdr(msg, c.msgtype))


ALL = {"/cam/color/image_raw": "sensor_msgs/msg/Image", "/cam/depth/image_raw": "sensor_msgs/msg/Image",
       "/cam/color/camera_info": "sensor_msgs/msg/CameraInfo", "/tf": "tf2_msgs/msg/TFMessage"}


@pytest.mark.parametrize("missing,reason", [("/cam/depth/image_raw", "no_depth"),
                                            ("/cam/color/camera_info", "no_camera_info"),
                                            ("/tf", "no_tf"), ("/cam/color/image_raw", "no_rgb")])
def test_bag_missing_topic(tmp_path: Path, missing: str, reason: str) -> None:
    _write(tmp_path / "b", {t: ty for t, ty in ALL.items() if t != missing})
    with pytest.raises(BagError) as e:
        open_bag(tmp_path / "b")
    assert e.value.reason == reason


def test_small_bag_ok_and_notes(tmp_path: Path) -> None:
    _write(tmp_path / "b", ALL, storage="sqlite3")
    with open_bag(tmp_path / "b") as src:
        assert src.topics.rgb == "/cam/color/image_raw" and src.topics.depth == "/cam/depth/image_raw"
        assert any("camera_info" in n for n in src.notes)
        assert [m.role for m in src.messages()].count("rgb") == 2


def test_select_topics_prefers_namespaces_and_checks_named() -> None:
    types = {**ALL, "/other/camera_info": "sensor_msgs/msg/CameraInfo", "/tf_static": "tf2_msgs/msg/TFMessage"}
    topics, _ = select_topics(types)
    assert topics.camera_info == "/cam/color/camera_info" and topics.tf_static == ("/tf_static",)
    with pytest.raises(BagError) as e:
        select_topics(types, depth="/tf")
    assert e.value.reason == "bad_depth_topic"


def _mcap_file(path: Path) -> Path:
    (f,) = sorted(path.glob("*.mcap"))
    return f


def test_bad_bags_give_clear_errors(tmp_path: Path, scene: dict[str, Any]) -> None:
    with pytest.raises(BagError) as e:
        open_bag(tmp_path / "nope")
    assert e.value.reason == "missing"
    # truncated MCAP: the summary/footer is gone
    _write(tmp_path / "t", ALL)
    f = _mcap_file(tmp_path / "t")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError) as e:
        with open_bag(tmp_path / "t") as src:
            list(src.messages())
    assert e.value.reason in ("truncated", "corrupt", "unreadable") and str(tmp_path / "t") in str(e.value)
    # corrupt chunk: the record headers at the start of the (uncompressed, CRC-less) chunk
    _write(tmp_path / "c", ALL)
    f = _mcap_file(tmp_path / "c")
    with open(f, "rb") as fh:
        (chunk,) = make_reader(fh).get_summary().chunk_indexes[:1]
    data = bytearray(f.read_bytes())
    records = chunk.chunk_start_offset + 9 + 8 * 3 + 4 + 4 + len(chunk.compression) + 8
    data[records : records + 16] = b"\xff" * 16
    f.write_bytes(bytes(data))
    with pytest.raises(BagError) as e:
        with open_bag(tmp_path / "c") as src:
            list(src.messages())
    assert e.value.reason in ("corrupt", "truncated", "unreadable")


def test_cli_outputs(scene: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from plyfile import PlyData
    from rosbags.highlevel import AnyReader

    from xmask3d_ros.cli.replay import main

    with pytest.raises(SystemExit):  # the test double is never chosen silently
        main([str(scene["paths"]["mcap"]), "--out", str(tmp_path / "x")])
    out = tmp_path / "out"
    rc = main([str(scene["paths"]["mcap"]), "--out", str(out), "--segmenter", "ground_truth", "--quiet",
               "--labels", "wall,floor,chair,table,lamp", "--novel", "table",
               "--set", "visibility.border_px=1", "--save-map", str(out / "map.safetensors")])
    text = capsys.readouterr().out
    assert rc == 0 and "TEST DOUBLE" in text and "mIoU" in text
    ply_data = PlyData.read(str(out / "map.ply"))
    assert ply_data.comments == ["frame odom", "label 0 wall", "label 1 floor", "label 2 chair",
                                 "label 3 table", "label 4 lamp", "label 65535 unknown"]
    ply = ply_data["vertex"]
    names = {p.name for p in ply.properties}
    assert {"x", "y", "z", "red", "label", "score"} <= names and ply.count > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["miou_all"] is not None and 0 < metrics["gt_coverage"] <= 1
    # labelled voxels carry the class of the nearest GT point (4 frames: a partial map)
    from scipy.spatial import cKDTree

    gt = scene["gt"]
    known = ply["label"] != 65535
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], 1)[known]
    _, nn = cKDTree(gt.points).query(xyz)
    gt_names = np.array(gt.class_names)[gt.label_synthetic[nn]]
    pred = np.array("wall,floor,chair,table,lamp".split(","))[ply["label"][known]]
    assert known.sum() > 20 and np.mean(gt_names == pred) > 0.7
    # --save-map: the map file, loaded into a fresh pipeline, gives the replay's answer
    from xmask3d_ros.replay.gt_segmenter import ground_truth_models

    assert f"wrote {out / 'map.safetensors'}" in text
    with PerceptionPipeline(load_perception_config(None), None, ground_truth_models(gt)[1]) as pipe:
        assert pipe.load_map(out / "map.safetensors").voxels == ply.count
        again = pipe.query("wall,floor,chair,table,lamp".split(","))
    np.testing.assert_array_equal(again.voxel_label, ply["label"])
    np.testing.assert_array_equal(again.voxel_score, ply["score"])
    report = json.loads((out / "report.json").read_text())
    assert report["frames_used"] == N and report["segmenter"].startswith("ground_truth")
    assert (out / "topdown.png").stat().st_size > 0 and (out / "topdown_gt.png").exists()
    assert not list(out.glob(".*partial"))
    with AnyReader([out / "semantic_map.mcap"], default_typestore=TS) as reader:
        msgs = {c.topic: reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()}
    cloud = msgs["/semantic_cloud"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "label", "score"]
    assert cloud.width == ply.count and cloud.point_step * cloud.width == len(cloud.data)
    assert json.loads(msgs["/query_result"].data)["results"][0]["label"] == "wall"
    from mcap.reader import make_reader

    (f,) = sorted((out / "semantic_map.mcap").glob("*.mcap"))
    with open(f, "rb") as fh:
        topics = {ch.topic for _, ch, _ in make_reader(fh).iter_messages()}
    assert topics == {"/semantic_cloud", "/query_result", "/tf", "/tf_static"}  # TF copied from the input
    assert main([str(tmp_path / "nope"), "--out", str(out), "--segmenter", "ground_truth",
                 "--gt", str(scene["paths"]["mcap"]) + ".gt.npz", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _to_compressed(src: Path, dst: Path) -> None:
    """Copy ``src`` with colour as PNG CompressedImage and depth as compressedDepth (16UC1)."""
    import io
    import struct

    from PIL import Image
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin

    from xmask3d_ros.pipeline.decode import decode_rgb

    CI = "sensor_msgs/msg/CompressedImage"
    with AnyReader([src], default_typestore=TS) as reader, \
            Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for c in reader.connections:
            comp = c.msgtype == "sensor_msgs/msg/Image"
            topic = c.topic + ("/compressedDepth" if "depth" in c.topic else "/compressed") if comp else c.topic
            conns[c.topic] = w.add_connection(topic, CI if comp else c.msgtype, typestore=TS)
        for c, t, raw in reader.messages():
            out = conns[c.topic]
            if out.msgtype != CI:
                w.write(out, t, raw)
                continue
            msg = reader.deserialize(raw, c.msgtype)
            buf = io.BytesIO()
            if "depth" in c.topic:
                mm = np.asarray(msg.data).view("<u2").reshape(msg.height, msg.width)
                Image.fromarray(mm).save(buf, format="PNG")
                data, fmt = struct.pack("<iff", 0, 0.0, 0.0) + buf.getvalue(), "16UC1; compressedDepth png"
            else:
                Image.fromarray(decode_rgb(msg)).save(buf, format="PNG")
                data, fmt = buf.getvalue(), "rgb8; png compressed rgb8"
            cmsg = TS.types[CI](header=msg.header, format=fmt, data=np.frombuffer(data, np.uint8))
            w.write(out, t, TS.serialize_cdr(cmsg, CI))


def test_compressed_topics_give_the_same_map(scene: dict[str, Any], tmp_path: Path) -> None:
    _to_compressed(scene["paths"]["mcap"], tmp_path / "comp")
    with open_bag(tmp_path / "comp") as src:
        assert src.topics.depth.endswith("/compressedDepth") and src.topics.rgb.endswith("/compressed")
    seg, enc = _models(scene)
    a = _replay(scene, "mcap")
    b = replay_bag(tmp_path / "comp", _cfg(), segmenter=seg, text_encoder=enc, labels=LABELS)
    assert b.frames_used == N and sum(b.dropped.values()) == 0
    np.testing.assert_array_equal(a.snapshot.keys, b.snapshot.keys)  # PNG is lossless
    np.testing.assert_array_equal(a.snapshot.colors, b.snapshot.colors)
    np.testing.assert_array_equal(a.answer.voxel_label, b.answer.voxel_label)


def test_real_rclpy_reads_output_cloud_and_ingests_rclpy_messages(scene: dict[str, Any], tmp_path: Path) -> None:
    """The output PointCloud2 deserialises with real rclpy; rclpy Image/CameraInfo go through ingest."""
    serialization = pytest.importorskip("rclpy.serialization")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    from rosbags.highlevel import AnyReader

    from xmask3d_ros.geometry.tf_buffer import TfBuffer, TransformRecord
    from xmask3d_ros.pipeline.ingest import FrameAssembler
    from xmask3d_ros.replay.outputs import write_output_bag

    rep = _replay(scene, "mcap")
    write_output_bag(tmp_path / "o", rep.answer)
    with AnyReader([tmp_path / "o"], default_typestore=TS) as reader:
        (raw,) = [bytes(r) for c, _, r in reader.messages() if c.topic == "/semantic_cloud"]
    cloud = serialization.deserialize_message(raw, sensor_msgs.PointCloud2)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 4), ("score", 20, 7)]
    assert cloud.width == rep.snapshot.size and len(cloud.data) == 24 * cloud.width
    # rclpy messages (array.array data, lower-case k/d/p) through the shared ingest
    with AnyReader([scene["paths"]["mcap"]], default_typestore=TS) as reader:
        raws = {c.topic: bytes(r) for c, _, r in reader.messages() if "camera" in c.topic}
    rgb = serialization.deserialize_message(raws["/camera/color/image_raw"], sensor_msgs.Image)
    depth = serialization.deserialize_message(raws["/camera/aligned_depth_to_color/image_raw"], sensor_msgs.Image)
    info = serialization.deserialize_message(raws["/camera/color/camera_info"], sensor_msgs.CameraInfo)
    buf = TfBuffer()
    stamp = rgb.header.stamp.sec * 1_000_000_000 + rgb.header.stamp.nanosec
    buf.set_transform(TransformRecord("odom", rgb.header.frame_id, stamp, (0, 0, 0), (0, 0, 0, 1)))
    fa = FrameAssembler(_cfg(), buf)
    assert fa.add_synced(rgb, depth, info)
    (posed,) = fa.poll()
    assert posed.frame.rgb.shape == (H, W, 3) and posed.frame.depth_m.max() > 0


def test_unknown_encoding_and_out_of_order_stamps_are_counted(tmp_path: Path) -> None:
    enc = TableTextEncoder(["wall"], 8)
    _write(tmp_path / "e", ALL, rgb_encoding="yuv422")
    rep = replay_bag(tmp_path / "e", _cfg(), segmenter=None, text_encoder=enc, labels=["wall"])
    assert rep.frames_read == 2 and rep.frames_used == 0
    assert rep.dropped["decode_error_unknown_encoding"] == 2
    # header stamps going backwards: the late set is refused by the synchroniser and counted
    s = (1_000_000_000, 1_200_000_000, 1_100_000_000)
    _write(tmp_path / "o", ALL, stamps_ns=s)
    rep = replay_bag(tmp_path / "o", _cfg(), segmenter=None, text_encoder=enc, labels=["wall"])
    assert rep.frames_used == 2 and rep.dropped["sync_dropped"] == 3
