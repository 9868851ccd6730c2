"""XMask3DSegmenter / ClipTextEncoder: the pipeline protocols implemented with the tiny XMask3D.

Features of the right shape and dtype for exactly the visible points, mask outputs consistent
with them, determinism in eval mode, empty inputs, the text encoder, and a few keyframes through
the real PerceptionPipeline (sync mode) with a query on the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from xmask3d_ros.config import load_config
from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.data.classes import SYNTHETIC_CLASSES
from xmask3d_ros.data.synthetic import default_intrinsics, generate_room, render_frame
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.xmask3d import Vocabulary
from xmask3d_ros.pipeline import PerceptionPipeline, SegmentationResult, Segmenter, TextEncoder
from xmask3d_ros.pipeline.segmenter import check_segmentation, check_text_embeddings
from xmask3d_ros.pipeline.xmask3d_segmenter import ClipTextEncoder, XMask3DSegmenter

ensure_torchvision_importable()
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

W, H = 160, 120


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a small shared CPU, extra OpenMP threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _frames(times: list[float], seed: int = 5) -> list[PosedFrame]:
    room = generate_room(seed)
    K = default_intrinsics(W, H)
    cam = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], W, H)
    out = []
    for t, T in zip(times, room.trajectory.poses(times)):
        f = render_frame(room, T, K, W, H)
        out.append(PosedFrame(RgbdFrame(f.rgb, f.depth_m, cam, 10**9 + int(t * 1e9), "cam_optical"),
                              SE3.from_matrix(T)))
    return out


def _map_points(posed: PosedFrame, voxel_m: float = 0.03) -> np.ndarray:
    """Voxel centres of the frame's depth points (map frame), like the pipeline's map gives."""
    pts, _ = posed.frame.camera.backproject(posed.frame.depth_m)
    world = posed.T_map_cam.apply(pts)
    keys = np.unique(np.floor(world / voxel_m).astype(np.int64), axis=0)
    return ((keys + 0.5) * voxel_m).astype(np.float32)


@pytest.fixture(scope="module")
def frames() -> list[PosedFrame]:
    return _frames([0.5, 1.0, 1.5, 2.0])


@pytest.fixture(scope="module")
def segmenter() -> XMask3DSegmenter:
    cfg = load_config(ModelConfig, resolve_model_config("tiny"), ["runtime.device=cpu"])
    return XMask3DSegmenter.from_config(cfg)


def test_protocols(segmenter: XMask3DSegmenter) -> None:
    enc = ClipTextEncoder(segmenter.model)
    assert isinstance(segmenter, Segmenter) and isinstance(enc, TextEncoder)
    assert segmenter.feature_dim == enc.feature_dim == segmenter.model.cfg.clip.embed_dim
    assert not segmenter.model.training


def test_features_for_exactly_the_visible_points(segmenter: XMask3DSegmenter,
                                                 frames: list[PosedFrame]) -> None:
    posed = frames[0]
    pts = _map_points(posed)
    behind = posed.T_map_cam.apply(np.array([[0.0, 0.0, -1.5], [0.3, 0.0, -0.5]]))
    pts = np.concatenate([pts, behind.astype(np.float32)])
    rows = np.arange(pts.shape[0], dtype=np.int64) + 1000
    res = segmenter.segment(posed, pts, rows)
    assert isinstance(res, SegmentationResult)
    d = segmenter.feature_dim
    checked = check_segmentation(res, pts.shape[0], d)
    # independent visibility: projection inside the image and depth within the loose tolerance
    vis, _, _ = posed.frame.camera.visible_pixels(
        posed.T_map_cam.inverse().apply(pts), posed.frame.depth_m, border_px=0,
        depth_tolerance_rel=1.0,
    )
    assert np.array_equal(res.covered, np.flatnonzero(vis))
    assert 1000 < res.covered.size < pts.shape[0] - 2  # the two points behind are not there
    assert res.features.dtype == np.float32 and res.features.shape == (res.covered.size, d)
    assert np.isfinite(res.features).all() and checked.weights is None
    assert res.masks is not None and res.mask_embeddings is not None
    k = res.masks.shape[0]
    assert k >= 1 and res.masks.shape == (k, H, W) and res.masks.dtype == np.bool_
    assert res.masks.sum(0).max() <= 1
    assert res.mask_embeddings.shape == (k, d) and res.mask_embeddings.dtype == np.float32
    out = segmenter.last_output
    assert out is not None and out.covered.any()
    assert set(segmenter.last_timings) == {"3d", "2d", "clip", "fusion"}
    # the map's channels: the fused feature of every point (pure 3D outside masks), p(base), and
    # for points inside a mask that mask's MaskCLIP embedding
    cov_pts = out.covered.numpy()
    np.testing.assert_array_equal(res.features, out.fused.numpy())
    np.testing.assert_array_equal(res.features[~cov_pts], out.feat_3d.numpy()[~cov_pts])
    assert out.p_base is not None and res.base_prob is not None
    np.testing.assert_array_equal(res.base_prob, out.p_base.numpy())
    assert res.point_masks is not None
    np.testing.assert_array_equal(res.point_masks >= 0, cov_pts)
    np.testing.assert_array_equal(checked.clip_points, np.flatnonzero(cov_pts))
    np.testing.assert_array_equal(checked.clip_features,
                                  out.mask_clip.numpy()[out.point_mask.numpy()[cov_pts]])
    # every mask pixel belongs to the mask the points on it are said to be in
    pix, _ = posed.frame.camera.project(posed.T_map_cam.inverse().apply(pts[res.covered[cov_pts]]))
    r, c = np.floor(pix[:, 1]).astype(int), np.floor(pix[:, 0]).astype(int)
    ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    hits = res.masks[res.point_masks[cov_pts][ok], r[ok], c[ok]]
    assert hits.mean() > 0.9, hits.mean()


def test_class_rule_is_the_models_inference_rule(segmenter: XMask3DSegmenter) -> None:
    cfg = segmenter.model.cfg
    rule = segmenter.class_rule
    assert rule.logit_scale == pytest.approx(float(segmenter.model._logit_scale().detach()))
    assert rule.base_ratio == cfg.ensemble.base_ratio and rule.novel_ratio == cfg.ensemble.novel_ratio
    assert rule.gating == cfg.binary.gating and rule.threshold == cfg.binary.threshold
    assert rule.base_names == frozenset(cfg.binary.base_classes)


def test_deterministic_in_eval_mode(segmenter: XMask3DSegmenter, frames: list[PosedFrame]) -> None:
    posed = frames[1]
    pts = _map_points(posed)
    idx = np.arange(pts.shape[0], dtype=np.int64)
    a = segmenter.segment(posed, pts, idx)
    b = segmenter.segment(posed, pts, idx)
    assert np.array_equal(a.covered, b.covered) and np.array_equal(a.features, b.features)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.mask_embeddings, b.mask_embeddings)


def test_empty_inputs(segmenter: XMask3DSegmenter, frames: list[PosedFrame]) -> None:
    posed = frames[0]
    d = segmenter.feature_dim
    none = segmenter.segment(posed, np.empty((0, 3), np.float32), np.empty(0, np.int64))
    assert none.covered.shape == (0,) and none.features.shape == (0, d)
    behind = posed.T_map_cam.apply(np.array([[0.0, 0.0, -2.0]])).astype(np.float32)
    assert segmenter.segment(posed, behind, np.zeros(1, np.int64)).covered.size == 0
    with pytest.raises(ValueError, match="indices must be"):
        segmenter.segment(posed, behind, np.zeros(3, np.int64))


def test_vocabulary_aware_clean_up(segmenter: XMask3DSegmenter, frames: list[PosedFrame]) -> None:
    vocab = Vocabulary.from_names(SYNTHETIC_CLASSES, SYNTHETIC_CLASSES[:15])
    posed = frames[2]
    pts = _map_points(posed)
    try:
        segmenter.set_vocabulary(vocab)
        res = segmenter.segment(posed, pts, np.arange(pts.shape[0]))
        out = segmenter.last_output
        assert out is not None and out.labels is not None and out.vocabulary == vocab
        assert out.labels.shape == (res.covered.size,)
    finally:
        segmenter.set_vocabulary(None)


def test_text_encoder(segmenter: XMask3DSegmenter) -> None:
    enc = ClipTextEncoder(segmenter.model)
    emb = enc.encode(["chair", "table", "chair"])
    assert emb.shape == (3, enc.feature_dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb[0], emb[2]) and not np.allclose(emb[0], emb[1])
    assert np.array_equal(check_text_embeddings(emb, 3, enc.feature_dim), emb)
    assert enc.encode([]).shape == (0, enc.feature_dim)


def test_through_the_pipeline(segmenter: XMask3DSegmenter, frames: list[PosedFrame],
                              make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg(pipeline={"mode": "sync", "keyframe": {"min_translation_m": 0.01}})
    enc = ClipTextEncoder(segmenter.model)
    with PerceptionPipeline(cfg, segmenter, enc) as pipe:
        for posed in frames:
            pipe.step(posed)
        stats = pipe.stats
        answer = pipe.query(["chair", "wall", "floor"])
    assert stats.segmenter_errors == 0 and stats.segmented >= 2
    assert answer.map_voxels > 0 and len(answer.results) == 3
    assert np.isfinite(answer.voxel_score).any()


def test_a_map_query_labels_voxels_as_the_model_labels_points(make_cfg: Callable[..., Any]) -> None:
    """One keyframe: the map's channels are that view's fused features, MaskCLIP embeddings and
    p(base), and a segment query over them gives the model's own classify_points labels."""
    from xmask3d_ros.pipeline.xmask3d_segmenter import load_model

    model, _ = load_model("demo", ["runtime.device=cpu"])  # trained: the ensemble and gating matter
    seg = XMask3DSegmenter.with_runtime(model)
    names = ["wall", "floor", "chair", "sofa", "desk", "bookshelf"]
    assert seg.class_rule.base_flags(names).tolist() == [True, True, True, False, False, False]
    frames = _frames([15.6], seed=7000)  # the demo room: a desk and a bookshelf in view
    pcfg = make_cfg(pipeline={"mode": "sync"})
    with PerceptionPipeline(pcfg, seg, ClipTextEncoder(seg.model)) as pipe:
        pipe.step(frames[0])
        assert pipe.stats.segmented == 1 and pipe.query_engine.rule == seg.class_rule
        out = seg.last_output
        assert out is not None and out.p_base is not None
        with pipe.locked_map() as m:
            vis = pcfg.visibility
            rows = m.visible(frames[0], vis.border_px, vis.depth_tolerance_rel)[out.point_index.numpy()]
            fused, clip = m.features[rows].astype(np.float32), m.clip_features[rows].astype(np.float32)
            clip_w, base_prob = m.clip_weights[rows].copy(), m.base_prob[rows].copy()
        answer = pipe.query(names, min_score=0.0)

    def unit(x: Any) -> Any:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    np.testing.assert_allclose(fused, unit(out.fused.numpy()), atol=1e-3)
    covered = out.point_mask.numpy() >= 0
    assert covered.mean() > 0.5
    np.testing.assert_array_equal(clip_w > 0, covered)
    np.testing.assert_allclose(clip[covered], unit(out.mask_clip.numpy())[out.point_mask.numpy()[covered]],
                               atol=1e-3)
    np.testing.assert_allclose(base_prob, out.p_base.numpy(), rtol=1e-6)
    # the model's vocabulary: the query's labels, then the trained classes it did not name
    others = sorted(set(seg.model.cfg.binary.base_classes) - set(names))
    trained = set(seg.model.cfg.binary.base_classes)
    vocab = Vocabulary.from_names(names + others, [n for n in names + others if n in trained])
    with torch.no_grad():
        full = seg.model.classify_points(out.fused, out.mask_clip, out.point_mask, out.p_base,
                                         seg.model.text_embeddings(vocab.names), vocab,
                                         out.logit_scale)["labels"].numpy()
    want = np.where(full < len(names), full, 65535)  # a class the query did not name: unknown
    assert 0 < np.mean(want == 65535) < 0.9
    agree = np.mean(answer.voxel_label[rows] == want)
    assert agree > 0.995, agree  # float16 storage may flip a near-tie


