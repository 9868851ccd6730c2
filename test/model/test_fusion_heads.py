"""Fusion block, cosine classifier, base/novel gating, geometric ensemble, scene-level merge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.model.fusion import FeatureFusion
from xmask3d_ros.model.heads import (
    SceneVotes,
    cosine_logits,
    ensemble_log_scores,
    gate_probabilities,
)


def test_fusion_linear_on_covered_points_only() -> None:
    torch.manual_seed(0)
    fuse = FeatureFusion(4)
    f2d, f3d = torch.randn(5, 4), torch.randn(5, 4, requires_grad=True)
    covered = torch.tensor([True, False, True, False, True])
    out = fuse(f2d, f3d, covered)
    want = torch.cat([f2d, f3d], dim=1) @ fuse.linear.weight.t() + fuse.linear.bias
    torch.testing.assert_close(out[covered], want[covered])
    assert torch.equal(out[~covered], f3d[~covered])
    out.sum().backward()
    assert fuse.linear.weight.grad is not None and f3d.grad is not None
    assert fuse.linear.weight.shape == (4, 8)  # Linear(2E -> E) with bias
    assert torch.equal(fuse(f2d, f3d, torch.zeros(5, dtype=torch.bool)), f3d)
    with pytest.raises(ValueError):
        fuse(f2d[:, :3], f3d[:, :3], covered)


def test_cosine_logits_with_null_column() -> None:
    f = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    null = torch.tensor([1.0, 1.0])
    out = cosine_logits(f, t, 10.0, null)
    want = 10.0 * torch.tensor([[0.6, 0.8, 7 / 5 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]])
    torch.testing.assert_close(out, want)
    assert cosine_logits(f, t, 2.0).shape == (2, 2)


BASE = torch.tensor([True, True, False, True, False])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["hard", "soft", "off"]))
def test_gate_probabilities_sum_to_one(seed: int, mode: str) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(7, 5, generator=g) * 5
    pb = torch.rand(7, generator=g)
    p = gate_probabilities(scores, pb, BASE, mode)
    torch.testing.assert_close(p.sum(-1), torch.ones(7))
    assert bool((p >= 0).all())


def test_gating_hard_soft_off_semantics() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 5, generator=g) * 3
    pb = torch.tensor([0.9, 0.1, 0.51, 0.49, 0.99, 0.0])
    hard = gate_probabilities(scores, pb, BASE, "hard")
    is_base = pb > 0.5
    assert bool((hard[is_base][:, ~BASE] == 0).all()) and bool((hard[~is_base][:, BASE] == 0).all())
    # the argmax is the reference's: other group at -1e10, then argmax
    ref = torch.where(is_base[:, None], scores.masked_fill(~BASE, -1e10), scores.masked_fill(BASE, -1e10))
    assert torch.equal(hard.argmax(-1), ref.argmax(-1))
    # PLA formula by hand
    soft = gate_probabilities(scores, pb, BASE, "soft")
    want = torch.zeros_like(scores)
    want[:, BASE] = scores[:, BASE].softmax(-1) * pb[:, None]
    want[:, ~BASE] = scores[:, ~BASE].softmax(-1) * (1 - pb[:, None])
    torch.testing.assert_close(soft, want / want.sum(-1, keepdim=True))
    torch.testing.assert_close(gate_probabilities(scores, pb, BASE, "off"), scores.softmax(-1))
    with pytest.raises(ValueError, match="gating mode"):
        gate_probabilities(scores, pb, BASE, "medium")


def test_soft_gating_tends_to_hard_gating() -> None:
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(8, 5, generator=g) * 3
    side = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0], dtype=torch.bool)
    for logit in (10.0, 20.0, 40.0):
        pb = torch.sigmoid(torch.where(side, logit, -logit))
        soft = gate_probabilities(scores, pb, BASE, "soft")
        hard = gate_probabilities(scores, pb, BASE, "hard")
        err = (soft - hard).abs().max().item()
        assert err <= 2 * math.exp(-logit) + 1e-6
        assert torch.equal(soft.argmax(-1), hard.argmax(-1))


def test_gating_without_a_base_or_novel_class_is_plain_softmax() -> None:
    scores = torch.randn(3, 4)
    pb = torch.tensor([0.9, 0.1, 0.5])
    for base in (torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)):
        torch.testing.assert_close(gate_probabilities(scores, pb, base, "hard"), scores.softmax(-1))


def test_ensemble_hand_computed_case() -> None:
    # two classes: class 0 base, class 1 novel; base_ratio 0.65, novel_ratio 0.35
    fused = torch.log(torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]))  # logits = log p
    clip = torch.log(torch.tensor([[0.1, 0.9]]))
    ids = torch.tensor([0, -1, 0])
    out = ensemble_log_scores(fused, clip, ids, torch.tensor([True, False]), base_ratio=0.65, novel_ratio=0.35)
    want = torch.tensor(
        [
            [0.65 * math.log(0.8) + 0.35 * math.log(0.1), 0.35 * math.log(0.2) + 0.65 * math.log(0.9)],
            [math.log(0.6), math.log(0.4)],
            [0.65 * math.log(0.3) + 0.35 * math.log(0.1), 0.35 * math.log(0.7) + 0.65 * math.log(0.9)],
        ]
    )
    torch.testing.assert_close(out, want)
    # point 0: fused alone says base (0.8); the ensemble says novel (-0.951 < -0.632)
    assert out[0].argmax().item() == 1 and out[1].argmax().item() == 0
    # no masks: plain log p_fused
    torch.testing.assert_close(
        ensemble_log_scores(fused, clip[:0], torch.full((3,), -1), torch.tensor([True, False]),
                            base_ratio=0.65, novel_ratio=0.35),
        torch.log_softmax(fused, -1),
    )


def test_scene_votes_majority_and_nearest_seen_neighbour() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 5, (200, 3))
    votes = SceneVotes(200, 4)
    brute = np.zeros((200, 4), int)
    for _ in range(6):
        idx = np.sort(rng.choice(150, 60, replace=False))  # points 150.. never seen
        lab = rng.integers(0, 4, 60)
        votes.add(idx, lab)
        brute[idx, lab] += 1
    got = votes.labels(xyz)
    seen = brute.sum(1) > 0
    assert np.array_equal(votes.seen, seen)
    np.testing.assert_array_equal(got[seen], brute[seen].argmax(1))  # ties -> lowest class
    for i in np.flatnonzero(~seen):
        d = np.linalg.norm(xyz[seen] - xyz[i], axis=1)
        assert got[i] == got[np.flatnonzero(seen)[d.argmin()]]
    assert (SceneVotes(3, 2).labels(np.zeros((3, 3))) == -1).all()
    with pytest.raises(ValueError, match="labels outside"):
        votes.add([0], [4])
