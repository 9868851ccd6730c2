"""The two model-facing protocols of the pipeline: ``Segmenter`` and ``TextEncoder``.

The model issue implements them with XMask3D and open_clip; tests use the named doubles in
:mod:`xmask3d_ros.pipeline.ground_truth`. Everything crossing these interfaces is numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.frame import PosedFrame

__all__ = [
    "CheckedSegmentation",
    "SegmentationResult",
    "Segmenter",
    "TextEncoder",
    "check_segmentation",
    "check_text_embeddings",
]


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentationResult:
    """What a segmenter says about the visible map points of one keyframe.

    ``covered`` indexes the ``points_map`` rows the segmenter was given (not map rows): only those
    points get ``features``. Features live in the CLIP text space (cosine with text embeddings
    is the class score); they need not be normalised (the map normalises before averaging).
    ``point_masks`` (aligned with ``covered``) names the mask of ``mask_embeddings`` covering
    each point (-1: none): the map averages those MaskCLIP embeddings in a channel of their
    own. ``base_prob`` is the binary head's p(base) per covered point.
    """

    covered: npt.NDArray[np.int64]  # (K,) indices into the given points, each at most once
    features: npt.NDArray[np.float32]  # (K, D) per-point features in CLIP space
    weights: npt.NDArray[np.float32] | None = None  # (K,) >= 0 confidence; None = all 1
    mask_embeddings: npt.NDArray[np.float32] | None = None  # (Q, D) per-mask CLIP embeddings
    masks: npt.NDArray[np.bool_] | None = None  # (Q, H, W) the masks, image pixels
    point_masks: npt.NDArray[np.int64] | None = None  # (K,) mask index per point, -1 = none
    base_prob: npt.NDArray[np.float32] | None = None  # (K,) p(base) in [0, 1]


@dataclasses.dataclass(frozen=True, eq=False)
class CheckedSegmentation:
    """A validated :class:`SegmentationResult`, float32, with the MaskCLIP embedding of each
    covered point gathered (``clip_points`` index ``covered``)."""

    covered: npt.NDArray[np.int64]  # (K,)
    features: npt.NDArray[np.float32]  # (K, D)
    weights: npt.NDArray[np.float32] | None  # (K,)
    base_prob: npt.NDArray[np.float32] | None  # (K,)
    clip_points: npt.NDArray[np.int64]  # (J,) positions in ``covered`` of points inside a mask
    clip_features: npt.NDArray[np.float32]  # (J, D) their masks' MaskCLIP embeddings

    def select(self, keep: npt.NDArray[np.bool_]) -> CheckedSegmentation:
        """The observations of the covered points where ``keep`` (K,) is True."""
        new_pos = np.cumsum(keep) - 1
        ck = keep[self.clip_points]
        return CheckedSegmentation(
            self.covered[keep], self.features[keep],
            None if self.weights is None else self.weights[keep],
            None if self.base_prob is None else self.base_prob[keep],
            new_pos[self.clip_points[ck]], self.clip_features[ck],
        )


@runtime_checkable
class Segmenter(Protocol):
    """Frame + visible map points -> per-point CLIP-space features (one call per keyframe).

    A segmenter may also have a ``class_rule`` attribute
    (:class:`~xmask3d_ros.pipeline.class_rule.ClassRule` or None): how its model classifies
    from the stored channels; the query engine then applies it instead of a plain cosine.
    """

    @property
    def feature_dim(self) -> int:
        """D of the returned features (512 or 768 for the CLIP models in use)."""
        ...

    def segment(
        self,
        posed: PosedFrame,
        points_map: npt.NDArray[np.float32],
        indices: npt.NDArray[np.int64],
    ) -> SegmentationResult:
        """Features for the visible map points of ``posed``.

        ``points_map`` (M, 3) float32 voxel positions in the map frame that pass the visibility
        test of ``posed`` (``T_map_cam.inverse()`` brings them into the optical frame);
        ``indices`` (M,) int64 their map rows (informational: rows may move while the segmenter
        runs, the pipeline re-resolves them). May be called from a worker thread.
        """
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """Class names -> CLIP text embeddings (the same space as the segmenter's features)."""

    @property
    def feature_dim(self) -> int:
        """D of the embeddings."""
        ...

    def encode(self, labels: Sequence[str]) -> npt.NDArray[np.float32]:
        """(L, D) float32 L2-normalised embeddings, one row per label, in order."""
        ...


def check_segmentation(result: object, n_points: int, feature_dim: int) -> CheckedSegmentation:
    """Validate a segmenter's output for ``n_points`` inputs.

    Raises ValueError naming what is wrong (so a broken segmenter is a counted, logged error).
    """
    if not isinstance(result, SegmentationResult):
        raise ValueError(f"segmenter returned {type(result).__name__}, expected SegmentationResult")
    cov = np.asarray(result.covered)
    if cov.ndim != 1 or (cov.size and cov.dtype.kind not in "iu"):
        raise ValueError(f"covered must be a 1-D integer array, got shape {cov.shape}, dtype {cov.dtype}")
    cov = cov.astype(np.int64, copy=False)
    if cov.size and (cov.min() < 0 or cov.max() >= n_points):
        raise ValueError(f"covered indexes outside [0, {n_points}) (the points given)")
    feats = np.asarray(result.features)
    if feats.shape != (cov.size, feature_dim):
        raise ValueError(f"features must have shape ({cov.size}, {feature_dim}), got {feats.shape}")
    feats = feats.astype(np.float32, copy=False)
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN or inf")
    w = None
    if result.weights is not None:
        w = np.asarray(result.weights, dtype=np.float32)
        if w.shape != (cov.size,):
            raise ValueError(f"weights must have shape ({cov.size},), got {w.shape}")
        if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
            raise ValueError("weights must be finite and >= 0")
    pb = None
    if result.base_prob is not None:
        pb = np.asarray(result.base_prob, dtype=np.float32)
        if pb.shape != (cov.size,):
            raise ValueError(f"base_prob must have shape ({cov.size},), got {pb.shape}")
        if not np.all((pb >= 0) & (pb <= 1)):
            raise ValueError("base_prob must lie in [0, 1] (NaN is not allowed)")
    clip_points = np.empty(0, np.int64)
    clip = np.empty((0, feature_dim), np.float32)
    if result.point_masks is not None:
        emb = None if result.mask_embeddings is None else np.asarray(result.mask_embeddings)
        if emb is None or emb.ndim != 2 or emb.shape[1] != feature_dim:
            raise ValueError(f"point_masks needs mask_embeddings of shape (Q, {feature_dim}), got "
                             f"{None if emb is None else emb.shape}")
        pm = np.asarray(result.point_masks)
        if pm.shape != (cov.size,) or (pm.size and pm.dtype.kind not in "iu"):
            raise ValueError(f"point_masks must be ({cov.size},) integers, got shape {pm.shape}, "
                             f"dtype {pm.dtype}")
        if pm.size and (pm.min() < -1 or pm.max() >= emb.shape[0]):
            raise ValueError(f"point_masks must lie in [-1, {emb.shape[0]}) (the masks given)")
        emb = emb.astype(np.float32, copy=False)
        if not np.all(np.isfinite(emb)):
            raise ValueError("mask_embeddings contain NaN or inf")
        clip_points = np.flatnonzero(pm >= 0).astype(np.int64)
        clip = emb[pm[clip_points]]
    return CheckedSegmentation(cov, feats, w, pb, clip_points, clip)


def check_text_embeddings(emb: object, n_labels: int, feature_dim: int) -> npt.NDArray[np.float32]:
    """Validate and L2-normalise a text encoder's (L, D) output."""
    e = np.asarray(emb, dtype=np.float32)
    if e.shape != (n_labels, feature_dim):
        raise ValueError(
            f"text encoder returned shape {e.shape}, expected ({n_labels}, {feature_dim})"
        )
    norms = np.linalg.norm(e, axis=1)
    if not np.all(np.isfinite(norms)) or (norms.size and norms.min() <= 0):
        raise ValueError("text encoder returned a zero or non-finite embedding")
    out: npt.NDArray[np.float32] = e / norms[:, None]
    return out