def test_load_model_names_what_its_weights_are(tmp_path) -> None:
    import pytest
    import torch

    from xmask3d_ros.config.schema import ConfigError
    from xmask3d_ros.model.build import save_pretrained
    from xmask3d_ros.pipeline.xmask3d_segmenter import load_model

    model, what = load_model("tiny")
    assert "RANDOMLY INITIALISED" in what
    folder = save_pretrained(model, tmp_path / "ckpt")
    again, what2 = load_model(str(folder), ["runtime.device=cpu"])
    assert what2.startswith(f"checkpoint {folder}") and "RANDOMLY" not in what2
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(v, again.trainable_state_dict()[k]), k
    with pytest.raises(ConfigError, match="unknown model config"):
        load_model("no_such_model")


def test_map_frame_inference_shifts_only_what_the_3d_branch_sees(
        segmenter: XMask3DSegmenter, frames: list[PosedFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    """runtime.frame_voxel_shift: the 3D branch gets the points half a voxel over (a floor at
    z = 0 +- depth noise then lands in one voxel layer); pixels and colours use the true ones."""
    from xmask3d_ros.model.projection import visible_point_pixels
    from xmask3d_ros.model.sparse.base import voxelize_coordinates

    model = segmenter.model
    vs = model.cfg.backbone3d.voxel_size_m
    assert model.cfg.runtime.frame_voxel_shift == 0.5
    posed = frames[0]
    pts = _map_points(posed)
    seen: dict[str, Any] = {}
    real_infer = model.infer

    def spy(image: Any, points: Any, colors: Any, rows: Any, cols: Any, **kw: Any) -> Any:
        seen.update(points=np.asarray(points), rows=np.asarray(rows), cols=np.asarray(cols))
        return real_infer(image, points, colors, rows, cols, **kw)

    monkeypatch.setattr(model, "infer", spy)
    with torch.no_grad():
        out = model.infer_frame(posed, pts)
    assert out is not None
    px = visible_point_pixels(pts, posed.frame.camera, posed.frame.depth_m,
                              T_world_cam=posed.T_map_cam, border_px=10, depth_tolerance_rel=0.25)
    np.testing.assert_array_equal(seen["rows"], px.rows)
    np.testing.assert_array_equal(seen["cols"], px.cols)
    np.testing.assert_allclose(seen["points"], pts[px.point_index] + np.float32(0.5 * vs), atol=1e-6)
    # why: a floor sampled at z = +-0.5 mm is two voxel layers unshifted, one layer shifted
    floor = np.array([[x, y, z] for x in (0.1, 0.3) for y in (0.1, 0.3) for z in (-5e-4, 5e-4)],
                     dtype=np.float32)
    layers = lambda p: torch.unique(voxelize_coordinates(torch.from_numpy(p), vs)[0][:, 3]).numel()  # noqa: E731
    assert layers(floor) == 2 and layers(floor + np.float32(0.5 * vs)) == 1
