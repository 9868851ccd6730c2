"""Run an :class:`~xmask3d_ros.model.xmask3d.XMask3D` with its dense heads on a ``HeadRuntime``.

``with_head_runtime(model, runtime)`` returns a shallow copy of the model (every parameter and
the sparse 3D networks shared, nothing duplicated) whose dense parts call the runtime:

* ``branch2d`` -> :class:`RuntimeMaskBranch` (captioner, VAE, UNet, projections, pixel and mask
  decoders as graphs; ``mask_decoder`` for class scores and the logit scale stays the model's);
* ``clip`` -> :class:`RuntimeClip` (text encoder and MaskCLIP as graphs, its own text cache);
* ``fusion`` -> :class:`RuntimeFusion`;
* ``branch3d.binary_head`` -> :class:`RuntimeBinaryHead` (the MinkUNet18A before it stays).

So ``XMask3D.infer`` / ``infer_frame`` and the pipeline's ``XMask3DSegmenter`` work unchanged:
``runtime = build_head_runtime(cfg, parts=parts_from_model(model))`` then
``XMask3DSegmenter(with_head_runtime(model, runtime))``.
A ``torch`` runtime returns the model itself. Inference only: the adapters have no backward.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xmask3d_ros.export.runtime import HeadRuntime

__all__ = [
    "RuntimeBinaryHead",
    "RuntimeClip",
    "RuntimeFusion",
    "RuntimeMaskBranch",
    "with_head_runtime",
]

_TEXT_BATCH = 256  # labels per clip_text call (the engines' num_labels profile allows 1024)


class RuntimeMaskBranch(nn.Module):
    """``MaskBranch`` whose forward runs on the runtime (final predictions only, no ``aux``)."""

    def __init__(self, branch: Any, runtime: HeadRuntime) -> None:
        super().__init__()
        self.branch = branch
        self.runtime = runtime
        self.image_size = branch.image_size
        self.mask_shape = branch.mask_shape

    @property
    def mask_decoder(self) -> Any:
        return self.branch.mask_decoder

    def resize_masks(self, mask_logits: Tensor, shape: tuple[int, int] | None = None) -> Tensor:
        return self.branch.resize_masks(mask_logits, shape)  # type: ignore[no-any-return]

    def forward(self, image: Tensor, prefix: Tensor) -> Any:
        from xmask3d_ros.model.mask_branch import MaskBranchOutput

        out = self.runtime.mask_branch(image, prefix)
        return MaskBranchOutput(
            pred_masks=out.pred_masks, mask_embed=out.mask_embed, aux=(),
            logit_scale=self.branch.mask_decoder.post_mask_embed.scale(),
            mask_features=out.mask_features,
        )


class RuntimeClip(nn.Module):
    """The parts of ``ClipModel`` inference uses, with text and MaskCLIP on the runtime."""

    def __init__(self, clip: Any, runtime: HeadRuntime) -> None:
        super().__init__()
        self.clip_model = clip  # tokenizer, prompt, sizes, the frozen weights (device anchor)
        self.runtime = runtime
        self.tokenizer = clip.tokenizer
        self.embed_dim = int(clip.embed_dim)
        self.image_size = int(clip.image_size)
        self.cache_size = int(clip.cache_size)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.clip_model.device  # type: ignore[no-any-return]

    def prompt(self, label: str) -> str:
        return self.clip_model.prompt(label)  # type: ignore[no-any-return]

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        out = []
        for i in range(0, len(texts), _TEXT_BATCH):
            tokens = self.tokenizer(list(texts[i : i + _TEXT_BATCH])).to(self.device)
            out.append(self.runtime.encode_text(tokens).float())
        return torch.cat(out)

    def text_embeddings(self, labels: Sequence[str]) -> Tensor:
        """(C,) class names -> (C, E), cached per label (LRU) like ``ClipModel``."""
        names = [str(x) for x in labels]
        with self._lock:
            missing = list(dict.fromkeys(x for x in names if x not in self._cache))
        if missing:
            emb = self.encode_text([self.prompt(x) for x in missing])
            with self._lock:
                for name, e in zip(missing, emb, strict=True):
                    self._cache[name] = e
        with self._lock:
            rows = [self._cache[x] for x in names]
            for x in names:
                self._cache.move_to_end(x)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not rows:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.stack(rows)

    def null_embedding(self) -> Tensor:
        return self.encode_text([""])[0]

    @torch.no_grad()
    def mask_embeddings(self, image: Tensor, mask_logits: Tensor) -> Tensor:
        return self.runtime.mask_embeddings(image, mask_logits).float()

    @torch.no_grad()
    def dense_features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.runtime.image_features(image)


class RuntimeFusion(nn.Module):
    """``FeatureFusion`` on the runtime; ``linear`` stays reachable (``XMask3D.device``)."""

    def __init__(self, fusion: Any, runtime: HeadRuntime) -> None:
        super().__init__()
        self.fusion = fusion
        self.runtime = runtime
        self.embed_dim = fusion.embed_dim

    @property
    def linear(self) -> nn.Linear:
        return self.fusion.linear  # type: ignore[no-any-return]

    def forward(self, feat_2d: Tensor, feat_3d: Tensor, covered: Tensor) -> Tensor:
        return self.runtime.fuse(feat_2d, feat_3d, covered).to(feat_3d.dtype)


class RuntimeBinaryHead(nn.Module):
    """The binary head's dense part on the runtime: (N, C) -> (N, 1) logits, as the Sequential."""

    def __init__(self, head: nn.Module, runtime: HeadRuntime) -> None:
        super().__init__()
        self.head = head
        self.runtime = runtime

    def forward(self, features: Tensor) -> Tensor:
        return self.runtime.binary_logits(features)[:, None].to(features.dtype)


def _shallow(module: nn.Module) -> Any:
    """A copy sharing parameters, buffers and children, with its own child table."""
    out = copy.copy(module)
    out._modules = dict(module._modules)  # noqa: SLF001 - the child table is what we replace
    return out


def with_head_runtime(model: Any, runtime: HeadRuntime) -> Any:
    """``model`` (an XMask3D) with its dense heads on ``runtime`` (see the module doc)."""
    if runtime.kind == "torch":
        return model
    swapped = _shallow(model)
    swapped.branch2d = RuntimeMaskBranch(model.branch2d, runtime)
    swapped.clip = RuntimeClip(model.clip, runtime)
    swapped.fusion = RuntimeFusion(model.fusion, runtime)
    if getattr(model.branch3d, "binary_head", None) is not None:
        branch3d = _shallow(model.branch3d)
        branch3d.binary_head = RuntimeBinaryHead(model.branch3d.binary_head, runtime)
        swapped.branch3d = branch3d
    return swapped
