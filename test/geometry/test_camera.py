"""Pinhole camera: depth decoding, back-projection/projection, and the visibility test
checked against a ray-cast scene and a per-point transcription of the reference rule."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.config.geometry import DepthCfg, VisibilityCfg
from xmask3d_ros.geometry.camera import PinholeCamera, decode_depth

SCANNET = PinholeCamera(fx=577.870605, fy=577.870605, cx=319.5, cy=239.5, width=640, height=480)


def test_decode_depth_16uc1_and_32fc1_invalid_values() -> None:
    raw = np.array([[0, 50, 100, 1500], [9999, 10000, 10001, 65535]], dtype=np.uint16)
    d = decode_depth(raw, "16UC1", min_depth_m=0.1, max_depth_m=10.0)
    assert d.dtype == np.float32 and d.shape == raw.shape
    np.testing.assert_allclose(d, [[0, 0, 0.1, 1.5], [9.999, 10.0, 0, 0]], atol=1e-6)
    f = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 0.05, 2.5, 11.0]], dtype=np.float32)
    d = decode_depth(f, "32FC1", min_depth_m=0.1, max_depth_m=10.0)
    np.testing.assert_array_equal(d, [[0, 0, 0, 0, 0, 0, 2.5, 0]])
    assert np.all(np.isfinite(d))
    np.testing.assert_array_equal(decode_depth(f.astype(np.float64), "32FC1").dtype, np.float32)


def test_decode_depth_errors() -> None:
    with pytest.raises(ValueError, match="16UC1, mono16, 32FC1"):
        decode_depth(np.zeros((2, 2), np.uint16), "rgb8")
    with pytest.raises(ValueError, match="uint16"):
        decode_depth(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(ValueError, match="float"):
        decode_depth(np.zeros((2, 2), np.uint16), "32FC1")
    with pytest.raises(ValueError, match="min_depth_m < max_depth_m"):
        decode_depth(np.zeros((2, 2), np.uint16), "16UC1", min_depth_m=2.0, max_depth_m=1.0)


def test_decode_depth_defaults_equal_config_defaults() -> None:
    sig = inspect.signature(decode_depth).parameters
    assert sig["min_depth_m"].default == DepthCfg().min_depth_m
    assert sig["max_depth_m"].default == DepthCfg().max_depth_m
    vis = inspect.signature(PinholeCamera.visible_mask).parameters
    assert vis["border_px"].default == VisibilityCfg().border_px
    assert vis["depth_tolerance_rel"].default == VisibilityCfg().depth_tolerance_rel


def random_depth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    d = rng.uniform(0.2, 8.0, (h, w)).astype(np.float32)
    d[rng.random((h, w)) < 0.2] = 0.0
    d[rng.random((h, w)) < 0.05] = np.nan  # backproject also skips what decode_depth missed
    d[0, 0] = np.inf
    return d


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_backproject_then_project_is_identity(stride: int) -> None:
    rng = np.random.default_rng(0)
    depth = random_depth(rng, 480, 640)
    pts, idx = SCANNET.backproject(depth, stride=stride)
    assert pts.dtype == np.float32 and pts.shape[1] == 3 and idx.dtype == np.int64
    rows, cols = np.divmod(idx, 640)
    assert np.all(rows % stride == 0) and np.all(cols % stride == 0)
    sub = depth[::stride, ::stride]
    assert pts.shape[0] == np.count_nonzero(np.isfinite(sub) & (sub > 0))
    np.testing.assert_array_equal(pts[:, 2], depth[rows, cols])
    uv, z = SCANNET.project(pts)
    assert uv.dtype == np.float32
    np.testing.assert_allclose(uv[:, 0], cols, atol=2e-3)
    np.testing.assert_allclose(uv[:, 1], rows, atol=2e-3)
    np.testing.assert_array_equal(z, pts[:, 2])


@settings(max_examples=30, deadline=None)
@given(
    st.floats(20, 2000), st.floats(20, 2000), st.floats(-5, 40), st.floats(-5, 30),
    st.integers(1, 40), st.integers(1, 30), st.integers(0, 2**32 - 1),
)
def test_backproject_project_property(fx, fy, cx, cy, w, h, seed) -> None:  # type: ignore[no-untyped-def]
    cam = PinholeCamera(fx, fy, cx, cy, w, h)
    depth = random_depth(np.random.default_rng(seed), h, w)
    pts, idx = cam.backproject(depth)
    uv, _ = cam.project(pts.astype(np.float64))
    rows, cols = np.divmod(idx, w)
    np.testing.assert_allclose(uv, np.c_[cols, rows], atol=1e-3)


def test_backproject_analytic_plane() -> None:
    cam = PinholeCamera(100.0, 80.0, 2.0, 1.0, 5, 3)
    pts, idx = cam.backproject(np.full((3, 5), 2.0, np.float32))
    rows, cols = np.divmod(idx, 5)
    np.testing.assert_allclose(pts[:, 0], (cols - 2.0) / 100.0 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(pts[:, 1], (rows - 1.0) / 80.0 * 2.0, rtol=1e-6)
    # REP-103 optical frame: a pixel right of / below the centre has x > 0 / y > 0.
    assert pts[idx == 1 * 5 + 4][0, 0] > 0 and pts[idx == 2 * 5 + 2][0, 1] > 0
    with pytest.raises(ValueError, match="scaled"):
        cam.backproject(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="stride"):
        cam.backproject(np.zeros((3, 5), np.float32), stride=0)


def test_project_behind_camera_is_nan() -> None:
    uv, z = SCANNET.project(np.array([[0.0, 0, -1], [0, 0, 0], [0.1, 0, 1]]))
    assert np.all(np.isnan(uv[:2])) and np.all(np.isfinite(uv[2]))


def test_from_camera_info_and_distortion_policy() -> None:
    k = [577.87, 0, 319.5, 0, 577.87, 239.5, 0, 0, 1]
    cam = PinholeCamera.from_camera_info(k, 640, 480, "plumb_bob", [0.0] * 5)
    assert (cam.fx, cam.cy, cam.width) == (577.87, 239.5, 640)
    np.testing.assert_array_equal(cam.K, np.array(k).reshape(3, 3))
    PinholeCamera.from_camera_info(k, 640, 480, "rational_polynomial", [0.0] * 8)
    PinholeCamera.from_camera_info(k, 640, 480, "", [])
    with pytest.raises(ValueError, match=r"plumb_bob.*0\.1.*not supported"):
        PinholeCamera.from_camera_info(k, 640, 480, "plumb_bob", [0.1, -0.2, 0, 0, 0])
    p = [500.0, 0, 320, 0, 0, 500.0, 240, 0, 0, 0, 1, 0]
    rect = PinholeCamera.from_camera_info(
        k, 640, 480, "plumb_bob", [0.1, -0.2, 0, 0, 0], p=p, rectified=True
    )
    assert (rect.fx, rect.cx, rect.distortion) == (500.0, 320.0, ())
    with pytest.raises(ValueError, match="uncalibrated"):
        PinholeCamera.from_camera_info([0.0] * 9, 640, 480, "plumb_bob", [])
    with pytest.raises(ValueError, match="fx, 0, cx"):
        PinholeCamera.from_camera_info([500, 3, 320, 0, 500, 240, 0, 0, 1], 640, 480, "", [])
    with pytest.raises(ValueError, match="9 values"):
        PinholeCamera.from_camera_info([1.0] * 4, 640, 480, "", [])
    with pytest.raises(ValueError, match="fx, fy > 0"):
        PinholeCamera(-1.0, 1.0, 0, 0, 4, 4)


def test_scaled_pixel_centre_convention() -> None:
    half = SCANNET.scaled(320, 240)
    assert (half.fx, half.cx, half.cy) == pytest.approx((577.870605 / 2, 159.5, 119.5))
    ref = SCANNET.scaled(320, 240, align_corners=True)  # the reference's adjust_intrinsic
    assert ref.cx == pytest.approx(319.5 * 319 / 639)
    # Half-pixel convention: a point's projection maps as u' = (u + 0.5) * s - 0.5.
    pts = np.random.default_rng(1).uniform([-1, -1, 1], [1, 1, 4], (50, 3))
    uv, _ = SCANNET.project(pts)
    uv2, _ = half.project(pts)
    np.testing.assert_allclose(uv2, (uv + 0.5) * 0.5 - 0.5, atol=1e-9)
    colour = PinholeCamera(1170.19, 1170.19, 647.75, 483.75, 1296, 968).scaled(640, 480)
    assert colour.width == 640 and colour.fy == pytest.approx(1170.19 * 480 / 968)


# ---- visibility: a ray-cast scene and a per-point transcription of the reference rule --------

CAM = PinholeCamera(fx=50.0, fy=50.0, cx=31.5, cy=23.5, width=64, height=48)
WALL_Z, BOX_Z = 4.0, 1.5
BOX = (-0.3, 0.3, -0.2, 0.2)  # x0, x1, y0, y1 of a fronto-parallel card at z = BOX_Z


def render_depth() -> np.ndarray:
    """Ray-cast the card in front of the wall, one ray through each pixel centre."""
    depth = np.full((CAM.height, CAM.width), WALL_Z, np.float32)
    for r in range(CAM.height):
        for c in range(CAM.width):
            x = (c - CAM.cx) / CAM.fx * BOX_Z
            y = (r - CAM.cy) / CAM.fy * BOX_Z
            if BOX[0] <= x <= BOX[1] and BOX[2] <= y <= BOX[3]:
                depth[r, c] = BOX_Z
    depth[30:34, 5:9] = 0.0  # a hole in the depth image
    return depth


def reference_rule(points: np.ndarray, depth: np.ndarray, border: int, tol: float) -> np.ndarray:
    """reference-notes 1.7, point by point (Python's round() is half-to-even, like np.round)."""
    out = np.zeros(len(points), bool)
    for i, (x, y, z) in enumerate(points):
        if not (z > 0 and np.isfinite(x) and np.isfinite(y)):
            continue
        c, r = round(CAM.fx * x / z + CAM.cx), round(CAM.fy * y / z + CAM.cy)
        if not (border <= c < CAM.width - border and border <= r < CAM.height - border):
            continue
        d = float(depth[r, c])
        out[i] = d > 0 and abs(d - z) <= tol * d
    return out


def scene_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = 400
    wall = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2.5, 2.5, n), np.full(n, WALL_Z)]
    card = np.c_[rng.uniform(BOX[0], BOX[1], n), rng.uniform(BOX[2], BOX[3], n), np.full(n, BOX_Z)]
    extra = np.array([[0, 0, -1.0], [0, 0, 0], [np.nan, 0, 1], [0, 0, 3.9], [0, 0, 1.0]])
    pts = np.vstack([wall, card, extra])
    kind = np.r_[np.zeros(n), np.ones(n), np.full(len(extra), 2)]
    return pts, kind


