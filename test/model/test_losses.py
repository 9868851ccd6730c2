"""Losses: hand-computed BCE / dice / CE, point sampling, set criterion, mask-contra selection,
caption and binary losses, weights and the mask-contra start epoch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from xmask3d_ros.config.model import LossCfg
from xmask3d_ros.model.losses import (
    Criterion,
    CriterionInputs,
    MaskContrastView,
    SetCriterion,
    SetPrediction,
    binary_loss,
    caption_loss,
    dice_loss,
    mask_confidence,
    mask_contrast_loss,
    point_ce_losses,
    sigmoid_ce_loss,
    uncertain_point_coords,
)
from xmask3d_ros.model.matcher import HungarianMatcher, SetTarget

sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731


def test_bce_and_dice_hand_values() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m0 = (-math.log(0.5) - math.log(1 - sig(2.0))) / 2
    m1 = (-math.log(1 - sig(-1.0)) - math.log(1 - sig(1.0))) / 2
    assert sigmoid_ce_loss(logits, targets, 2.0).item() == pytest.approx((m0 + m1) / 2, rel=1e-6)
    d0 = 1 - (2 * 0.5 + 1) / (0.5 + sig(2.0) + 1 + 1)
    d1 = 1 - 1 / (sig(-1.0) + sig(1.0) + 0 + 1)
    assert dice_loss(logits, targets, 4.0).item() == pytest.approx((d0 + d1) / 4, rel=1e-6)


def test_class_loss_with_no_object_weight_by_hand() -> None:
    # one image, two queries, classes {0, 1} + null (2); query 1 matched to a target of class 1
    logits = torch.tensor([[[1.0, 0.0, 0.5], [0.2, 2.0, -1.0]]])
    crit = SetCriterion(HungarianMatcher(num_points=4), eos_coef=0.1)
    target = [SetTarget(torch.tensor([1]), torch.zeros(1, 2, 2))]
    loss = crit.loss_labels(SetPrediction(logits, torch.zeros(1, 2, 2, 2)), target, [(torch.tensor([1]), torch.tensor([0]))])

    def nll(row: list[float], c: int) -> float:
        return -(row[c] - math.log(sum(math.exp(v) for v in row)))

    want = (0.1 * nll([1.0, 0.0, 0.5], 2) + 1.0 * nll([0.2, 2.0, -1.0], 1)) / 1.1
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_importance_sampling_prefers_uncertain_points() -> None:
    logits = torch.full((1, 8, 8), 12.0)
    logits[:, :, :4] = 0.0  # left half uncertain (|logit| small)
    g = torch.Generator().manual_seed(0)
    pts = uncertain_point_coords(logits, 200, 3.0, 1.0, generator=g)
    assert pts.shape == (1, 200, 2)
    assert float((pts[0, :, 0] < 0.5625).float().mean()) == 1.0  # bilinear edge at x = 4.5 / 8
    uniform = uncertain_point_coords(logits, 400, 3.0, 0.0, generator=g)
    assert 0.35 < float((uniform[0, :, 0] < 0.5).float().mean()) < 0.65
    mixed = uncertain_point_coords(logits, 100, 3.0, 0.75, generator=g)
    assert float((mixed[0, :75, 0] < 0.5625).float().mean()) == 1.0


def _targets() -> list[SetTarget]:
    m = torch.zeros(2, 16, 16)
    m[0, :8] = 1
    m[1, 8:] = 1
    return [SetTarget(torch.tensor([0, 2]), m)]  # class 0 and the "other" (null) segment


def test_set_criterion_perfect_vs_wrong_and_deep_supervision() -> None:
    t = _targets()
    good_masks = torch.full((1, 3, 16, 16), -15.0)
    good_masks[0, 1] = torch.where(t[0].masks[0] > 0, 15.0, -15.0)
    good_masks[0, 2] = torch.where(t[0].masks[1] > 0, 15.0, -15.0)
    good_logits = torch.tensor([[[-9.0, -9.0, 9.0], [9.0, -9.0, -9.0], [-9.0, -9.0, 9.0]]])
    # uniform points (importance 0): only the half-pixel bands at mask edges and at the image
    # border (zero padding of grid_sample, as detectron2) cost anything
    crit = SetCriterion(HungarianMatcher(num_points=1024), num_points=1024, importance_ratio=0.0)
    bad = SetPrediction(torch.zeros(1, 3, 3, requires_grad=True), torch.zeros(1, 3, 16, 16, requires_grad=True))
    good = SetPrediction(good_logits, good_masks)
    out = crit(good, t, [bad, bad], generator=torch.Generator().manual_seed(0))
    assert set(out) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert out["loss_ce"] < 1e-3 and out["loss_mask"] < 0.3 and out["loss_dice"] < 0.05
    assert out["loss_mask_0"].item() == pytest.approx(math.log(2), rel=1e-5)  # zero logits: BCE = log 2
    assert out["loss_ce_0"].item() == pytest.approx(math.log(3), rel=1e-5)  # uniform over 3 columns
    # importance sampling concentrates on that edge band: the same prediction costs more
    edge = SetCriterion(HungarianMatcher(num_points=1024), num_points=1024, importance_ratio=0.75)
    assert edge(good, t, generator=torch.Generator().manual_seed(0))["loss_mask"] > out["loss_mask"]
    total = sum(out.values())
    total.backward()
    assert bad.logits.grad is not None and bad.masks.grad is not None


def test_point_ce_losses() -> None:
    fused = torch.randn(6, 4, requires_grad=True)
    pure = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 3, 2, 3, 1, 3])  # 3 = ignore (number of base classes)
    out = point_ce_losses(fused, pure, labels, ignore_index=3)
    keep = labels != 3
    want = -torch.log_softmax(fused, -1)[keep, labels[keep]].mean()
    torch.testing.assert_close(out["loss_3d"], want)
    torch.testing.assert_close(out["loss_3d_pure"], F.cross_entropy(pure[keep], labels[keep]))
    empty = point_ce_losses(fused, pure, torch.full((6,), 3), ignore_index=3)
    assert empty["loss_3d"].item() == 0.0
    empty["loss_3d"].backward()
    assert fused.grad is not None and bool((fused.grad == 0).all())


def test_binary_loss_by_hand() -> None:
    logits = torch.tensor([1.0, -2.0, 0.5, 3.0])
    labels = torch.tensor([1, 0, 255, 1])
    pw = 0.267
    want = (pw * -math.log(sig(1.0)) - math.log(1 - sig(-2.0)) + pw * -math.log(sig(3.0))) / 3
    assert binary_loss(logits, labels, pw).item() == pytest.approx(want, rel=1e-6)
    assert binary_loss(logits, torch.full((4,), 7), pw).item() == 0.0


def test_caption_loss_by_hand() -> None:
    feats = [torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.zeros(0, 2), torch.tensor([[0.0, 3.0]])]
    caps = torch.tensor([[1.0, 1.0], [5.0, 5.0], [1.0, 0.0]])
    # view 0 mean (1, 1): cos 1 -> 0 ; view 1 skipped (no rows) ; view 2: cos 0 -> 1
    assert caption_loss(feats, caps).item() == pytest.approx(0.5, abs=1e-6)


def _contrast_view() -> tuple[MaskContrastView, LossCfg]:
    nv, e = 40, 3
    logits = torch.full((4, nv), -5.0)
    logits[0, :20] = 5.0  # 20 points: 16 novel, 4 base -> novel-dominant (16 > 1.8 * 4)
    logits[1, 10:22] = 5.0  # 12 points: 6 novel, 6 base -> neither
    logits[2, 20:40] = 5.0  # 20 base points -> base-dominant (with the small thresholds below)
    logits[3, 0:5] = 5.0  # 5 points: too few
    labels = torch.tensor([0] * 16 + [1] * 24)
    feat = torch.randn(nv, e, requires_grad=True)
    clip = torch.randn(4, e, requires_grad=True)
    cfg = LossCfg(contra_base_min=10, contra_base_ratio=20.0)
    view = MaskContrastView(logits, torch.tensor([0.9, 0.8, 0.7, 0.6]), clip, feat, labels)
    return view, cfg


def test_mask_contrast_selection_and_value() -> None:
    view, cfg = _contrast_view()
    loss = mask_contrast_loss([view], cfg)
    m0 = view.feat_3d[:20].mean(0)
    m2 = view.feat_3d[20:40].mean(0)
    want = (
        (1 - F.cosine_similarity(m0, view.clip_embed[0], dim=0))
        + (1 - F.cosine_similarity(m2, view.clip_embed[2], dim=0))
    ) / 2
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert view.feat_3d.grad is not None and view.clip_embed.grad is None  # target detached
    # ranking by confidence and the per-view limits
    few = dataclasses.replace(cfg, contra_max_base=0)
    only_novel = mask_contrast_loss([view], few)
    torch.testing.assert_close(only_novel, 1 - F.cosine_similarity(m0, view.clip_embed[0], dim=0))
    none = mask_contrast_loss([view], dataclasses.replace(cfg, contra_min_points=50))
    assert none.item() == 0.0 and none.requires_grad


def test_mask_confidence() -> None:
    m = torch.tensor([[[0.0, 2.0], [-3.0, 1.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    conf = mask_confidence(m)
    assert conf[0].item() == pytest.approx((sig(2.0) + sig(1.0)) / 2, rel=1e-6)
    assert conf[1].item() == 0.0


def test_mask_contra_weight_is_zero_before_start_epoch() -> None:
    cfg = LossCfg()  # B15/N4: 0.5 from epoch 50
    crit = Criterion(cfg)
    assert crit.weights(0)["loss_3d_contra"] == 0.0
    assert crit.weights(49)["loss_3d_contra"] == 0.0
    assert crit.weights(50)["loss_3d_contra"] == 0.5
    view, vcfg = _contrast_view()
    crit = Criterion(dataclasses.replace(vcfg, mask_contra_start_epoch=5))
    before = crit(CriterionInputs(contrast_views=[view]), epoch=4)["loss_3d_contra"]
    after = crit(CriterionInputs(contrast_views=[view]), epoch=5)["loss_3d_contra"]
    assert before.item() == 0.0 and after.item() > 0.0
    torch.testing.assert_close(after, 0.5 * mask_contrast_loss([view], vcfg))


def test_criterion_weights_every_loss() -> None:
    torch.manual_seed(0)
    cfg = LossCfg(num_points=64)
    crit = Criterion(cfg)
    t = _targets()
    pred = SetPrediction(torch.randn(1, 3, 3), torch.randn(1, 3, 16, 16))
    view, _ = _contrast_view()
    x = CriterionInputs(
        set_pred=pred, set_aux=[pred], set_targets=t,
        fused_logits=torch.randn(5, 4), pure_logits=torch.randn(5, 4),
        labels_3d=torch.tensor([0, 1, 3, 2, 3]), ignore_index=3,
        contrast_views=[view], captions=torch.randn(1, 3),
        caption_fused=[torch.randn(5, 3)], caption_3d=[torch.randn(5, 3)], caption_2d=[torch.randn(2, 3)],
        binary_logits=torch.randn(5, 1), binary_labels=torch.tensor([1, 0, 1, 9, 0]),
    )
    out = crit(x, epoch=100, generator=torch.Generator().manual_seed(1))
    raw_ce = point_ce_losses(x.fused_logits, x.pure_logits, x.labels_3d, 3)
    torch.testing.assert_close(out["loss_3d"], 4.0 * raw_ce["loss_3d"])
    torch.testing.assert_close(out["loss_binary"], 16.0 * binary_loss(x.binary_logits, x.binary_labels, 0.267))
    torch.testing.assert_close(out["loss_explicit_contra_2d_pre"], 4.0 * caption_loss(x.caption_2d, x.captions))
    assert set(out) == {
        "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0",
        "loss_3d", "loss_3d_pure", "loss_3d_contra", "loss_explicit_contra",
        "loss_explicit_contra_3d", "loss_explicit_contra_2d_pre", "loss_binary",
    }
    assert all(torch.isfinite(v) for v in out.values())


def test_weighted_point_ce_matches_a_hand_computed_mean() -> None:
    from xmask3d_ros.model.losses import point_ce_losses

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 2])  # 2 = ignore (the null column)
    w = torch.tensor([1.0, 3.0, 1.0])
    out = point_ce_losses(logits, logits, labels, 2, w)
    nll = -torch.log_softmax(logits, -1)
    want = (1.0 * nll[0, 0] + 3.0 * nll[1, 1]) / 4.0
    torch.testing.assert_close(out["loss_3d"], want)
    plain = point_ce_losses(logits, logits, labels, 2)["loss_3d"]
    torch.testing.assert_close(plain, (nll[0, 0] + nll[1, 1]) / 2)
