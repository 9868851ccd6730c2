"""Whole synthetic rooms: determinism, layout, trajectory, label/depth and GT consistency."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xmask3d_ros.config.schema import ConfigError, from_dict
from xmask3d_ros.config.synthetic import ROOM_TYPES, RoomCfg, SyntheticCfg
from xmask3d_ros.data.classes import SCANNET20_CLASSES, class_raw_id
from xmask3d_ros.data.synthetic import generate_room, render_frame
from xmask3d_ros.data.synthetic.shapes import Box, Cylinder, Quad


def _parts_by_instance(room):  # type: ignore[no-untyped-def]
    out: dict[int, list] = {}
    for p in room.parts:
        out.setdefault(p.instance_id, []).append(p)
    return out


def test_same_seed_same_room_and_frames(small_cfg: SyntheticCfg) -> None:
    a, b = generate_room(11, small_cfg), generate_room(11, small_cfg)
    assert a.room_type == b.room_type and a.size_m == b.size_m and len(a.parts) == len(b.parts)
    for pa, pb in zip(a.parts, b.parts):
        assert np.array_equal(pa.prim.center, pb.prim.center) and pa.material == pb.material
    Ta, Tb = a.camera_poses(5), b.camera_poses(5)
    np.testing.assert_array_equal(Ta, Tb)
    fa, fb = a.render(Ta[3]), b.render(Tb[3])
    for name in ("rgb", "depth_m", "label", "instance"):
        np.testing.assert_array_equal(getattr(fa, name), getattr(fb, name))
    pa, pb = a.sample_surface_points(), b.sample_surface_points()
    np.testing.assert_array_equal(pa.points, pb.points)
    np.testing.assert_array_equal(pa.colors, pb.colors)
    c = generate_room(12, small_cfg)
    assert c.size_m != a.size_m


def test_trajectory_config_does_not_change_the_layout(small_cfg: SyntheticCfg) -> None:
    faster = dataclasses.replace(small_cfg.trajectory, speed_mps=1.0)
    other = dataclasses.replace(small_cfg, trajectory=faster)
    a, b = generate_room(3, small_cfg), generate_room(3, other)
    assert [p.prim.center.tolist() for p in a.parts] == [p.prim.center.tolist() for p in b.parts]


@pytest.mark.parametrize("seed", range(10))
def test_rooms_are_closed_furnished_and_the_camera_path_is_clear(seed: int,
                                                                 small_cfg: SyntheticCfg) -> None:
    room = generate_room(seed, small_cfg)
    lo, hi = small_cfg.room.furniture_count
    assert lo <= room.layout.n_furniture <= hi
    classes = set(room.layout.instance_classes)
    assert {"wall", "floor", "ceiling", "door", "window"} <= classes
    assert len(classes & set(SCANNET20_CLASSES)) >= 6
    poses = room.camera_poses(30)
    eye = poses[:, :3, 3]
    assert np.all(eye > 0) and np.all(eye < np.asarray(room.size_m))
    assert room.distance(eye).min() > small_cfg.trajectory.clearance_m
    # Rotations are proper and frame-to-frame motion is smooth (handheld, not teleporting).
    R = poses[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    step = np.linalg.norm(np.diff(eye, axis=0), axis=1)
    expected = small_cfg.trajectory.speed_mps / small_cfg.camera.fps
    assert np.all(step < 3 * expected) and np.all(step > 0.2 * expected)
    f = room.render(poses[-1])
    assert np.all(f.depth_m > 0) and np.all(f.label > 0) and np.all(f.instance > 0)


def test_every_room_type_can_be_drawn() -> None:
    for kind in ROOM_TYPES:
        cfg = from_dict(SyntheticCfg, {"room": {"room_types": [kind]}})
        room = generate_room(0, cfg)
        assert room.room_type == kind


def test_labels_and_instances_agree_with_depth(small_cfg: SyntheticCfg) -> None:
    room = generate_room(5, small_cfg)
    T = room.camera_poses(8)[7]
    K = room.intrinsics(96, 72)
    f = render_frame(room, T, K, 96, 72)
    u, v = np.meshgrid(np.arange(96), np.arange(72))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)
    pts = (rays * f.depth_m[..., None].astype(np.float64)) @ T[:3, :3].T + T[:3, 3]
    by_inst = _parts_by_instance(room)
    for inst in np.unique(f.instance):
        sel = f.instance == inst
        parts = by_inst[int(inst)]
        dist = np.min([np.abs(p.prim.sdf(pts[sel])) for p in parts], axis=0)
        assert dist.max() < 2e-3 * f.depth_m[sel].max(), f"instance {inst}: {dist.max()}"
        assert set(np.unique(f.label[sel]).tolist()) == {parts[0].label_id}


def test_surface_samples_lie_on_their_primitives(small_cfg: SyntheticCfg) -> None:
    room = generate_room(7, small_cfg)
    rng = np.random.default_rng(0)
    for part in room.parts:
        p, n = part.prim.sample_surface(0.1, rng)
        assert len(p) > 0
        assert np.abs(part.prim.sdf(p)).max() < 1e-9
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    sp = room.sample_surface_points()
    by_inst = _parts_by_instance(room)
    for inst in np.unique(sp.instance):
        sel = sp.instance == inst
        dist = np.min([np.abs(p.prim.sdf(sp.points[sel])) for p in by_inst[int(inst)]], axis=0)
        assert dist.max() < 1e-5
    # No sample hides inside furniture, and nothing faces down onto the floor.
    assert room.distance(sp.points).min() > -1e-4
    on_floor_facing_down = (sp.points[:, 2] < 1e-4) & (sp.normals[:, 2] < -0.5)
    assert not on_floor_facing_down.any()
    assert sp.label.dtype == np.uint16 and sp.colors.dtype == np.uint8
    assert set(np.unique(sp.scannet20()).tolist()) <= set(range(20)) | {255}


def test_ground_truth_points_match_what_the_camera_sees(small_cfg: SyntheticCfg) -> None:
    room = generate_room(2, small_cfg)
    sp = room.sample_surface_points(0.04)
    T = room.camera_poses(12)[11]
    w, h = 160, 120
    K = room.intrinsics(w, h)
    f = render_frame(room, T, K, w, h)
    pc = (sp.points.astype(np.float64) - T[:3, 3]) @ T[:3, :3]
    z = pc[:, 2]
    front = z > 0.1
    uv = np.rint(pc[front, :2] / z[front, None] * [K[0, 0], K[1, 1]] + K[:2, 2]).astype(int)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    idx = np.flatnonzero(front)[ok]
    uv = uv[ok]
    visible = np.abs(f.depth_m[uv[:, 1], uv[:, 0]] - z[idx]) < 0.01
    idx, uv = idx[visible], uv[visible]
    assert len(idx) > 500
    same_inst = f.instance[uv[:, 1], uv[:, 0]] == sp.instance[idx]
    assert same_inst.mean() > 0.97
    diff = np.abs(f.rgb[uv[:, 1], uv[:, 0]].astype(int) - sp.colors[idx].astype(int))
    assert np.median(diff) <= 8  # same surface colour up to sub-pixel texture detail


def test_textures_vary_within_a_surface(small_cfg: SyntheticCfg) -> None:
    room = generate_room(4, small_cfg)
    sp = room.sample_surface_points()
    for cls in ("wall", "floor"):
        sel = sp.label == class_raw_id(cls)
        assert sp.colors[sel].astype(float).std(axis=0).max() > 2.0  # not a flat colour


def test_primitive_kinds_are_used(small_cfg: SyntheticCfg) -> None:
    kinds = set()
    for seed in range(4):
        kinds |= {type(p.prim) for p in generate_room(seed, small_cfg).parts}
    assert kinds == {Box, Cylinder, Quad}


def test_config_pairs_and_room_types_are_validated() -> None:
    with pytest.raises(ConfigError, match="size_x_m"):
        RoomCfg(size_x_m=(6.0, 4.0))
    with pytest.raises(ConfigError, match="garage"):
        from_dict(SyntheticCfg, {"room": {"room_types": ["garage"]}})
    with pytest.raises(ConfigError, match="camera.width"):
        from_dict(SyntheticCfg, {"camera": {"width": 0}})
    with pytest.raises(ConfigError, match="bag.storage"):
        from_dict(SyntheticCfg, {"bag": {"storage": "rosbag1"}})
