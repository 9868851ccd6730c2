"""2D -> 3D: visible points' pixels, mask sampling, panoptic clean-up, per-point mask features.

Reference-notes §1.7 and §1.8 (``XMASK3d.forward`` eval branch, ``Criterion.forward``):

1. Visible points and their pixels come from the geometry layer's reference visibility test
   (:meth:`PinholeCamera.visible_pixels`: 10 px border, 25 % relative depth tolerance).
2. Mask logits are resized (bilinear) to ``mask_shape``; a point reads the mask-grid pixel that
   contains its image pixel (the identity when the image is ``mask_shape``, as in the reference).
3. :func:`panoptic_cleanup`: masks covering no point (sigmoid > 0.5) are dropped; optional
   mask-level binary gating restricts a mask to base classes (plus null) or to novel classes by
   the mean p(base) of its points; softmax gives each mask a score and label; every pixel goes
   to the mask with the largest ``score * probability`` and is kept only where that probability
   is >= 0.5. The final masks are mutually exclusive.
4. :func:`point_mask_features`: each covered point takes its mask's embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.model.heads import gate_probabilities

__all__ = [
    "PanopticMasks",
    "ViewPixels",
    "panoptic_cleanup",
    "point_mask_features",
    "resize_masks",
    "sample_masks",
    "to_mask_grid",
    "visible_point_pixels",
]


@dataclass(frozen=True)
class ViewPixels:
    """The points one view sees and where (reference-notes §1.7)."""

    point_index: npt.NDArray[np.int64]  # (Nv,) indices into the input points, ascending
    rows: npt.NDArray[np.int64]  # (Nv,) image row of each visible point
    cols: npt.NDArray[np.int64]  # (Nv,) image column
    image_hw: tuple[int, int]  # (height, width) of the camera image

    def __len__(self) -> int:
        return int(self.point_index.shape[0])


def visible_point_pixels(
    points: npt.ArrayLike,
    camera: PinholeCamera,
    depth_m: npt.NDArray[Any],
    *,
    T_world_cam: SE3 | None = None,
    border_px: int = 10,
    depth_tolerance_rel: float = 0.25,
) -> ViewPixels:
    """Visible points and their pixels.

    ``points`` (N, 3): in the world/map frame when ``T_world_cam`` (camera pose, optical frame)
    is given, else already in the camera optical frame. ``depth_m`` (H, W) metres, 0 = invalid.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    pts_cam = T_world_cam.inverse().apply(pts) if T_world_cam is not None else pts
    visible, rows, cols = camera.visible_pixels(
        pts_cam, depth_m, border_px=border_px, depth_tolerance_rel=depth_tolerance_rel
    )
    idx = np.flatnonzero(visible).astype(np.int64)
    return ViewPixels(
        point_index=idx,
        rows=rows[idx].astype(np.int64),
        cols=cols[idx].astype(np.int64),
        image_hw=(camera.height, camera.width),
    )


def to_mask_grid(
    rows: Any, cols: Any, image_hw: tuple[int, int], mask_hw: tuple[int, int], *, device: Any = None
) -> tuple[Tensor, Tensor]:
    """Image pixels -> the mask-grid cells containing their centres, as (Nv,) int64 tensors.

    ``r_m = floor((r + 0.5) * Hm / H)`` (clamped): exact identity when both grids are equal.
    """
    r = (rows if isinstance(rows, Tensor) else torch.as_tensor(np.asarray(rows))).to(device, torch.int64)
    c = (cols if isinstance(cols, Tensor) else torch.as_tensor(np.asarray(cols))).to(device, torch.int64)
    (h, w), (hm, wm) = image_hw, mask_hw
    if (h, w) != (hm, wm):
        r = torch.div((2 * r + 1) * hm, 2 * h, rounding_mode="floor").clamp_(0, hm - 1)
        c = torch.div((2 * c + 1) * wm, 2 * w, rounding_mode="floor").clamp_(0, wm - 1)
    return r, c


def resize_masks(mask_logits: Tensor, mask_hw: tuple[int, int]) -> Tensor:
    """(..., h, w) mask logits -> (..., Hm, Wm), bilinear, align_corners=False (reference)."""
    if tuple(mask_logits.shape[-2:]) == tuple(mask_hw):
        return mask_logits
    lead = mask_logits.shape[:-2]
    x = mask_logits.reshape(1, -1, *mask_logits.shape[-2:])
    x = F.interpolate(x, size=tuple(mask_hw), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *mask_hw)


