"""``HeadRuntime``: the dense heads behind one interface, run by torch, ONNX Runtime or TensorRT.

``build_head_runtime(cfg, parts=...)`` picks the implementation from ``runtime.head_runtime``:

* ``torch``: the model's own modules through the export wrappers (no files needed);
* ``onnxruntime``: the ONNX graphs of ``runtime.engine_dir`` (CPU provider by default);
* ``tensorrt``: the engines of ``runtime.engine_dir`` for ``runtime.dtype`` (float16 -> fp16
  engines), needs ``tensorrt`` and a CUDA device.

Required graphs: every graph but ``clip_image`` (loaded when exported; inference does not use
it) and ``binary_head`` when ``binary.enabled`` is false. Everything is checked at
construction, never at the first frame: the manifest exists and fits
the config (``config_sha256``, naming the differing keys) and the running model's weights
(``weights_sha256``; the project checkpoint file's hash too when ``weights_path`` is set), every
graph file (and engine) exists with the recorded size and sha256, engines were built by the
installed TensorRT on this GPU's compute capability, and every session or engine loads.

The interface is :meth:`HeadRuntime.run` (graph name, named tensors -> named tensors) plus
composites shaped like the model's calls, so a segmenter can swap them in:
:meth:`~HeadRuntime.mask_branch` (like ``MaskBranch.forward``), :meth:`~HeadRuntime.encode_text`,
:meth:`~HeadRuntime.image_features`, :meth:`~HeadRuntime.mask_embeddings` (like
``ClipModel.mask_embeddings``), :meth:`~HeadRuntime.fuse`, :meth:`~HeadRuntime.classify`,
:meth:`~HeadRuntime.binary_logits`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import EngineMismatchError, MissingEngineError
from xmask3d_ros.export.graphs import GRAPH_NAMES, ExportParts, GraphSpec, build_graphs
from xmask3d_ros.export.manifest import Manifest, check_manifest, weights_sha256

__all__ = [
    "OPTIONAL_GRAPHS",
    "RUNTIMES",
    "HeadRuntime",
    "MaskBranchResult",
    "OnnxHeadRuntime",
    "TensorRTHeadRuntime",
    "TorchHeadRuntime",
    "build_head_runtime",
    "required_graphs",
]

RUNTIMES = ("torch", "onnxruntime", "tensorrt")
_VAE_TAPS = ("vae_encoder_5", "vae_encoder_7", "vae_decoder_2", "vae_decoder_5")


# Loaded when exported, never required: XMask3D's inference does not use the plain CLIP image
# embedding, and on the paper config it is another 1.2 GB of ViT-L weights (Orin memory).
OPTIONAL_GRAPHS = ("clip_image",)


def required_graphs(cfg: ModelConfig) -> tuple[str, ...]:
    """The graphs a runtime for ``cfg`` must have (no binary head when it is disabled)."""
    return tuple(
        n for n in GRAPH_NAMES
        if n not in OPTIONAL_GRAPHS and (n != "binary_head" or cfg.binary.enabled)
    )


@dataclass(frozen=True)
class MaskBranchResult:
    """What :meth:`HeadRuntime.mask_branch` returns (attribute names of ``MaskBranchOutput``)."""

    pred_masks: Tensor  # (B, Q, S/4, S/4) mask logits of the final decoder layer
    mask_embed: Tensor  # (B, Q, E) mask embeddings (CLIP space, not normalised)
    mask_features: Tensor  # (B, mask_dim, S/4, S/4)


class HeadRuntime(ABC):
    """Runs the exported graphs; subclasses differ only in :meth:`_run`."""

    kind: ClassVar[str]

    def __init__(self, cfg: ModelConfig, io: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]):
        self.cfg = cfg
        self._io = dict(io)  # graph -> (input names as the graph declares, output names)

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(self._io)

    def inputs(self, graph: str) -> tuple[str, ...]:
        return self._io[graph][0]

    def outputs(self, graph: str) -> tuple[str, ...]:
        return self._io[graph][1]

    def run(self, graph: str, **inputs: Tensor) -> dict[str, Tensor]:
        """Run ``graph`` on named tensors; extra names (inputs a graph pruned) are ignored.

        Outputs come back as torch tensors on the device of the first input.
        """
        if graph not in self._io:
            have = ", ".join(self._io)
            raise KeyError(f"no graph {graph!r} in this {self.kind} runtime ({have})")
        names, outs = self._io[graph]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"graph {graph!r} needs inputs {missing} (got {sorted(inputs)})")
        device = next(iter(inputs.values())).device if inputs else torch.device("cpu")
        result = self._run(graph, {n: inputs[n] for n in names})
        return {n: t.to(device) for n, t in zip(outs, result, strict=True)}

    @abstractmethod
    def _run(self, graph: str, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """Outputs in ``self.outputs(graph)`` order."""

    # ---- composites, shaped like the model's calls --------------------------------------------

    def mask_branch(self, image: Tensor, prefix: Tensor) -> MaskBranchResult:
        """``MaskBranch.forward``: image (B, 3, H, W) in [0, 1] (resized here), prefix (B, E)."""
        s = self.cfg.diffusion.image_size
        image = image.float()
        if tuple(image.shape[-2:]) != (s, s):  # as MaskBranch.forward (cv2-style, no aspect)
            image = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
        cap = self.run("captioner", prefix=prefix.float())
        vae = self.run("vae", image=image)
        unet = self.run("unet", latent=vae["latent"], **cap)
        feats = self.run("feature_projections", **{k: vae[k] for k in _VAE_TAPS}, **unet)
        pix = self.run("pixel_decoder", **feats)
        dec = self.run("mask_decoder", **pix)
        return MaskBranchResult(dec["pred_masks"], dec["mask_embed"], pix["mask_features"])

    def _clip_image(self, image: Tensor) -> Tensor:
        sc = self.cfg.clip.image_size
        image = image.float()
        if tuple(image.shape[-2:]) != (sc, sc):  # as ClipModel.preprocess
            image = F.interpolate(image, size=(sc, sc), mode="bilinear", align_corners=False)
        return image

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(N, context) int64 BPE tokens (``ClipModel.tokenizer``) -> (N, E) embeddings."""
        if tokens.shape[0] == 0:
            return torch.zeros(0, self.cfg.clip.embed_dim, device=tokens.device)
        return self.run("clip_text", tokens=tokens.long())["text_embed"]

    def image_features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``ClipModel.dense_features``: (B, E) class token, (B, E, g, g) patch embeddings."""
        out = self.run("clip_image", image=self._clip_image(image))
        return out["image_embed"], out["patch_embed"]

    def mask_embeddings(self, image: Tensor, mask_logits: Tensor) -> Tensor:
        """``ClipModel.mask_embeddings``: image (B,3,H,W), logits (B,Q,S/4,S/4) -> (B,Q,E)."""
        b, q = int(mask_logits.shape[0]), int(mask_logits.shape[1])
        if q == 0:
            return torch.zeros(b, 0, self.cfg.clip.embed_dim, device=mask_logits.device)
        out = self.run("maskclip", image=self._clip_image(image), mask_logits=mask_logits.float())
        return out["mask_embed"]

    def fuse(self, feat_2d: Tensor, feat_3d: Tensor, covered: Tensor) -> Tensor:
        """``FeatureFusion``: (N, E), (N, E), (N,) bool -> (N, E)."""
        if feat_3d.shape[0] == 0:
            return feat_3d
        return self.run(
            "fusion", feat_2d=feat_2d.float(), feat_3d=feat_3d.float(), covered=covered.bool()
        )["fused"]

    def classify(self, features: Tensor, text_embed: Tensor) -> Tensor:
        """``logit_scale * cos``: (N, E) x (C, E) -> (N, C)."""
        if features.shape[0] == 0 or text_embed.shape[0] == 0:
            return features.new_zeros(features.shape[0], text_embed.shape[0])
        return self.run("classifier", features=features.float(), text_embed=text_embed.float())[
            "logits"
        ]

    def binary_logits(self, features: Tensor) -> Tensor:
        """Binary head's dense part on (N, C) voxel features -> (N,) base-vs-novel logits."""
        if features.shape[0] == 0:
            return features.new_zeros(0)
        return self.run("binary_head", features=features.float())["logit"]


