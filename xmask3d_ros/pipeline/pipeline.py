"""``PerceptionPipeline``: posed frames -> local map -> keyframe segmentation -> queries.

The single implementation behind the ROS node and the replay tool::

    with PerceptionPipeline(cfg, segmenter, text_encoder) as pipe:
        for posed in frames:
            pipe.step(posed)          # integrates; keyframes go to the segmenter
        answer = pipe.query(["chair", "table"])

Every frame is integrated into the ``LocalVoxelMap`` inside ``step()``. Keyframes
(:class:`KeyframeSelector`) go to the segmenter: in ``sync`` mode inside ``step()`` (deterministic,
for replay and tests), in ``async`` mode through a worker thread with a keep-latest slot, so
``step()`` never waits for the model (a keyframe still waiting when a newer one arrives is
dropped and counted). Segmentation results update the voxels' semantic state.

Threads: one lock guards the map. ``step()`` holds it while integrating; the worker holds it only
to read the visible voxels and to write the results (the model runs without it); ``query()``
holds it while scoring the voxels (one pass over the features), not while encoding text or
building objects. Rows that moved while the model ran (evictions, clearing) are re-resolved by
voxel key; voxels removed meanwhile lose that keyframe's features (counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from xmask3d_ros.config.perception import PerceptionConfig
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.mapping import (
    IntegrationStats,
    LocalVoxelMap,
    MapFileError,
    MapFileInfo,
    MapStateError,
    MapStats,
    VoxelMapSnapshot,
    read_map_file,
    write_map_file,
)
from xmask3d_ros.pipeline.answers import QueryAnswer, QueryMode
from xmask3d_ros.pipeline.errors import PipelineClosedError
from xmask3d_ros.pipeline.keyframes import KeyframeSelector
from xmask3d_ros.pipeline.query import QueryEngine, QueryStats
from xmask3d_ros.pipeline.segmenter import Segmenter, TextEncoder, check_segmentation
from xmask3d_ros.pipeline.worker import LatestSlotWorker

__all__ = ["PerceptionPipeline", "PipelineStats", "StageTiming", "StepResult"]

_log = logging.getLogger(__name__)
_STAGES = ("step", "integrate", "visible", "segment", "update", "query")


@dataclasses.dataclass(frozen=True)
class StageTiming:
    """Wall time of one pipeline stage (milliseconds)."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    last_ms: float = 0.0

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


