"""XMask3D assembled, tiny config on a synthetic-room keyframe: the training pass and its losses,
gradients (trainable vs frozen, by name), inference outputs, the ensemble + gating rule against
an independent re-computation, and determinism."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from xmask3d_ros.config import load_config
from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.data.classes import IGNORE_INDEX, SYNTHETIC_CLASSES, raw_to_synthetic
from xmask3d_ros.data.synthetic import default_intrinsics, generate_room, render_frame
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.model.build import build_model
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.projection import visible_point_pixels
from xmask3d_ros.model.xmask3d import TrainBatch, Vocabulary, XMask3D, semantic_set_target

ensure_torchvision_importable()
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

SIZE = 128  # keyframe width = height (pixels)
BASE = SYNTHETIC_CLASSES[:15]  # a B15 partition of the synthetic vocabulary
# synthetic index -> compact base index (IGNORE_INDEX = not a base class)
BASE_LUT = np.array(
    [BASE.index(n) if n in BASE else IGNORE_INDEX for n in SYNTHETIC_CLASSES] + [IGNORE_INDEX] * 229
)
LOSS_FAMILIES = {
    "loss_ce", "loss_mask", "loss_dice", "loss_3d", "loss_3d_pure", "loss_3d_contra",
    "loss_explicit_contra", "loss_explicit_contra_3d", "loss_explicit_contra_2d_pre",
    "loss_binary",
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a small shared CPU, extra OpenMP threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(*overrides: str) -> ModelConfig:
    # fewer sampled mask points than the paper (12544) keep the test fast; same code path
    return load_config(
        ModelConfig, resolve_model_config("tiny"), ("loss.num_points=512", *overrides)
    )


@dataclass(frozen=True)
class View:
    posed: PosedFrame
    label: np.ndarray  # (H, W) raw class ids
    points: np.array  # (N, 3) float32 world points from the depth image (more than visible)


def render_view(t_s: float, seed: int = 3) -> View:
    room = generate_room(seed)
    K = default_intrinsics(SIZE, SIZE)
    T = room.trajectory.poses([t_s])[0]
    f = render_frame(room, T, K, SIZE, SIZE)
    cam = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], SIZE, SIZE)
    pts_cam, _ = cam.backproject(f.depth_m)
    pose = SE3.from_matrix(T)
    posed = PosedFrame(RgbdFrame(f.rgb, f.depth_m, cam, int(t_s * 1e9), "cam_optical"), pose)
    return View(posed, f.label, pose.apply(pts_cam).astype(np.float32))


@pytest.fixture(scope="module")
def views() -> list[View]:
    return [render_view(1.0), render_view(4.0)]


def make_batch(views: list[View], embed_dim: int) -> TrainBatch:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("p", "c", "v", "r", "q", "l", "b")}
    images, targets = [], []
    for i, v in enumerate(views):
        f = v.posed.frame
        px = visible_point_pixels(v.points, f.camera, f.depth_m, T_world_cam=v.posed.T_map_cam)
        syn = raw_to_synthetic(v.label).astype(np.int64)  # (H, W) vocabulary index, 255
        base2d = BASE_LUT[syn]
        syn_p = syn[px.rows, px.cols]
        base_p = BASE_LUT[syn_p]
        binary = np.where(syn_p == IGNORE_INDEX, IGNORE_INDEX, (base_p != IGNORE_INDEX).astype(int))
        for key, value in zip("pcvrqlb", (v.points[px.point_index], f.rgb[px.rows, px.cols],
                                           np.full(len(px), i), px.rows, px.cols, base_p, binary)):
            parts[key].append(value)
        images.append(torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255.0)
        targets.append(semantic_set_target(torch.from_numpy(base2d), len(BASE)))
    cat = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    g = torch.Generator().manual_seed(7)
    return TrainBatch(
        images=torch.stack(images), points=cat["p"], colors=cat["c"], view=cat["v"].long(),
        rows=cat["r"].long(), cols=cat["q"].long(), labels_3d=cat["l"].long(),
        binary_labels=cat["b"].long(), set_targets=targets,
        captions=torch.randn(len(views), embed_dim, generator=g),
    )


@pytest.fixture(scope="module")
def model() -> XMask3D:
    return build_model(tiny_cfg()).eval()


def test_training_pass_losses_and_gradients(views: list[View]) -> None:
    cfg = tiny_cfg("loss.mask_contra_start_epoch=0")
    model = build_model(cfg).train()
    with torch.no_grad():  # gates as after some training: the prefix path carries gradient too
        model.branch2d.captioner.alpha_cond.fill_(0.1)
        model.branch2d.captioner.alpha_cond_time_embed.fill_(0.1)
    batch = make_batch(views, cfg.clip.embed_dim)
    assert batch.binary_labels.eq(0).any() and batch.binary_labels.eq(1).any()  # base and novel
    text = model.text_embeddings(BASE)
    out = model(batch, text, epoch=0)
    losses = model.losses(out, epoch=0, generator=torch.Generator().manual_seed(0))

    dec = cfg.mask_generator.dec_layers
    aux = {f"{k}_{i}" for k in ("loss_ce", "loss_mask", "loss_dice") for i in range(dec)}
    assert set(losses) == LOSS_FAMILIES | aux
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 1e-4, (name, value.item())
    assert out.covered.any() and not out.covered.all()  # both fusion paths are exercised
    # fused = pure 3D where no mask covers a point (§1.9)
    assert torch.equal(out.fused[~out.covered], out.feat_3d[~out.covered])

    total = torch.stack(list(losses.values())).sum()
    total.backward()
    trainable = dict(model.trainable_named_parameters())
    frozen = dict(model.frozen_named_parameters())
    assert {n.split(".")[0] for n in trainable} == {"branch3d", "branch2d", "fusion"}
    assert {".".join(n.split(".")[:3]) for n in frozen if n.startswith("branch2d")} == {
        "branch2d.extractor.unet", "branch2d.extractor.vae"
    }
    assert any(n.startswith("clip.clip.visual.") for n in frozen)
    assert not any(model.is_frozen(n) for n in trainable)
    missing = [n for n, p in trainable.items()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    for name in (
        "branch3d.net3d.conv0p1s1.kernel",
        "branch3d.net3d.final.kernel",
        "branch3d.decoder.weight",
        "branch3d.point2text_adapter.weight",  # through the captioner and the frozen UNet
        "branch3d.binary_net.conv0p1s1.kernel",
        "branch3d.binary_head.2.weight",
        "branch2d.captioner.alpha_cond",
        "branch2d.captioner.clip_project.linear.weight",
        "branch2d.extractor.feature_projections.0.0.conv1.weight",
        "branch2d.pixel_decoder.mask_features.weight",
        "branch2d.mask_decoder.query_feat.weight",
        "branch2d.mask_decoder.post_mask_embed.logit_scale",
        "branch2d.mask_decoder.post_mask_embed.null_embed",
        "fusion.linear.weight",
    ):
        assert trainable[name].grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in frozen.values())
    assert not model.clip.training and not model.branch2d.extractor.unet.training

    groups = model.param_groups(lr_3d=1e-3, lr_others=1e-4)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in trainable.values()}
    opt = torch.optim.AdamW(groups)
    every = max(1, len(frozen) // 8)
    probe_frozen = {n: frozen[n].detach().clone() for n in list(frozen)[::every]}
    probe_train = {n: trainable[n].detach().clone() for n in ("fusion.linear.weight",
                                                             "branch3d.net3d.final.kernel")}
    opt.step()
    assert all(torch.equal(v, frozen[n]) for n, v in probe_frozen.items())
    assert all(not torch.equal(v, trainable[n]) for n, v in probe_train.items())


def test_mask_contrast_waits_for_its_epoch(views: list[View], model: XMask3D,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def no_maskclip(*_a: object, **_k: object) -> None:
        raise AssertionError("MaskCLIP ran although loss_3d_contra is off")

    monkeypatch.setattr(model.clip, "mask_embeddings", no_maskclip)
    start = model.cfg.loss.mask_contra_start_epoch
    with torch.no_grad():
        out = model.train()(make_batch(views[:1], model.embed_dim), model.text_embeddings(BASE),
                            epoch=start - 1)
        model.eval()
        losses = model.losses(out, epoch=start - 1)
    assert "loss_3d_contra" not in losses and math.isfinite(float(losses["loss_3d"]))


def test_inference_outputs(views: list[View], model: XMask3D) -> None:
    v = views[0]
    vocab = Vocabulary.from_names(SYNTHETIC_CLASSES, BASE)
    # the view's points plus points behind the camera (never visible)
    behind = v.posed.T_map_cam.apply(np.array([[0.0, 0.0, -1.0], [0.1, 0.2, -2.0]]))
    points = np.concatenate([v.points[::2], behind.astype(np.float32)])
    out = model.infer_frame(v.posed, points, vocabulary=vocab)
    assert out is not None
    f = v.posed.frame
    px = visible_point_pixels(points, f.camera, f.depth_m, T_world_cam=v.posed.T_map_cam)
    assert np.array_equal(out.point_index.numpy(), px.point_index)  # exactly the visible points
    n, e, k = len(px), model.embed_dim, out.mask_queries.shape[0]
    assert 5_000 <= n <= 20_000
    for t, shape in ((out.fused, (n, e)), (out.feat_3d, (n, e)), (out.mask_clip, (k, e)),
                     (out.mask_embed, (k, e)), (out.point_probs, (n, len(vocab.names)))):
        assert t.shape == shape and t.dtype == torch.float32 and torch.isfinite(t).all()
    assert out.p_base is not None and ((out.p_base >= 0) & (out.p_base <= 1)).all()
    assert k >= 1 and out.mask_pixels.shape == tuple(model.cfg.mask_generator.mask_shape)
    assert torch.equal(out.covered, out.point_mask >= 0)
    assert torch.equal(out.fused[~out.covered], out.feat_3d[~out.covered])
    assert not torch.allclose(out.fused[out.covered], out.feat_3d[out.covered])
    masks = out.image_masks()
    assert masks.shape == (k, SIZE, SIZE) and masks.sum(0).max() <= 1  # mutually exclusive
    assert torch.allclose(out.point_probs.sum(-1), torch.ones(n), atol=1e-5)
    assert torch.equal(out.labels, out.point_probs.argmax(-1))
    # hard gating (reference): p(base) > 0.5 -> a base class, else a novel one
    is_base = vocab.base_mask()[out.labels]
    assert torch.equal(is_base, out.p_base > model.cfg.binary.threshold)

    again = model.infer_frame(v.posed, points, vocabulary=vocab)
    assert again is not None
    for name in ("fused", "feat_3d", "p_base", "mask_pixels", "mask_clip", "point_probs"):
        assert torch.equal(getattr(out, name), getattr(again, name)), name


def _reference_labels(out, vocab: Vocabulary, text: torch.Tensor, cfg: ModelConfig) -> np.ndarray:
    """§1.12 + §1.10 written out in numpy from the formulas (not from the model's helpers)."""
    def softmax_log(x: np.ndarray) -> np.ndarray:
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T

    t, s = text.double().numpy(), out.logit_scale
    log_f = softmax_log(s * cos(out.fused.double().numpy(), t))
    log_c = softmax_log(s * cos(out.mask_clip.double().numpy(), t))
    base = np.array(vocab.base)
    r = np.where(base, cfg.ensemble.base_ratio, cfg.ensemble.novel_ratio)
    ids = out.point_mask.numpy()
    score = log_f.copy()
    cov = ids >= 0
    score[cov] = r * log_f[cov] + (1 - r) * log_c[ids[cov]]
    is_base_pt = out.p_base.double().numpy() > cfg.binary.threshold
    allowed = np.where(is_base_pt[:, None], base[None, :], ~base[None, :])
    return np.where(allowed, score, -np.inf).argmax(1)


def test_labels_follow_the_ensemble_and_gating_formula(views: list[View], model: XMask3D) -> None:
    vocab = Vocabulary.from_names(SYNTHETIC_CLASSES, BASE)
    out = model.infer_frame(views[1].posed, views[1].points[::3], vocabulary=vocab)
    assert out is not None and out.covered.any() and (~out.covered).any()
    want = _reference_labels(out, vocab, model.text_embeddings(vocab.names), model.cfg)
    agree = (out.labels.numpy() == want).mean()
    assert agree > 0.999, agree  # float32 vs float64 ties aside


def test_inference_without_vocabulary_is_class_agnostic(views: list[View], model: XMask3D) -> None:
    out = model.infer_frame(views[0].posed, views[0].points[::4])
    assert out is not None and out.labels is None and out.point_probs is None
    assert out.mask_queries.numel() >= 1
    assert torch.allclose(out.mask_scores, torch.ones_like(out.mask_scores))
    # nothing visible: no result
    far = views[0].posed.T_map_cam.apply(np.array([[0.0, 0.0, -3.0]])).astype(np.float32)
    assert model.infer_frame(views[0].posed, far) is None
    rgb = views[0].posed.frame.rgb
    with pytest.raises(ValueError, match=r"rows/cols must be \(2,\)"):
        model.infer(rgb, np.zeros((2, 3), np.float32), np.zeros((2, 3), np.uint8), [1], [1])
    with pytest.raises(ValueError, match="N > 0"):
        model.infer(rgb, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), [], [])


def test_semantic_set_target_by_hand() -> None:
    labels = torch.tensor([[0, 0, 2], [255, 2, 7]])  # base classes 0..2 of 3, 7 novel, 255 none
    t = semantic_set_target(labels, num_base=3)
    assert t.labels.tolist() == [0, 2, 3]
    assert t.masks.tolist() == [
        [[1, 1, 0], [0, 0, 0]],
        [[0, 0, 1], [0, 1, 0]],
        [[0, 0, 0], [1, 0, 1]],
    ]
    assert semantic_set_target(torch.zeros(2, 2, dtype=torch.long), 3).labels.tolist() == [0]


def test_vocabulary_checks() -> None:
    v = Vocabulary.from_names(["chair", "lamp"], ["chair"])
    assert v.base == (True, False)
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(("a", "a"), (True, True))
    with pytest.raises(ValueError, match="2 names but 1 base flags"):
        Vocabulary(("a", "b"), (True,))
