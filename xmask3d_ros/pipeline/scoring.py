"""Per-voxel scores against text embeddings: blocked matrix products over fp16 features.

The map stores, per voxel, the running mean of unit features in float16 (norm <= 1). Without a
segmenter's rule the score of voxel ``i`` for label ``l`` is ``cos(f_i, t_l) = (f_i . t_l) / |f_i|``
(text embeddings are unit vectors). With one (:class:`RuleInputs`: the MaskCLIP channel, p(base),
the labels' base flags and the trained classes the query did not name), both modes score the
class probability of :func:`~xmask3d_ros.pipeline.class_rule.class_probabilities` over the
labels and those competitors: segment mode takes the argmax, highlight mode every label's own
column. Voxels with zero feature
weight have no semantics ("unknown", NaN score).

CPUs have no fast float16 GEMM (torch's fp16 ``mm`` on an AVX-512 EPYC runs at ~1/20 of fp32),
and converting the whole (N, D) matrix first costs a pass over memory plus a 2x larger copy.
So the scores are computed block by block: ``chunk_rows`` rows are converted into a reused
float32 (or bfloat16) buffer that stays in the CPU cache, multiplied with the (L, D) text matrix
and reduced (norms, argmax, per-label maxima) before the next block is read. The features are
read from memory exactly once, as float16.

Threads (``threads``): with 0 the blocks run in the calling thread on torch's intra-op pool;
with n >= 1, n private workers each take the next block and run it single-threaded. The second
is the robust choice on a shared CPU: an intra-op pool as wide as the machine stalls for a
scheduler time slice at every operation's barrier whenever another process holds a core
(measured on the 2-core bench machine under load: ~8 ms per 0.3 ms operation), while
independent workers just get their share of the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from xmask3d_ros.pipeline.class_rule import ClassRule, class_probabilities

__all__ = ["COMPUTE_DTYPES", "RuleInputs", "SegmentScores", "score_highlight", "score_segment"]

R = TypeVar("R")

COMPUTE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Norms below this are treated as zero (a voxel whose averaged features cancelled out).
_MIN_NORM = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class RuleInputs:
    """What a segmenter's rule reads besides the fused features (arrays aligned with them)."""

    rule: ClassRule
    base: npt.NDArray[np.bool_]  # (L [+ competitors],) base flags (``rule.base_flags``)
    clip_features: npt.NDArray[Any] | None  # (N, D) mean MaskCLIP embeddings; None/0 columns: none
    clip_weights: npt.NDArray[np.float32]  # (N,) 0 = no mask covered the voxel
    base_prob: npt.NDArray[np.float32]  # (N,) mean p(base)
    base_prob_weights: npt.NDArray[np.float32]  # (N,) 0 = no p(base)
    # The last ``competitors`` text rows are trained classes the query did not name: they take
    # part in every probability, and a voxel they win is unknown in segment mode (a one-label
    # query then finds that label only where the model would pick it over all it knows).
    competitors: int = 0

    def clip_kernel(self, text: npt.NDArray[np.float32], compute_dtype: str,
                    chunk_rows: int) -> _Kernel | None:
        c = self.clip_features
        if c is None or c.shape[1] == 0:
            return None
        if c.shape[1] != text.shape[1]:
            raise ValueError(f"clip features must be (N, {text.shape[1]}), got {c.shape}")
        return _Kernel(c, text, compute_dtype, chunk_rows)


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentScores:
    """Segment-mode result: each voxel's best label over the vocabulary."""

    label: npt.NDArray[np.int32]  # (N,) best label index, -1 = unknown (no semantics / < min_score)
    score: npt.NDArray[np.float32]  # (N,) best score (cosine, or probability with a rule), NaN
    # where the voxel has no semantics
    max_score: npt.NDArray[np.float32]  # (L,) best score per label over known voxels, NaN if none
    num_voxels: npt.NDArray[np.int64]  # (L,) voxels assigned each label


