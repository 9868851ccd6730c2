"""Replay a rosbag2 through the node's ingest path and the PerceptionPipeline (no rclpy).

Messages are fed in log-time order: TF into a :class:`TfBuffer`, images and camera_info into the
shared :class:`~xmask3d_ros.pipeline.ingest.FrameAssembler` (the node's decode/sync/TF-wait code),
and every posed frame into :class:`PerceptionPipeline` forced to its deterministic ``sync`` mode.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmask3d_ros.config.perception import PerceptionConfig
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.geometry.tf_buffer import InvalidTransformError, TfBuffer
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.mapping import MapFileInfo, VoxelMapSnapshot
from xmask3d_ros.pipeline import PerceptionPipeline, PipelineStats, QueryAnswer, Segmenter, TextEncoder
from xmask3d_ros.pipeline.decode import DecodeError, transforms_from_tf
from xmask3d_ros.pipeline.ingest import FrameAssembler
from xmask3d_ros.replay.reader import BagMessage, BagTopics, open_bag

__all__ = ["EvenSampler", "ReplayReport", "evenly_spaced", "replay_bag"]


class EvenSampler:
    """Keeps at most ``capacity`` evenly spaced items of a stream of unknown length.

    Items 0, s, 2s, ... are kept with stride s = 1, 2, 4, ...: whenever the list overflows, every
    other kept item is dropped and the stride doubles, so memory stays bounded on long bags.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.items: list[Any] = []
        self._stride, self._seen = 1, 0

    def add(self, item: Any) -> None:
        if self._seen % self._stride == 0:
            self.items.append(item)
            if len(self.items) > self.capacity:
                self.items = self.items[::2]
                self._stride *= 2
        self._seen += 1


