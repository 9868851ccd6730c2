"""Hungarian matching of predicted masks to target masks (Mask2Former ``HungarianMatcher``).

Per image: cost = ``w_class * (-p(target class)) + w_mask * BCE + w_dice * dice`` between every
prediction and every target, the mask terms evaluated on ``num_points`` random points shared by
all masks of the image (``point_sample`` with ``align_corners=False``), then
``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "HungarianMatcher",
    "SetTarget",
    "batch_dice_cost",
    "batch_sigmoid_ce_cost",
    "point_sample",
]


class SetTarget(NamedTuple):
    """Ground truth of one image for the set criterion."""

    labels: Tensor  # (K,) int64 class index of each target mask (num_classes = null/other)
    masks: Tensor  # (K, H, W) float {0, 1}


def point_sample(masks: Tensor, coords: Tensor) -> Tensor:
    """(R, H, W) maps sampled at (R, P, 2) normalised (x, y) in [0, 1] -> (R, P), bilinear.

    detectron2 ``point_sample``: ``grid_sample(2 * coords - 1, align_corners=False)``, zero
    padding outside.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (R, P, 1, 2)
    out = F.grid_sample(masks.unsqueeze(1), grid, mode="bilinear", align_corners=False)
    return out[:, 0, :, 0]


def batch_sigmoid_ce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """(N, P) logits, (M, P) targets -> (N, M) mean sigmoid BCE over points."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.t() + neg @ (1.0 - targets).t()) / logits.shape[1]


def batch_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """(N, P) logits, (M, P) targets -> (N, M) ``1 - (2|X.Y| + 1) / (|X| + |Y| + 1)``."""
    p = logits.sigmoid()
    num = 2.0 * (p @ targets.t())
    den = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1.0 - (num + 1.0) / (den + 1.0)


class HungarianMatcher:
    """One-to-one assignment of predictions to targets minimising the Mask2Former cost."""

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ) -> None:
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        if num_points <= 0:
            raise ValueError(f"num_points must be > 0, got {num_points}")
        self.cost_class = float(cost_class)
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.num_points = int(num_points)

    @torch.no_grad()
    def cost_matrix(
        self, logits: Tensor, masks: Tensor, target: SetTarget, coords: Tensor
    ) -> Tensor:
        """(Q, C + 1) class logits, (Q, h, w) mask logits, one target, (P, 2) points -> (Q, K)."""
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, target.labels]
        k = target.masks.shape[0]
        tgt = point_sample(target.masks.to(masks).float(), coords.expand(k, -1, -1))
        out = point_sample(masks.float(), coords.expand(masks.shape[0], -1, -1))
        return (
            self.cost_mask * batch_sigmoid_ce_cost(out, tgt)
            + self.cost_class * cost_class
            + self.cost_dice * batch_dice_cost(out, tgt)
        )

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        targets: Sequence[SetTarget],
        *,
        generator: torch.Generator | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """(B, Q, C + 1) logits, (B, Q, h, w) mask logits, B targets -> per image (src, tgt).

        ``src`` are prediction indices in ascending order, ``tgt`` the matched target indices;
        ``len = min(Q, K)``.
        """
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{pred_logits.shape[0]} predictions but {len(targets)} targets")
        out: list[tuple[Tensor, Tensor]] = []
        for b, target in enumerate(targets):
            if target.labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            coords = torch.rand(
                1, self.num_points, 2, generator=generator,
                device=generator.device if generator is not None else pred_masks.device,
            ).to(pred_masks.device)
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], target, coords)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return out