def _as_tensor(a: npt.NDArray[Any]) -> torch.Tensor:
    """Zero-copy tensor over a (possibly read-only) array; it is only ever read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(np.ascontiguousarray(a))


def _check(features: npt.NDArray[Any], weights: npt.NDArray[Any], text: npt.NDArray[Any]) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if features.dtype not in (np.float16, np.float32):
        raise ValueError(f"features must be float16 or float32, got {features.dtype}")
    if weights.shape != (features.shape[0],):
        raise ValueError(f"weights must be ({features.shape[0]},), got {weights.shape}")
    if text.ndim != 2 or text.shape[1] != features.shape[1]:
        raise ValueError(
            f"text embeddings must be (L, {features.shape[1]}) like the map features, got {text.shape}"
        )


def _pick_linear_f32() -> Any:
    """``x (c, D) @ w (L, D)^T`` in float32: oneDNN's kernel where torch exposes it, else MKL.

    On AMD CPUs MKL's sgemm runs these skinny products ~1.5x slower than oneDNN (measured: 3.2
    vs 2.1 ms per 4096 x 768 x 20 block on one EPYC core); the result is exact float32 either
    way. The oneDNN entry point is an internal torch op, so it is checked once and dropped if
    missing or wrong.
    """
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.linspace(-1.0, 1.0, 8 * 16).reshape(8, 16)
        w = torch.linspace(1.0, -0.5, 3 * 16).reshape(3, 16)
        if torch.allclose(op(x, w, None, "none", [], ""), x @ w.t(), atol=1e-5):
            return lambda a, b: op(a, b, None, "none", [], "")
    except Exception:  # noqa: BLE001 - any failure means: use the public op
        pass
    return torch.nn.functional.linear


_LINEAR_F32 = _pick_linear_f32()

# ---------------------------------------------------------------------------- worker threads
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_buffers = threading.local()  # per thread: reused block buffers


def _single_threaded(barrier: threading.Barrier) -> None:
    torch.set_num_threads(1)  # this thread's OpenMP / MKL thread count
    barrier.wait()


def _pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` single-threaded scoring workers (created once)."""
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None:
            own = torch.get_num_threads()
            barrier = threading.Barrier(n + 1)
            pool = ThreadPoolExecutor(n, thread_name_prefix="xmask3d-score")
            for _ in range(n):
                pool.submit(_single_threaded, barrier)
            barrier.wait()  # all n workers exist and run single-threaded
            # torch.set_num_threads also stored 1 as the default of threads created later:
            # put this thread's (unchanged) value back as that default.
            torch.set_num_threads(own)
            _pools[n] = pool
        return pool


def _map_blocks(n: int, c: int, threads: int, fn: Callable[[int, int], R]) -> list[R]:
    blocks = [(s, min(n, s + c)) for s in range(0, n, c)]
    threads = min(int(threads), os.cpu_count() or 1, len(blocks))
    if threads <= 0 or len(blocks) == 1:
        return [fn(s, e) for s, e in blocks]
    return list(_pool(threads).map(lambda b: fn(*b), blocks))