def evenly_spaced(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` evenly spaced elements of ``items`` (first and last included), in order."""
    if n <= 0 or not items:
        return []
    if n >= len(items):
        return list(items)
    idx = np.unique(np.rint(np.linspace(0, len(items) - 1, n)).astype(np.int64))
    return [items[int(i)] for i in idx]


class _BufferLookup:
    """``TransformLookup`` over a TfBuffer with the configured tolerance."""

    def __init__(self, buf: TfBuffer, tolerance_ns: int) -> None:
        self._buf, self._tol = buf, tolerance_ns

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> SE3:
        return self._buf.lookup(target_frame, source_frame, stamp_ns, self._tol)


@dataclasses.dataclass
class ReplayReport:
    """What a replay read, dropped and built."""

    bag: str
    topics: BagTopics
    notes: list[str]  # which topics were chosen and why
    messages: dict[str, int]  # messages read per role
    frames_read: int  # colour messages read
    frames_synced: int  # rgb/depth/camera_info sets matched
    frames_posed: int  # sets whose TF was found
    frames_used: int  # posed frames given to the pipeline (after --every)
    keyframes: int
    dropped: dict[str, int]  # by reason: decode errors, sync drops, TF drops, skipped by --every
    ingest: dict[str, int]  # FrameAssembler.stats
    tf: dict[str, int]  # TfBuffer.stats (+ tf_invalid)
    timings_ms: dict[str, float]  # total wall time per stage
    pipeline: PipelineStats
    snapshot: VoxelMapSnapshot  # the final map
    answer: QueryAnswer | None  # query of ``labels`` on the final map
    wall_s: float
    # /tf and /tf_static messages read (in the replayed range; tf_static from the start), in
    # log-time order, with their CDR bytes; and the QoS each TF topic was recorded with
    tf_messages: list[BagMessage] = dataclasses.field(default_factory=list)
    tf_qos: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    keyframe_frames: list[PosedFrame] = dataclasses.field(default_factory=list)  # evenly spaced sample
    map_file: MapFileInfo | None = None  # the map file written (``save_map``)

    def summary(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()) if v) or "none"
        stages = ", ".join(f"{k} {v:.0f} ms" for k, v in self.timings_ms.items())
        return (f"{self.frames_read} frames read, {self.frames_synced} synced, {self.frames_posed} posed, "
                f"{self.frames_used} used, {self.keyframes} keyframes; dropped: {drops}; "
                f"{self.snapshot.size} voxels; {stages}; {self.wall_s:.1f} s")


_DROP_KEYS = ("tf_dropped_age", "tf_dropped_past", "tf_queue_overflow", "tf_dropped_reset",
              "sync_dropped")


def replay_bag(
    bag: str | Path,
    cfg: PerceptionConfig,
    *,
    segmenter: Segmenter | None,
    text_encoder: TextEncoder,
    labels: Sequence[str] = (),
    gt: Any = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    every: int = 1,
    topics: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    keep_tf: bool = True,
    keep_keyframes: int = 0,
    save_map: str | Path | None = None,
) -> ReplayReport:
    """Replay ``bag``; ``start_s``/``duration_s`` cut it (seconds from its start), ``every`` keeps
    every N-th posed frame. ``topics`` may name ``rgb``, ``depth``, ``camera_info``. ``gt`` is
    accepted for the caller's metrics and not used here. ``keep_tf``: keep the TF messages read
    (``ReplayReport.tf_messages``, for the output bag). ``keep_keyframes`` > 0: keep an evenly
    spaced sample of up to that many keyframes (``ReplayReport.keyframe_frames``, for overlay
    pictures; bounded memory on long bags). ``save_map``: write the final map there (a map
    file the node's ``load_map`` service reads). Raises ``BagError`` for unusable bags.
    """
    del gt
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, mode="sync"))
    t_start = time.perf_counter()
    timings: collections.defaultdict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    tf_invalid = 0
    buf = TfBuffer(cfg.tf.cache_duration_s)
    fa = FrameAssembler(cfg, _BufferLookup(buf, cfg.tf.lookup_tolerance_ns))
    posed_n = used = skipped = 0
    tf_msgs: list[BagMessage] = []
    sampler = EvenSampler(keep_keyframes) if keep_keyframes > 0 else None
    with open_bag(bag, **(topics or {})) as src, PerceptionPipeline(cfg, segmenter, text_encoder) as pipe:
        start_ns = src.start_ns + int(round(start_s * 1e9))
        stop_ns = None if duration_s is None else start_ns + int(round(duration_s * 1e9))
        adders = {"rgb": fa.add_rgb, "depth": fa.add_depth, "camera_info": fa.add_camera_info}
        for m in src.messages(start_ns if start_s > 0 else None, stop_ns):
            counts[m.role] += 1
            t0 = time.perf_counter()
            if m.role in ("tf", "tf_static"):
                if keep_tf:
                    tf_msgs.append(m)
                try:
                    records = transforms_from_tf(m.msg)
                except DecodeError:
                    tf_invalid += 1
                    continue
                for rec in records:
                    try:
                        buf.set_transform(rec, static=m.role == "tf_static")
                    except InvalidTransformError:
                        tf_invalid += 1
                timings["tf"] += time.perf_counter() - t0
            else:
                adders[m.role](m.msg)
                timings["decode_sync"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            ready = fa.poll()
            timings["tf_lookup"] += time.perf_counter() - t0
            for posed in ready:
                posed_n += 1
                if (posed_n - 1) % every:
                    skipped += 1
                    continue
                t0 = time.perf_counter()
                step = pipe.step(posed)
                timings["pipeline"] += time.perf_counter() - t0
                if sampler is not None and step.keyframe:
                    sampler.add(posed)
                used += 1
                if progress is not None:
                    progress(1)
        t0 = time.perf_counter()
        answer = pipe.query(list(labels)) if labels else None
        timings["query"] += time.perf_counter() - t0
        snapshot = pipe.snapshot()
        map_file = pipe.save_map(save_map) if save_map is not None else None
        stats = pipe.stats
        topics_used, notes = src.topics, list(src.notes)
        tf_qos = {t: src.offered_qos(t) for t in (*src.topics.tf, *src.topics.tf_static)}
    ingest = fa.stats
    dropped = {k: ingest.get(k, 0) for k in _DROP_KEYS}
    dropped.update({k: v for k, v in ingest.items() if k.startswith(("decode_error_", "rejected_"))})
    dropped["tf_pending_at_end"] = ingest.get("tf_waiting", 0)
    dropped["skipped_every"] = skipped
    return ReplayReport(
        bag=str(bag), topics=topics_used, notes=notes, messages=dict(counts),
        frames_read=counts["rgb"], frames_synced=ingest.get("synced", 0), frames_posed=posed_n,
        frames_used=used, keyframes=stats.keyframes, dropped=dropped, ingest=ingest,
        tf={**buf.stats, "tf_invalid": tf_invalid},
        timings_ms={k: v * 1e3 for k, v in timings.items()}, pipeline=stats, snapshot=snapshot,
        answer=answer, wall_s=time.perf_counter() - t_start, tf_messages=tf_msgs, tf_qos=tf_qos,
        keyframe_frames=sampler.items if sampler is not None else [], map_file=map_file,
    )
