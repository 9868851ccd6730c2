"""XMask3D assembled (reference-notes §1, ``models/xmask3d.py`` ``XMASK3d``).

One sample is an RGB image plus the scene points visible in it, with their pixels (§1.0):

    points --Branch3D--> pure-3D features (N, E), prefix (B, E), p(base) (N,)
    image, prefix --MaskBranch--> masks (B, Q, S/4, S/4), mask embeddings (B, Q, E)
    masks at the points' pixels --panoptic clean-up--> one mask (or none) per point (§1.8)
    [mask embedding, 3D feature] --FeatureFusion--> fused features (covered points, §1.9)
    fused / pure-3D features x text --cosine logits--> point classes (§1.11)

:meth:`XMask3D.forward` is the training pass on a :class:`TrainBatch` of views and returns the
:class:`~xmask3d_ros.model.losses.CriterionInputs` of every loss (§1.14); :meth:`XMask3D.losses`
weights them. :meth:`XMask3D.infer` runs one keyframe and returns a :class:`KeyframeOutput`:
fused features for the map, the final masks with their MaskCLIP embeddings and, given a
:class:`Vocabulary`, per-point labels from the geometric ensemble (§1.12) and the base/novel
gating (§1.10). :meth:`XMask3D.infer_frame` does the same from a posed RGB-D frame and map
points (the reference visibility test picks the points and their pixels, §1.7).

Frozen parts (SD UNet/VAE, CLIP) are listed in :attr:`XMask3D.FROZEN_PREFIXES`: they never
require grad, stay in eval mode and stay out of checkpoints (as the reference).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.model.branch3d import Branch3D, colors_to_features
from xmask3d_ros.model.clip import ClipModel
from xmask3d_ros.model.fusion import FeatureFusion
from xmask3d_ros.model.heads import cosine_logits, ensemble_log_scores, gate_probabilities
from xmask3d_ros.model.losses import (
    Criterion,
    CriterionInputs,
    MaskContrastView,
    SetPrediction,
    mask_confidence,
)
from xmask3d_ros.model.mask_branch import MaskBranch
from xmask3d_ros.model.matcher import SetTarget
from xmask3d_ros.model.projection import (
    panoptic_cleanup,
    point_mask_features,
    resize_masks,
    to_mask_grid,
    visible_point_pixels,
)

__all__ = [
    "STAGES",
    "KeyframeOutput",
    "TrainBatch",
    "TrainOutput",
    "Vocabulary",
    "XMask3D",
    "semantic_set_target",
]

STAGES = ("3d", "2d", "clip", "fusion")  # keys of the inference timings


@dataclass(frozen=True)
class Vocabulary:
    """Class names to classify into, each flagged base (seen in training) or novel."""

    names: tuple[str, ...]
    base: tuple[bool, ...]  # True = base class (the binary head's "base" group)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "base", tuple(bool(b) for b in self.base))
        if len(self.names) != len(self.base):
            raise ValueError(f"{len(self.names)} names but {len(self.base)} base flags")
        if not self.names:
            raise ValueError("a vocabulary needs at least one class name")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names in {self.names}")

    @classmethod
    def from_names(
        cls, names: Sequence[str], base_names: Sequence[str] | None = None
    ) -> Vocabulary:
        """``base_names`` None: every class counts as base (gating then has no effect)."""
        base = set(names if base_names is None else base_names)
        return cls(tuple(names), tuple(n in base for n in names))

    def base_mask(self, device: torch.device | str | None = None) -> Tensor:
        return torch.tensor(self.base, dtype=torch.bool, device=device)


@dataclass
class TrainBatch:
    """B views of one training step; point tensors concatenate the views' visible points."""

    images: Tensor  # (B, 3, H, W) float RGB in [0, 1]
    points: Tensor  # (N, 3) float metres (any frame; voxelised as given)
    colors: Tensor  # (N, 3) uint8 RGB, or float in [0, 1]
    view: Tensor  # (N,) int64 view of each point, in [0, B)
    rows: Tensor  # (N,) int64 pixel row of each point in its view's image
    cols: Tensor  # (N,) int64 pixel column
    labels_3d: Tensor  # (N,) int64 base-class index in [0, C); anything else is ignored by CE
    binary_labels: Tensor  # (N,) 1 = base, 0 = novel, other = ignored
    set_targets: Sequence[SetTarget]  # per view: 2D semantic masks (see semantic_set_target)
    captions: Tensor | None = None  # (B, E) CLIP text embeddings of the view captions


