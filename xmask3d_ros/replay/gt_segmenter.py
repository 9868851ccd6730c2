"""The ``ground_truth`` test double of the replay tool, fed from a synthetic bag's ``.gt.npz``.

Not a model: each valid depth pixel of a frame is back-projected into the map frame and takes the
raw class id of the nearest labelled GT point (within ``max_distance_m``, default twice the
median GT point spacing; else 0 = nothing), giving
the per-pixel label image :class:`~xmask3d_ros.pipeline.GroundTruthSegmenter` reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.pipeline import GroundTruthSegmenter, TableTextEncoder

__all__ = ["GroundTruthLabeller", "ground_truth_models"]


class GroundTruthLabeller:
    """``label_image(posed)`` from labelled GT points (map frame) by nearest neighbour."""

    def __init__(self, points: npt.ArrayLike, raw_labels: npt.ArrayLike, *,
                 max_distance_m: float | None = None) -> None:
        from scipy.spatial import cKDTree

        pts = np.asarray(points, dtype=np.float64)
        self._tree = cKDTree(pts)
        self._raw = np.asarray(raw_labels).astype(np.uint16)
        if max_distance_m is None:  # 2x the median GT point spacing
            spacing = float(np.median(self._tree.query(pts, k=2)[0][:, 1])) if len(pts) > 1 else 0.05
            max_distance_m = 2.0 * spacing
        self.max_distance_m = float(max_distance_m)
        self._max = self.max_distance_m

    def __call__(self, posed: PosedFrame) -> npt.NDArray[np.uint16]:
        frame = posed.frame
        pts, pix = frame.camera.backproject(frame.depth_m)
        out = np.zeros(frame.depth_m.shape, dtype=np.uint16)
        if pts.shape[0]:
            dist, nn = self._tree.query(posed.T_map_cam.apply(pts), k=1)
            ok = dist <= self._max
            out.reshape(-1)[pix[ok]] = self._raw[nn[ok]]
        return out


def ground_truth_models(gt: Any, *, feature_dim: int = 64, max_distance_m: float | None = None,
                        seed: int = 1) -> tuple[GroundTruthSegmenter, TableTextEncoder]:
    """(segmenter, text encoder) test doubles from a loaded ``GroundTruth`` (data/ground_truth.py)."""
    names = [str(n) for n in gt.class_names]
    enc = TableTextEncoder(names, max(feature_dim, len(names)), seed=seed)
    class_names = {int(r): n for r, n in zip(gt.class_raw_ids, names)}
    labeller = GroundTruthLabeller(gt.points, gt.label, max_distance_m=max_distance_m)
    return GroundTruthSegmenter(enc, class_names, labeller), enc