@pytest.mark.parametrize(("border", "tol"), [(10, 0.25), (0, 0.25), (3, 0.05)])
def test_visibility_matches_reference_rule(border: int, tol: float) -> None:
    pts, _ = scene_points(np.random.default_rng(5))
    depth = render_depth()
    for dtype in (np.float64, np.float32):
        got = CAM.visible_mask(pts.astype(dtype), depth, border_px=border, depth_tolerance_rel=tol)
        np.testing.assert_array_equal(got, reference_rule(pts.astype(dtype), depth, border, tol))


def test_visibility_semantics_occlusion_border_holes() -> None:
    pts, kind = scene_points(np.random.default_rng(6))
    depth = render_depth()
    vis, rows, cols = CAM.visible_pixels(pts, depth, border_px=2, depth_tolerance_rel=0.25)
    uv, z = CAM.project(pts)
    inside = (z > 0) & np.all((np.rint(uv) >= 2) & (np.rint(uv) < [62, 46]), axis=1)
    np.testing.assert_array_equal(rows >= 0, inside)
    np.testing.assert_array_equal(cols[inside], np.rint(uv[inside, 0]))
    # Wall points whose line of sight crosses the card (away from its edges) are occluded.
    on_card = pts * BOX_Z / WALL_Z  # where the line of sight of a wall point crosses z = BOX_Z
    shadow = (kind == 0) & (np.abs(on_card[:, 0]) < 0.28) & (np.abs(on_card[:, 1]) < 0.18)
    assert shadow.sum() > 5 and not vis[shadow].any()
    card_inner = (kind == 1) & (np.abs(pts[:, 0]) < 0.28) & (np.abs(pts[:, 1]) < 0.18)
    assert vis[card_inner].all()
    in_hole = inside & (depth[np.clip(rows, 0, 47), np.clip(cols, 0, 63)] == 0)
    assert in_hole.sum() > 0 and not vis[in_hole].any()
    # On the optical axis the depth image shows the card (1.5 m): z = 1.0 and z = 3.9 both differ
    # from it by more than 25 % of 1.5 m, so both are rejected.
    assert not vis[-1] and not vis[-2]
    assert not vis[-5] and not vis[-4] and not vis[-3]  # behind, at, NaN
