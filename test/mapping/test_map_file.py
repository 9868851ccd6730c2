"""Map state and map files: a saved and reloaded map is the same map, and behaves the same.

Independent checks: every stored column compared array by array, key lookups against the
original map, and the next frames integrated into both (eviction, clearing and semantic updates
must then agree bit for bit). Bad files and bad states are refused with a message naming what
is wrong, and leave the receiving map untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.mapping import (
    LocalVoxelMap,
    MapFileError,
    MapStateError,
    VoxelMapState,
    read_map_file,
    write_map_file,
)

D = 12
CFG = MapCfg(voxel_size_m=0.05, radius_m=1.5, max_voxels=4000)


def _frame(rng: np.random.Generator, centre: np.ndarray, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    p = (centre + rng.uniform(-1.2, 1.2, (n, 3))).astype(np.float32)
    return p, rng.integers(0, 256, (n, 3)).astype(np.uint8)


def _semantics(m: LocalVoxelMap, rng: np.random.Generator) -> None:
    rows = rng.choice(m.size, m.size // 2, replace=False)
    m.update_semantics(rows, rng.normal(size=(rows.size, D)).astype(np.float32),
                       rng.uniform(0.1, 2.0, rows.size).astype(np.float32),
                       base_prob=rng.uniform(0, 1, rows.size).astype(np.float32))
    clip = rows[: rows.size // 2]
    m.update_clip_features(clip, rng.normal(size=(clip.size, D)).astype(np.float32))


def _built(cfg: MapCfg = CFG, seed: int = 0) -> LocalVoxelMap:
    """Several frames from a moving sensor (radius and capacity eviction permute the rows)."""
    rng = np.random.default_rng(seed)
    m = LocalVoxelMap(cfg, D)
    for i in range(4):
        origin = np.array([0.3 * i, 0.0, 0.0])
        p, c = _frame(rng, origin)
        m.integrate_points(p, c, 10**9 * (i + 1), origin)
        _semantics(m, rng)
    assert m.stats.evicted_radius + m.stats.evicted_capacity > 0
    return m


def _assert_same_state(a: VoxelMapState, b: VoxelMapState) -> None:
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
        assert a.arrays[k].dtype == b.arrays[k].dtype, k
    assert (a.voxel_size_m, a.feature_dim, a.stamp_ns) == (b.voxel_size_m, b.feature_dim, b.stamp_ns)
    np.testing.assert_array_equal(a.sensor_origin, b.sensor_origin)


def test_a_reloaded_map_is_the_same_map_and_evolves_the_same(tmp_path: Path) -> None:
    m = _built()
    info = write_map_file(tmp_path / "room.safetensors", m.state(), frame_id="odom")
    assert (info.voxels, info.feature_dim, info.clip_dim, info.frame_id) == (m.size, D, D, "odom")
    info2, state = read_map_file(tmp_path / "room.safetensors")
    assert info2 == dataclasses.replace(info, path=tmp_path / "room.safetensors")
    loaded = LocalVoxelMap(CFG, D)
    loaded.load_state(state)
    _assert_same_state(m.state(), loaded.state())
    # the sorted index is rebuilt: every key is found at the same row, absent keys are not
    rng = np.random.default_rng(1)
    keys = np.concatenate([m.keys, m.keys + np.array([1000, 0, 0], np.int32)])
    np.testing.assert_array_equal(loaded.rows_of(keys), m.rows_of(keys))
    assert np.all(m.rows_of(keys)[: m.size] == np.arange(m.size))
    # the next frames (new voxels, radius and capacity eviction from the saved sensor origin,
    # semantic updates) give the same map
    for i in range(4, 6):
        origin = np.array([0.3 * i, 0.1, 0.0])
        p, c = _frame(rng, origin)
        for target in (m, loaded):
            target.integrate_points(p, c, 10**9 * (i + 1), origin)
        rows = np.arange(0, m.size, 3)
        f = rng.normal(size=(rows.size, D)).astype(np.float32)
        for target in (m, loaded):
            target.update_semantics(rows, f)
            target.update_clip_features(rows, f)
    _assert_same_state(m.state(), loaded.state())


def test_map_files_are_standard_safetensors(tmp_path: Path) -> None:
    """Any safetensors reader gets the arrays and the metadata (nothing project-specific)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    m = _built()
    write_map_file(tmp_path / "m.safetensors", m.state(), frame_id="odom")
    got = load_file(str(tmp_path / "m.safetensors"))
    want = m.state().arrays
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        assert f.metadata()["frame_id"] == "odom" and f.metadata()["feature_dim"] == str(D)


def test_empty_map_round_trips(tmp_path: Path) -> None:
    m = LocalVoxelMap(CFG, D)
    write_map_file(tmp_path / "empty.safetensors", m.state(), frame_id="map")
    info, state = read_map_file(tmp_path / "empty.safetensors")
    assert info.voxels == 0
    loaded = _built()
    loaded.load_state(state)
    assert loaded.size == 0 and loaded.rows_of(np.zeros((1, 3), np.int32))[0] == -1