class _Kernel:
    """Raw scores (k, L) float32 and feature norms (k,) of a block of rows, in reused buffers."""

    def __init__(self, features: npt.NDArray[Any], text: npt.NDArray[np.float32],
                 compute_dtype: str, chunk_rows: int) -> None:
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
        self.n, self.d = features.shape
        self.c = max(1, min(int(chunk_rows), self.n))
        self.dtype = compute_dtype
        self.feat = _as_tensor(features)
        self.text = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))  # (L, D)
        self.text_low_t = self.text.to(torch.bfloat16).t() if compute_dtype == "bfloat16" else None

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        key = (self.c, self.d, self.dtype)
        if getattr(_buffers, "key", None) != key:
            _buffers.key = key
            _buffers.x32 = torch.empty((self.c, self.d), dtype=torch.float32)
            _buffers.norm = torch.empty(self.c, dtype=torch.float32)
            _buffers.low = (torch.empty((self.c, self.d), dtype=torch.bfloat16)
                            if self.dtype == "bfloat16" else None)
        return _buffers.x32, _buffers.norm, _buffers.low

    def __call__(self, s: int, e: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Fresh arrays: the next block (of any kernel in this thread) may reuse the buffers."""
        x32_buf, norm_buf, low_buf = self._buffers()
        k = e - s
        x32 = x32_buf[:k]
        x32.copy_(self.feat[s:e])  # fp16 -> fp32, the block is now in cache
        if low_buf is None or self.text_low_t is None:
            out = _LINEAR_F32(x32, self.text)
        else:
            xl = low_buf[:k]
            xl.copy_(x32)
            out = torch.mm(xl, self.text_low_t).float()
        nrm = norm_buf[:k]
        torch.linalg.vector_norm(x32, dim=1, out=nrm)
        return out.numpy(), np.maximum(nrm.numpy(), _MIN_NORM)


def _rule_block(kernel: _Kernel, clip: _Kernel | None, inputs: RuleInputs, s: int, e: int
                ) -> npt.NDArray[np.float32]:
    """(k, L + competitors) class probabilities of rows [s, e) under the segmenter's rule."""
    out, nrm = kernel(s, e)
    fused = out / nrm[:, None]
    covered = inputs.clip_weights[s:e] > 0
    clip_cos = None
    if clip is not None and covered.any():
        c_out, c_nrm = clip(s, e)
        clip_cos = c_out / c_nrm[:, None]
    return class_probabilities(inputs.rule, fused, clip_cos, covered, inputs.base_prob[s:e],
                               inputs.base_prob_weights[s:e] > 0, inputs.base)


def score_segment(
    features: npt.NDArray[Any],
    weights: npt.NDArray[Any],
    text: npt.NDArray[np.float32],
    min_score: float,
    *,
    rule: RuleInputs | None = None,
    compute_dtype: str = "float32",
    chunk_rows: int = 2048,
    threads: int = 0,
) -> SegmentScores:
    """Argmax over the vocabulary per voxel.

    ``features`` (N, D) float16 (or float32) running means, ``weights`` (N,) feature weights
    (0 = no semantics), ``text`` (L, D) unit embeddings. The score is the cosine, or with
    ``rule`` the class probability (over the labels and ``rule.competitors``). A known voxel
    whose best score is below ``min_score``, or which a competitor wins, is unknown (label -1)
    but keeps its score.
    """
    weights = np.asarray(weights)
    text = np.asarray(text, dtype=np.float32)
    _check(features, weights, text)
    n, L = features.shape[0], text.shape[0] - (rule.competitors if rule is not None else 0)
    label = np.full(n, -1, dtype=np.int32)
    score = np.full(n, np.nan, dtype=np.float32)
    if n == 0 or L <= 0:
        return SegmentScores(label, score, np.full(L, np.nan, np.float32), np.zeros(L, np.int64))
    known = weights > 0
    arg = np.empty(n, dtype=np.int64)
    kernel = _Kernel(features, text, compute_dtype, chunk_rows)
    clip = rule.clip_kernel(text, compute_dtype, chunk_rows) if rule is not None else None

    def block(s: int, e: int) -> npt.NDArray[np.float32]:
        if rule is not None:
            out = _rule_block(kernel, clip, rule, s, e)
        else:
            out, nrm = kernel(s, e)
            out /= nrm[:, None]
        kn = known[s:e]
        if not kn.all():
            out[~kn] = -np.inf
        a = out.argmax(axis=1)
        arg[s:e] = a
        score[s:e] = out[np.arange(e - s), a]
        col: npt.NDArray[np.float32] = out[:, :L].max(axis=0)
        return col

    col_max = np.max(_map_blocks(n, kernel.c, threads, block), axis=0).astype(np.float32)
    score[~known] = np.nan
    assigned = known & (score >= np.float32(min_score)) & (arg < L)
    label[assigned] = arg[assigned]
    col_max[~np.isfinite(col_max)] = np.nan
    counts = np.bincount(label[assigned], minlength=L).astype(np.int64)
    return SegmentScores(label, score, col_max, counts)


def score_highlight(
    features: npt.NDArray[Any],
    weights: npt.NDArray[Any],
    text: npt.NDArray[np.float32],
    *,
    rule: RuleInputs | None = None,
    compute_dtype: str = "float32",
    chunk_rows: int = 2048,
    threads: int = 0,
) -> npt.NDArray[np.float32]:
    """(N, L) float32 score of every voxel for every label: the cosine, or with ``rule`` the
    class probability (over the labels and ``rule.competitors``); NaN rows for unknown voxels."""
    weights = np.asarray(weights)
    text = np.asarray(text, dtype=np.float32)
    _check(features, weights, text)
    n, L = features.shape[0], text.shape[0] - (rule.competitors if rule is not None else 0)
    scores = np.empty((n, max(L, 0)), dtype=np.float32)
    if n == 0 or L <= 0:
        return scores
    kernel = _Kernel(features, text, compute_dtype, chunk_rows)
    clip = rule.clip_kernel(text, compute_dtype, chunk_rows) if rule is not None else None

    def block(s: int, e: int) -> None:
        if rule is not None:
            scores[s:e] = _rule_block(kernel, clip, rule, s, e)[:, :L]
            return
        out, nrm = kernel(s, e)
        np.divide(out, nrm[:, None], out=scores[s:e])

    _map_blocks(n, kernel.c, threads, block)
    scores[~(weights > 0)] = np.nan
    return scores
