"""ONNX Runtime (CPU) vs PyTorch for every exported graph, on random and synthetic-room inputs.

Cases:

* ``random_min``: every symbolic dimension 1 (the TensorRT profiles' minimum);
* ``random``: batch 2, 20 labels, all masks, 2000 points (other sizes than the export trace
  for every symbol but the batch, which ``random_min`` varies): the dynamic axes work;
* ``synthetic_room``: a rendered synthetic-room frame (``data.synthetic``) pushed through the
  PyTorch chain, so each graph sees the real intermediate tensors of its predecessors (image ->
  VAE -> UNet -> projections -> pixel decoder -> mask decoder -> MaskCLIP, ScanNet-20 class
  names -> CLIP text, frame pixels -> mask features -> fusion -> classifier). Inputs that come
  from the 3D branch (the captioner's prefix, 3D point features, binary-head voxel features)
  are seeded random: the sparse 3D branch is not part of any graph.

Errors per output: ``max_abs`` = max |onnx - torch|, ``max_rel`` = max_abs / max |torch|
(relative to the output's range: element-wise ratios explode near zero). An output passes when
``max_abs <= atol + rtol * max|torch|`` (fp32 defaults 1e-4 and 1e-4). Some outputs are
ill-conditioned *in PyTorch itself*: e.g. in the tiny config the UNet's stride-64 tap is 1x1,
its projection sees a spatially constant map and GroupNorm (1 channel per group) divides
rounding noise by sqrt(eps), so ``s5`` moves by O(1) under 1e-6 relative input noise. Each
case therefore also measures ``torch_noise``, PyTorch's own change under that input noise; an
output whose error stays below ``NOISE_FACTOR * torch_noise`` passes as ``ill_conditioned``
(flagged in the manifest) rather than failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import ParityError
from xmask3d_ros.export.graphs import GraphSpec, sample_inputs

__all__ = [
    "CASES",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "NOISE_FACTOR",
    "OutputParity",
    "ParityResult",
    "case_dims",
    "check_parity",
    "compare",
    "infer_dims",
    "ort_session",
    "run_session",
    "synthetic_room_inputs",
]

CASES = ("random_min", "random", "synthetic_room")
DEFAULT_ATOL = 1e-4  # fp32 on CPU
DEFAULT_RTOL = 1e-4
NOISE_REL = 1e-6  # relative input perturbation that measures PyTorch's own conditioning
NOISE_FACTOR = 4.0


@dataclass(frozen=True)
class OutputParity:
    """Errors of one graph output in one case."""

    name: str
    max_abs: float  # max |onnx - torch|
    max_rel: float  # max_abs / max |torch|
    ref_max_abs: float  # max |torch|
    torch_noise: float | None  # max |torch(x) - torch(x * (1 + 1e-6 n))|; only measured when
    # the error exceeds the tolerance
    tolerance: float  # atol + rtol * ref_max_abs
    ill_conditioned: bool  # passed only because PyTorch itself is this noisy
    ok: bool


@dataclass(frozen=True)
class ParityResult:
    """One graph, one case."""

    graph: str
    case: str
    dims: dict[str, int]
    outputs: tuple[OutputParity, ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(outputs=list(d["outputs"]), ok=self.ok, max_abs=self.max_abs,
                 max_rel=self.max_rel)  # lists, so the dict equals its JSON round trip
        return d


def case_dims(case: str, cfg: ModelConfig) -> dict[str, int]:
    """Symbolic dimension sizes of a random case."""
    if case == "random_min":
        return {"batch": 1, "num_labels": 1, "num_masks": 1, "num_points": 1}
    if case == "random":
        q = cfg.mask_generator.num_queries
        return {"batch": 2, "num_labels": 20, "num_masks": q, "num_points": 2000}
    raise ValueError(f"no dimension sizes for case {case!r}")


def ort_session(path: str | Path, *, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session (``threads`` 0 = ONNX Runtime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_session(session: Any, spec: GraphSpec, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Run ``session`` on ``inputs`` (spec order); inputs the graph pruned are not fed."""
    wanted = {i.name for i in session.get_inputs()}
    feed = {
        t.name: x.detach().cpu().contiguous().numpy()
        for t, x in zip(spec.inputs, inputs, strict=True)
        if t.name in wanted
    }
    outs = session.run(list(spec.output_names), feed)
    return tuple(torch.from_numpy(np.asarray(o)) for o in outs)


