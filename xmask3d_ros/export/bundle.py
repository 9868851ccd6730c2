"""The whole export of one model: ONNX graphs, parity, manifest and (where possible) engines.

``export_model(cfg, out_dir, parts=...)`` is what ``xmask3d-export`` runs: export every graph,
check it against PyTorch in ONNX Runtime, write ``manifest.json``, then build TensorRT engines
when ``tensorrt`` imports and a CUDA device exists (otherwise the manifest says why not).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.export.errors import ParityError
from xmask3d_ros.export.graphs import DimRange, ExportParts, build_graphs, default_dim_ranges
from xmask3d_ros.export.manifest import (
    GraphEntry,
    Manifest,
    checkpoint_ref,
    config_sha256,
    graph_config,
    weights_sha256,
)
from xmask3d_ros.export.onnx_export import DEFAULT_OPSET, export_graphs
from xmask3d_ros.export.parity import CASES, DEFAULT_ATOL, DEFAULT_RTOL, check_parity

__all__ = ["export_model", "tool_versions"]


def tool_versions() -> dict[str, str]:
    """Versions that matter for reproducing an export."""
    import onnx
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "onnx": onnx.__version__}
    for mod in ("onnxruntime", "onnxscript", "diffusers", "open_clip"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001, S112 - optional tools: absent or broken is fine here
            continue
    return out


def export_model(
    cfg: ModelConfig,
    out_dir: str | Path,
    *,
    parts: ExportParts,
    names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    parity_cases: Sequence[str] = CASES,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    dims: Mapping[str, DimRange] | None = None,
    precisions: Sequence[str] = (),
    strict_parity: bool = True,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Export ``parts`` of ``cfg`` into ``out_dir``; returns the saved manifest.

    ``precisions`` (e.g. ``("fp16", "fp32")``): TensorRT engines to build when TensorRT and a
    GPU are usable; skipped with a log line otherwise. With ``strict_parity`` a graph outside
    its tolerance raises :class:`ParityError` (after the manifest is written, to inspect it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranges = {**default_dim_ranges(cfg), **(dims or {})}
    graphs = build_graphs(parts, cfg)
    records = export_graphs(graphs, out, names=names, opset=opset, exporter=exporter, log=log)
    parity = (
        check_parity(graphs, {n: out / r.file for n, r in records.items()}, cfg,
                     cases=parity_cases, atol=atol, rtol=rtol)
        if parity_cases else {}
    )
    manifest = Manifest(
        model_name=cfg.name,
        config_sha256=config_sha256(cfg),
        weights_sha256=weights_sha256(parts.modules()),
        checkpoint=checkpoint_ref(cfg),
        opset=opset,
        config=graph_config(cfg),
        dims={k: [r.min, r.opt, r.max] for k, r in ranges.items()},
        versions=tool_versions(),
    )
    for name, rec in records.items():
        manifest.graphs[name] = GraphEntry(
            file=rec.file, sha256=rec.sha256, size_bytes=rec.size_bytes, exporter=rec.exporter,
            opset=rec.opset, inputs=[dict(t) for t in rec.inputs],
            outputs=[dict(t) for t in rec.outputs], external_data=list(rec.external_data),
            parity=[p.to_dict() for p in parity.get(name, [])], notes=list(rec.notes),
        )
        if log is not None:
            for p in parity.get(name, []):
                flag = "ok" if p.ok else "FAIL"
                ill = [o.name for o in p.outputs if o.ill_conditioned]
                note = f" (ill-conditioned in PyTorch: {', '.join(ill)})" if ill else ""
                log(f"parity {name} {p.case}: max abs {p.max_abs:.2e}, max rel {p.max_rel:.2e} "
                    f"{flag}{note}")
    manifest.save(out)
    failed = [f"{n} ({p.case}: {o.name} max abs {o.max_abs:.2e} > {o.tolerance:.2e})"
              for n, ps in parity.items() for p in ps for o in p.outputs if not o.ok]
    if failed and strict_parity:
        raise ParityError(f"parity outside tolerance (see {out / 'manifest.json'}): "
                          + "; ".join(failed))
    if precisions:
        from xmask3d_ros.export.tensorrt_builder import build_engines, tensorrt_status

        usable, reason = tensorrt_status()
        if usable:
            build_engines(out, manifest, precisions=precisions, graphs=list(records), log=log)
            manifest.save(out)
        elif log is not None:
            log(f"TensorRT engines skipped: {reason}")
    return manifest
