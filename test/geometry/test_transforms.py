"""SE(3) and quaternion helpers against Rodrigues' formula and explicit 4x4 products."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xmask3d_ros.geometry.transforms import (
    SE3,
    is_valid_pose,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_to_matrix,
    slerp,
)


def rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    """Independent reference: R = I + sin(a) K + (1 - cos(a)) K^2."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def axis_angle_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.array([*(math.sin(angle / 2) * k), math.cos(angle / 2)])


def rotation_angle(R: np.ndarray) -> float:
    return math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2)))


unit_vectors = st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda v: np.linalg.norm(v) > 1e-3)
angles = st.floats(-math.pi, math.pi)
quaternions = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda v: np.linalg.norm(v) > 1e-2)


def test_known_rotations_ros_order() -> None:
    s = math.sqrt(0.5)
    Rz = quaternion_to_matrix([0, 0, s, s])  # 90 deg about z: x -> y
    np.testing.assert_allclose(Rz @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    Rx = quaternion_to_matrix([1, 0, 0, 0])  # 180 deg about x
    np.testing.assert_allclose(Rx, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix([0, 0, 0, 1]), np.eye(3))


@settings(max_examples=60, deadline=None)
@given(unit_vectors, angles)
def test_quaternion_matches_rodrigues(axis: tuple, angle: float) -> None:
    q = axis_angle_quat(np.array(axis), angle)
    np.testing.assert_allclose(quaternion_to_matrix(q), rodrigues(np.array(axis), angle), atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(quaternions)
def test_quaternion_round_trip(q: tuple) -> None:
    qn = np.array(q) / np.linalg.norm(q)
    back = matrix_to_quaternion(quaternion_to_matrix(qn))
    assert back[3] >= 0
    expected = qn if qn[3] >= 0 else -qn
    if abs(qn[3]) < 1e-9:  # w == 0: q and -q both have w >= 0; compare up to sign
        expected = expected * np.sign(expected @ back)
    np.testing.assert_allclose(back, expected, atol=1e-9)


def test_matrix_round_trip_near_pi_and_batched() -> None:
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(50, 3))
    angs = np.concatenate([rng.uniform(-np.pi, np.pi, 40), np.full(10, np.pi - 1e-9)])
    R = np.stack([rodrigues(a, t) for a, t in zip(axes, angs)])
    q = matrix_to_quaternion(R)
    assert q.shape == (50, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(quaternion_to_matrix(q), R, atol=1e-9)
    assert quaternion_to_matrix(q.reshape(5, 10, 4)).shape == (5, 10, 3, 3)


def test_quaternion_validation() -> None:
    q = normalize_quaternion([0, 0, 0, 1.004])  # float32 wire noise: normalised silently
    np.testing.assert_allclose(q, [0, 0, 0, 1])
    with pytest.raises(ValueError, match="not unit"):
        quaternion_to_matrix([0, 0, 0, 0])
    with pytest.raises(ValueError, match="not unit"):
        quaternion_to_matrix([0, 0, 0, 2])
    with pytest.raises(ValueError, match="non-finite"):
        quaternion_to_matrix([np.nan, 0, 0, 1])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        quaternion_to_matrix([0, 0, 1])
    with pytest.raises(ValueError, match="not a rotation"):
        matrix_to_quaternion(np.diag([1.0, 1.0, -1.0]))  # a reflection


def random_se3(rng: np.random.Generator) -> SE3:
    return SE3(rodrigues(rng.normal(size=3), rng.uniform(-3, 3)), rng.normal(size=3))


def test_se3_compose_inverse_apply_match_4x4() -> None:
    rng = np.random.default_rng(1)
    a, b = random_se3(rng), random_se3(rng)
    np.testing.assert_allclose((a @ b).matrix, a.matrix @ b.matrix, atol=1e-12)
    np.testing.assert_allclose(a.inverse().matrix, np.linalg.inv(a.matrix), atol=1e-12)
    assert (a @ a.inverse()).allclose(SE3.identity())
    pts = rng.normal(size=(100, 3))
    homo = np.c_[pts, np.ones(100)] @ a.matrix.T
    out64 = a.apply(pts)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, homo[:, :3], atol=1e-12)
    out32 = a.apply(pts.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, homo[:, :3], atol=1e-5)
    assert a.apply(np.zeros((0, 3), np.float32)).shape == (0, 3)


def test_se3_constructors_and_immutability() -> None:
    rng = np.random.default_rng(2)
    a = random_se3(rng)
    b = SE3.from_quat_trans(a.quaternion, a.translation)
    assert a.allclose(b)
    assert SE3.from_matrix(a.matrix).allclose(a)
    assert a.quaternion[3] >= 0
    with pytest.raises(ValueError):
        a.rotation[0, 0] = 2.0  # read-only arrays keep the frozen dataclass honest
    with pytest.raises(ValueError, match="non-finite"):
        SE3.from_matrix(np.full((4, 4), -np.inf))
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(ValueError, match="bottom row"):
        SE3.from_matrix(bad)
    bad = np.eye(4)
    bad[:3, :3] *= 2.0
    with pytest.raises(ValueError, match="not a rotation"):
        SE3.from_matrix(bad)
    with pytest.raises(ValueError, match="points must have shape"):
        a.apply(np.zeros((4, 2)))


@settings(max_examples=60, deadline=None)
@given(unit_vectors, st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), st.floats(0.0, 1.0))
def test_slerp_about_one_axis_is_linear_in_angle(axis: tuple, a0: float, a1: float, alpha: float) -> None:
    ax = np.array(axis)
    q = slerp(axis_angle_quat(ax, a0), axis_angle_quat(ax, a1), alpha)
    # |a1 - a0| < 2 pi here; the shorter arc is taken, so wrap the difference into (-pi, pi].
    d = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi
    assume(abs(d) < math.pi - 1e-6)  # exactly half a turn apart: both arcs are shortest
    np.testing.assert_allclose(quaternion_to_matrix(q), rodrigues(ax, a0 + alpha * d), atol=1e-9)