def _perturbed(inputs: Sequence[Tensor], seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator(device="cpu").manual_seed(seed + 7919)
    out = []
    for x in inputs:
        if x.is_floating_point():
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            x = x * (1.0 + NOISE_REL * noise)
        out.append(x)
    return tuple(out)


def compare(
    spec: GraphSpec,
    session: Any,
    inputs: Sequence[Tensor],
    *,
    case: str,
    dims: Mapping[str, int] | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> ParityResult:
    """Errors of ``session`` against ``spec.module`` on ``inputs``."""
    ref = spec.run(*inputs)
    got = run_session(session, spec, inputs)
    noisy: tuple[Tensor, ...] | None = None  # PyTorch under input noise, only when needed
    outputs = []
    for i, (t, r, g) in enumerate(zip(spec.outputs, ref, got, strict=True)):
        if tuple(g.shape) != tuple(r.shape):
            raise ParityError(
                f"graph {spec.name!r} output {t.name!r}: ONNX shape {tuple(g.shape)} vs "
                f"PyTorch {tuple(r.shape)} ({case})"
            )
        r64, g64 = r.double(), g.double()
        max_abs = float((g64 - r64).abs().max()) if r.numel() else 0.0
        ref_max = float(r64.abs().max()) if r.numel() else 0.0
        tol = atol + rtol * ref_max
        noise = None
        if max_abs > tol:
            noisy = noisy or spec.run(*_perturbed(inputs, seed))
            noise = float((noisy[i].double() - r64).abs().max())
        ill = noise is not None and max_abs <= NOISE_FACTOR * noise
        outputs.append(OutputParity(
            name=t.name, max_abs=max_abs, max_rel=max_abs / max(ref_max, 1e-30),
            ref_max_abs=ref_max, torch_noise=noise, tolerance=tol,
            ill_conditioned=ill, ok=max_abs <= tol or ill,
        ))
    shown = dict(dims) if dims is not None else infer_dims(spec, inputs)
    return ParityResult(spec.name, case, {k: shown[k] for k in spec.symbols()}, tuple(outputs))


def infer_dims(spec: GraphSpec, inputs: Sequence[Tensor]) -> dict[str, int]:
    """Sizes of the spec's symbolic dimensions in ``inputs``."""
    dims: dict[str, int] = {}
    for t, x in zip(spec.inputs, inputs, strict=True):
        for axis, sym in t.dynamic_axes.items():
            dims.setdefault(sym, int(x.shape[axis]))
    return dims


@torch.no_grad()
def synthetic_room_inputs(
    graphs: Mapping[str, GraphSpec],
    cfg: ModelConfig,
    *,
    seed: int = 0,
    image_hw: tuple[int, int] = (120, 160),
    pixel_stride: int = 4,
) -> dict[str, tuple[Tensor, ...]]:
    """Real inputs for every graph: one synthetic-room frame through the PyTorch chain."""
    from xmask3d_ros.data.classes import SCANNET20_CLASSES
    from xmask3d_ros.data.synthetic.scene import generate_room, render_frame

    h, w = image_hw
    room = generate_room(seed)
    poses = room.camera_poses(8)
    frame = render_frame(room, poses[len(poses) // 2], room.intrinsics(w, h), w, h)
    image = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, h, w)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    e = cfg.clip.embed_dim

    def run(name: str, *args: Tensor) -> tuple[Tensor, ...]:
        return graphs[name].run(*args)

    s = cfg.diffusion.image_size
    img_s = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
    clip_spec = graphs["clip_image"].inputs[0]
    sc = int(clip_spec.shape[-1])
    img_c = F.interpolate(image, size=(sc, sc), mode="bilinear", align_corners=False)
    prefix = torch.randn(1, e, generator=gen)  # the 3D branch's global feature (not exported)
    out: dict[str, tuple[Tensor, ...]] = {"captioner": (prefix,), "vae": (img_s,)}
    context, time_cond = run("captioner", prefix)
    *vae_taps, latent = run("vae", img_s)
    out["unet"] = (latent, context, time_cond)
    unet_taps = run("unet", latent, context, time_cond)
    taps = (vae_taps[0], vae_taps[1], *unet_taps, vae_taps[2], vae_taps[3])  # TAPS order
    out["feature_projections"] = taps
    feats = run("feature_projections", *taps)
    out["pixel_decoder"] = feats
    mask_features, *multi_scale = run("pixel_decoder", *feats)
    out["mask_decoder"] = (*multi_scale, mask_features)
    pred_masks, mask_embed = run("mask_decoder", *multi_scale, mask_features)
    clip_text: Any = graphs["clip_text"].module
    tokenizer = clip_text.clip.tokenizer
    tokens = tokenizer(list(SCANNET20_CLASSES))
    out["clip_text"] = (tokens,)
    (text,) = run("clip_text", tokens)
    out["clip_image"] = (img_c,)
    out["maskclip"] = (img_c, pred_masks)
    # frame pixels with depth -> the mask with the highest probability there, if any > 0.5
    rows, cols = np.nonzero(frame.depth_m[::pixel_stride, ::pixel_stride] > 0)
    grid = pred_masks.shape[-1]
    r = torch.as_tensor(rows * pixel_stride * grid // h)
    c = torch.as_tensor(cols * pixel_stride * grid // w)
    prob = pred_masks[0].sigmoid()[:, r, c]  # (Q, N)
    best, ids = prob.max(dim=0)
    covered = best > 0.5
    feat_2d = mask_embed[0][ids] * covered[:, None]
    feat_3d = torch.randn(feat_2d.shape, generator=gen)  # pure-3D features (not exported)
    out["fusion"] = (feat_2d, feat_3d, covered)
    (fused,) = run("fusion", feat_2d, feat_3d, covered)
    out["classifier"] = (fused, text)
    if "binary_head" in graphs:
        c3 = int(graphs["binary_head"].inputs[0].shape[-1])
        out["binary_head"] = (torch.randn(fused.shape[0], c3, generator=gen),)
    return out


def check_parity(
    graphs: Mapping[str, GraphSpec],
    onnx_files: Mapping[str, str | Path],
    cfg: ModelConfig,
    *,
    cases: Sequence[str] = CASES,
    seed: int = 0,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, list[ParityResult]]:
    """Graph name -> one result per case, for every graph in ``onnx_files``."""
    room = synthetic_room_inputs(graphs, cfg, seed=seed) if "synthetic_room" in cases else {}
    results: dict[str, list[ParityResult]] = {}
    for name, path in onnx_files.items():
        spec = graphs[name]
        session = ort_session(path)
        per = []
        for case in cases:
            if case == "synthetic_room":
                inputs, dims = room[name], None
            else:
                dims = case_dims(case, cfg)
                inputs = sample_inputs(spec, dims, seed=seed + 1)
            per.append(compare(spec, session, inputs, case=case, dims=dims, atol=atol,
                               rtol=rtol, seed=seed))
        results[name] = per
    return results