@dataclass
class TrainOutput:
    """The training pass: loss inputs plus what a caller may want to log."""

    criterion_inputs: CriterionInputs
    feat_3d: Tensor  # (N, E)
    fused: Tensor  # (N, E)
    covered: Tensor  # (N,) bool: points inside a final mask
    prefix: Tensor  # (B, E)


@dataclass(frozen=True)
class KeyframeOutput:
    """One keyframe's inference; point arrays are aligned with ``point_index``.

    Final masks are indexed 0..K-1 (``mask_queries`` gives their decoder query). Tensors stay
    on the model's device, float32.
    """

    point_index: Tensor  # (Nv,) int64 rows of the points given that were processed
    fused: Tensor  # (Nv, E) fused features (pure 3D where not covered): the map's features
    feat_3d: Tensor  # (Nv, E) pure-3D features
    p_base: Tensor | None  # (Nv,) sigmoid of the binary head; None when disabled
    covered: Tensor  # (Nv,) bool: inside a final mask
    point_mask: Tensor  # (Nv,) int64 final-mask index, -1 = none
    mask_pixels: Tensor  # (Hm, Wm) int64 final-mask index per mask-grid pixel, -1 = none
    mask_queries: Tensor  # (K,) int64 decoder query of each final mask
    mask_embed: Tensor  # (K, E) 2D-branch mask embeddings
    mask_clip: Tensor  # (K, E) MaskCLIP embeddings (frozen CLIP)
    mask_scores: Tensor  # (K,) clean-up score (class probability of the mask's label)
    logit_scale: float  # the learnable temperature used for every cosine logit
    image_hw: tuple[int, int]  # (H, W) of the input image
    vocabulary: Vocabulary | None = None
    mask_labels: Tensor | None = None  # (K,) int64 vocabulary index, len(vocabulary) = null
    mask_clip_probs: Tensor | None = None  # (K, C) softmax of the MaskCLIP logits (ensemble)
    point_probs: Tensor | None = None  # (Nv, C) after ensemble and gating
    labels: Tensor | None = None  # (Nv,) int64 argmax of point_probs

    def image_masks(self) -> Tensor:
        """(K, H, W) bool final masks at image resolution (nearest mask-grid cell)."""
        h, w = self.image_hw
        dev = self.mask_pixels.device
        hm, wm = (int(x) for x in self.mask_pixels.shape)
        rows, cols = to_mask_grid(
            torch.arange(h, device=dev), torch.arange(w, device=dev), (h, w), (hm, wm), device=dev
        )
        ids = self.mask_pixels[rows[:, None], cols[None, :]]
        k = torch.arange(self.mask_queries.shape[0], device=dev)
        return ids[None] == k[:, None, None]


def semantic_set_target(labels_2d: Tensor, num_base: int) -> SetTarget:
    """2D targets of one view as the reference builds them (reference-notes §1.6).

    ``labels_2d`` (H, W) int: base-class index in [0, num_base) or anything else. One mask per
    base class present, plus one "other" mask (label ``num_base`` = null) holding every other
    pixel (novel classes and unlabelled), so novel objects are trained into the "other" mask.
    """
    lab = labels_2d.to(torch.int64)
    base = (lab >= 0) & (lab < num_base)
    present = torch.unique(lab[base])
    masks = [lab == c for c in present]
    classes = present.tolist()
    if bool((~base).any()):
        masks.append(~base)
        classes.append(num_base)
    if not masks:
        return SetTarget(torch.zeros(0, dtype=torch.int64), torch.zeros(0, *lab.shape))
    return SetTarget(torch.tensor(classes, dtype=torch.int64), torch.stack(masks).float())


