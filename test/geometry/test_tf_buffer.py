"""TfBuffer: chains and interpolation against hand-built 4x4 products, every failure typed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

S = 1_000_000_000  # ns per second


def rz(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def qz(theta: float) -> list[float]:
    return [0.0, 0.0, math.sin(theta / 2), math.cos(theta / 2)]


def mat(R: np.ndarray, t: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


# Optical frame of a camera looking along base x: z_opt = x_base, x_opt = -y_base, y_opt = -z_base.
R_BASE_CAM = np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])
Q_BASE_CAM = [-0.5, 0.5, -0.5, 0.5]


@pytest.fixture()
def tree() -> TfBuffer:
    """map -(static)- odom -(dynamic)- base -(static)- cam_optical ; base -(dynamic)- arm."""
    buf = TfBuffer(cache_duration_s=10.0)
    buf.set_transform(TransformRecord("map", "odom", 0, [10.0, 0, 0], qz(math.pi / 2)), static=True)
    buf.set_transform(TransformRecord("odom", "base", 1 * S, [0.0, 0, 0], qz(0.0)))
    buf.set_transform(TransformRecord("odom", "base", 2 * S, [2.0, 4.0, 0], qz(0.8)))
    buf.set_transform(TransformRecord("base", "cam_optical", 0, [0.1, 0, 1.0], Q_BASE_CAM), static=True)
    buf.set_transform(TransformRecord("base", "arm", 1 * S, [0, 0, 0.5], qz(0.0)))
    buf.set_transform(TransformRecord("base", "arm", int(1.8 * S), [0, 0, 0.5], qz(1.0)))
    return buf


def test_static_quaternion_is_the_optical_rotation() -> None:
    buf = TfBuffer()
    buf.set_transform(TransformRecord("base", "cam", 0, [0, 0, 0], Q_BASE_CAM), static=True)
    np.testing.assert_allclose(buf.lookup("base", "cam", 0).rotation, R_BASE_CAM, atol=1e-12)


def test_chain_with_interpolation_matches_hand_product(tree: TfBuffer) -> None:
    T_map_odom = mat(rz(math.pi / 2), [10, 0, 0])
    T_odom_base = mat(rz(0.4), [1.0, 2.0, 0])  # halfway between the 1 s and 2 s samples
    T_base_cam = mat(R_BASE_CAM, [0.1, 0, 1.0])
    got = tree.lookup("map", "cam_optical", int(1.5 * S))
    np.testing.assert_allclose(got.matrix, T_map_odom @ T_odom_base @ T_base_cam, atol=1e-12)
    inv = tree.lookup("cam_optical", "map", int(1.5 * S))
    np.testing.assert_allclose(inv.matrix, np.linalg.inv(T_map_odom @ T_odom_base @ T_base_cam), atol=1e-12)
    # A point 2 m in front of the camera lands 2 m ahead of the base along its heading.
    p = tree.lookup("odom", "cam_optical", 2 * S).apply(np.array([[0, 0, 2.0]], np.float32))
    np.testing.assert_allclose(p[0], [2 + 2.1 * math.cos(0.8), 4 + 2.1 * math.sin(0.8), 1.0], atol=1e-5)


def test_sibling_branches_meet_at_common_ancestor(tree: TfBuffer) -> None:
    t = int(1.4 * S)
    T_base_arm = mat(rz(0.5), [0, 0, 0.5])  # 0.4 s of 0.8 s between 0 and 1 rad
    T_base_cam = mat(R_BASE_CAM, [0.1, 0, 1.0])
    got = tree.lookup("cam_optical", "arm", t)
    np.testing.assert_allclose(got.matrix, np.linalg.inv(T_base_cam) @ T_base_arm, atol=1e-12)
    assert tree.lookup("arm", "arm", t).allclose(tree.lookup("odom", "odom", 0))


def test_exact_samples_and_static_only_paths(tree: TfBuffer) -> None:
    np.testing.assert_allclose(tree.lookup("odom", "base", 2 * S).matrix, mat(rz(0.8), [2, 4, 0]), atol=1e-12)
    for stamp in (0, 5, 123 * S):  # static edges are timeless
        np.testing.assert_allclose(tree.lookup("map", "odom", stamp).translation, [10, 0, 0])
    assert tree.latest_common_time("map", "odom") == 0


def test_stamp_zero_is_latest_common_time(tree: TfBuffer) -> None:
    assert tree.latest_common_time("map", "arm") == int(1.8 * S)
    assert tree.lookup("map", "arm", 0).allclose(tree.lookup("map", "arm", int(1.8 * S)))
    assert tree.lookup("cam_optical", "odom", 0).allclose(tree.lookup("cam_optical", "odom", 2 * S))


def test_typed_errors_name_frames_and_stamps(tree: TfBuffer) -> None:
    with pytest.raises(UnknownFrameError, match='"camera_link" passed to lookup does not exist') as info:
        tree.lookup("map", "camera_link", 0)
    assert isinstance(info.value, LookupError) and isinstance(info.value, TransformError)
    tree.set_transform(TransformRecord("world", "robot2", S, [0, 0, 0], qz(0)))
    with pytest.raises(ConnectivityError, match=r'"map" and "robot2".*roots "map" and "world"'):
        tree.lookup("map", "robot2", S)
    msg = r"past.*0\.500000000.*1\.000000000.*\[base\] to frame \[odom\]"
    with pytest.raises(PastExtrapolationError, match=msg) as past:
        tree.lookup("map", "cam_optical", S // 2)
    assert past.value.requested_ns == S // 2 and past.value.oldest_ns == S
    with pytest.raises(FutureExtrapolationError, match=r"future.*3\.000000000.*2\.000000000"):
        tree.lookup("map", "cam_optical", 3 * S)
    with pytest.raises(ExtrapolationError):
        tree.lookup("map", "arm", int(1.9 * S))  # arm edge ends at 1.8 s
    assert not tree.can_transform("map", "arm", int(1.9 * S))
    assert tree.can_transform("map", "arm", int(1.7 * S))
    assert not tree.can_transform("map", "nowhere", 0)


def test_tolerance_uses_nearest_sample(tree: TfBuffer) -> None:
    late = 2 * S + 5_000_000
    with pytest.raises(FutureExtrapolationError):
        tree.lookup("odom", "base", late)
    got = tree.lookup("odom", "base", late, tolerance_ns=10_000_000)
    assert got.allclose(tree.lookup("odom", "base", 2 * S))
    early = S - 5_000_000
    assert tree.lookup("odom", "base", early, tolerance_ns=5_000_000).allclose(tree.lookup("odom", "base", S))
    buf = TfBuffer()
    buf.set_transform(TransformRecord("a", "b", S, [1, 0, 0], qz(0)))  # a single sample
    assert buf.can_transform("a", "b", S) and not buf.can_transform("a", "b", S + 1)
    assert buf.can_transform("a", "b", S + 1, tolerance_ns=1)


def test_invalid_records_rejected() -> None:
    buf = TfBuffer()
    bad = [
        TransformRecord("a", "a", 0, [0, 0, 0], qz(0)),
        TransformRecord("", "a", 0, [0, 0, 0], qz(0)),
        TransformRecord("a", "b", 0, [np.nan, 0, 0], qz(0)),
        TransformRecord("a", "b", 0, [0, 0], qz(0)),
        TransformRecord("a", "b", 0, [0, 0, 0], [0, 0, 0, 0]),
        TransformRecord("a", "b", -1, [0, 0, 0], qz(0)),
    ]
    for rec in bad:
        with pytest.raises(InvalidTransformError):
            buf.set_transform(rec)
    buf.set_transform(TransformRecord("a", "b", 0, [0, 0, 0], qz(0)))
    buf.set_transform(TransformRecord("b", "c", 0, [0, 0, 0], qz(0)))
    with pytest.raises(InvalidTransformError, match="loop"):
        buf.set_transform(TransformRecord("c", "a", 0, [0, 0, 0], qz(0)))
    assert isinstance(InvalidTransformError("x"), ValueError)
    with pytest.raises(ValueError):
        TfBuffer(cache_duration_s=0.0)


@settings(max_examples=25, deadline=None)
@given(  # queries start above 0: stamp 0 means "latest"
    st.permutations(list(range(12))), st.lists(st.floats(0.01, 11.0), min_size=1, max_size=8)
)
def test_out_of_order_inserts_equal_in_order(order: list[int], queries: list[float]) -> None:
    def record(k: int) -> TransformRecord:
        return TransformRecord("odom", "base", k * S, [k, -k, 0.1 * k], qz(0.3 * k))

    ordered, shuffled = TfBuffer(60.0), TfBuffer(60.0)
    for k in range(12):
        ordered.set_transform(record(k))
    for k in order:
        shuffled.set_transform(record(k))
    for q in queries:
        t = int(q * S)
        assert shuffled.lookup("odom", "base", t).allclose(ordered.lookup("odom", "base", t), atol=1e-12)
        frac = q - math.floor(q)
        k = math.floor(q)
        np.testing.assert_allclose(
            shuffled.lookup("odom", "base", t).rotation, rz(0.3 * (k + frac)), atol=1e-9
        )


def test_cache_window_old_data_and_repeats() -> None:
    buf = TfBuffer(cache_duration_s=5.0)
    for k in range(201):  # 0 .. 20 s at 10 Hz; also exercises buffer growth and compaction
        buf.set_transform(TransformRecord("odom", "base", k * S // 10, [k / 10, 0, 0], qz(0)))
    assert buf.stats["inserted"] == 201
    with pytest.raises(PastExtrapolationError):
        buf.lookup("odom", "base", 14 * S)
    np.testing.assert_allclose(buf.lookup("odom", "base", 15 * S).translation, [15, 0, 0], atol=1e-9)
    t = buf.lookup("odom", "base", 17_250_000_000).translation
    np.testing.assert_allclose(t, [17.25, 0, 0], atol=1e-9)
    buf.set_transform(TransformRecord("odom", "base", 3 * S, [0, 0, 0], qz(0)))  # older than the window
    assert buf.stats["old_data_ignored"] == 1
    buf.set_transform(TransformRecord("odom", "base", 16 * S, [99, 0, 0], qz(0)))  # repeated stamp
    assert buf.stats["repeated_stamp"] == 1
    np.testing.assert_allclose(buf.lookup("odom", "base", 16 * S).translation, [99, 0, 0])


def test_reparent_and_static_switch_restart_history() -> None:
    buf = TfBuffer()
    buf.set_transform(TransformRecord("/odom", "base", 1 * S, [1, 0, 0], qz(0)))  # leading '/' stripped
    buf.set_transform(TransformRecord("odom", "base", 2 * S, [2, 0, 0], qz(0)))
    buf.set_transform(TransformRecord("map", "odom", 0, [0, 5, 0], qz(0)), static=True)
    buf.set_transform(TransformRecord("map", "base", 3 * S, [7, 7, 0], qz(0)))  # re-parented
    assert buf.stats["reparented"] == 1 and buf.parent_of("base") == "map"
    np.testing.assert_allclose(buf.lookup("odom", "base", 3 * S).translation, [7, 2, 0])
    with pytest.raises(PastExtrapolationError):
        buf.lookup("map", "base", int(1.5 * S))  # the old-parent history is gone
    buf.set_transform(TransformRecord("map", "odom", 4 * S, [0, 6, 0], qz(0)))  # static -> dynamic
    assert buf.stats["static_dynamic_switch"] == 1
    with pytest.raises(PastExtrapolationError):
        buf.lookup("map", "odom", 3 * S)
    assert buf.parent_of("map") is None and buf.frames() == ["base", "map", "odom"]
    with pytest.raises(UnknownFrameError):
        buf.parent_of("nope")
    buf.clear()
    assert buf.frames() == []
