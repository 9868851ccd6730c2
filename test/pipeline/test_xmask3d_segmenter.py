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
    cov, feats, weights = check_segmentation(res, pts.shape[0], d)
    # independent visibility: projection inside the image and depth within the loose tolerance
    vis, _, _ = posed.frame.camera.visible_pixels(
        posed.T_map_cam.inverse().apply(pts), posed.frame.depth_m, border_px=0,
        depth_tolerance_rel=1.0,
    )
    assert np.array_equal(res.covered, np.flatnonzero(vis))
    assert 1000 < res.covered.size < pts.shape[0] - 2  # the two points behind are not there
    assert res.features.dtype == np.float32 and res.features.shape == (res.covered.size, d)
    assert np.isfinite(res.features).all() and weights is None
    assert res.masks is not None and res.mask_embeddings is not None
    k = res.masks.shape[0]
    assert k >= 1 and res.masks.shape == (k, H, W) and res.masks.dtype == np.bool_
    assert res.masks.sum(0).max() <= 1
    assert res.mask_embeddings.shape == (k, d) and res.mask_embeddings.dtype == np.float32
    out = segmenter.last_output
    assert out is not None and out.covered.any()
    assert set(segmenter.last_timings) == {"3d", "2d", "clip", "fusion"}
    # points inside a mask carry the unit fused feature blended with their mask's unit MaskCLIP
    # embedding (ensemble.map_clip_ratio), the others their unit pure-3D feature
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cov_pts = out.covered.numpy()
    f3 = unit(out.feat_3d.numpy())
    np.testing.assert_allclose(res.features[~cov_pts], f3[~cov_pts], rtol=1e-5, atol=1e-6)
    r = segmenter.model.cfg.ensemble.map_clip_ratio
    assert 0 < r < 1
    clip = unit(out.mask_clip.numpy())[out.point_mask.numpy()[cov_pts]]
    want = (1 - r) * unit(out.fused.numpy()[cov_pts]) + r * clip
    np.testing.assert_allclose(res.features[cov_pts], want, rtol=1e-5, atol=1e-6)


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