@dataclasses.dataclass(frozen=True)
class PipelineStats:
    """Counters since construction (diagnostics)."""

    frames: int  # step() calls (every one integrated)
    out_of_order_frames: int  # stamps older than the newest integrated one (integrated anyway)
    keyframes: int  # frames selected as keyframes
    segmented: int  # keyframes whose segmentation updated the map
    dropped_keyframes: int  # replaced in the async slot before the worker took them, or at close
    segmenter_errors: int  # segmenter raised or returned an invalid result (logged)
    empty_keyframes: int  # keyframes that saw no map voxel (nothing to segment)
    remapped_keyframes: int  # results whose rows moved while the segmenter ran
    lost_updates: int  # covered voxels removed from the map while the segmenter ran
    timings: dict[str, StageTiming]  # step, integrate, visible, segment, update, query
    map: MapStats
    query: QueryStats


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What ``step()`` did with one frame."""

    integration: IntegrationStats
    keyframe: str  # '' or the reason: first / translation / rotation / interval
    queued: bool  # async mode: handed to the worker (sync: segmented in step())


class PerceptionPipeline:
    """Posed frames in; a bounded semantic voxel map and text queries out. Thread-safe."""

    def __init__(
        self,
        cfg: PerceptionConfig | None,
        segmenter: Segmenter | None,
        text_encoder: TextEncoder,
        *,
        feature_dim: int | None = None,
    ) -> None:
        cfg = cfg if cfg is not None else PerceptionConfig()
        d = int(text_encoder.feature_dim) if feature_dim is None else int(feature_dim)
        if int(text_encoder.feature_dim) != d:
            raise ValueError(f"text encoder gives {text_encoder.feature_dim}-d embeddings, feature_dim is {d}")
        if segmenter is not None and int(segmenter.feature_dim) != d:
            raise ValueError(f"segmenter gives {segmenter.feature_dim}-d features, feature_dim is {d}")
        self._cfg = cfg
        self._d = d
        self._segmenter = segmenter
        self._map = LocalVoxelMap(cfg.mapping, d)
        # a segmenter may carry its model's classification rule (XMask3DSegmenter.class_rule)
        self._engine = QueryEngine(text_encoder, cfg.query, getattr(segmenter, "class_rule", None))
        self._keyframes = KeyframeSelector(cfg.pipeline.keyframe)
        self._map_lock = threading.Lock()
        self._step_lock = threading.Lock()  # step() calls are serialised (keyframe state)
        self._stats_lock = threading.Lock()
        self._count = dict.fromkeys(
            ("frames", "out_of_order_frames", "keyframes", "segmented", "dropped_keyframes",
             "segmenter_errors", "empty_keyframes", "remapped_keyframes", "lost_updates"), 0)
        self._timing = {s: [0, 0.0, 0.0, 0.0] for s in _STAGES}
        self._stamp_ns = 0
        self._closed = False
        self._worker: LatestSlotWorker[PosedFrame] | None = None
        if cfg.pipeline.mode == "async" and segmenter is not None:
            self._worker = LatestSlotWorker(self._segment_keyframe, self._on_worker_error,
                                            name="xmask3d-segmenter")

    # ------------------------------------------------------------------ properties
    @property
    def cfg(self) -> PerceptionConfig:
        return self._cfg

    @property
    def feature_dim(self) -> int:
        return self._d

    @property
    def mode(self) -> str:
        return "async" if self._worker is not None else "sync"

    @property
    def query_engine(self) -> QueryEngine:
        return self._engine

    @contextlib.contextmanager
    def locked_map(self) -> Iterator[LocalVoxelMap]:
        """The live map with the pipeline's lock held (keep it short: step() waits)."""
        with self._map_lock:
            yield self._map

    def snapshot(self, *, include_features: bool = False) -> VoxelMapSnapshot:
        """An immutable copy of the map (features only on request: N x D x 2 bytes)."""
        with self._map_lock:
            return self._map.snapshot(include_features=include_features)

    @property
    def stats(self) -> PipelineStats:
        with self._stats_lock:
            count = dict(self._count)
            timings = {s: StageTiming(int(v[0]), v[1], v[2], v[3]) for s, v in self._timing.items()}
        with self._map_lock:
            map_stats = self._map.stats
        return PipelineStats(**count, timings=timings, map=map_stats, query=self._engine.stats)

    def _add(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._count[key] += n

    def _time(self, stage: str, t0: float) -> float:
        ms = (time.perf_counter() - t0) * 1e3
        with self._stats_lock:
            t = self._timing[stage]
            t[0] += 1
            t[1] += ms
            t[2] = max(t[2], ms)
            t[3] = ms
        return ms

    # ------------------------------------------------------------------ frames
    def step(self, posed: PosedFrame) -> StepResult:
        """Integrate ``posed``; if it is a keyframe, segment it (sync) or queue it (async)."""
        if self._closed:
            raise PipelineClosedError("step() after close()")
        if not isinstance(posed, PosedFrame):
            raise TypeError(f"step() needs a PosedFrame, got {type(posed).__name__}")
        with self._step_lock:
            t0 = time.perf_counter()
            with self._map_lock:
                t1 = time.perf_counter()
                integration = self._map.integrate(posed)
                self._time("integrate", t1)
                if posed.stamp_ns < self._stamp_ns:
                    self._add("out_of_order_frames")
                self._stamp_ns = max(self._stamp_ns, posed.stamp_ns)
            self._add("frames")
            reason = self._keyframes.check(posed.T_map_cam, posed.stamp_ns)
            queued = False
            if reason:
                self._add("keyframes")
                if self._worker is not None:
                    if self._worker.submit(posed):
                        self._add("dropped_keyframes")
                    queued = True
                elif self._segmenter is not None:
                    try:
                        self._segment_keyframe(posed)
                    except Exception as err:  # noqa: BLE001 - a bad model output must not stop mapping
                        self._on_worker_error(err)
            self._time("step", t0)
        return StepResult(integration, reason, queued)

    def _on_worker_error(self, err: Exception) -> None:
        self._add("segmenter_errors")
        _log.error("segmentation of a keyframe failed (%s: %s); the map keeps its previous "
                   "semantics", type(err).__name__, err, exc_info=err)

    def _segment_keyframe(self, posed: PosedFrame) -> None:
        """Visible voxels -> segmenter (no lock held) -> update_semantics."""
        assert self._segmenter is not None
        vis = self._cfg.visibility
        with self._map_lock:
            t0 = time.perf_counter()
            rows = self._map.visible(posed, vis.border_px, vis.depth_tolerance_rel)
            points = np.array(self._map.positions[rows], dtype=np.float32)
            packed = np.array(self._map.packed_keys[rows])
            layout = self._map.layout_version
            self._time("visible", t0)
        if rows.size == 0:
            self._add("empty_keyframes")
            return
        t0 = time.perf_counter()
        result = self._segmenter.segment(posed, points, rows)
        self._time("segment", t0)
        seg = check_segmentation(result, rows.size, self._d)
        with self._map_lock:
            t0 = time.perf_counter()
            target = rows[seg.covered]
            if self._map.layout_version != layout:
                target = self._map.rows_of(packed[seg.covered])
                alive = target >= 0
                self._add("remapped_keyframes")
                if not alive.all():
                    self._add("lost_updates", int(np.count_nonzero(~alive)))
                    target, seg = target[alive], seg.select(alive)
            self._map.update_semantics(target, seg.features, seg.weights, base_prob=seg.base_prob)
            if seg.clip_points.size:
                w = None if seg.weights is None else seg.weights[seg.clip_points]
                self._map.update_clip_features(target[seg.clip_points], seg.clip_features, w)
            self._time("update", t0)
        self._add("segmented")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the worker has no keyframe waiting or running (async); False on timeout."""
        if self._worker is None:
            return True
        return self._worker.wait_idle(timeout_s)

    def close(self) -> None:
        """Stop the worker (the keyframe in flight finishes, a waiting one is dropped). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            dropped, finished = self._worker.close(self._cfg.pipeline.close_timeout_s)
            if dropped:
                self._add("dropped_keyframes")
            if not finished:
                _log.warning("segmentation worker still running after %.1f s; abandoning it",
                             self._cfg.pipeline.close_timeout_s)

    def __enter__(self) -> PerceptionPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the map as a whole
    def clear_map(self) -> int:
        """Forget every voxel (the robot was relocalised, or moved to another room); the next
        frame is a keyframe. Returns how many voxels were dropped. A keyframe being segmented
        meanwhile loses its update (its voxels are gone; counted in ``lost_updates``)."""
        with self._step_lock:
            with self._map_lock:
                n = len(self._map)
                self._map.clear()
            self._keyframes.reset()
        return n

    def save_map(self, path: str | Path) -> MapFileInfo:
        """Write the whole map to ``path`` (a safetensors map file, ``mapping.map_file``): the
        copy is taken under the lock, the file written without it."""
        with self._map_lock:
            state = self._map.state()
        return write_map_file(path, state, frame_id=self._cfg.node.map_frame)

    def load_map(self, path: str | Path) -> MapFileInfo:
        """Replace the map by the file's; the file is checked first (frame, voxel size, feature
        width, every array), so on a :class:`MapFileError` the map is unchanged. Mapping goes
        on from there: the next frame is a keyframe."""
        info, state = read_map_file(path)
        frame = self._cfg.node.map_frame
        if info.frame_id != frame:
            raise MapFileError(f"{path} holds a map in frame '{info.frame_id}', this map is in "
                               f"'{frame}' (node.map_frame)")
        with self._step_lock:
            with self._map_lock:
                try:
                    self._map.load_state(state)
                except MapStateError as err:
                    raise MapFileError(f"{path}: {err}") from err
                self._stamp_ns = max(self._stamp_ns, info.stamp_ns)
            self._keyframes.reset()
        return info

    # ------------------------------------------------------------------ queries
    def query(
        self,
        labels: Sequence[str] | str,
        mode: QueryMode | int | str = QueryMode.SEGMENT,
        min_score: float | None = None,
        *,
        objects: bool = True,
    ) -> QueryAnswer:
        """Answer ``labels`` from the current map (see :class:`QueryEngine`); no model pass.

        ``min_score`` None uses ``query.min_score``. Raises QueryError for refused queries.
        """
        if self._closed:
            raise PipelineClosedError("query() after close()")
        t0 = time.perf_counter()
        prepared = self._engine.prepare(labels, mode, min_score)
        with self._map_lock:
            scored = self._engine.score(prepared, self._map)
            stamp = self._stamp_ns
        answer = self._engine.finish(scored, objects=objects, stamp_ns=stamp,
                                     frame_id=self._cfg.node.map_frame)
        self._time("query", t0)
        return answer
