"""Free-space clearing: a moved object disappears, walls at grazing angles stay."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.mapping import LocalVoxelMap
from xmask3d_ros.mapping.clearing import min_filter_depth, see_through

BOX_LO, BOX_HI = (0.8, -0.3, 0.0), (1.4, 0.3, 0.6)


def _box_scene(box_world, box_cls, pose_look_at):
    world = box_world(boxes=[box_cls(BOX_LO, BOX_HI)])
    poses = [pose_look_at((-1.5 + 0.1 * i, 0.3 - 0.1 * i, 1.3), (1.1, 0.0, 0.3)) for i in range(12)]
    return world, world.moved(0, (0.0, -2.0, 0.0)), poses


def _object_voxels(m: LocalVoxelMap, vs: float) -> tuple[np.ndarray, np.ndarray]:
    """Packed keys of voxels on the box (above 15 cm: lower ones are indistinguishable from the
    floor at this viewing angle) and of voxels clearly away from it (static)."""
    P = m.positions
    lo, hi = np.array(BOX_LO), np.array(BOX_HI)
    on_box = np.all((P > lo + [-vs, -vs, 0.15]) & (P < hi + vs), axis=1)
    near = np.all((P > lo - 2 * vs) & (P < hi + 2 * vs), axis=1)
    return m.packed_keys[on_box].copy(), m.packed_keys[~near].copy()


@pytest.mark.parametrize(("voxel", "noise"), [(0.05, 0.0), (0.05, 0.005), (0.02, 0.005)])
def test_moved_object_is_cleared_within_miss_threshold(voxel, noise, small_cam, box_world, box_cls,
                                                       pose_look_at) -> None:
    cfg = MapCfg(voxel_size_m=voxel, radius_m=20.0, max_voxels=1_000_000, miss_threshold=3)
    world, moved, poses = _box_scene(box_world, box_cls, pose_look_at)
    m = LocalVoxelMap(cfg, 0)
    for i in range(4):
        assert m.integrate(world.posed(small_cam, poses[i], i, noise_m=noise, seed=i)).cleared_free_space == 0
    old, static = _object_voxels(m, voxel)
    assert old.size > 100
    for j in range(cfg.miss_threshold):
        st = m.integrate(moved.posed(small_cam, poses[4 + j], 10 + j, noise_m=noise, seed=10 + j))
        left = np.count_nonzero(m.rows_of(old) >= 0)
        if j < cfg.miss_threshold - 1:
            assert left == old.size, "cleared before miss_threshold observations"
            assert st.missed_voxels >= old.size
    assert left == 0, f"{left} of {old.size} voxels of the moved object remain"
    assert np.all(m.rows_of(static) >= 0), "a static voxel was cleared"
    assert m.stats.cleared_free_space >= old.size


def test_a_hit_resets_the_misses(small_cam, box_world, box_cls, pose_look_at) -> None:
    cfg = MapCfg(voxel_size_m=0.05, radius_m=20.0, max_voxels=1_000_000, miss_threshold=3)
    world, moved, poses = _box_scene(box_world, box_cls, pose_look_at)
    m = LocalVoxelMap(cfg, 0)
    for i in range(3):
        m.integrate(world.posed(small_cam, poses[0], i))
    old, _ = _object_voxels(m, 0.05)
    for j in range(2):  # two misses
        m.integrate(moved.posed(small_cam, poses[0], 10 + j))
    assert np.all(m.misses[m.rows_of(old)] == 2)
    m.integrate(world.posed(small_cam, poses[0], 20))  # back in place: hits
    assert np.all(m.misses[m.rows_of(old)] == 0)
    for j in range(2):  # two more misses: still below the threshold of 3 in a row
        m.integrate(moved.posed(small_cam, poses[0], 30 + j))
    assert np.all(m.rows_of(old) >= 0)
    m.integrate(moved.posed(small_cam, poses[0], 40))
    assert np.all(m.rows_of(old) < 0)


@pytest.mark.parametrize(("voxel", "noise"), [(0.05, 0.0), (0.05, 0.005), (0.02, 0.0), (0.02, 0.005)])
def test_walls_at_grazing_angles_are_not_eroded(voxel, noise, small_cam, box_world, pose_look_at) -> None:
    """Camera 25 cm from a wall looking along it (down to ~3 degrees incidence), floor and
    ceiling at grazing angles too: no wall voxel may get even a miss."""
    world = box_world()
    m = LocalVoxelMap(MapCfg(voxel_size_m=voxel, radius_m=20.0, max_voxels=1_000_000), 0)
    missed = 0
    for i in range(20):
        eye = (-2.6 + 0.1 * i, -2.75 + 0.02 * np.sin(i), 1.2)
        target = (2.8, -2.95 + 0.05 * np.cos(i), 1.0 + 0.3 * np.sin(i / 3))
        st = m.integrate(world.posed(small_cam, pose_look_at(eye, target), i, noise_m=noise, seed=i))
        missed += st.missed_voxels
    assert m.size > 5000
    assert missed == 0 and m.stats.cleared_free_space == 0


def test_without_the_window_and_margins_grazing_walls_erode(small_cam, box_world, pose_look_at) -> None:
    """Control for the test above: the protections are what keeps the wall."""
    world = box_world()
    cfg = MapCfg(voxel_size_m=0.05, radius_m=20.0, max_voxels=1_000_000, clearing_window_px=0,
                 clearing_margin_voxels=0.0, clearing_margin_rel=0.0)
    m = LocalVoxelMap(cfg, 0)
    for i in range(20):
        eye = (-2.6 + 0.1 * i, -2.75 + 0.02 * np.sin(i), 1.2)
        target = (2.8, -2.95 + 0.05 * np.cos(i), 1.0 + 0.3 * np.sin(i / 3))
        m.integrate(world.posed(small_cam, pose_look_at(eye, target), i))
    assert m.stats.cleared_free_space > 1000


def test_clearing_can_be_switched_off(small_cam, box_world, box_cls, pose_look_at) -> None:
    world, moved, poses = _box_scene(box_world, box_cls, pose_look_at)
    m = LocalVoxelMap(MapCfg(radius_m=20.0, max_voxels=1_000_000, free_space_clearing=False), 0)
    m.integrate(world.posed(small_cam, poses[0], 0))
    for j in range(5):
        st = m.integrate(moved.posed(small_cam, poses[0], 1 + j))
        assert st.missed_voxels == 0
    assert m.stats.cleared_free_space == 0


def test_min_filter_depth_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 4.0, (37, 53)).astype(np.float32)
    d[rng.random(d.shape) < 0.05] = 0.0
    d[3, 4], d[5, 6], d[7, 8] = np.nan, np.inf, -1.0
    clean = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    for w in (0, 1, 2):
        ref = ndimage.minimum_filter(clean, size=2 * w + 1, mode="constant", cval=0.0)
        np.testing.assert_array_equal(min_filter_depth(d, w), ref, err_msg=f"w={w}")


def test_see_through_margins(small_cam) -> None:
    """A fronto-parallel wall at 3 m: points see-through only beyond the margin."""
    depth = min_filter_depth(np.full((120, 160), 3.0, np.float32), 1)
    z = np.array([0.2, 1.0, 2.8, 2.86, 2.84, 3.5, 5.5, 2.0], np.float32)
    pts = np.stack([np.zeros_like(z), np.zeros_like(z), z], 1)
    pts[-1] = [100.0, 0.0, 2.0]  # outside the image
    got = see_through(pts, small_cam, depth, margin_abs_m=0.1, margin_rel=0.05, border_px=2,
                      min_depth_m=0.3, max_depth_m=6.0)
    # margin = max(0.1, 0.05 * 3) = 0.15: z < 2.85 is seen through; z = 0.2 is too near
    np.testing.assert_array_equal(got, [False, True, True, False, True, False, False, False])
