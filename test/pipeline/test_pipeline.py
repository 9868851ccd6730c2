"""PerceptionPipeline: keyframes, sync determinism, the async worker, errors, row remapping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from xmask3d_ros.config.pipeline import KeyframeCfg
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.mapping.keys import pack_keys
from xmask3d_ros.pipeline import (
    KeyframeSelector,
    PerceptionPipeline,
    PipelineClosedError,
    SegmentationResult,
    TableTextEncoder,
)

ALL_KEYFRAMES = {"keyframe": {"min_translation_m": 0.001}}


class Wrapped:
    """A segmenter wrapper: delay, a gate to hold a call, failures on chosen calls."""

    def __init__(self, inner: Any, *, delay_s: float = 0.0, fail_on: set[int] | None = None,
                 bad_on: set[int] | None = None, gate: threading.Event | None = None) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.fail_on = fail_on or set()
        self.bad_on = bad_on or set()
        self.gate = gate
        self.calls = 0
        self.started = threading.Event()

    @property
    def feature_dim(self) -> int:
        return int(self.inner.feature_dim)

    def segment(self, posed: PosedFrame, points: npt.NDArray[np.float32],
                indices: npt.NDArray[np.int64]) -> SegmentationResult:
        self.calls += 1
        n = self.calls
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10.0)
        if self.delay_s:
            time.sleep(self.delay_s)
        if n in self.fail_on:
            raise RuntimeError(f"model failure on call {n}")
        res = self.inner.segment(posed, points, indices)
        if n in self.bad_on:
            return SegmentationResult(res.covered, res.features[:, :3])
        return res


class KeyEcho:
    """Feature of a point = a fixed unit vector of its voxel key: wrong rows show up at once."""

    feature_dim = 32

    def __init__(self, voxel_size_m: float) -> None:
        self.vs = np.float32(voxel_size_m)
        self.proj = np.random.default_rng(0).standard_normal((3, self.feature_dim))

    def echo(self, keys: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
        f = np.sin(keys.astype(np.float64) @ self.proj * 1.7 + 0.3)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)

    def segment(self, posed: PosedFrame, points: npt.NDArray[np.float32],
                indices: npt.NDArray[np.int64]) -> SegmentationResult:
        keys = np.floor(points / self.vs).astype(np.int64)
        return SegmentationResult(np.arange(len(points)), self.echo(keys))


def test_keyframe_selection() -> None:
    sel = KeyframeSelector(KeyframeCfg(min_translation_m=0.1, min_rotation_deg=10.0, max_interval_s=1.0))
    I = SE3.identity()
    rot = SE3.from_quat_trans([0.0, np.sin(np.radians(5.5) / 2), 0.0, np.cos(np.radians(5.5) / 2)], [0, 0, 0])
    assert sel.check(I, 0) == "first"
    assert sel.check(SE3(np.eye(3), np.array([0.05, 0.0, 0.0])), 10**8) == ""
    assert sel.check(SE3(np.eye(3), np.array([0.0, 0.1, 0.0])), 2 * 10**8) == "translation"
    base = SE3(np.eye(3), np.array([0.0, 0.1, 0.0]))
    assert sel.check(base @ rot, 3 * 10**8) == ""  # 5.5 degrees
    assert sel.check(base @ rot @ rot, 4 * 10**8) == "rotation"  # 11 degrees
    assert sel.check(base @ rot @ rot, 13 * 10**8) == ""
    assert sel.check(base @ rot @ rot, 14 * 10**8) == "interval"
    assert sel.check(base @ rot @ rot, 10**8) == ""  # an older stamp never triggers the interval


def test_sync_mode_is_deterministic(small_frames: Any, make_cfg: Callable[..., Any]) -> None:
    def run() -> tuple[Any, Any, Any]:
        enc = small_frames.encoder(64)
        seg = small_frames.segmenter(enc, noise_std=0.3, seed=5)
        with PerceptionPipeline(make_cfg(pipeline={"mode": "sync"}), seg, enc) as pipe:
            results = [pipe.step(p) for p in small_frames.frames[:20]]
            ans = pipe.query(small_frames.present)
            return pipe.snapshot(include_features=True), ans, (results, pipe.stats)

    a, b = run(), run()
    assert a[2][1].keyframes == b[2][1].keyframes == a[2][1].segmented > 3
    assert 0 < a[2][1].keyframes < 20, "default thresholds select a subset of the frames"
    assert [r.keyframe for r in a[2][0]] == [r.keyframe for r in b[2][0]]
    for name in ("keys", "positions", "features", "feature_weights", "counts"):
        assert np.array_equal(getattr(a[0], name), getattr(b[0], name)), name
    assert np.array_equal(a[1].voxel_label, b[1].voxel_label)
    assert np.array_equal(a[1].voxel_score, b[1].voxel_score, equal_nan=True)
    assert [r.objects for r in a[1].results] == [r.objects for r in b[1].results]


def test_async_step_never_waits_for_the_segmenter(small_frames: Any, make_cfg: Callable[..., Any]) -> None:
    enc = small_frames.encoder(64)
    slow = Wrapped(small_frames.segmenter(enc), delay_s=0.4)
    pipe = PerceptionPipeline(make_cfg(pipeline={"mode": "async", **ALL_KEYFRAMES}), slow, enc)
    latencies = []
    for posed in small_frames.frames:
        t0 = time.perf_counter()
        r = pipe.step(posed)
        latencies.append(time.perf_counter() - t0)
        assert r.keyframe and r.queued
    assert pipe.flush(10.0)
    s = pipe.stats
    pipe.close()
    # Integration of a 160x120 frame takes milliseconds; a wait for the 0.4 s model would show.
    assert max(latencies) < 0.2, f"step() waited: max {max(latencies) * 1e3:.0f} ms"
    assert s.frames == s.keyframes == len(small_frames.frames)
    assert s.dropped_keyframes > len(small_frames.frames) // 2
    assert s.segmented == slow.calls >= 1
    assert s.keyframes == s.segmented + s.dropped_keyframes + s.segmenter_errors + s.empty_keyframes
    assert s.timings["segment"].count == s.segmented and s.timings["segment"].mean_ms >= 400
    ans = pipe.snapshot()
    assert np.count_nonzero(ans.feature_weights) > 0, "the worker's results reached the map"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_segmenter_errors_are_counted_not_fatal(mode: str, small_frames: Any,
                                                make_cfg: Callable[..., Any]) -> None:
    enc = small_frames.encoder(64)
    seg = Wrapped(small_frames.segmenter(enc), fail_on={1, 3}, bad_on={2})
    pipe = PerceptionPipeline(make_cfg(pipeline={"mode": mode, **ALL_KEYFRAMES}), seg, enc)
    for posed in small_frames.frames[:6]:
        pipe.step(posed)
        pipe.flush(10.0)  # async: one keyframe at a time, so every call is made
    s = pipe.stats
    assert s.segmenter_errors == 3 and s.segmented == 3 and s.dropped_keyframes == 0
    assert s.frames == 6
    pipe.close()
    pipe.close()  # idempotent
    with pytest.raises(PipelineClosedError):
        pipe.step(small_frames.frames[0])
    with pytest.raises(PipelineClosedError):
        pipe.query(["chair"])


def test_rows_moved_during_segmentation_are_remapped(small_frames: Any,
                                                     make_cfg: Callable[..., Any]) -> None:
    """The map evicts (max_voxels) on every frame while a keyframe is being segmented; its
    features must still land on the voxels they were computed for (re-resolved by key)."""
    echo = KeyEcho(0.05)
    gate = threading.Event()
    held = Wrapped(echo, gate=gate)
    enc = TableTextEncoder((), echo.feature_dim)
    cfg = make_cfg(pipeline={"mode": "async", **ALL_KEYFRAMES}, mapping={"max_voxels": 1500})
    pipe = PerceptionPipeline(cfg, held, enc)
    pipe.step(small_frames.frames[0])
    assert held.started.wait(10.0)
    for posed in small_frames.frames[1:12]:  # evictions while the first keyframe is held
        pipe.step(posed)
    gate.set()
    assert pipe.flush(10.0)
    s = pipe.stats
    pipe.close()
    assert s.map.evicted_capacity > 0
    assert s.remapped_keyframes >= 1 and s.segmented == 2  # the held one + the latest
    assert s.lost_updates > 0, "some covered voxels were evicted meanwhile (and counted)"
    snap = pipe.snapshot(include_features=True)
    have = snap.feature_weights > 0
    assert have.sum() > 100
    stored = snap.features[have].astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    cos = np.sum(stored * echo.echo(snap.keys[have]), axis=1)
    assert cos.min() > 0.99, "a voxel received another voxel's features"
    assert len(set(pack_keys(snap.keys).tolist())) == snap.size


def test_feature_dimensions_must_agree(small_frames: Any) -> None:
    enc = small_frames.encoder(64)
    with pytest.raises(ValueError, match="feature_dim"):
        PerceptionPipeline(None, small_frames.segmenter(enc), enc, feature_dim=32)
    with pytest.raises(ValueError, match="segmenter gives 32"):
        PerceptionPipeline(None, KeyEcho(0.05), enc)
    with pytest.raises(TypeError, match="PosedFrame"):
        with PerceptionPipeline(None, None, enc) as pipe:
            pipe.step("frame")  # type: ignore[arg-type]


def test_mapping_only_pipeline_and_query_stats(small_frames: Any, make_cfg: Callable[..., Any]) -> None:
    """No segmenter: frames are integrated, keyframes counted, queries answer 'unknown'."""
    enc = small_frames.encoder(64)
    with PerceptionPipeline(make_cfg(pipeline={"mode": "async"}), None, enc) as pipe:
        assert pipe.mode == "sync"
        for posed in small_frames.frames[:5]:
            pipe.step(posed)
        ans = pipe.query("chair, table")
        s = pipe.stats
    assert s.frames == 5 and s.keyframes >= 1 and s.segmented == 0
    assert ans.map_voxels == s.map.inserted_voxels - s.map.evicted_radius - s.map.evicted_capacity \
        - s.map.cleared_free_space
    assert ans.frame_id == "odom" and ans.stamp_ns == small_frames.frames[4].stamp_ns
    assert all(r.num_voxels == 0 for r in ans.results)
    assert s.query.queries == 1 and s.timings["query"].count == 1


def test_saved_map_reloads_into_another_pipeline_with_the_same_answers(
        small_frames: Any, make_cfg: Callable[..., Any], tmp_path: Any) -> None:
    enc = small_frames.encoder(64)
    cfg = make_cfg(pipeline={"mode": "sync"})
    with PerceptionPipeline(cfg, small_frames.segmenter(enc, noise_std=0.3, seed=5), enc) as pipe:
        for p in small_frames.frames[:15]:
            pipe.step(p)
        want = pipe.query(small_frames.present)
        info = pipe.save_map(tmp_path / "room.safetensors")
    assert info.voxels == want.map_voxels > 0 and info.frame_id == cfg.node.map_frame
    with PerceptionPipeline(cfg, small_frames.segmenter(enc, noise_std=0.3, seed=5), enc) as other:
        other.step(small_frames.frames[30])  # content that the load replaces
        assert other.load_map(tmp_path / "room.safetensors") == info
        got = other.query(small_frames.present)
        np.testing.assert_array_equal(got.positions, want.positions)
        np.testing.assert_array_equal(got.voxel_label, want.voxel_label)
        np.testing.assert_array_equal(got.voxel_score, want.voxel_score)
        assert got.objects == want.objects and got.stamp_ns >= want.stamp_ns
        # mapping goes on from the loaded map, and the next frame is a keyframe
        assert other.step(small_frames.frames[15]).keyframe == "first"
        assert other.stats.segmented == 2
        # a map in another frame is refused; the map is unchanged
        before = other.snapshot(include_features=True)
        wrong = PerceptionPipeline(make_cfg(pipeline={"mode": "sync"}, node={"map_frame": "map"}),
                                   None, enc)
        with pytest.raises(ValueError, match="in frame 'odom', this map is in 'map'"):
            wrong.load_map(tmp_path / "room.safetensors")
        with pytest.raises(ValueError, match="no map file at"):
            other.load_map(tmp_path / "absent.safetensors")
        after = other.snapshot(include_features=True)
        np.testing.assert_array_equal(after.features, before.features)
        assert after.version == before.version


def test_clear_map_while_a_keyframe_is_segmented(small_frames: Any, make_cfg: Callable[..., Any]) -> None:
    """The held keyframe's voxels are gone when its result arrives: its update is dropped and
    counted, nothing lands on the new voxels, and the next frame starts a keyframe."""
    echo = KeyEcho(0.05)
    gate = threading.Event()
    held = Wrapped(echo, gate=gate)
    enc = TableTextEncoder((), echo.feature_dim)
    with PerceptionPipeline(make_cfg(pipeline={"mode": "async"}), held, enc) as pipe:
        pipe.step(small_frames.frames[0])
        assert held.started.wait(10.0)
        voxels = pipe.snapshot().size
        assert pipe.clear_map() == voxels > 0
        assert pipe.snapshot().size == 0
        step = pipe.step(small_frames.frames[20])  # another view: new voxels
        assert step.keyframe == "first"
        gate.set()
        assert pipe.flush(10.0)
        s = pipe.stats
        snap = pipe.snapshot(include_features=True)
    assert s.remapped_keyframes >= 1 and s.lost_updates > 0
    have = snap.feature_weights > 0
    stored = snap.features[have].astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    assert np.sum(stored * echo.echo(snap.keys[have]), axis=1).min() > 0.99
