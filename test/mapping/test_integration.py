"""LocalVoxelMap integration, visibility, semantics and views against brute-force references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.config.schema import ConfigError, from_dict
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.mapping import LocalVoxelMap, pack_keys, point_keys, unpack_keys
from xmask3d_ros.mapping.transform import transform_points
from xmask3d_ros.mapping.keys import KEY_MAX, KEY_MIN, group_points

BIG = dict(radius_m=100.0, max_voxels=1_000_000)


def _scan_like(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Points along random polylines: consecutive points are close, as in a depth scan."""
    steps = rng.normal(0.0, scale, (n, 3)).astype(np.float32)
    starts = rng.uniform(-1.0, 1.0, (n // 200 + 1, 3)).astype(np.float32)
    pts = np.cumsum(steps, axis=0)
    pts += np.repeat(starts, 200, axis=0)[:n] - pts[(np.arange(n) // 200) * 200]
    return pts.astype(np.float32)


def _assert_matches(m: LocalVoxelMap, ref: dict, last_seen: dict | None = None) -> None:
    order = np.lexsort(m.keys.T[::-1])  # map rows sorted like np.unique(axis=0)
    np.testing.assert_array_equal(m.keys[order], ref["keys"])
    np.testing.assert_array_equal(m.counts[order], ref["counts"])
    np.testing.assert_allclose(m.positions[order], ref["positions"], atol=2e-6, rtol=0)
    diff = np.abs(m.colors[order].astype(int) - np.rint(ref["colors"]).astype(int))
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # ties at .5 may round either way
    if last_seen is not None:
        np.testing.assert_array_equal(m.last_seen_ns[order], last_seen["stamps"])


@pytest.mark.parametrize("kind", ["scan", "random"])
def test_integrate_points_equals_group_by_over_frames(kind: str, brute_force) -> None:
    rng = np.random.default_rng(1)
    vs = 0.05
    m = LocalVoxelMap(MapCfg(voxel_size_m=vs, **BIG), 8)
    all_p, all_c, all_t = [], [], []
    for frame in range(5):
        n = 3000
        p = _scan_like(rng, n, 0.004) if kind == "scan" else rng.uniform(-0.4, 0.4, (n, 3)).astype(np.float32)
        c = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        stamp = 1000 + frame
        st = m.integrate_points(p, c, stamp, np.zeros(3))
        assert st.points == n and st.dropped_points == 0
        all_p.append(p), all_c.append(c), all_t.append(np.full(n, stamp))
        P, C, T = np.concatenate(all_p), np.concatenate(all_c), np.concatenate(all_t)
        ref = brute_force(P, C, vs)
        coords = np.floor(P / np.float32(vs)).astype(np.int64)
        _, inv = np.unique(coords, axis=0, return_inverse=True)
        stamps = np.zeros(ref["keys"].shape[0], np.int64)
        np.maximum.at(stamps, inv.ravel(), T)
        _assert_matches(m, ref, {"stamps": stamps})
        assert m.size == ref["keys"].shape[0]
    assert m.stats.frames == 5 and m.stats.integrated_points == 15000
    assert m.stats.inserted_voxels == m.size


@pytest.mark.parametrize("spread", [0.3, 3.0, 300.0, 30_000.0])
def test_group_points_all_paths_equal_brute_force(spread: float, brute_force) -> None:
    """Dense (small box), radix (box up to 2**32 cells) and argsort (larger) grouping paths."""
    rng = np.random.default_rng(2)
    p = (_scan_like(rng, 4000, 0.002) * spread).astype(np.float32)
    c = rng.integers(0, 256, (4000, 3), dtype=np.uint8)
    g = group_points(p, c, 0.05)
    ref = brute_force(p, c, 0.05)
    assert g.dropped == 0
    np.testing.assert_array_equal(unpack_keys(g.keys), ref["keys"])
    assert np.all(np.diff(g.keys) > 0)
    np.testing.assert_array_equal(g.count, ref["counts"])
    np.testing.assert_allclose(g.pos_sum / g.count[:, None], ref["positions"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(g.color_sum / g.count[:, None], ref["colors"], rtol=0, atol=1e-9)
    k, keep = point_keys(p, 0.05)
    assert keep is None
    np.testing.assert_array_equal(np.unique(k), g.keys)


def test_pack_unpack_roundtrip_and_range() -> None:
    rng = np.random.default_rng(3)
    c = rng.integers(KEY_MIN, KEY_MAX + 1, (1000, 3))
    c[:4] = [[KEY_MIN] * 3, [KEY_MAX] * 3, [KEY_MIN, 0, KEY_MAX], [-1, 0, 1]]
    k = pack_keys(c)
    assert (k >= 0).all()
    np.testing.assert_array_equal(unpack_keys(k), c)
    # packed order is lexicographic (x, y, z) order
    np.testing.assert_array_equal(np.argsort(k, kind="stable"), np.lexsort(c.T[::-1]))
    with pytest.raises(ValueError, match="must lie in"):
        pack_keys([[KEY_MAX + 1, 0, 0]])


def test_non_finite_and_out_of_range_points_are_dropped_and_counted() -> None:
    m = LocalVoxelMap(MapCfg(voxel_size_m=0.05, radius_m=1e9, max_voxels=100), 4)
    p = np.array([[0.0, 0, 0], [np.nan, 0, 0], [np.inf, 0, 0], [1e6, 0, 0], [0.01, 0, 0]], np.float32)
    st = m.integrate_points(p, np.zeros((5, 3), np.uint8), 1, np.zeros(3))
    assert st.dropped_points == 3 and m.size == 1 and m.counts[0] == 2
    assert m.stats.dropped_points == 3


@pytest.mark.parametrize("voxel", [0.05, 0.02])
def test_integrate_frames_equals_group_by(voxel: float, small_cam, box_world, box_cls, pose_look_at,
                                          brute_force) -> None:
    """Rendered frames through integrate(): same voxels as back-project + transform + group-by.

    Free-space clearing stays on: the scene is static, so it must not remove anything.
    """
    world = box_world(boxes=[box_cls((1.0, -0.5, 0.0), (1.6, 0.3, 0.8))])
    cfg = MapCfg(voxel_size_m=voxel, stride_px=2, **BIG)
    m = LocalVoxelMap(cfg, 16)
    P, C = [], []
    for i in range(4):
        T = pose_look_at((-2.0 + 0.3 * i, 0.4 * i - 0.5, 1.3), (1.3, 0.0, 0.4))
        posed = world.posed(small_cam, T, 10 + i)
        st = m.integrate(posed)
        pts, pix = small_cam.backproject(posed.frame.depth_m, 2)
        np.testing.assert_allclose(transform_points(T, pts), T.apply(pts), rtol=0, atol=2e-6)
        P.append(transform_points(T, pts)), C.append(posed.frame.rgb.reshape(-1, 3)[pix])
        assert st.points == pts.shape[0] and st.cleared_free_space == 0
    ref = brute_force(np.concatenate(P), np.concatenate(C), voxel)
    _assert_matches(m, ref)
    # every running-mean position lies in its own voxel (walls sit exactly on voxel faces here)
    assert np.abs(m.positions / voxel - (m.keys + 0.5)).max() <= 0.5 + 1e-3


def test_visible_equals_reference_test(small_cam, box_world, pose_look_at) -> None:
    world = box_world()
    m = LocalVoxelMap(MapCfg(**BIG), 4)
    T1 = pose_look_at((-2.0, 0.0, 1.2), (2.0, 0.5, 1.0))
    m.integrate(world.posed(small_cam, T1, 1))
    m.integrate(world.posed(small_cam, pose_look_at((0.0, 0.0, 1.2), (0.0, 2.5, 1.0)), 2))
    posed = world.posed(small_cam, T1, 3)
    got = m.visible(posed, 10, 0.25)
    ref = np.flatnonzero(
        small_cam.visible_mask(T1.inverse().apply(m.positions.astype(np.float64)), posed.frame.depth_m)
    )
    assert got.dtype == np.int64
    assert 0 < got.size < m.size
    # float32 vs float64 projection may flip points exactly on a rounding boundary
    assert np.setxor1d(got, ref).size <= max(2, ref.size // 1000)


def test_update_semantics_equals_weighted_mean_of_unit_features() -> None:
    rng = np.random.default_rng(4)
    D = 32
    m = LocalVoxelMap(MapCfg(**BIG), D)
    m.integrate_points(rng.uniform(-1, 1, (400, 3)).astype(np.float32),
                       np.zeros((400, 3), np.uint8), 1, np.zeros(3))
    n = m.size
    acc = np.zeros((n, D))
    wsum = np.zeros(n)
    for call in range(4):
        M = 300
        idx = rng.integers(0, n, M)  # with repeats
        f = rng.normal(size=(M, D)).astype(np.float32) * rng.uniform(0.1, 10, (M, 1)).astype(np.float32)
        f[:5] = 0.0  # zero features carry no direction: ignored
        w = rng.uniform(0.0, 2.0, M).astype(np.float32) if call % 2 else None
        if w is not None:
            w[5:10] = 0.0
        m.update_semantics(idx, f, w)
        ww = np.ones(M) if w is None else w.astype(np.float64)
        for i in range(M):  # brute force, one observation at a time
            nrm = np.linalg.norm(f[i].astype(np.float64))
            if nrm > 0 and ww[i] > 0:
                acc[idx[i]] += ww[i] * f[i] / nrm
                wsum[idx[i]] += ww[i]
    seen = wsum > 0
    ref = np.zeros_like(acc)
    ref[seen] = acc[seen] / wsum[seen, None]
    assert m.features.dtype == np.float16 and m.feature_weights.dtype == np.float32
    np.testing.assert_allclose(m.feature_weights, wsum, rtol=1e-5)
    np.testing.assert_allclose(m.features.astype(np.float64), ref, atol=3e-3)
    assert m.stats.semantic_updates == 4


def test_update_semantics_rejects_bad_input() -> None:
    m = LocalVoxelMap(MapCfg(**BIG), 4)
    m.integrate_points(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8), 1, np.zeros(3))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 1\)"):
        m.update_semantics([1], np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(1, 4\)"):
        m.update_semantics([0], np.ones((1, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        m.update_semantics([0], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match=">= 0"):
        m.update_semantics([0], np.ones((1, 4)), [-1.0])
    with pytest.raises(ValueError, match="integer"):
        m.update_semantics([0.5], np.ones((1, 4)))


def test_views_snapshot_versions_and_rows_of() -> None:
    rng = np.random.default_rng(5)
    m = LocalVoxelMap(MapCfg(voxel_size_m=0.1, radius_m=1.0, max_voxels=10_000), 4)
    v0 = m.version
    m.integrate_points(rng.uniform(-0.5, 0.5, (500, 3)).astype(np.float32),
                       rng.integers(0, 256, (500, 3), dtype=np.uint8), 5, np.zeros(3))
    assert m.version > v0
    for name in ("positions", "colors", "counts", "last_seen_ns", "features", "feature_weights", "keys"):
        arr = getattr(m, name)
        assert arr.shape[0] == m.size and not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[...] = 0
    assert m.keys.dtype == np.int32 and m.colors.dtype == np.uint8
    snap = m.snapshot()
    pos0 = snap.positions.copy()
    lv = m.layout_version
    rows = m.rows_of(m.keys)
    np.testing.assert_array_equal(rows, np.arange(m.size))
    np.testing.assert_array_equal(m.rows_of(m.packed_keys), np.arange(m.size))
    assert m.rows_of(np.array([[999, 999, 999]]))[0] == -1
    # appending keeps rows; a far sensor evicts everything by radius (rows change)
    m.integrate_points(np.full((1, 3), 0.05, np.float32), np.zeros((1, 3), np.uint8), 6, np.zeros(3))
    assert m.layout_version == lv
    m.integrate_points(np.full((1, 3), 20.0, np.float32), np.zeros((1, 3), np.uint8), 7, np.full(3, 20.0))
    assert m.layout_version > lv and m.size == 1 and m.stats.evicted_radius > 0
    np.testing.assert_array_equal(snap.positions, pos0)  # the snapshot is a copy
    assert not snap.features.flags.writeable and snap.size == pos0.shape[0]
    assert m.snapshot(include_features=False).features is None


def test_memory_accounting() -> None:
    for D in (512, 768):
        m = LocalVoxelMap(MapCfg(voxel_size_m=0.05, radius_m=50.0, max_voxels=20_000), D,
                          initial_capacity=20_000)
        pts = (np.indices((20, 20, 50)).reshape(3, -1).T * 0.05 + 0.025).astype(np.float32)
        m.integrate_points(pts, np.zeros_like(pts, dtype=np.uint8), 1, np.zeros(3))
        assert m.size == m.capacity == 20_000
        assert m.memory_bytes() == m.size * LocalVoxelMap.bytes_per_voxel(D)
        _ = m.keys, m.colors  # derived views add 15 B per voxel while cached
        assert m.memory_bytes() == m.size * (LocalVoxelMap.bytes_per_voxel(D) + 15)
    assert LocalVoxelMap.bytes_per_voxel(512) == 2121 and LocalVoxelMap.bytes_per_voxel(768) == 3145
    assert LocalVoxelMap.bytes_per_voxel(768, clip_channel=False) == 1609
    # the documented figure is what the storage arrays really hold per row (+ 12 B sorted index)
    for clip in (True, False):
        m = LocalVoxelMap(MapCfg(max_voxels=1000, clip_channel=clip), 768, initial_capacity=1000)
        assert m.reserved_bytes() // m.capacity + 12 == LocalVoxelMap.bytes_per_voxel(768, clip_channel=clip)
        assert m.clip_dim == (768 if clip else 0)


def test_frame_records_validate(small_cam) -> None:
    rgb = np.zeros((120, 160, 3), np.uint8)
    depth = np.ones((120, 160), np.float32)
    f = RgbdFrame(rgb, depth, small_cam, np.int64(7), "cam_optical")
    assert f.stamp_ns == 7 and type(f.stamp_ns) is int and f.width == 160
    posed = PosedFrame(f, SE3.identity())
    assert posed.stamp_ns == 7 and posed.sensor_origin.shape == (3,)
    with pytest.raises(ValueError, match="rgb is 80x120 but depth is 160x120"):
        RgbdFrame(rgb[:, :80], depth, small_cam, 0, "c")
    with pytest.raises(ValueError, match="camera is 160x120 but the images are 80x60"):
        RgbdFrame(rgb[:60, :80], depth[:60, :80], small_cam, 0, "c")
    with pytest.raises(ValueError, match="uint8"):
        RgbdFrame(rgb.astype(np.float32), depth, small_cam, 0, "c")
    with pytest.raises(ValueError, match="float32"):
        RgbdFrame(rgb, depth.astype(np.uint16), small_cam, 0, "c")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        RgbdFrame(rgb[..., 0], depth, small_cam, 0, "c")
    with pytest.raises(ValueError, match="stamp_ns"):
        RgbdFrame(rgb, depth, small_cam, 1.5, "c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PinholeCamera"):
        RgbdFrame(rgb, depth, None, 0, "c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SE3"):
        PosedFrame(f, np.eye(4))  # type: ignore[arg-type]


def test_map_cfg_validation() -> None:
    cfg = from_dict(MapCfg, {"voxel_size_m": 0.02, "eviction": "oldest"})
    assert cfg.voxel_size_m == 0.02
    with pytest.raises(ConfigError, match=r"voxel_size_m: 0\.0 is out of range"):
        from_dict(MapCfg, {"voxel_size_m": 0.0})
    with pytest.raises(ConfigError, match="eviction"):
        from_dict(MapCfg, {"eviction": "random"})
    with pytest.raises(ConfigError, match="clearing_min_depth_m"):
        MapCfg(clearing_min_depth_m=7.0)
    with pytest.raises(TypeError):
        LocalVoxelMap(dataclasses.asdict(MapCfg()), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature_dim"):
        LocalVoxelMap(MapCfg(), -1)
    m = LocalVoxelMap(MapCfg(), 4)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        m.integrate_points(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.uint8), 0, np.zeros(3))
    with pytest.raises(ValueError, match="uint8"):
        m.integrate_points(np.zeros((3, 3), np.float32), np.zeros((3, 3)), 0, np.zeros(3))
    with pytest.raises(ValueError, match="sensor_origin"):
        m.integrate_points(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), 0, [np.nan, 0, 0])
    assert isinstance(PinholeCamera, type)


def _semantics_by_key(m: LocalVoxelMap) -> dict:
    return {tuple(k): (m.features[i].copy(), m.feature_weights[i]) for i, k in enumerate(m.keys)}


def _check_semantics_by_key(m: LocalVoxelMap, before: dict) -> int:
    kept = 0
    for i, k in enumerate(m.keys):
        if tuple(k) in before:
            np.testing.assert_array_equal(m.features[i], before[tuple(k)][0])
            assert m.feature_weights[i] == before[tuple(k)][1]
            kept += 1
        else:
            assert m.feature_weights[i] == 0.0 and not m.features[i].any()
    return kept


def test_semantics_survive_compaction_and_new_voxels_start_empty() -> None:
    """Removals move rows: a surviving voxel keeps its features (found by key), and a voxel
    created in a recycled row starts with zero features and weight."""
    rng = np.random.default_rng(6)
    D = 16
    m = LocalVoxelMap(MapCfg(voxel_size_m=0.1, radius_m=1.0, max_voxels=300), D)
    p = rng.uniform(-0.5, 0.5, (2000, 3)).astype(np.float32)
    m.integrate_points(p, np.zeros_like(p, dtype=np.uint8), 1, np.zeros(3))
    assert m.size == 300
    m.update_semantics(np.arange(m.size), rng.normal(size=(m.size, D)).astype(np.float32))
    before = _semantics_by_key(m)
    # 1. the sensor moves: radius eviction removes voxels, tail rows (with features) move into
    #    the holes and leave stale copies behind; 2. new voxels are appended into those rows
    none = np.empty((0, 3), np.float32)
    st = m.integrate_points(none, none.astype(np.uint8), 2, np.array([0.6, 0.0, 0.0]))
    assert st.evicted_radius > 0 and m.size < 300
    q = rng.uniform([1.0, -0.2, -0.2], [1.4, 0.2, 0.2], (200, 3)).astype(np.float32)
    st = m.integrate_points(q, np.zeros_like(q, dtype=np.uint8), 3, np.array([0.6, 0.0, 0.0]))
    assert st.new_voxels > 0
    assert 0 < _check_semantics_by_key(m, before) < m.size
    # 3. capacity eviction with semantics on both sides of the moves
    m.update_semantics(np.arange(m.size), rng.normal(size=(m.size, D)).astype(np.float32) + 1)
    before = _semantics_by_key(m)
    q = rng.uniform([0.2, 0.2, -0.3], [0.9, 0.6, 0.3], (300, 3)).astype(np.float32)
    st = m.integrate_points(q, np.zeros_like(q, dtype=np.uint8), 4, np.array([0.6, 0.4, 0.0]))
    assert st.evicted_capacity > 0
    assert _check_semantics_by_key(m, before) > 0
