"""Ray casting against analytic geometry: depth, masks, labels, culling (data/synthetic/render.py)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.data.synthetic.render import Light, camera_rays, raycast, render_parts
from xmask3d_ros.data.synthetic.scene import default_intrinsics
from xmask3d_ros.data.synthetic.shapes import Box, Cylinder, Part, Quad, rot_z
from xmask3d_ros.data.synthetic.texture import Material, NoiseField
from xmask3d_ros.data.synthetic.trajectory import look_at

W, H = 48, 36
K = default_intrinsics(W, H)
NOISE = NoiseField(0)
LIGHT = Light(position=(0.0, 0.0, 3.0))
PAINT = Material("paint", (0.8, 0.8, 0.8))


def _pose(eye: tuple[float, float, float], target: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = look_at(np.array(eye, float), np.array(target, float))[0]
    T[:3, 3] = eye
    return T


def _pixel_rays_cam() -> np.ndarray:
    """(H, W, 3) float64 camera-frame rays with unit z, computed independently of the renderer."""
    u, v = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def test_camera_rays_follow_the_optical_convention() -> None:
    T = _pose((0, 0, 1), (5, 0, 1))  # looking along world +x, z up
    origin, dirs = camera_rays(T, K, W, H)
    centre = dirs[:, H // 2, W // 2]
    assert np.allclose(origin, [0, 0, 1])
    assert centre[0] > 0.99 and abs(centre[2]) < 0.02  # forward = +x
    assert dirs[1, H // 2, -1] < dirs[1, H // 2, 0]  # image right = world -y
    assert dirs[2, -1, W // 2] < dirs[2, 0, W // 2]  # image down = world -z


def test_box_face_depth_equals_the_analytic_distance() -> None:
    box = Box(np.array([3.0, 0.2, 1.0]), np.array([0.5, 0.6, 0.4]), np.eye(3))
    T = _pose((0, 0, 1), (5, 0, 1))
    rgb, depth, label, inst = render_parts([Part(box, PAINT, 7, 3)], LIGHT, NOISE, T, K, W, H)
    # Front face x = 2.5: optical z is world x, right is -y, down is -z.
    r = _pixel_rays_cam()
    y, z = -r[..., 0] * 2.5, 1.0 - r[..., 1] * 2.5
    inside = (np.abs(y - 0.2) < 0.6 - 1e-3) & (np.abs(z - 1.0) < 0.4 - 1e-3)
    outside = (np.abs(y - 0.2) > 0.6 + 1e-3) | (np.abs(z - 1.0) > 0.4 + 1e-3)
    assert inside.sum() > 50
    np.testing.assert_allclose(depth[inside], 2.5, atol=1e-5)
    assert np.all(depth[outside] == 0) and np.all(label[outside] == 0) and np.all(inst[outside] == 0)
    assert np.all(label[inside] == 7) and np.all(inst[inside] == 3)
    assert np.all(rgb[outside] == 0) and np.all(rgb[inside].sum(-1) > 0)


@settings(max_examples=25, deadline=None)
@given(
    yaw=st.floats(-math.pi, math.pi), tilt=st.floats(-0.6, 0.6), dist=st.floats(0.5, 6.0),
    ex=st.floats(-0.5, 0.5),
)
def test_tilted_plane_depth_equals_the_analytic_intersection(yaw: float, tilt: float, dist: float,
                                                              ex: float) -> None:
    # A large quad through (dist, 0, 1) with a normal tilted by ``tilt`` and ``yaw``.
    n = np.array([-math.cos(tilt) * math.cos(yaw * 0.3), -math.cos(tilt) * math.sin(yaw * 0.3),
                  math.sin(tilt)])
    u = np.cross(n, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    c = np.array([dist, 0.0, 1.0])
    quad = Quad.make(c, n, u, 50.0, 50.0)
    eye = np.array([0.0, ex, 1.0 + ex])
    T = _pose(tuple(eye), (dist, 0.0, 1.0))
    depth, index, _, _ = raycast([quad], T, K, W, H)
    d_world = _pixel_rays_cam() @ T[:3, :3].T  # unit camera-z rays
    with np.errstate(divide="ignore"):
        t = ((c - eye) @ n) / (d_world @ n)
    local = (eye + t[..., None] * d_world - c) @ np.column_stack([u, np.cross(n, u)])
    hit = (t > 0.05) & np.isfinite(t) & np.all(np.abs(local) < 49.9, axis=-1)
    edge = (t > 0.05) & np.all(np.abs(local) < 50.1, axis=-1) & ~hit
    index[edge] = -1  # rays grazing the quad border may go either way
    # float32 ray casting: the relative error grows like eps / cos(incidence), so grazing rays
    # tens of metres away (beyond any depth sensor's range) reach ~4e-5; within 10 m, 2e-5 holds.
    near = hit & (t < 10.0)
    np.testing.assert_allclose(depth[near], t[near], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(depth[hit], t[hit], rtol=1e-4, atol=1e-5)
    assert np.all(index[hit] == 0) and np.all(index[~hit] == -1)


def test_cylinder_depth_and_caps_match_a_float64_reference() -> None:
    cyl = Cylinder(np.array([2.0, 0.0, 0.8]), np.array([0.3, 0.3, 0.5]), rot_z(0.4))
    T = _pose((0, 0.1, 1.9), (2.0, 0.0, 0.8))  # from above: sees the top cap and the side
    depth, index, origin, _ = raycast([cyl], T, K, W, H)
    d = _pixel_rays_cam() @ T[:3, :3].T
    o = origin - cyl.center
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = o[0] * d[..., 0] + o[1] * d[..., 1]
    cc = o[0] ** 2 + o[1] ** 2 - 0.09
    disc = b * b - a * cc
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / a
        side = np.where((disc >= 0) & (np.abs(o[2] + ts * d[..., 2]) <= 0.5), ts, np.inf)
        tc = (0.5 - o[2]) / d[..., 2]
        cap_ok = (o[0] + tc * d[..., 0]) ** 2 + (o[1] + tc * d[..., 1]) ** 2 <= 0.09
        cap = np.where(cap_ok & (tc > 0), tc, np.inf)
    ref = np.minimum(side, cap)
    hit = np.isfinite(ref)
    assert hit.sum() > 30 and (np.isfinite(cap) & (cap <= side)).sum() > 10
    np.testing.assert_allclose(depth[hit], ref[hit], rtol=1e-4, atol=1e-4)
    assert np.all(~np.isfinite(depth[~hit]))


def test_nearest_primitive_wins_and_culling_changes_nothing() -> None:
    far = Box(np.array([4.0, 0.0, 1.0]), np.array([0.2, 2.0, 2.0]), np.eye(3))
    near = Box(np.array([2.0, 0.3, 1.0]), np.array([0.2, 0.3, 0.3]), rot_z(0.5))
    behind = Box(np.array([-3.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5]), np.eye(3))
    floor = Quad.make([0, 0, 0], [0, 0, 1], [1, 0, 0], 10, 10)
    parts = [far, near, behind, floor]
    T = _pose((0, 0, 1.2), (4, 0, 0.8))
    d1, i1, _, _ = raycast(parts, T, K, W, H, cull=True)
    d2, i2, _, _ = raycast(parts, T, K, W, H, cull=False)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    seen = set(np.unique(i1).tolist())
    assert {0, 1, 3} <= seen and 2 not in seen  # the box behind the camera is never seen
    # Where the near box is seen, the far box would also be hit, but further away.
    d_far, _, _, _ = raycast([far], T, K, W, H)
    sel = i1 == 1
    assert np.all(d1[sel] < d_far[sel])


def test_near_plane_hides_closer_surfaces() -> None:
    wall = Quad.make([0.03, 0, 1], [-1, 0, 0], [0, 1, 0], 5, 5)
    T = _pose((0, 0, 1), (1, 0, 1))
    depth, index, _, _ = raycast([wall], T, K, W, H, near=0.05)
    assert np.all(index == -1) and np.all(np.isinf(depth))
