"""The query engine: class names -> per-voxel scores, labels and objects, from stored features.

A query never touches the model: labels become text embeddings (cached per label, through the
``TextEncoder``), the per-voxel scores are blocked matrix products over the map's fp16
features (:mod:`xmask3d_ros.pipeline.scoring`), under the segmenter's classification rule when it
has one (:class:`~xmask3d_ros.pipeline.class_rule.ClassRule`: the model's MaskCLIP ensemble and
base/novel gating on the stored channels; scores are then class probabilities in both modes),
and objects are the connected components of each label's voxels
(:mod:`xmask3d_ros.pipeline.components`). So a new vocabulary is answered from
the current map with no re-integration and no segmentation pass.

The work is split into three stages so a caller that owns a lock can hold it only while the
map's arrays are read: :meth:`QueryEngine.prepare` (labels, text embeddings; no map access),
:meth:`QueryEngine.score` (reads the map: features, weights, positions, keys) and
:meth:`QueryEngine.finish` (objects and the answer; no map access). :meth:`QueryEngine.query`
runs all three.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from xmask3d_ros.config.perception import QueryCfg
from xmask3d_ros.pipeline.answers import UNKNOWN_LABEL, LabelAnswer, ObjectAnswer, QueryAnswer, QueryMode
from xmask3d_ros.pipeline.components import connected_components, summarize_components
from xmask3d_ros.pipeline.errors import QueryError
from xmask3d_ros.pipeline.class_rule import ClassRule, normalize_name
from xmask3d_ros.pipeline.scoring import RuleInputs, SegmentScores, score_highlight, score_segment
from xmask3d_ros.pipeline.segmenter import TextEncoder
from xmask3d_ros.pipeline.text_cache import TextCacheStats, TextEmbeddingCache

__all__ = ["PreparedQuery", "QueryEngine", "QueryStats", "ScoredQuery", "VoxelView", "normalize_labels"]

_log = logging.getLogger(__name__)


class VoxelView(Protocol):
    """What a query reads from a map: ``LocalVoxelMap`` and its snapshots both provide it."""

    @property
    def size(self) -> int: ...
    @property
    def voxel_size_m(self) -> float: ...
    @property
    def positions(self) -> npt.NDArray[np.float32]: ...  # (N, 3)
    @property
    def keys(self) -> npt.NDArray[np.int32]: ...  # (N, 3) floor(position / voxel_size_m)
    @property
    def features(self) -> npt.NDArray[Any] | None: ...  # (N, D) float16
    @property
    def feature_weights(self) -> npt.NDArray[np.float32]: ...  # (N,)
    @property
    def clip_features(self) -> npt.NDArray[Any] | None: ...  # (N, D or 0) float16
    @property
    def clip_weights(self) -> npt.NDArray[np.float32]: ...  # (N,)
    @property
    def base_prob(self) -> npt.NDArray[np.float32]: ...  # (N,)
    @property
    def base_prob_weights(self) -> npt.NDArray[np.float32]: ...  # (N,)


@dataclasses.dataclass(frozen=True)
class QueryStats:
    queries: int = 0  # answered
    refused: int = 0  # refused with a QueryError (bad labels, mode, min_score)
    dropped_labels: int = 0  # empty or duplicate labels removed from answered queries
    text: TextCacheStats = TextCacheStats()


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedQuery:
    labels: tuple[str, ...]
    dropped: tuple[str, ...]
    mode: QueryMode
    min_score: float
    text: npt.NDArray[np.float32]  # (L, D) unit embeddings
    encode_ms: float
    base: npt.NDArray[np.bool_] | None = None  # (L + E,) base flags under the engine's rule
    competitors: int = 0  # E: trained classes appended to ``text`` (see scoring.RuleInputs)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredQuery:
    prepared: PreparedQuery
    positions: npt.NDArray[np.float32]  # (N, 3) copy
    keys: npt.NDArray[np.int32]  # (N, 3) copy
    voxel_size_m: float
    segment: SegmentScores | None
    scores: npt.NDArray[np.float32] | None  # (N, L) highlight mode
    score_ms: float


def normalize_labels(
    labels: Sequence[str] | str, *, max_labels: int, max_label_chars: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Strip labels, drop empty and duplicate ones; returns (labels, dropped).

    A single string is split on commas (the ``query_text`` topic form). Raises QueryError when
    an item is not a string, a label is longer than ``max_label_chars``, more than ``max_labels``
    distinct labels remain, or none does.
    """
    if isinstance(labels, str):
        labels = labels.split(",")
    out: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for item in labels:
        if not isinstance(item, str):
            raise QueryError(f"labels: {item!r} is a {type(item).__name__}, expected a string")
        label = item.strip()
        if not label or label in seen:
            dropped.append(item)
            continue
        if len(label) > max_label_chars:
            raise QueryError(
                f"labels: {label[:40]!r}... has {len(label)} characters, more than "
                f"query.max_label_chars = {max_label_chars}"
            )
        seen.add(label)
        out.append(label)
    if not out:
        raise QueryError("labels: no label left after dropping empty and duplicate ones")
    if len(out) > max_labels:
        raise QueryError(f"labels: {len(out)} labels, more than query.max_labels = {max_labels}")
    return tuple(out), tuple(dropped)


