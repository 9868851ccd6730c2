"""numpy / query answers -> PointCloud2, QueryResult, MarkerArray, DiagnosticArray."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Jazzy wheels not installed")
if not os.environ.get("XMASK3D_EXPECT_INSTALL_SPACE"):
    pytest.importorskip("xmask3d_ros.msg", reason="needs the colcon install space (scripts/test.sh)")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from xmask3d_ros.msg import QueryResult  # noqa: E402
from xmask3d_ros.pipeline.answers import (  # noqa: E402
    UNKNOWN_LABEL,
    LabelAnswer,
    ObjectAnswer,
    QueryAnswer,
    QueryMode,
)
from xmask3d_ros.ros import conversions as conv  # noqa: E402

pytestmark = pytest.mark.ros


def _answer(n: int = 1000) -> QueryAnswer:
    rng = np.random.default_rng(0)
    pos = rng.uniform(-3, 3, (n, 3)).astype(np.float32)
    lab = rng.integers(0, 3, n).astype(np.uint16)
    lab[::7] = UNKNOWN_LABEL
    score = rng.uniform(-1, 1, n).astype(np.float32)
    score[::11] = np.nan
    chair = ObjectAnswer("chair", 0.75, (1.0, 2.0, 0.5), (0.5, 1.5, 0.0), (1.5, 2.5, 1.0), 42)
    results = (
        LabelAnswer("chair", 0, 300, 0.9, (chair, chair)),
        LabelAnswer("table", 1, 200, 0.8, ()),
        LabelAnswer("lamp", 2, 0, float("nan"), ()),
    )
    return QueryAnswer(
        stamp_ns=1_700_000_000_123_456_789, frame_id="odom", mode=QueryMode.SEGMENT,
        min_score=0.25, results=results, map_voxels=n, latency_ms=3.5, dropped_labels=(),
        positions=pos, voxel_label=lab, voxel_score=score, scores=None,
        voxel_object=np.full(n, -1, np.int32), timings_ms={},
    )


def _independent_read(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Read fields by offset with struct-free numpy views, independent of conv.cloud_to_array."""
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.width, msg.point_step)
    types = {PointField.FLOAT32: "<f4", PointField.UINT16: "<u2", PointField.UINT32: "<u4"}
    out = {}
    for f in msg.fields:
        dt = np.dtype(types[f.datatype])
        out[f.name] = raw[:, f.offset : f.offset + dt.itemsize].copy().view(dt).reshape(-1)
    return out


def test_semantic_cloud_layout_and_values() -> None:
    a = _answer()
    msg = deserialize_message(serialize_message(conv.semantic_cloud_from_answer(a)), PointCloud2)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label", "score"]
    assert msg.point_step == 24 and msg.row_step == 24 * 1000 and msg.height == 1
    assert msg.header.frame_id == "odom"
    assert conv.stamp_to_ns(msg.header.stamp) == a.stamp_ns
    assert not msg.is_bigendian and len(msg.data) == msg.row_step
    got = _independent_read(msg)
    np.testing.assert_array_equal(np.stack([got["x"], got["y"], got["z"]], 1), a.positions)
    np.testing.assert_array_equal(got["label"], a.voxel_label)
    np.testing.assert_array_equal(got["score"], a.voxel_score)  # NaN positions equal too
    rgb = got["rgb"].view("<u4")
    assert np.all(rgb >> 24 == 0)
    unknown = a.voxel_label == UNKNOWN_LABEL
    assert np.all(rgb[unknown] == 0x808080)
    # one colour per label, distinct between labels
    for k in range(3):
        assert len(np.unique(rgb[a.voxel_label == k])) == 1
    assert len({int(rgb[a.voxel_label == k][0]) for k in range(3)}) == 3
    back = conv.cloud_to_array(msg)
    np.testing.assert_array_equal(back["label"], a.voxel_label)


def test_pack_rgb_bits() -> None:
    packed = conv.pack_rgb(np.array([[255, 0, 0], [0, 128, 1]], np.uint8))
    assert packed.dtype == np.float32
    assert list(packed.view("<u4")) == [0xFF0000, 0x008001]


def test_query_cloud_intensity_is_score() -> None:
    a = _answer(50)
    msg = conv.query_cloud_from_answer(a)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity", "label"]
    got = _independent_read(msg)
    np.testing.assert_array_equal(got["intensity"], np.nan_to_num(a.voxel_score, nan=0.0))


def test_empty_cloud() -> None:
    msg = conv.semantic_cloud(np.zeros((0, 3)), [], [], frame_id="map", stamp_ns=0)
    assert msg.width == 0 and len(msg.data) == 0
    assert conv.cloud_to_array(msg).shape == (0,)


def test_query_result_mirrors_the_answer() -> None:
    a = _answer()
    msg = deserialize_message(serialize_message(conv.query_result_msg(a)), QueryResult)
    assert msg.header.frame_id == "odom" and conv.stamp_to_ns(msg.header.stamp) == a.stamp_ns
    assert msg.mode == 0 and msg.min_score == 0.25 and msg.map_voxels == 1000
    assert [r.label for r in msg.results] == ["chair", "table", "lamp"]
    assert [r.label_index for r in msg.results] == [0, 1, 2]
    obj = msg.results[0].objects[0]
    assert obj.label == "chair" and obj.num_voxels == 42 and obj.score == 0.75
    assert (obj.centroid.x, obj.centroid.y, obj.centroid.z) == (1.0, 2.0, 0.5)
    assert (obj.bbox_max.x, obj.bbox_max.y, obj.bbox_max.z) == (1.5, 2.5, 1.0)
    assert np.isnan(msg.results[2].max_score)


def test_legend_markers_at_centroids() -> None:
    a = _answer()
    arr = conv.legend_markers(a)
    assert arr.markers[0].action == Marker.DELETEALL
    texts = arr.markers[1:]
    assert len(texts) == 2 and len({m.id for m in texts}) == 2
    m = texts[0]
    assert m.type == Marker.TEXT_VIEW_FACING and m.header.frame_id == "odom"
    assert m.text.startswith("chair") and (m.pose.position.x, m.pose.position.y) == (1.0, 2.0)
    assert m.pose.position.z > 1.0  # above the box top
    assert m.color.a == 1.0


def test_diagnostic_array() -> None:
    st = conv.diagnostic_status(
        "xmask3d: input", "WARN", "TF drops", {"rate_hz": 9.5, "tf_drops": 3}, hardware_id="cam"
    )
    arr = conv.diagnostic_array([st], stamp_ns=5)
    assert arr.status[0].level == st.WARN and arr.status[0].hardware_id == "cam"
    assert {kv.key: kv.value for kv in arr.status[0].values} == {"rate_hz": "9.5", "tf_drops": "3"}
    assert conv.rss_bytes() > 0
