"""Named test doubles of the model: ``TableTextEncoder`` and ``GroundTruthSegmenter``.

They let the map, the pipeline and the query engine be tested without weights: the "CLIP space"
is a fixed table of unit vectors, and the "segmenter" reads the ground-truth class of each
visible point from a per-pixel label image (the synthetic renderer gives one per frame).
Not the product's default: the node and the replay tool use the XMask3D implementations.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.pipeline.segmenter import SegmentationResult

__all__ = ["GroundTruthSegmenter", "TableTextEncoder"]


class TableTextEncoder:
    """Text embeddings from a fixed table: exactly orthonormal rows for ``class_names`` (QR of a
    seeded Gaussian matrix), and for any other string a seeded random unit vector derived from
    the string (nearly orthogonal to everything: |cos| ~ 1/sqrt(D)).

    ``calls`` counts ``encode`` calls and ``encoded`` the labels encoded (thread-safe).
    """

    def __init__(self, class_names: Sequence[str], feature_dim: int = 512, *, seed: int = 0) -> None:
        names = list(dict.fromkeys(class_names))
        if len(names) > feature_dim:
            raise ValueError(f"{len(names)} class names do not fit {feature_dim} orthonormal rows")
        self._dim = int(feature_dim)
        self._seed = int(seed)
        rng = np.random.default_rng(self._seed)
        q, _ = np.linalg.qr(rng.standard_normal((self._dim, max(len(names), 1))))
        self._table = {n: q[:, i].astype(np.float32) for i, n in enumerate(names)}
        self._lock = threading.Lock()
        self.calls = 0
        self.encoded = 0

    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._table)

    def embedding(self, label: str) -> npt.NDArray[np.float32]:
        """(D,) float32 unit vector of ``label`` (no counting)."""
        e = self._table.get(label)
        if e is not None:
            return e.copy()
        digest = hashlib.sha256(label.encode("utf-8")).digest()
        rng = np.random.default_rng([self._seed, int.from_bytes(digest[:8], "little")])
        v = rng.standard_normal(self._dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, labels: Sequence[str]) -> npt.NDArray[np.float32]:
        """(L, D) float32 unit embeddings."""
        with self._lock:
            self.calls += 1
            self.encoded += len(labels)
        if not labels:
            return np.empty((0, self._dim), dtype=np.float32)
        return np.stack([self.embedding(s) for s in labels])


class GroundTruthSegmenter:
    """Features = the table embedding of the ground-truth class at each point's pixel (+ noise).

    ``label_image(posed)`` returns the (H, W) integer label image of the frame (raw class ids);
    ``class_names`` maps raw id -> class name (ids not in it, e.g. 0 = nothing, are not covered).
    Each point is projected to its nearest pixel (the pipeline already applied the visibility
    test; ``border_px`` / ``depth_tolerance_rel`` can tighten it here); a point is covered when
    that pixel has valid depth and a known class. Its
    feature is ``encoder.embedding(name) + noise_std * N(0, I)``, seeded per frame stamp, so
    replays are deterministic. With ``with_masks`` one mask per class present is returned with
    its embedding (the shape of XMask3D's per-mask output). ``calls`` counts ``segment`` calls.
    """

    def __init__(
        self,
        encoder: TableTextEncoder,
        class_names: Mapping[int, str],
        label_image: Callable[[PosedFrame], npt.NDArray[np.integer]],
        *,
        noise_std: float = 0.0,
        seed: int = 0,
        border_px: int = 0,
        depth_tolerance_rel: float = 1.0,
        with_masks: bool = False,
    ) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self._encoder = encoder
        ids = np.array(sorted(class_names), dtype=np.int64)
        if ids.size and ids.min() < 0:
            raise ValueError("class ids must be >= 0")
        self._lut = np.full(int(ids.max()) + 1 if ids.size else 1, -1, dtype=np.int64)
        self._lut[ids] = np.arange(ids.size)
        self._ids = ids
        self._emb = (np.stack([encoder.embedding(class_names[int(i)]) for i in ids])
                     if ids.size else np.empty((0, encoder.feature_dim), np.float32))
        self._label_image = label_image
        self._noise = float(noise_std)
        self._seed = int(seed)
        self._border = int(border_px)
        self._tol = float(depth_tolerance_rel)
        self._with_masks = bool(with_masks)
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def feature_dim(self) -> int:
        return self._encoder.feature_dim

    def point_classes(
        self, posed: PosedFrame, points_map: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(covered indices into ``points_map``, their class rows in the table)."""
        frame = posed.frame
        labels = np.asarray(self._label_image(posed))
        if labels.shape != frame.depth_m.shape:
            raise ValueError(f"label image is {labels.shape}, the frame is {frame.depth_m.shape}")
        pts_cam = posed.T_map_cam.inverse().apply(np.asarray(points_map, dtype=np.float32))
        vis, rows, cols = frame.camera.visible_pixels(
            pts_cam, frame.depth_m, border_px=self._border, depth_tolerance_rel=self._tol
        )
        idx = np.flatnonzero(vis)
        raw = labels[rows[idx], cols[idx]].astype(np.int64)
        inside = (raw >= 0) & (raw < self._lut.size)
        cls = np.full(idx.size, -1, dtype=np.int64)
        cls[inside] = self._lut[raw[inside]]
        ok = cls >= 0
        return idx[ok], cls[ok]

    def segment(
        self,
        posed: PosedFrame,
        points_map: npt.NDArray[np.float32],
        indices: npt.NDArray[np.int64],
    ) -> SegmentationResult:
        with self._lock:
            self.calls += 1
        covered, cls = self.point_classes(posed, points_map)
        feats = self._emb[cls]
        if self._noise > 0:
            rng = np.random.default_rng([self._seed, posed.stamp_ns & 0xFFFFFFFFFFFF])
            feats = feats + self._noise * rng.standard_normal(feats.shape).astype(np.float32)
            feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        masks = mask_emb = None
        if self._with_masks:
            labels = np.asarray(self._label_image(posed))
            present = np.unique(cls)
            masks = labels[None, :, :] == self._ids[present][:, None, None]
            mask_emb = self._emb[present].copy()
        return SegmentationResult(covered=covered, features=feats.astype(np.float32, copy=False),
                                  weights=None, mask_embeddings=mask_emb, masks=masks)