class QueryEngine:
    """Answers text queries from a map's stored features (thread-safe).

    ``rule``: the segmenter's classification rule (``XMask3DSegmenter.class_rule``); None scores
    cosines of the fused features (segmenters without one, e.g. the ground-truth double).
    """

    def __init__(self, text_encoder: TextEncoder, cfg: QueryCfg | None = None,
                 rule: ClassRule | None = None) -> None:
        self._cfg = cfg if cfg is not None else QueryCfg()
        self._rule = rule
        self._cache = TextEmbeddingCache(text_encoder, self._cfg.text_cache_size)
        self._lock = threading.Lock()
        self._queries = self._refused = self._dropped = 0

    @property
    def cfg(self) -> QueryCfg:
        return self._cfg

    @property
    def feature_dim(self) -> int:
        return self._cache.feature_dim

    @property
    def rule(self) -> ClassRule | None:
        return self._rule

    @property
    def stats(self) -> QueryStats:
        with self._lock:
            return QueryStats(self._queries, self._refused, self._dropped, self._cache.stats)

    def _refuse(self, err: QueryError) -> QueryError:
        with self._lock:
            self._refused += 1
        _log.warning("query refused: %s", err)
        return err

    # ------------------------------------------------------------------ stages
    def prepare(
        self,
        labels: Sequence[str] | str,
        mode: QueryMode | int | str = QueryMode.SEGMENT,
        min_score: float | None = None,
    ) -> PreparedQuery:
        """Normalise the labels and get their text embeddings (no map access).

        ``min_score`` None means ``query.min_score``. Raises QueryError (counted and logged).
        """
        t0 = time.perf_counter()
        cfg = self._cfg
        try:
            qmode = QueryMode.parse(mode)
            names, dropped = normalize_labels(
                labels, max_labels=cfg.max_labels, max_label_chars=cfg.max_label_chars
            )
            if min_score is None:
                thr = cfg.min_score
            else:
                thr = float(min_score)
                if not (math.isfinite(thr) and -1.0 <= thr <= 1.0):
                    raise QueryError(f"min_score: {min_score!r} is out of range, expected [-1, 1]")
        except QueryError as err:
            raise self._refuse(err) from None
        except (TypeError, ValueError) as err:
            raise self._refuse(QueryError(f"min_score: {min_score!r} is not a number")) from err
        if dropped:
            _log.info("query: dropped empty/duplicate labels %s", list(dropped))
        rule = self._rule
        others: list[str] = []
        if rule is not None:
            asked = {normalize_name(n) for n in names}
            others = sorted(rule.base_names - asked)
        text = self._cache.get(names + tuple(others))
        base = rule.base_flags(names + tuple(others)) if rule is not None else None
        return PreparedQuery(names, dropped, qmode, thr, text, (time.perf_counter() - t0) * 1e3,
                             base, len(others))

    def score(self, prepared: PreparedQuery, voxels: VoxelView) -> ScoredQuery:
        """Score every voxel (reads the map; hold its lock around this call only)."""
        t0 = time.perf_counter()
        feats = voxels.features
        n = int(voxels.size)
        if feats is None:
            raise QueryError("the map snapshot was taken without features (include_features=False)")
        if feats.shape[1] != prepared.text.shape[1]:
            raise self._refuse(QueryError(
                f"text embeddings have {prepared.text.shape[1]} dimensions but the map's features "
                f"have {feats.shape[1]}: the text encoder does not match the segmenter"
            ))
        weights = voxels.feature_weights
        cfg = self._cfg
        rule = None
        if self._rule is not None and prepared.base is not None:
            rule = RuleInputs(self._rule, prepared.base, voxels.clip_features, voxels.clip_weights,
                              voxels.base_prob, voxels.base_prob_weights, prepared.competitors)
        seg = hl = None
        if prepared.mode is QueryMode.SEGMENT:
            seg = score_segment(feats, weights, prepared.text, prepared.min_score, rule=rule,
                                compute_dtype=cfg.compute_dtype, chunk_rows=cfg.chunk_rows,
                                threads=cfg.threads)
        else:
            hl = score_highlight(feats, weights, prepared.text, rule=rule,
                                 compute_dtype=cfg.compute_dtype, chunk_rows=cfg.chunk_rows,
                                 threads=cfg.threads)
        positions = np.array(voxels.positions, dtype=np.float32, copy=True).reshape(n, 3)
        keys = np.array(voxels.keys, dtype=np.int32, copy=True).reshape(n, 3)
        return ScoredQuery(prepared, positions, keys, float(voxels.voxel_size_m), seg, hl,
                           (time.perf_counter() - t0) * 1e3)

    def finish(
        self, scored: ScoredQuery, *, objects: bool = True, stamp_ns: int = 0, frame_id: str = ""
    ) -> QueryAnswer:
        """Objects and the answer (no map access)."""
        t0 = time.perf_counter()
        p = scored.prepared
        L = len(p.labels)
        n = scored.positions.shape[0]
        if scored.segment is not None:
            seg = scored.segment
            voxel_score = seg.score
            voxel_label = np.where(seg.label >= 0, seg.label, UNKNOWN_LABEL).astype(np.uint16)
            num = seg.num_voxels
            max_score = seg.max_score
            scores = None
        else:
            assert scored.scores is not None
            scores = scored.scores
            known = ~np.isnan(scores[:, 0]) if L else np.zeros(n, dtype=bool)
            voxel_label = np.full(n, UNKNOWN_LABEL, dtype=np.uint16)
            voxel_score = np.full(n, np.nan, dtype=np.float32)
            max_score = np.full(L, np.nan, dtype=np.float32)
            if known.any():
                sk = scores[known]
                best = sk.argmax(axis=1)
                bs = sk[np.arange(sk.shape[0]), best]
                voxel_score[known] = bs
                voxel_label[np.flatnonzero(known)[bs >= p.min_score]] = best[bs >= p.min_score]
                max_score = sk.max(axis=0)
            with np.errstate(invalid="ignore"):
                num = np.count_nonzero(scores >= np.float32(p.min_score), axis=0).astype(np.int64)
        voxel_object = np.full(n, -1, dtype=np.int32)
        found: list[list[ObjectAnswer]] = [[] for _ in range(L)]
        if objects:
            found = self._objects(scored, num, voxel_label, voxel_object)
        results = tuple(
            LabelAnswer(p.labels[i], i, int(num[i]), float(max_score[i]), tuple(found[i]))
            for i in range(L)
        )
        objects_ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self._queries += 1
            self._dropped += len(p.dropped)
        timings = {"encode": p.encode_ms, "score": scored.score_ms, "objects": objects_ms}
        return QueryAnswer(
            stamp_ns=int(stamp_ns), frame_id=frame_id, mode=p.mode, min_score=p.min_score,
            results=results, map_voxels=n, latency_ms=sum(timings.values()),
            dropped_labels=p.dropped, positions=scored.positions, voxel_label=voxel_label,
            voxel_score=voxel_score, scores=scores, voxel_object=voxel_object, timings_ms=timings,
        )

    def query(
        self,
        voxels: VoxelView,
        labels: Sequence[str] | str,
        mode: QueryMode | int | str = QueryMode.SEGMENT,
        min_score: float | None = None,
        *,
        objects: bool = True,
        stamp_ns: int = 0,
        frame_id: str = "",
    ) -> QueryAnswer:
        """Answer ``labels`` from ``voxels`` (a map nobody mutates meanwhile, or a snapshot)."""
        prepared = self.prepare(labels, mode, min_score)
        return self.finish(self.score(prepared, voxels), objects=objects, stamp_ns=stamp_ns,
                           frame_id=frame_id)

    # ------------------------------------------------------------------ objects
    def _objects(
        self,
        scored: ScoredQuery,
        num: npt.NDArray[np.int64],
        voxel_label: npt.NDArray[np.uint16],
        voxel_object: npt.NDArray[np.int32],
    ) -> list[list[ObjectAnswer]]:
        """Connected components of each label's voxels, as ObjectAnswers sorted by score.

        Fills ``voxel_object`` (index into the flattened objects) for the voxels of each object
        whose label is the voxel's ``voxel_label``.
        """
        p = scored.prepared
        L = len(p.labels)
        min_vox = self._cfg.min_object_voxels
        big = np.flatnonzero(num >= min_vox)  # smaller labels cannot hold an object
        out: list[list[ObjectAnswer]] = [[] for _ in range(L)]
        if big.size == 0:
            return out
        if scored.segment is not None:
            lab = scored.segment.label
            take = np.zeros(L + 1, dtype=bool)
            take[big] = True
            rows = np.flatnonzero(take[lab])  # label -1 reads take[-1] = False
            groups = lab[rows].astype(np.int64)
            vscore = scored.segment.score[rows]
        else:
            assert scored.scores is not None
            thr = np.float32(p.min_score)
            sel = [np.flatnonzero(scored.scores[:, l] >= thr) for l in big]
            rows = np.concatenate(sel)
            groups = np.concatenate([np.full(s.size, l, dtype=np.int64) for s, l in zip(sel, big)])
            vscore = scored.scores[rows, groups]
        keys = scored.keys[rows]
        comp, n_comp = connected_components(keys, groups)
        summ = summarize_components(comp, n_comp, keys, scored.positions[rows], vscore, groups)
        keep = np.flatnonzero(summ.num_voxels >= min_vox)
        # Flattened object order: label by label, each by score (highest first).
        order = keep[np.lexsort((-summ.score[keep], summ.group[keep]))]
        flat = np.full(n_comp, -1, dtype=np.int32)
        flat[order] = np.arange(order.size, dtype=np.int32)
        own = groups == voxel_label[rows]
        voxel_object[rows[own]] = flat[comp[own]]
        vs = scored.voxel_size_m
        lo = summ.key_min * vs  # voxel k spans [k, k + 1) * vs: centre -/+ half a voxel
        hi = (summ.key_max + 1) * vs
        for c in order:
            label = int(summ.group[c])
            out[label].append(ObjectAnswer(
                label=p.labels[label], score=float(summ.score[c]),
                centroid=tuple(float(x) for x in summ.centroid[c]),  # type: ignore[arg-type]
                bbox_min=tuple(float(x) for x in lo[c]),  # type: ignore[arg-type]
                bbox_max=tuple(float(x) for x in hi[c]),  # type: ignore[arg-type]
                num_voxels=int(summ.num_voxels[c]),
            ))
        return out
