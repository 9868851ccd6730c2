"""``xmask3d-export CONFIG [CHECKPOINT] --out DIR``: ONNX graphs, parity, manifest, engines.

CONFIG is a shipped model config name (``tiny``, ``paper``) or a YAML path; CHECKPOINT a
project checkpoint (folder or ``.safetensors``; sets ``weights_path``). Writes into DIR:

    <graph>.onnx (+ <graph>.onnx.data for graphs over 1.8 GB)   one per dense part
    manifest.json                                             shapes, opset, hashes, parity
    <graph>.fp16.engine, <graph>.fp32.engine, timing.cache    where TensorRT and a GPU exist

Point ``runtime.engine_dir`` at DIR and set ``runtime.head_runtime`` to ``onnxruntime`` or
``tensorrt`` to run the heads from it. Exit status: 0 done, 1 export/parity failure, 2 bad
arguments or config.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xmask3d-export",
        description="Export XMask3D's dense parts to ONNX (with parity checks against PyTorch) "
        "and build TensorRT engines where TensorRT and a GPU are available.",
    )
    p.add_argument("config", help="model config: a shipped name (tiny, paper) or a YAML path")
    p.add_argument("checkpoint", nargs="?", help="project checkpoint (folder or .safetensors)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config value, e.g. --set diffusion.image_size=512")
    p.add_argument("--graphs", help="comma-separated subset of graphs (default: all)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="ONNX exporter (default auto: the graph's preferred one)")
    p.add_argument("--precision", default="fp16,fp32",
                   help="TensorRT engine precisions, comma-separated (default fp16,fp32)")
    p.add_argument("--no-engines", action="store_true", help="do not build TensorRT engines")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the ONNX Runtime parity check (not recommended)")
    p.add_argument("--allow-parity-failure", action="store_true",
                   help="write everything even if a graph is outside its tolerance")
    p.add_argument("--atol", type=float, default=None, help="parity absolute tolerance (1e-4)")
    p.add_argument("--rtol", type=float, default=None, help="parity relative tolerance (1e-4)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="TensorRT profile range of a dimension (batch, num_labels, num_masks, "
                   "num_points), e.g. --dim num_points=1:60000:300000")
    p.add_argument("--seed", type=int, default=0, help="seed of random-init parts (default 0)")
    p.add_argument("--quiet", action="store_true", help="only errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xmask3d_ros.config.model import ModelConfig
    from xmask3d_ros.config.paths import resolve_model_config
    from xmask3d_ros.config.schema import ConfigError, load_config
    from xmask3d_ros.export.graphs import DIM_NAMES, GRAPH_NAMES, DimRange

    def fail(msg: str) -> int:
        print(f"xmask3d-export: {msg}", file=sys.stderr)
        return 2

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"weights_path={args.checkpoint}")
    try:
        cfg = load_config(ModelConfig, resolve_model_config(args.config), overrides)
    except ConfigError as err:
        return fail(str(err))
    names = None
    if args.graphs:
        names = [n.strip() for n in args.graphs.split(",") if n.strip()]
        unknown = [n for n in names if n not in GRAPH_NAMES]
        if unknown:
            return fail(f"--graphs: unknown {unknown}; choose from {', '.join(GRAPH_NAMES)}")
    dims = {}
    for text in args.dim:
        key, _, value = text.partition("=")
        if key not in DIM_NAMES:
            return fail(f"--dim {text}: unknown dimension {key!r} ({', '.join(DIM_NAMES)})")
        try:
            dims[key] = DimRange.parse(value)
        except ValueError as err:
            return fail(f"--dim {text}: {err}")
    precisions = [] if args.no_engines else [p.strip() for p in args.precision.split(",") if p]
    bad = [p for p in precisions if p not in ("fp16", "fp32")]
    if bad:
        return fail(f"--precision: {bad} not in fp16, fp32")

    from xmask3d_ros.export.bundle import export_model
    from xmask3d_ros.export.errors import ExportError
    from xmask3d_ros.export.graphs import parts_from_model
    from xmask3d_ros.export.onnx_export import DEFAULT_OPSET
    from xmask3d_ros.export.parity import CASES, DEFAULT_ATOL, DEFAULT_RTOL
    from xmask3d_ros.model.build import build_model
    from xmask3d_ros.model.errors import WeightsError

    log = None if args.quiet else print
    start = time.perf_counter()
    try:
        model = build_model(cfg, seed=args.seed).eval()
    except (WeightsError, ConfigError, ValueError) as err:
        return fail(str(err))
    if log is not None:
        log(f"built {cfg.name} in {time.perf_counter() - start:.1f} s; exporting to {args.out}")
    try:
        manifest = export_model(
            cfg, args.out, parts=parts_from_model(model), names=names,
            opset=args.opset or DEFAULT_OPSET, exporter=args.exporter,
            parity_cases=() if args.no_parity else CASES,
            atol=DEFAULT_ATOL if args.atol is None else args.atol,
            rtol=DEFAULT_RTOL if args.rtol is None else args.rtol,
            dims=dims, precisions=precisions,
            strict_parity=not args.allow_parity_failure, log=log,
        )
    except (ExportError, ValueError) as err:
        print(f"xmask3d-export: {err}", file=sys.stderr)
        return 1
    if log is not None:
        engines = sum(len(g.engines) for g in manifest.graphs.values())
        log(f"wrote {len(manifest.graphs)} graphs, {engines} engines and manifest.json to "
            f"{args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
