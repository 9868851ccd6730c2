"""Hungarian matcher: point sampling, pairwise costs by hand, assignment equals brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from xmask3d_ros.model.matcher import (
    HungarianMatcher,
    SetTarget,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
    point_sample,
)


def _bilinear(img: torch.Tensor, x: float, y: float) -> float:
    """Hand bilinear sample of (H, W) at normalised (x, y): pixel centres at (i + 0.5) / size,
    zeros outside (grid_sample align_corners=False, padding zeros)."""
    h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img[yy, xx])
    return total


def test_point_sample_is_detectron2_bilinear() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 5, 7, generator=g)
    coords = torch.rand(2, 9, 2, generator=g)
    coords[0, 0] = torch.tensor([0.0, 0.0])  # corner: half outside
    got = point_sample(maps, coords)
    for r in range(2):
        for p in range(9):
            x, y = coords[r, p].tolist()
            assert got[r, p].item() == pytest.approx(_bilinear(maps[r], x, y), abs=1e-5)


def test_pairwise_costs_hand_values() -> None:
    logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    bce = batch_sigmoid_ce_cost(logits, targets)
    torch.testing.assert_close(bce, torch.full((1, 2), math.log(2.0)))
    dice = batch_dice_cost(logits, targets)
    # p = (0.5, 0.5): t1: 1 - (2*0.5 + 1) / (1 + 1 + 1) = 1/3 ; t2: 1 - (2 + 1) / (1 + 2 + 1) = 1/4
    torch.testing.assert_close(dice, torch.tensor([[1 / 3, 1 / 4]]))


def _slow_cost(matcher, logits, masks, target, coords):
    q, k = masks.shape[0], target.masks.shape[0]
    c = torch.zeros(q, k)
    prob = logits.softmax(-1)
    for i in range(q):
        o = point_sample(masks[i : i + 1], coords)[0]
        for j in range(k):
            t = point_sample(target.masks[j : j + 1], coords)[0]
            bce = F.binary_cross_entropy_with_logits(o, t)
            s = o.sigmoid()
            dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
            c[i, j] = (
                matcher.cost_class * -prob[i, target.labels[j]]
                + matcher.cost_mask * bce
                + matcher.cost_dice * dice
            )
    return c


@pytest.mark.parametrize(("q", "k"), [(5, 3), (4, 4), (3, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_equals_brute_force(q: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, q, 4, generator=g) * 2
    masks = torch.randn(1, q, 6, 6, generator=g) * 3
    target = SetTarget(
        labels=torch.randint(0, 4, (k,), generator=g),
        masks=(torch.rand(k, 6, 6, generator=g) > 0.5).float(),
    )
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    (src, tgt), = matcher(logits, masks, [target], generator=torch.Generator().manual_seed(7))
    coords = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(7))  # same points
    cost = _slow_cost(matcher, logits[0], masks[0], target, coords)
    torch.testing.assert_close(
        matcher.cost_matrix(logits[0], masks[0], target, coords), cost, atol=1e-5, rtol=1e-5
    )
    n = min(q, k)
    assert len(src) == len(tgt) == n
    assert src.tolist() == sorted(src.tolist())
    got = float(cost[src, tgt].sum())
    if q >= k:
        best = min(
            (sum(float(cost[p[j], j]) for j in range(k)), p) for p in itertools.permutations(range(q), k)
        )
        want_pairs = sorted((p_j, j) for j, p_j in enumerate(best[1]))
    else:
        best = min(
            (sum(float(cost[i, p[i]]) for i in range(q)), p) for p in itertools.permutations(range(k), q)
        )
        want_pairs = [(i, best[1][i]) for i in range(q)]
    assert got == pytest.approx(best[0], abs=1e-5)
    assert list(zip(src.tolist(), tgt.tolist())) == want_pairs


def test_empty_targets_and_argument_checks() -> None:
    m = HungarianMatcher(num_points=16)
    out = m(torch.zeros(1, 3, 2), torch.zeros(1, 3, 4, 4), [SetTarget(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4, 4))])
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0
    with pytest.raises(ValueError, match="all matching costs"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
    with pytest.raises(ValueError, match="targets"):
        m(torch.zeros(2, 3, 2), torch.zeros(2, 3, 4, 4), [])