@contextlib.contextmanager
def _stage(timings: dict[str, float] | None, name: str, device: torch.device) -> Iterator[None]:
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class XMask3D(nn.Module):
    """The whole model; build it with :func:`xmask3d_ros.model.build.build_model`."""

    FROZEN_PREFIXES: tuple[str, ...] = tuple(
        f"branch2d.{p}" for p in MaskBranch.FROZEN_PREFIXES
    ) + ("clip.",)
    SPARSE_PREFIXES: tuple[str, ...] = ("branch3d.net3d.", "branch3d.binary_net.")  # lr_3d

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        branch3d: Branch3D,
        branch2d: MaskBranch,
        clip: ClipModel,
        fusion: FeatureFusion,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.branch3d = branch3d
        self.branch2d = branch2d
        self.clip = clip
        self.fusion = fusion
        self.criterion = Criterion(cfg.loss)
        self.embed_dim = int(cfg.clip.embed_dim)
        hm, wm = cfg.mask_generator.mask_shape
        self.mask_shape: tuple[int, int] = (int(hm), int(wm))
        self.build_seed: int | None = None  # set by build_model: seed of the random-init parts

    # ---- bookkeeping ----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.fusion.linear.weight.device

    @classmethod
    def is_frozen(cls, name: str) -> bool:
        """Whether parameter/buffer ``name`` belongs to SD or CLIP (never stepped nor saved)."""
        return name.startswith(cls.FROZEN_PREFIXES)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if not self.is_frozen(name) and p.requires_grad:
                yield name, p

    def frozen_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if self.is_frozen(name):
                yield name, p

    def param_groups(self, lr_3d: float = 1e-3, lr_others: float = 1e-4) -> list[dict[str, Any]]:
        """AdamW groups of the reference (§1.15): both MinkUNets at ``lr_3d``, the rest at
        ``lr_others``; frozen parts are not in any group."""
        sparse: list[nn.Parameter] = []
        others: list[nn.Parameter] = []
        for name, p in self.trainable_named_parameters():
            (sparse if name.startswith(self.SPARSE_PREFIXES) else others).append(p)
        return [{"params": sparse, "lr": lr_3d}, {"params": others, "lr": lr_others}]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a project checkpoint stores: everything but SD and CLIP (buffers included)."""
        return {k: v for k, v in self.state_dict().items() if not self.is_frozen(k)}

    def text_embeddings(self, names: Sequence[str]) -> Tensor:
        """(C, E) CLIP text embeddings of class names (cached by CLIP, reference prompts)."""
        return self.clip.text_embeddings(list(names)).to(self.device)

    def _logit_scale(self) -> Tensor:
        return self.branch2d.mask_decoder.post_mask_embed.scale()

    @property
    def logit_scale(self) -> float:
        """The learned temperature on every cosine logit (point, mask and MaskCLIP scores)."""
        return float(self._logit_scale().detach())

    def _null_embed(self) -> Tensor:
        return self.branch2d.mask_decoder.post_mask_embed.null_embed[0]

    # ---- training -------------------------------------------------------------------------

    def forward(self, batch: TrainBatch, text_embed: Tensor, *, epoch: int = 0) -> TrainOutput:
        """Training pass over ``batch`` with ``text_embed`` (C, E) of the base classes.

        MaskCLIP (for ``loss_3d_contra``) only runs once that loss is switched on at ``epoch``.
        """
        b = batch.images.shape[0]
        c = int(text_embed.shape[0])
        dev = self.device
        text = text_embed.to(dev)
        view = batch.view.to(dev, torch.int64)
        out3 = self.branch3d(
            batch.points.to(dev), colors_to_features(batch.colors.to(dev)), view, num_views=b
        )
        images = batch.images.to(dev, torch.float32)
        out2 = self.branch2d(images, out3.prefix)
        pme = self.branch2d.mask_decoder.post_mask_embed
        logits = pme.class_logits(out2.mask_embed, text)  # (B, Q, C + 1), null last
        aux = [SetPrediction(pme.class_logits(a.mask_embed, text), a.pred_masks) for a in out2.aux]
        image_hw = (int(images.shape[-2]), int(images.shape[-1]))
        rows_m, cols_m = to_mask_grid(batch.rows, batch.cols, image_hw, self.mask_shape, device=dev)
        with torch.no_grad():
            masks = resize_masks(out2.pred_masks.detach(), self.mask_shape)  # (B, Q, Hm, Wm)
        contra_on = self.criterion.weights(epoch)["loss_3d_contra"] > 0
        clip_embed = (
            self.clip.mask_embeddings(images, out2.pred_masks.detach()) if contra_on else None
        )
        binary_labels = batch.binary_labels.to(dev)
        feat_2d = out3.feat_3d.new_zeros(out3.feat_3d.shape)
        covered = torch.zeros(view.shape[0], dtype=torch.bool, device=dev)
        views = [torch.nonzero(view == i, as_tuple=True)[0] for i in range(b)]
        contrast: list[MaskContrastView] = []
        for i, idx in enumerate(views):
            # training path of §1.8: the clean-up without the binary gating
            pan = panoptic_cleanup(
                masks[i], logits[i], rows_m[idx], cols_m[idx],
                mask_threshold=self.cfg.mask_generator.mask_threshold,
                keep_score=self.cfg.ensemble.mask_keep_score,
            )
            f2d, cov = point_mask_features(pan.point_ids, out2.mask_embed[i])
            feat_2d = feat_2d.index_put((idx,), f2d)
            covered[idx] = cov
            if clip_embed is not None:
                contrast.append(MaskContrastView(
                    point_mask_logits=masks[i][:, rows_m[idx], cols_m[idx]],
                    confidence=mask_confidence(out2.pred_masks[i]),
                    clip_embed=clip_embed[i],
                    feat_3d=out3.feat_3d[idx],
                    binary_labels=binary_labels[idx],
                ))
        fused = self.fusion(feat_2d, out3.feat_3d, covered)
        scale, null = out2.logit_scale, self._null_embed()
        labels = batch.labels_3d.to(dev, torch.int64)
        labels = torch.where((labels >= 0) & (labels < c), labels, torch.full_like(labels, c))
        inputs = CriterionInputs(
            set_pred=SetPrediction(logits, out2.pred_masks),
            set_aux=aux,
            set_targets=list(batch.set_targets),
            fused_logits=cosine_logits(fused, text, scale, null),
            pure_logits=cosine_logits(out3.feat_3d, text, scale, null),
            labels_3d=labels,
            ignore_index=c,  # the null column: novel and unlabelled points (reference)
            contrast_views=contrast,
            captions=None if batch.captions is None else batch.captions.to(dev),
            caption_fused=[fused[idx] for idx in views],
            caption_3d=[out3.feat_3d[idx] for idx in views],
            caption_2d=[feat_2d[idx][covered[idx]] for idx in views],
            binary_logits=out3.binary_logits,
            binary_labels=binary_labels if out3.binary_logits is not None else None,
        )
        return TrainOutput(inputs, out3.feat_3d, fused, covered, out3.prefix)

    def losses(
        self, out: TrainOutput, *, epoch: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Weighted losses (reference names); their sum is the training loss."""
        return self.criterion(out.criterion_inputs, epoch=epoch, generator=generator)

    # ---- inference ------------------------------------------------------------------------

    @torch.no_grad()
    def infer(
        self,
        image: Tensor | npt.NDArray[np.uint8],
        points: Tensor | npt.ArrayLike,
        colors: Tensor | npt.ArrayLike,
        rows: Tensor | npt.ArrayLike,
        cols: Tensor | npt.ArrayLike,
        *,
        vocabulary: Vocabulary | None = None,
        timings: dict[str, float] | None = None,
    ) -> KeyframeOutput:
        """One view: ``image`` (H, W, 3) uint8 or (3, H, W) float in [0, 1]; ``points`` (N, 3)
        with ``colors`` (N, 3) (uint8 or [0, 1]) and their pixels ``rows``/``cols`` (N,).

        Without a vocabulary the clean-up is class-agnostic (every mask scores 1) and no labels
        are produced; with one, masks and points are gated and labelled (§1.8, §1.10, §1.12).
        ``timings`` (if given) accumulates seconds per stage in :data:`STAGES`.
        """
        dev = self.device
        img = _image_tensor(image).to(dev)
        h, w = int(img.shape[-2]), int(img.shape[-1])
        pts = torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor) else points)
        col = torch.as_tensor(np.asarray(colors) if not isinstance(colors, Tensor) else colors)
        n = int(pts.shape[0]) if pts.ndim == 2 else -1
        if n <= 0 or pts.shape[1] != 3 or col.shape != (n, 3):
            raise ValueError(
                f"points must be (N, 3) with N > 0 and colors (N, 3), got {tuple(pts.shape)} "
                f"and {tuple(col.shape)}"
            )
        if np.shape(rows) != (n,) or np.shape(cols) != (n,):
            raise ValueError(
                f"rows/cols must be ({n},) like the points, got {np.shape(rows)}, {np.shape(cols)}"
            )
        with _stage(timings, "3d", dev):
            out3 = self.branch3d(pts.to(dev, torch.float32), colors_to_features(col.to(dev)))
            p_base = None if out3.binary_logits is None else out3.binary_logits.float().sigmoid()
        with _stage(timings, "2d", dev), self._autocast():
            out2 = self.branch2d(img, out3.prefix)
        with _stage(timings, "clip", dev):
            text = None if vocabulary is None else self.text_embeddings(vocabulary.names)
        with _stage(timings, "fusion", dev):
            q = out2.mask_embed.shape[1]
            mask_embed = out2.mask_embed[0].float()
            rows_m, cols_m = to_mask_grid(rows, cols, (h, w), self.mask_shape, device=dev)
            masks = resize_masks(out2.pred_masks[0].float(), self.mask_shape)
            g = self.cfg.binary
            gating = g.gating if (g.enabled and vocabulary is not None) else "off"
            if text is not None:
                class_logits = self.branch2d.mask_decoder.post_mask_embed.class_logits(
                    mask_embed, text
                )
            else:
                class_logits = mask_embed.new_zeros(q, 1)  # class-agnostic: every score is 1
            pan = panoptic_cleanup(
                masks, class_logits, rows_m, cols_m,
                p_base=p_base,
                base_classes=None if vocabulary is None else vocabulary.base_mask(dev),
                gating=gating,
                gate_threshold=g.mask_threshold,
                mask_threshold=self.cfg.mask_generator.mask_threshold,
                keep_score=self.cfg.ensemble.mask_keep_score,
            )
            kept = pan.kept
            lut = torch.full((q + 1,), -1, dtype=torch.int64, device=dev)  # slot q: "none"
            lut[kept] = torch.arange(kept.shape[0], device=dev)
            point_mask = lut[torch.where(pan.point_ids >= 0, pan.point_ids, q)]
            mask_pixels = lut[torch.where(pan.pixel_ids >= 0, pan.pixel_ids, q)]
            covered = pan.point_ids >= 0
            # a gather (rows of uncovered points are ignored by the fusion): cheaper than the
            # zero-filled scatter of point_mask_features, same fused result
            feat_2d = mask_embed.index_select(0, pan.point_ids.clamp_min(0))
            feat_3d = out3.feat_3d.float()
            fused = self.fusion(feat_2d, feat_3d, covered)
        with _stage(timings, "clip", dev), self._autocast():
            mask_clip = self.clip.mask_embeddings(img, out2.pred_masks[:, kept].float())[0].float()
        scale = self._logit_scale()
        result = dict(
            point_index=torch.arange(pts.shape[0], device=dev),
            fused=fused, feat_3d=feat_3d, p_base=p_base, covered=covered,
            point_mask=point_mask, mask_pixels=mask_pixels, mask_queries=kept,
            mask_embed=mask_embed[kept], mask_clip=mask_clip, mask_scores=pan.scores[kept],
            logit_scale=float(scale), image_hw=(h, w),
        )
        if vocabulary is not None and text is not None:
            with _stage(timings, "fusion", dev):
                result.update(self.classify_points(fused, mask_clip, point_mask, p_base, text,
                                             vocabulary, scale))
                result["mask_labels"] = pan.labels[kept]
        return KeyframeOutput(**result)

    def classify_points(
        self,
        fused: Tensor,
        mask_clip: Tensor,
        point_mask: Tensor,
        p_base: Tensor | None,
        text: Tensor,
        vocabulary: Vocabulary,
        scale: Tensor | float,
    ) -> dict[str, Any]:
        """Point labels: geometric ensemble with MaskCLIP (§1.12), then base/novel gating.

        ``point_mask`` -1 everywhere (or ``ensemble.enabled`` False) leaves the features'
        own probabilities; the evaluator's pure-3D ablation passes ``feat_3d`` that way."""
        base = vocabulary.base_mask(fused.device)
        fused_logits = cosine_logits(fused, text, scale)
        clip_logits = cosine_logits(mask_clip, text, scale)  # the model's scale, as reference
        e = self.cfg.ensemble
        if e.enabled:
            log_scores = ensemble_log_scores(
                fused_logits, clip_logits, point_mask, base,
                base_ratio=e.base_ratio, novel_ratio=e.novel_ratio,
            )
        else:
            log_scores = torch.log_softmax(fused_logits, dim=-1)
        g = self.cfg.binary
        if p_base is not None and g.enabled:
            probs = gate_probabilities(log_scores, p_base, base, g.gating, threshold=g.threshold)
        else:
            probs = torch.softmax(log_scores, dim=-1)
        return dict(
            vocabulary=vocabulary,
            mask_clip_probs=torch.softmax(clip_logits, dim=-1),
            point_probs=probs,
            labels=probs.argmax(dim=-1),
        )

    def infer_frame(
        self,
        posed: PosedFrame,
        points_map: npt.ArrayLike,
        *,
        vocabulary: Vocabulary | None = None,
        border_px: int = 10,
        depth_tolerance_rel: float = 0.25,
        timings: dict[str, float] | None = None,
    ) -> KeyframeOutput | None:
        """One posed RGB-D keyframe and map points (M, 3) in the map frame.

        The reference visibility test (``border_px``, ``depth_tolerance_rel``; §1.7) selects
        the points and their pixels; a point's colour is its pixel's. The 3D branch sees the
        points shifted by ``runtime.frame_voxel_shift`` voxels (see that parameter). ``point_index`` of the
        result indexes ``points_map``. None when no point is visible.
        """
        frame = posed.frame
        pts = np.asarray(points_map, dtype=np.float32)
        px = visible_point_pixels(
            pts, frame.camera, frame.depth_m, T_world_cam=posed.T_map_cam,
            border_px=border_px, depth_tolerance_rel=depth_tolerance_rel,
        )
        if len(px) == 0:
            return None
        colors = frame.rgb[px.rows, px.cols]
        # pixels come from the true positions; only the 3D branch sees the shifted ones
        shift = np.float32(self.cfg.runtime.frame_voxel_shift * self.cfg.backbone3d.voxel_size_m)
        out = self.infer(
            frame.rgb, pts[px.point_index] + shift, colors, px.rows, px.cols,
            vocabulary=vocabulary, timings=timings,
        )
        index = torch.as_tensor(px.point_index, device=out.point_index.device)
        return dataclasses.replace(out, point_index=index)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """fp16 autocast for the dense 2D parts when ``runtime.dtype`` is float16 on CUDA."""
        dev = self.device
        if self.cfg.runtime.dtype == "float16" and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train(self, mode: bool = True) -> XMask3D:
        super().train(mode)
        self.clip.train(False)  # frozen parts stay in eval mode (their own overrides too)
        return self


def _image_tensor(image: Tensor | npt.NDArray[np.uint8]) -> Tensor:
    """(H, W, 3) uint8 / (3, H, W) or (1, 3, H, W) float [0, 1] -> (1, 3, H, W) float32."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        return t[None]
    t = image if image.ndim == 4 else image[None]
    if t.ndim != 4 or t.shape[:2] != (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    return t.float() / 255.0 if image.dtype == torch.uint8 else t.float()
