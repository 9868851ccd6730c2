"""Evaluator vs brute force, hand-computed hIoU, both absent-class conventions, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmask3d_ros.metrics.confusion import ConfusionMatrix, harmonic_iou, iou_from_confusion
from xmask3d_ros.metrics.report import markdown_table, save_confusion_png, save_json


def _brute_force(gt, pred, classes, ignore):
    """Per-class IoU by Python sets over point indices (XMask3D: absent -> 0)."""
    keep = [i for i in range(len(gt)) if gt[i] not in ignore]
    out = {}
    for c in classes:
        g = {i for i in keep if gt[i] == c}
        p = {i for i in keep if pred[i] == c}
        u = len(g | p)
        out[c] = len(g & p) / u if u else 0.0
    return out


def test_random_predictions_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix.for_indices(20, [c for c in range(19)])
    gts, preds = [], []
    for _ in range(3):  # accumulate over "scenes"
        gt = rng.integers(0, 21, 500)
        gt[rng.random(500) < 0.1] = 255
        pred = rng.integers(0, 20, 500)
        cm.update(gt, pred)
        gts.append(gt)
        preds.append(pred)
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    base, novel = [0, 1, 2, 3, 4, 6, 7, 8, 10, 11, 13, 14, 15, 17, 18], [5, 9, 12, 16]
    res = cm.iou(base=base, novel=novel)
    ref = _brute_force(gt.tolist(), pred.tolist(), range(19), {19, 20, 255})
    assert np.allclose([res.iou[c] for c in range(19)], [ref[c] for c in range(19)])
    b, n = np.mean([ref[c] for c in base]), np.mean([ref[c] for c in novel])
    assert res.miou_base == pytest.approx(b) and res.miou_novel == pytest.approx(n)
    assert res.hiou == pytest.approx(2 * b * n / (b + n))


def test_hand_computed_case_and_conventions() -> None:
    # classes 0, 1 base; 2, 3 novel; class 3 absent from GT and predictions; 9 = ignore
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 9, 9])
    pred = np.array([0, 0, 1, 1, 1, 2, 0, 3, 0])
    cm = ConfusionMatrix.for_indices(4, [0, 1, 2, 3])
    cm.update(gt, pred)
    # class 0: I=2, U = gt 3 + pred 3 - 2 = 4 -> 0.5; class 1: I=2, U=2+3-2=3 -> 2/3
    # class 2: I=1, U=2+1-1=2 -> 0.5; class 3: absent (ignored GT points' preds dropped)
    x = cm.iou(base=[0, 1], novel=[2, 3], convention="xmask3d")
    assert np.allclose(x.iou, [0.5, 2 / 3, 0.5, 0.0])
    assert x.miou_base == pytest.approx(7 / 12) and x.miou_novel == pytest.approx(0.25)
    assert x.hiou == pytest.approx(2 * (7 / 12) * 0.25 / (7 / 12 + 0.25))
    s = cm.iou(base=[0, 1], novel=[2, 3], convention="scannet")
    assert np.isnan(s.iou[3]) and s.miou_novel == pytest.approx(0.5)
    assert s.hiou == pytest.approx(harmonic_iou(7 / 12, 0.5))


def test_absent_from_gt_but_predicted() -> None:
    cm = ConfusionMatrix(3)
    cm.update([0, 0, 1], [0, 2, 1])
    assert cm.iou(convention="xmask3d").iou[2] == 0.0  # predicted, never in GT -> 0
    assert np.isnan(cm.iou(convention="scannet").iou[2])  # skipped
    assert cm.iou(convention="xmask3d").miou_all == pytest.approx((0.5 + 1 + 0) / 3)
    assert cm.iou(convention="scannet").miou_all == pytest.approx(0.75)


def test_out_of_range_prediction_is_a_miss() -> None:
    cm = ConfusionMatrix(2)
    cm.update([0, 0, 1], [0, 255, 1])
    assert np.allclose(cm.iou().iou, [0.5, 1.0])


def test_harmonic_iou_edge_cases() -> None:
    assert harmonic_iou(0.0, 0.0) == 0.0
    assert harmonic_iou(0.698, 0.702) == pytest.approx(0.69999, abs=1e-4)  # README B15N4
    assert np.isnan(harmonic_iou(float("nan"), 0.5))
    with pytest.raises(ValueError, match="convention"):
        iou_from_confusion(np.eye(2, dtype=np.int64), convention="pla")


def test_reports(tmp_path) -> None:
    cm = ConfusionMatrix(3)
    cm.update([0, 1, 2, 2], [0, 1, 2, 1])
    res = cm.iou(base=[0, 1], novel=[2], names=["wall", "floor", "sofa"])
    md = markdown_table(res, "demo")
    assert "| sofa | novel | 50.0 | 2 |" in md
    data = json.loads(save_json(res, tmp_path / "m.json").read_text())
    assert data["miou_novel"] == pytest.approx(0.5) and len(data["classes"]) == 3
    png = save_confusion_png(cm.matrix, res, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
