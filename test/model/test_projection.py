"""2D -> 3D: visible pixels, mask-grid sampling, the panoptic clean-up and per-point features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.transforms import SE3, quaternion_to_matrix
from xmask3d_ros.model.projection import (
    panoptic_cleanup,
    point_mask_features,
    resize_masks,
    sample_masks,
    to_mask_grid,
    visible_point_pixels,
)

CAM = PinholeCamera(fx=40.0, fy=40.0, cx=31.5, cy=23.5, width=64, height=48)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, SE3]:
    """A wall at z=3 with a box at z=1.2 in the camera frame, seen from a rotated pose."""
    depth = np.full((CAM.height, CAM.width), 3.0, np.float32)
    depth[15:30, 20:40] = 1.2
    depth[40:44, 2:8] = 0.0  # hole
    n = 1500
    uvz = np.c_[rng.uniform(-5, 69, n), rng.uniform(-5, 53, n), rng.choice([1.2, 3.0, 2.0, -1.0], n)]
    x = (uvz[:, 0] - CAM.cx) / CAM.fx * uvz[:, 2]
    y = (uvz[:, 1] - CAM.cy) / CAM.fy * uvz[:, 2]
    pts_cam = np.c_[x, y, uvz[:, 2]]
    q = np.array([0.1, -0.2, 0.3, 0.9])
    T_world_cam = SE3(quaternion_to_matrix(q / np.linalg.norm(q)), np.array([1.0, -2.0, 0.5]))
    return T_world_cam.apply(pts_cam), depth, T_world_cam


def _brute_visibility(pts_world, depth, T_world_cam, border, tol):
    """Per point: world -> camera with the inverse pose, pinhole, round half-even, rule of §1.7."""
    R, t = T_world_cam.rotation, T_world_cam.translation
    out = {}
    for i, p in enumerate(pts_world):
        x, y, z = R.T @ (p - t)
        if z <= 0:
            continue
        c, r = round(CAM.fx * x / z + CAM.cx), round(CAM.fy * y / z + CAM.cy)
        if not (border <= c < CAM.width - border and border <= r < CAM.height - border):
            continue
        d = float(depth[r, c])
        if d > 0 and abs(d - z) <= tol * d:
            out[i] = (r, c)
    return out


@pytest.mark.parametrize(("border", "tol"), [(10, 0.25), (2, 0.1)])
def test_visible_point_pixels_match_brute_force(border: int, tol: float) -> None:
    pts, depth, pose = _scene(np.random.default_rng(0))
    got = visible_point_pixels(pts, CAM, depth, T_world_cam=pose, border_px=border, depth_tolerance_rel=tol)
    want = _brute_visibility(pts, depth, pose, border, tol)
    assert len(want) > 60
    assert got.point_index.tolist() == sorted(want)
    assert list(zip(got.rows.tolist(), got.cols.tolist())) == [want[i] for i in sorted(want)]
    assert got.image_hw == (48, 64)
    # camera-frame input without a pose gives the same answer
    cam_pts = pose.inverse().apply(pts)
    again = visible_point_pixels(cam_pts, CAM, depth, border_px=border, depth_tolerance_rel=tol)
    np.testing.assert_array_equal(again.point_index, got.point_index)


def test_to_mask_grid() -> None:
    rows, cols = np.array([0, 5, 47]), np.array([0, 33, 63])
    r, c = to_mask_grid(rows, cols, (48, 64), (48, 64))
    assert r.tolist() == [0, 5, 47] and c.tolist() == [0, 33, 63]
    r, c = to_mask_grid(rows, cols, (48, 64), (24, 16))  # cell containing the pixel centre
    assert r.tolist() == [int((x + 0.5) * 24 / 48) for x in rows]
    assert c.tolist() == [int((x + 0.5) * 16 / 64) for x in cols]


def test_resize_and_sample_masks() -> None:
    m = torch.randn(3, 6, 8)
    assert resize_masks(m, (6, 8)) is m
    big = resize_masks(m, (12, 16))
    assert big.shape == (3, 12, 16)
    r, c = torch.tensor([0, 11]), torch.tensor([3, 15])
    torch.testing.assert_close(sample_masks(big, r, c), big[:, [0, 11], [3, 15]])


# ---- panoptic clean-up against a per-pixel transcription of the reference loop -------------------


def _slow_cleanup(mask_logits, class_logits, rows, cols, p_base, base_classes, gating, keep_score=0.0):
    q, h, w = mask_logits.shape
    prob = mask_logits.sigmoid()
    pts = prob[:, rows, cols] > 0.5
    has_point = pts.any(1)
    n_cls = class_logits.shape[1] - 1
    probs = []
    for k in range(q):
        lg = class_logits[k].clone()
        if gating == "off" or p_base is None:
            probs.append(lg.softmax(-1))
            continue
        cover = pts[k]
        pb = float((p_base * cover).sum() / (cover.sum() + 1e-10))
        base_cols = [i for i in range(n_cls) if base_classes[i]] + [n_cls]
        novel_cols = [i for i in range(n_cls) if not base_classes[i]]
        if gating == "hard":
            lg2 = lg.clone()
            if pb > 0.5:
                lg2[novel_cols] = -1e10
            else:
                lg2[base_cols] = -1e10
            probs.append(lg2.softmax(-1))
        else:  # PLA: softmax within groups, times p / 1-p, renormalise
            out = torch.zeros_like(lg)
            out[base_cols] = lg[base_cols].softmax(-1) * pb
            out[novel_cols] = lg[novel_cols].softmax(-1) * (1 - pb)
            probs.append(out / out.sum())
    probs = torch.stack(probs)
    scores, _ = probs.max(-1)
    cand = [k for k in range(q) if has_point[k] and scores[k] > keep_score]
    pixel = torch.full((h, w), -1, dtype=torch.int64)
    for i in range(h):
        for j in range(w):
            if not cand:
                continue
            vals = [float(scores[k] * prob[k, i, j]) for k in cand]
            best = cand[int(np.argmax(vals))]  # first maximum
            if prob[best, i, j] >= 0.5:
                pixel[i, j] = best
    return pixel


@pytest.mark.parametrize("gating", ["off", "hard", "soft"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_cleanup_equals_slow_reference(gating: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q, h, w, n_cls, nv = 6, 7, 9, 4, 25
    mask_logits = torch.randn(q, h, w, generator=g) * 3
    mask_logits[5] = -8.0  # covers nothing -> dropped
    class_logits = torch.randn(q, n_cls + 1, generator=g) * 2
    rows = torch.randint(0, h, (nv,), generator=g)
    cols = torch.randint(0, w, (nv,), generator=g)
    p_base = torch.rand(nv, generator=g)
    base = torch.tensor([True, False, True, False])
    got = panoptic_cleanup(
        mask_logits, class_logits, rows, cols,
        p_base=p_base, base_classes=base, gating=gating,
    )
    want = _slow_cleanup(mask_logits, class_logits, rows, cols, p_base, base, gating)
    torch.testing.assert_close(got.pixel_ids, want)
    torch.testing.assert_close(got.point_ids, want[rows, cols])
    assert got.kept.tolist() == sorted(set(want[want >= 0].tolist()))
    assert not bool(got.candidate[5])
    # mutually exclusive final masks, each inside its own >= 0.5 region
    final = torch.stack([got.pixel_ids == k for k in got.kept.tolist()])
    assert int(final.sum(0).max()) <= 1
    assert bool((mask_logits.sigmoid()[got.kept] >= 0.5)[final].all())


def test_panoptic_keep_score_and_empty() -> None:
    mask_logits = torch.full((2, 4, 4), -5.0)
    out = panoptic_cleanup(mask_logits, torch.zeros(2, 3), torch.tensor([0]), torch.tensor([0]))
    assert out.kept.numel() == 0 and bool((out.point_ids == -1).all())
    mask_logits[:, :2] = 5.0
    out = panoptic_cleanup(mask_logits, torch.zeros(2, 3), torch.tensor([0, 3]), torch.tensor([0, 0]), keep_score=0.5)
    assert out.kept.numel() == 0  # uniform class probability 1/3 is not above 0.5


def test_point_mask_features() -> None:
    emb = torch.randn(4, 5, requires_grad=True)
    ids = torch.tensor([2, -1, 0, 2])
    feats, covered = point_mask_features(ids, emb)
    assert covered.tolist() == [True, False, True, True]
    torch.testing.assert_close(feats[[0, 2, 3]], emb[[2, 0, 2]])
    assert bool((feats[1] == 0).all())
    feats.sum().backward()
    assert emb.grad is not None and emb.grad[2].eq(2).all() and emb.grad[1].eq(0).all()