def sample_masks(masks: Tensor, rows_m: Tensor, cols_m: Tensor) -> Tensor:
    """(Q, Hm, Wm) masks on the mask grid -> (Q, Nv) values at the points' cells."""
    return masks[:, rows_m, cols_m]


@dataclass(frozen=True)
class PanopticMasks:
    """Result of the panoptic clean-up of one view; query indices refer to the input masks."""

    pixel_ids: Tensor  # (Hm, Wm) int64: query owning each mask-grid pixel, -1 = none
    point_ids: Tensor  # (Nv,) int64: query covering each visible point, -1 = none
    kept: Tensor  # (K,) int64 ascending: queries owning >= 1 pixel (the final masks)
    candidate: Tensor  # (Q,) bool: covered a point and scored above the keep threshold
    scores: Tensor  # (Q,) class probability of each query's label (after gating)
    labels: Tensor  # (Q,) int64 class column of each query (the last column = null)


def panoptic_cleanup(
    mask_logits: Tensor,
    class_logits: Tensor,
    rows_m: Tensor,
    cols_m: Tensor,
    *,
    p_base: Tensor | None = None,
    base_classes: Tensor | None = None,
    gating: str = "off",
    gate_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    keep_score: float = 0.0,
) -> PanopticMasks:
    """Mutually exclusive final masks of one view (reference-notes §1.8), fully vectorised.

    ``mask_logits`` (Q, Hm, Wm) on the mask grid (see :func:`resize_masks`); ``class_logits``
    (Q, C + 1) with the null class last; ``rows_m``/``cols_m`` (Nv,) the points' cells.
    Mask-level gating (inference) needs ``p_base`` (Nv,) sigmoid of the binary head per point,
    ``base_classes`` (C,) bool and ``gating`` in {hard, soft}; the null column belongs to the base
    group (a base mask may be "null", a novel one may not: reference). Training passes
    ``gating='off'`` (the reference skips gating there). Null-labelled masks are kept, as in the
    reference (``scores_keep_thresh: 0``).
    """
    q = mask_logits.shape[0]
    if class_logits.shape[0] != q:
        raise ValueError(f"{q} masks but {class_logits.shape[0]} class-logit rows")
    with torch.no_grad():
        prob = mask_logits.detach().float().sigmoid()  # (Q, Hm, Wm)
        covers = prob[:, rows_m, cols_m] > mask_threshold  # (Q, Nv)
        has_point = covers.any(dim=1)
        logits = class_logits.detach().float()
        if gating != "off" and p_base is not None and base_classes is not None:
            counts = covers.sum(dim=1).float()
            mask_p = (covers.float() @ p_base.detach().float().reshape(-1)) / (counts + 1e-10)
            base_cols = torch.cat(
                [base_classes.to(device=logits.device, dtype=torch.bool),
                 torch.ones(1, dtype=torch.bool, device=logits.device)]
            )
            cls_prob = gate_probabilities(
                logits, mask_p, base_cols, gating, threshold=gate_threshold
            )
        else:
            cls_prob = torch.softmax(logits, dim=-1)
        scores, labels = cls_prob.max(dim=-1)
        candidate = has_point & (scores > keep_score)
        hm, wm = prob.shape[-2:]
        if bool(candidate.any()):
            weighted = torch.where(
                candidate.view(-1, 1, 1), scores.view(-1, 1, 1) * prob, torch.full_like(prob, -1.0)
            )
            ids = weighted.argmax(dim=0)  # (Hm, Wm), first maximum on ties (reference argmax)
            own = prob.gather(0, ids.unsqueeze(0)).squeeze(0)
            pixel_ids = torch.where(own >= mask_threshold, ids, torch.full_like(ids, -1))
        else:
            pixel_ids = torch.full((hm, wm), -1, dtype=torch.int64, device=prob.device)
        kept = torch.unique(pixel_ids[pixel_ids >= 0])
        point_ids = pixel_ids[rows_m, cols_m]
    return PanopticMasks(pixel_ids, point_ids, kept, candidate, scores, labels)


def point_mask_features(point_ids: Tensor, mask_embed: Tensor) -> tuple[Tensor, Tensor]:
    """(Nv,) covering-mask ids (-1 = none), (Q, E) mask embeddings -> features (Nv, E), covered.

    Covered points take their mask's embedding (differentiable w.r.t. ``mask_embed``);
    uncovered points get zeros (the reference's value there; fusion ignores them).
    """
    covered = point_ids >= 0
    feats = mask_embed.new_zeros(point_ids.shape[0], mask_embed.shape[-1])
    if bool(covered.any()):
        feats = feats.index_put((covered.nonzero(as_tuple=True)[0],), mask_embed[point_ids[covered]])
    return feats, covered
