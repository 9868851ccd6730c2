"""The map stays bounded on a long walk: size, memory, counted and deterministic evictions."""

from __future__ import annotations

import numpy as np
import pytest

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.mapping import LocalVoxelMap
from xmask3d_ros.mapping.eviction import select_evictions


def _rooms(rng: np.random.Generator, n_rooms: int = 4, spacing: float = 0.08) -> np.ndarray:
    """Surface points of ``n_rooms`` 6 x 5 x 2.5 m rooms in a row along x (floors and walls)."""
    pts = []
    for r in range(n_rooms):
        x0 = 6.0 * r
        xs = np.arange(x0, x0 + 6.0, spacing)
        ys = np.arange(-2.5, 2.5, spacing)
        zs = np.arange(0.0, 2.5, spacing)
        gx, gy = np.meshgrid(xs, ys)
        pts.append(np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1))  # floor
        for y in (-2.5, 2.5):  # long walls
            gx, gz = np.meshgrid(xs, zs)
            pts.append(np.stack([gx.ravel(), np.full(gx.size, y), gz.ravel()], 1))
        gy, gz = np.meshgrid(ys, zs)  # partition wall with a 1 m door at y in [-0.5, 0.5]
        keep = np.abs(gy.ravel()) > 0.5
        pts.append(np.stack([np.full(gy.size, x0), gy.ravel(), gz.ravel()], 1)[keep])
    p = np.concatenate(pts)
    return (p + rng.normal(0, 0.005, p.shape)).astype(np.float32)


def _walk(cfg: MapCfg, n_frames: int, seed: int = 0) -> tuple[LocalVoxelMap, list[int], list[int]]:
    """A sensor walking there and back through the rooms, seeing a 100-degree cone up to 4 m."""
    rng = np.random.default_rng(seed)
    world = _rooms(rng)
    colors = rng.integers(0, 256, world.shape, dtype=np.uint8)
    m = LocalVoxelMap(cfg, 8)
    sizes, memory = [], []
    for i in range(n_frames):
        s = (i / 400.0) % 2.0  # 0 -> 1 -> 2: out and back every 800 frames
        x = 0.5 + 22.0 * (s if s <= 1.0 else 2.0 - s)
        heading = 1.0 if s <= 1.0 else -1.0
        yaw = 0.6 * np.sin(i / 25.0)
        origin = np.array([x, 0.8 * np.sin(i / 60.0), 1.2])
        fwd = np.array([heading * np.cos(yaw), np.sin(yaw), 0.0])
        d = world - origin.astype(np.float32)
        dist2 = np.einsum("ij,ij->i", d, d)
        sel = np.flatnonzero((dist2 < 16.0) & (d @ fwd.astype(np.float32) > 0.64 * np.sqrt(dist2)))
        sel = sel[rng.random(sel.size) < 0.5]
        st = m.integrate_points(world[sel], colors[sel], 1_000_000 * i, origin)
        assert st.size == m.size <= cfg.max_voxels
        sizes.append(m.size)
        memory.append((m.capacity, m.memory_bytes()))
    return m, sizes, memory


@pytest.mark.parametrize("rule", ["farthest", "oldest"])
def test_long_walk_is_bounded_flat_and_counted(rule: str) -> None:
    cfg = MapCfg(voxel_size_m=0.1, radius_m=3.5, max_voxels=2500, eviction=rule)
    n_frames = 2400 if rule == "farthest" else 800
    m, sizes, memory = _walk(cfg, n_frames)
    assert max(sizes) == cfg.max_voxels  # the cap was reached ...
    s = m.stats
    assert s.evicted_capacity > 0 and s.evicted_radius > 0  # ... and both bounds acted
    # every voxel ever inserted is still there or was counted out
    assert s.inserted_voxels == m.size + s.evicted_radius + s.evicted_capacity + s.cleared_free_space
    assert s.frames == n_frames
    # storage is flat once the map is full (only the sorted index follows the size, 12 B per
    # voxel), and bounded by the cap plus twice one frame's overflow
    full = sizes.index(cfg.max_voxels)
    caps = {c for c, _ in memory[max(full, n_frames // 4):]}
    tail = [b for _, b in memory[max(full, n_frames // 4):]]
    assert len(caps) == 1, caps
    assert max(tail) - min(tail) <= 12 * cfg.max_voxels
    assert max(b for _, b in memory) <= 3 * cfg.max_voxels * (LocalVoxelMap.bytes_per_voxel(8) + 15)
    # the radius bound holds after every frame (checked for the final one)
    origin = m.snapshot().sensor_origin
    assert np.sqrt(((m.positions - origin) ** 2).sum(1)).max() <= cfg.radius_m + 1e-4


def test_long_walk_is_deterministic() -> None:
    cfg = MapCfg(voxel_size_m=0.1, radius_m=3.5, max_voxels=1500)
    a, sa, _ = _walk(cfg, 500, seed=3)
    b, sb, _ = _walk(cfg, 500, seed=3)
    assert sa == sb and a.stats == b.stats
    for name in ("keys", "positions", "colors", "counts", "last_seen_ns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("rule", ["farthest", "oldest"])
def test_select_evictions_matches_full_sort(rule: str) -> None:
    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(1, 300))
        dist2 = rng.integers(0, 6, n).astype(np.float32)  # many ties on purpose
        last = rng.integers(0, 4, n).astype(np.int64)
        keys = rng.permutation(10_000)[:n].astype(np.int64)
        k = int(rng.integers(0, n + 2))
        got = select_evictions(k, rule, dist2, last, keys)
        if rule == "farthest":
            order = np.lexsort((keys, last, -dist2))
        else:
            order = np.lexsort((keys, -dist2, last))
        np.testing.assert_array_equal(got, np.sort(order[: min(k, n)]), err_msg=f"trial {trial}")
    with pytest.raises(ValueError, match="farthest, oldest"):
        select_evictions(1, "lru", dist2, last, keys)


def test_capacity_eviction_keeps_the_nearest(brute_force) -> None:
    """farthest rule on one batch: exactly the max_voxels voxels nearest the sensor survive."""
    rng = np.random.default_rng(8)
    cfg = MapCfg(voxel_size_m=0.1, radius_m=100.0, max_voxels=300)
    m = LocalVoxelMap(cfg, 0)
    p = rng.uniform(-3, 3, (3000, 3)).astype(np.float32)
    c = np.zeros_like(p, dtype=np.uint8)
    origin = np.array([0.5, -0.2, 0.1])
    st = m.integrate_points(p, c, 5, origin)
    ref = brute_force(p, c, 0.1)
    d = np.linalg.norm(ref["positions"] - origin, axis=1)
    nearest = ref["keys"][np.argsort(d)[:300]]
    assert m.size == 300 and st.evicted_capacity == ref["keys"].shape[0] - 300
    order = np.lexsort(m.keys.T[::-1])
    np.testing.assert_array_equal(m.keys[order], nearest[np.lexsort(nearest.T[::-1])])