def test_maskclip_channel_may_differ_between_saver_and_loader(tmp_path: Path) -> None:
    with_clip = _built()
    no_clip_cfg = dataclasses.replace(CFG, clip_channel=False)
    no_clip = LocalVoxelMap(no_clip_cfg, D)
    no_clip.load_state(with_clip.state())  # the channel is dropped
    assert no_clip.clip_dim == 0 and "clip_features" not in no_clip.state().arrays
    np.testing.assert_array_equal(no_clip.features, with_clip.features)
    write_map_file(tmp_path / "noclip.safetensors", no_clip.state(), frame_id="odom")
    info, state = read_map_file(tmp_path / "noclip.safetensors")
    assert info.clip_dim == 0
    back = LocalVoxelMap(CFG, D)
    back.load_state(state)  # the channel starts empty
    assert back.clip_features.shape == (with_clip.size, D)
    assert not back.clip_weights.any() and not back.clip_features.any()
    np.testing.assert_array_equal(back.base_prob, with_clip.base_prob)


def _tampered(state: VoxelMapState, **arrays: np.ndarray | None) -> VoxelMapState:
    new = dict(state.arrays)
    for k, v in arrays.items():
        if v is None:
            del new[k]
        else:
            new[k] = v
    return dataclasses.replace(state, arrays=new)


def test_bad_states_are_refused_and_leave_the_map_unchanged() -> None:
    good = _built(seed=3).state()
    n = good.voxels
    pos = good.arrays["positions"]
    dup = good.arrays["packed_keys"].copy()
    dup[1] = dup[0]
    bad_pos = pos.copy()
    bad_pos[5, 0] = np.nan
    neg = good.arrays["feature_weights"].copy()
    neg[0] = -1
    nan16 = good.arrays["features"].copy()
    nan16[n - 1, D - 1] = np.nan
    inf16 = good.arrays["clip_features"].copy()
    inf16[0, 0] = -np.inf
    pb = good.arrays["base_prob"].copy()
    pb[0] = 1.5
    cases = [
        (dataclasses.replace(good, voxel_size_m=0.1), "0.1 m voxels, mapping.voxel_size_m is 0.05"),
        (dataclasses.replace(good, feature_dim=D + 1), "another model"),
        (_tampered(good, counts=None), "missing arrays: counts"),
        (_tampered(good, positions=pos.astype(np.float64)), "positions must be float32"),
        (_tampered(good, features=good.arrays["features"][:, :-1]), f"of shape ({n}, {D})"),
        (_tampered(good, packed_keys=dup), "duplicate voxels"),
        (_tampered(good, positions=bad_pos), "positions holds NaN"),
        (_tampered(good, features=nan16), "features holds NaN"),
        (_tampered(good, clip_features=inf16), "clip_features holds NaN or infinite"),
        (_tampered(good, positions=pos + np.float32(0.2)), "outside their voxels"),
        (_tampered(good, feature_weights=neg), "feature_weights must be >= 0"),
        (_tampered(good, base_prob=pb), "base_prob must lie in [0, 1]"),
        (dataclasses.replace(good, sensor_origin=(0.0, float("inf"), 0.0)), "sensor_origin"),
    ]
    target = _built(seed=4)
    before = target.state()
    version = target.version
    for state, needle in cases:
        with pytest.raises(MapStateError) as err:
            target.load_state(state)
        assert needle in str(err.value), (needle, str(err.value))
        _assert_same_state(before, target.state())
        assert target.version == version
    small = LocalVoxelMap(dataclasses.replace(CFG, max_voxels=n - 1), D)
    with pytest.raises(MapStateError, match=f"{n} voxels exceed mapping.max_voxels = {n - 1}"):
        small.load_state(good)
    # a map from another voxel size whose metadata was edited to match: positions give it away
    coarse = _built(dataclasses.replace(CFG, voxel_size_m=0.1)).state()
    with pytest.raises(MapStateError, match="another mapping.voxel_size_m"):
        target.load_state(dataclasses.replace(coarse, voxel_size_m=0.05))


def test_bad_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    with pytest.raises(MapFileError, match="no map file at"):
        read_map_file(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all" * 10)
    with pytest.raises(MapFileError, match="not a readable safetensors file"):
        read_map_file(junk)
    other = tmp_path / "model.safetensors"  # e.g. a checkpoint given by mistake
    save_file({"w": np.zeros(3, np.float32)}, str(other), metadata={"format": "pt"})
    with pytest.raises(MapFileError, match="not an xmask3d_ros map file"):
        read_map_file(other)
    good = tmp_path / "good.safetensors"
    write_map_file(good, _built().state(), frame_id="odom")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MapFileError, match="not a readable safetensors file"):
        read_map_file(cut)
    # a folder in the way: the error names the path and no partial file stays behind
    (tmp_path / "taken.safetensors").mkdir()
    with pytest.raises(MapFileError, match="cannot write the map to"):
        write_map_file(tmp_path / "taken.safetensors", _built().state(), frame_id="odom")
    assert not list(tmp_path.glob(".taken*"))