def test_slerp_endpoints_parallel_and_batched() -> None:
    q0 = axis_angle_quat(np.array([0, 0, 1.0]), 0.3)
    q1 = axis_angle_quat(np.array([1.0, 1, 0]), -1.2)
    np.testing.assert_allclose(slerp(q0, q1, 0.0), q0, atol=1e-12)
    np.testing.assert_allclose(np.abs(slerp(q0, q1, 1.0)), np.abs(q1), atol=1e-12)
    np.testing.assert_allclose(slerp(q0, q0, 0.5), q0, atol=1e-12)
    np.testing.assert_allclose(slerp(q0, -q0, 0.5) * np.sign(q0[3]), q0, atol=1e-12)
    out = slerp(np.tile(q0, (7, 1)), np.tile(q1, (7, 1)), np.linspace(0, 1, 7))
    assert out.shape == (7, 4)


def test_se3_interpolate() -> None:
    a = SE3(rodrigues(np.array([0, 1.0, 0]), 0.2), np.array([0.0, 0.0, 0.0]))
    b = SE3(rodrigues(np.array([0, 1.0, 0]), 1.0), np.array([2.0, -4.0, 1.0]))
    m = SE3.interpolate(a, b, 0.25)
    np.testing.assert_allclose(m.rotation, rodrigues(np.array([0, 1.0, 0]), 0.4), atol=1e-12)
    np.testing.assert_allclose(m.translation, [0.5, -1.0, 0.25], atol=1e-12)


def test_is_valid_pose_scannet_inf() -> None:
    good = random_se3(np.random.default_rng(3)).matrix
    lost = np.full((4, 4), -np.inf)
    assert is_valid_pose(good) is True
    assert is_valid_pose(lost) is False
    nan = good.copy()
    nan[0, 3] = np.nan
    scaled = good.copy()
    scaled[:3, :3] *= 1.1
    np.testing.assert_array_equal(
        is_valid_pose(np.stack([good, lost, nan, scaled, np.eye(4)])), [True, False, False, False, True]
    )
    with pytest.raises(ValueError):
        is_valid_pose(np.eye(3))
