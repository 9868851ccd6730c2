"""The pipeline's ``Segmenter`` and ``TextEncoder`` implemented with XMask3D and its CLIP.

    seg = XMask3DSegmenter.from_config(load_config(ModelConfig, "config/model/tiny.yaml"))
    pipe = PerceptionPipeline(cfg, seg, ClipTextEncoder(seg.model))

``XMask3DSegmenter.segment`` runs :meth:`XMask3D.infer_frame` on one keyframe: every visible map
point gets its fused feature (2D mask feature fused with the 3D feature where a final mask covers
it, the pure-3D feature elsewhere, reference-notes §1.9), in CLIP text space, its p(base) and
the index of the final mask covering it; the final masks come back as image-resolution booleans
with their MaskCLIP embeddings. ``ClipTextEncoder`` embeds class names with the same (frozen)
CLIP. :attr:`XMask3DSegmenter.class_rule` tells the query engine how the model classifies
(ensemble ratios, gating, temperature, trained classes), so a map query labels a voxel the way
the model labels a point.

The mask clean-up needs class scores (§1.8). With a :class:`~xmask3d_ros.model.xmask3d.Vocabulary`
(``vocabulary=`` or :meth:`XMask3DSegmenter.set_vocabulary`) it uses them, with the base/novel
gating of the config, as the reference; without one it is class-agnostic (every mask scores 1),
so the map's features do not depend on a vocabulary that may change at run time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from xmask3d_ros.config.model import ModelConfig, RuntimeCfg
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.model.build import build_model
from xmask3d_ros.model.clip import ClipModel
from xmask3d_ros.model.xmask3d import KeyframeOutput, Vocabulary, XMask3D
from xmask3d_ros.pipeline.class_rule import ClassRule
from xmask3d_ros.pipeline.segmenter import SegmentationResult

__all__ = ["ClipTextEncoder", "XMask3DSegmenter", "load_model", "resolve_device"]


def load_model(spec: str, overrides: Sequence[str] = ()) -> tuple[XMask3D, str]:
    """``node.model_config`` -> (model, one line saying what its weights are).

    ``spec``: ``demo`` (the committed demo checkpoint), a checkpoint folder (``config.yaml`` +
    ``model.safetensors``, as written by the trainer), a shipped model config name (``tiny``,
    ``paper``) or a model YAML path. ``overrides`` (``key=value``) adapt the config.
    """
    from pathlib import Path

    from xmask3d_ros.config.paths import demo_checkpoint_dir, resolve_model_config
    from xmask3d_ros.config.schema import load_config
    from xmask3d_ros.model.build import CONFIG_FILE, from_pretrained

    folder = demo_checkpoint_dir() if spec == "demo" else Path(spec).expanduser()
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        model = from_pretrained(folder, overrides)
        return model, f"checkpoint {folder} ({model.cfg.name})"
    cfg = load_config(ModelConfig, resolve_model_config(spec), list(overrides))
    model = build_model(cfg)
    if cfg.allow_random_init and not cfg.weights_path:
        return model, (f"model config '{spec}' with RANDOMLY INITIALISED weights: the map is "
                       "built but its labels are meaningless (model_config:=demo is trained)")
    return model, f"model config '{spec}' (weights {cfg.weights_path or 'from its paths'})"


def resolve_device(runtime: RuntimeCfg) -> torch.device:
    """``runtime.device``: auto = cuda when available, else cpu; cuda without CUDA is an error."""
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.runtime.device: 'cuda', but torch sees no CUDA device")
    return torch.device(runtime.device)


class XMask3DSegmenter:
    """``Segmenter`` protocol: (posed keyframe, visible map points) -> per-point CLIP features.

    ``border_px`` / ``depth_tolerance_rel`` re-run the visibility test to find each point's
    pixel; the defaults only drop points outside the image or far off the depth surface, since
    the pipeline has already applied its own test. The model runs in eval mode under
    ``torch.no_grad``; calls are serialised by a lock (the worker thread and a caller may share
    one instance). ``last_output`` / ``last_timings`` keep the latest keyframe's full result
    (p(base), labels, per-stage seconds) for diagnostics.
    """

    def __init__(
        self,
        model: XMask3D,
        *,
        vocabulary: Vocabulary | None = None,
        device: torch.device | str | None = None,
        border_px: int = 0,
        depth_tolerance_rel: float = 1.0,
    ) -> None:
        if border_px < 0 or not depth_tolerance_rel > 0:
            raise ValueError(
                f"need border_px >= 0 and depth_tolerance_rel > 0, got {border_px}, "
                f"{depth_tolerance_rel}"
            )
        target = resolve_device(model.cfg.runtime) if device is None else torch.device(device)
        self.model = model.to(target).eval()
        self._vocabulary = vocabulary
        self._border = int(border_px)
        self._tol = float(depth_tolerance_rel)
        self._lock = threading.Lock()
        self.calls = 0
        self.last_output: KeyframeOutput | None = None
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_config(
        cls, cfg: ModelConfig, *, vocabulary: Vocabulary | None = None, seed: int | None = 0
    ) -> XMask3DSegmenter:
        """Build the model of ``cfg`` (local weights only) on ``runtime.device``; pair it with
        ``ClipTextEncoder(segmenter.model)``. ``seed``: see :func:`build_model`.

        ``runtime.head_runtime`` other than ``torch`` puts the dense heads on the exported
        graphs / engines of ``runtime.engine_dir``
        (:func:`~xmask3d_ros.export.model_adapter.with_head_runtime`); the runtime checks the
        folder, manifest, config and weights here, so a missing or mismatched export fails at
        start-up, not at the first keyframe.
        """
        return cls.with_runtime(build_model(cfg, seed=seed), vocabulary=vocabulary)

    @classmethod
    def with_runtime(
        cls, model: XMask3D, *, vocabulary: Vocabulary | None = None
    ) -> XMask3DSegmenter:
        """Wrap a built model, with its dense heads on ``runtime.head_runtime`` (see
        :meth:`from_config`)."""
        cfg = model.cfg
        if cfg.runtime.head_runtime != "torch":
            from xmask3d_ros.export.graphs import parts_from_model
            from xmask3d_ros.export.model_adapter import with_head_runtime
            from xmask3d_ros.export.runtime import build_head_runtime

            model = model.to(resolve_device(cfg.runtime)).eval()
            runtime = build_head_runtime(cfg, parts=parts_from_model(model))
            model = with_head_runtime(model, runtime)
        return cls(model, vocabulary=vocabulary)

    @property
    def feature_dim(self) -> int:
        return self.model.embed_dim

    @property
    def class_rule(self) -> ClassRule:
        """The model's classification rule for map queries (see :mod:`pipeline.class_rule`)."""
        cfg = self.model.cfg
        return ClassRule(
            logit_scale=self.model.logit_scale,
            base_names=frozenset(cfg.binary.base_classes),
            ensemble=cfg.ensemble.enabled,
            base_ratio=cfg.ensemble.base_ratio,
            novel_ratio=cfg.ensemble.novel_ratio,
            gating=cfg.binary.gating if cfg.binary.enabled else "off",
            threshold=cfg.binary.threshold,
        )

    @property
    def vocabulary(self) -> Vocabulary | None:
        return self._vocabulary

    def set_vocabulary(self, vocabulary: Vocabulary | None) -> None:
        """Class-aware (reference) mask clean-up with ``vocabulary``; None = class-agnostic."""
        with self._lock:
            self._vocabulary = vocabulary

    def segment(
        self,
        posed: PosedFrame,
        points_map: npt.NDArray[np.float32],
        indices: npt.NDArray[np.int64],
    ) -> SegmentationResult:
        """Fused features for the visible map points of ``posed`` (see the class docstring)."""
        pts = np.asarray(points_map, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points_map must be (M, 3), got {pts.shape}")
        if np.asarray(indices).shape != (pts.shape[0],):
            raise ValueError(f"indices must be ({pts.shape[0]},), got {np.asarray(indices).shape}")
        d = self.feature_dim
        timings: dict[str, float] = {}
        with self._lock:
            self.calls += 1
            out = None
            if pts.shape[0]:
                out = self.model.infer_frame(
                    posed, pts, vocabulary=self._vocabulary, border_px=self._border,
                    depth_tolerance_rel=self._tol, timings=timings,
                )
            self.last_output, self.last_timings = out, timings
        if out is None:
            return SegmentationResult(
                covered=np.empty(0, np.int64), features=np.empty((0, d), np.float32),
                mask_embeddings=np.empty((0, d), np.float32),
                masks=np.zeros((0, posed.frame.height, posed.frame.width), bool),
            )
        return SegmentationResult(
            covered=out.point_index.cpu().numpy().astype(np.int64, copy=False),
            features=out.fused.float().cpu().numpy(),
            weights=None,
            mask_embeddings=out.mask_clip.float().cpu().numpy(),
            masks=out.image_masks().cpu().numpy(),
            point_masks=out.point_mask.cpu().numpy().astype(np.int64, copy=False),
            base_prob=None if out.p_base is None else out.p_base.float().cpu().numpy(),
        )


class ClipTextEncoder:
    """``TextEncoder`` protocol with the model's frozen CLIP (prompt and cache of ``clip.*``)."""

    def __init__(self, clip: ClipModel | XMask3D) -> None:
        self.clip: ClipModel = clip.clip if isinstance(clip, XMask3D) else clip

    @property
    def feature_dim(self) -> int:
        return self.clip.embed_dim

    def encode(self, labels: Sequence[str]) -> npt.NDArray[np.float32]:
        """(L, D) float32 L2-normalised embeddings, one row per label, in order."""
        if not labels:
            return np.empty((0, self.feature_dim), dtype=np.float32)
        emb = self.clip.text_embeddings(list(labels)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out: npt.NDArray[np.float32] = emb.cpu().numpy().astype(np.float32, copy=False)
        return out