class TorchHeadRuntime(HeadRuntime):
    """The model's own modules (through the export wrappers)."""

    kind = "torch"

    def __init__(self, cfg: ModelConfig, graphs: Mapping[str, GraphSpec]) -> None:
        super().__init__(cfg, {n: (g.input_names, g.output_names) for n, g in graphs.items()})
        self._graphs = dict(graphs)

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        spec = self._graphs[graph]
        return spec.run(*(inputs[n] for n in spec.input_names))


def _manifest_io(manifest: Manifest, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        n: (tuple(t["name"] for t in manifest.graphs[n].inputs),
            tuple(t["name"] for t in manifest.graphs[n].outputs))
        for n in names
    }


class OnnxHeadRuntime(HeadRuntime):
    """ONNX Runtime sessions over the exported graphs (created here, at start-up)."""

    kind = "onnxruntime"

    def __init__(
        self,
        cfg: ModelConfig,
        folder: str | Path,
        manifest: Manifest,
        graphs: tuple[str, ...],
        *,
        providers: list[str] | None = None,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        super().__init__(cfg, _manifest_io(manifest, graphs))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        chosen = providers or ["CPUExecutionProvider"]
        self._sessions = {}
        for name in graphs:
            path = Path(folder) / manifest.graphs[name].file
            try:
                self._sessions[name] = ort.InferenceSession(str(path), opts, providers=chosen)
            except Exception as err:  # noqa: BLE001 - name the file whatever ORT raised
                raise EngineMismatchError(
                    f"{path}: ONNX Runtime cannot load graph {name!r} ({type(err).__name__}: "
                    f"{err})"
                ) from err

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        feed = {n: x.detach().cpu().contiguous().numpy() for n, x in inputs.items()}
        outs = self._sessions[graph].run(list(self.outputs(graph)), feed)
        return tuple(torch.from_numpy(np.asarray(o)) for o in outs)


class TensorRTHeadRuntime(HeadRuntime):
    """TensorRT engines (``runtime.dtype`` float16 -> fp16 engines), executed on torch's stream."""

    kind = "tensorrt"

    def __init__(
        self,
        cfg: ModelConfig,
        folder: str | Path,
        manifest: Manifest,
        graphs: tuple[str, ...],
        *,
        precision: str,
        verify_files: bool = True,
    ) -> None:
        from xmask3d_ros.export.tensorrt_builder import (
            check_engine_entry,
            import_tensorrt,
            require_cuda,
        )

        trt = import_tensorrt()
        device = require_cuda()
        super().__init__(cfg, _manifest_io(manifest, graphs))
        self._trt = trt
        self._device = device
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self._engines: dict[str, Any] = {}
        self._contexts: dict[str, Any] = {}
        for name in graphs:
            path = check_engine_entry(folder, manifest, name, precision, trt, device,
                                      verify_files=verify_files)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EngineMismatchError(f"{path}: TensorRT cannot deserialise this engine")
            self._engines[name] = engine
            self._contexts[name] = engine.create_execution_context()
        self._runtime = runtime

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> tuple[Tensor, ...]:
        from xmask3d_ros.export.tensorrt_builder import torch_dtype

        trt, engine, ctx = self._trt, self._engines[graph], self._contexts[graph]
        keep = []
        for name, x in inputs.items():
            want = torch_dtype(engine.get_tensor_dtype(name), trt)
            t = x.to(self._device, want).contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs(graph):
            shape = tuple(ctx.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch_dtype(engine.get_tensor_dtype(name), trt),
                              device=self._device)
            ctx.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream(self._device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run graph {graph!r}")
        stream.synchronize()
        return tuple(o.float() if o.is_floating_point() else o for o in outs)


def build_head_runtime(
    cfg: ModelConfig,
    *,
    parts: ExportParts | None = None,
    kind: str | None = None,
    engine_dir: str | Path | None = None,
    verify_files: bool = True,
    providers: list[str] | None = None,
    threads: int = 0,
) -> HeadRuntime:
    """The runtime ``kind`` (default ``cfg.runtime.head_runtime``), fully validated here.

    ``parts``: the running model's exported parts (:func:`~xmask3d_ros.export.graphs.
    parts_from_model`); required for ``torch``, and for the others it is what the weights
    hash is checked against (without it only the checkpoint file of ``weights_path`` is).
    ``providers``/``threads``: ONNX Runtime execution providers and intra-op threads (0 = its
    default).
    """
    kind = kind or cfg.runtime.head_runtime
    if kind not in RUNTIMES:
        raise ValueError(f"runtime.head_runtime: {kind!r} is not one of {', '.join(RUNTIMES)}")
    names = required_graphs(cfg)
    if kind == "torch":
        if parts is None:
            raise ValueError("runtime.head_runtime: torch needs the model's parts (parts=...)")
        return TorchHeadRuntime(cfg, build_graphs(parts, cfg))
    folder = engine_dir if engine_dir is not None else cfg.runtime.engine_dir
    if not folder:
        raise MissingEngineError(
            f"runtime.engine_dir: empty, but runtime.head_runtime is {kind}; give the folder "
            "written by `xmask3d-export CONFIG [CHECKPOINT] --out DIR`"
        )
    if not Path(folder).is_dir():
        raise MissingEngineError(
            f"runtime.engine_dir: {folder} does not exist (head_runtime {kind})"
        )
    if parts is None and not cfg.weights_path:
        raise ValueError(
            "cannot check that the exported graphs match the model's weights: pass parts= "
            "(the running model) or set weights_path"
        )
    weights = weights_sha256(parts.modules()) if parts is not None else None
    listed = Manifest.load(folder).graphs
    names = tuple(n for n in GRAPH_NAMES if n in names or (n in OPTIONAL_GRAPHS and n in listed))
    manifest = check_manifest(folder, cfg, graphs=names, weights=weights, verify_files=verify_files)
    if kind == "onnxruntime":
        return OnnxHeadRuntime(cfg, folder, manifest, names, providers=providers, threads=threads)
    precision = "fp16" if cfg.runtime.dtype == "float16" else "fp32"
    return TensorRTHeadRuntime(cfg, folder, manifest, names, precision=precision,
                               verify_files=verify_files)
