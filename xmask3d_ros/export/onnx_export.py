"""PyTorch -> ONNX for the graphs of :mod:`xmask3d_ros.export.graphs`, one checked file per graph.

Two exporters exist in torch 2.13 and neither handles every graph (measured on the tiny config):

* ``torchscript`` (``torch.onnx.export(dynamo=False)``, deprecated but supported): traces the
  Python as it runs. It is the only one that exports the VAE and the UNet, whose feature taps
  are forward pre-hooks that stop the pass by raising an exception once the last tap is
  captured (torch.export loses its module stack there: "Unexpected key ... expected
  _export_root"). It bakes Python-int arithmetic on shapes into the graph, which breaks
  MaskCLIP's dynamic mask count (its attention bias is built from ``n_img + num_masks``).
* ``dynamo`` (``torch.onnx.export(dynamo=True)``, torch.export + onnxscript): exports MaskCLIP
  with a dynamic mask count, the CLIP towers, the pixel decoder and the mask decoder; fails on
  the VAE/UNet as above. It emits opset 18 and converts down to the requested opset.

``auto`` (default) takes each graph's preferred exporter (``GraphSpec.exporter``: dynamo for
MaskCLIP, torchscript for the rest, which is also 3-8x faster to export); ``dynamo`` or
``torchscript`` force one exporter and fall back to the other, with the fallback recorded.

Opset 17 by default: ``GridSample`` needs >= 16, ``LayerNormalization`` is native from 17, and
17 is what TensorRT 8.6 (JetPack 6.0) parses; TensorRT 10 parses it too. nn.MultiheadAttention's
fused fast path (``aten::_native_multi_head_attention``) has no ONNX symbolic, so it is switched
off while exporting. Files larger than 1.8 GB (the paper's UNet) keep their weights in one
``<graph>.onnx.data`` file beside the graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xmask3d_ros.export.errors import ExportError
from xmask3d_ros.export.graphs import GraphSpec, example_dims, sample_inputs

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "ExportRecord",
    "export_graph",
    "export_graphs",
    "files_sha256",
    "onnx_io",
]

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's hard limit is 2 GiB


@dataclass(frozen=True)
class ExportRecord:
    """What was written for one graph (read back from the file, not from the spec)."""

    graph: str
    file: str  # file name inside the export folder
    external_data: tuple[str, ...]  # weight files beside it (paper UNet), else empty
    exporter: str  # the exporter that produced the file
    opset: int  # default-domain opset of the written model
    inputs: tuple[dict[str, Any], ...]  # {"name", "shape" (ints / symbol names), "dtype"}
    outputs: tuple[dict[str, Any], ...]
    seconds: float  # wall time of export + check
    size_bytes: int  # graph file + external data
    sha256: str  # over the graph file then each external data file
    notes: tuple[str, ...] = field(default=())  # e.g. the fallback that was taken


def files_sha256(paths: Sequence[Path]) -> str:
    """sha256 over the bytes of ``paths`` in order (1 MiB chunks)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def onnx_io(path: str | Path) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """Inputs and outputs of an ONNX file: name, shape (int or symbol name), numpy dtype name."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> tuple[dict[str, Any], ...]:
        out = []
        for v in values:
            tt = v.type.tensor_type
            shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value)
                     for d in tt.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            out.append({"name": v.name, "shape": shape, "dtype": dtype})
        return tuple(out)

    return describe(model.graph.input), describe(model.graph.output)


# The opset 18 -> 17 down-conversion is expected (see the module doc): not worth a warning.
_QUIET_LOGGERS = ("torch.onnx._internal.exporter._compat", "onnxscript.version_converter")


@contextlib.contextmanager
def _export_mode() -> Iterator[None]:
    """No fused MHA fast path (no ONNX symbolic), no grad, exporter chatter silenced."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning, legacy-exporter deprecation
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_torchscript(spec: GraphSpec, args: tuple[Any, ...], path: Path, opset: int) -> None:
    torch.onnx.export(
        spec.module, args, str(path),
        input_names=list(spec.input_names), output_names=list(spec.output_names),
        dynamic_axes=spec.dynamic_axes(), opset_version=opset, dynamo=False,
        do_constant_folding=True,
    )


def _export_dynamo(spec: GraphSpec, args: tuple[Any, ...], path: Path, opset: int) -> None:
    from torch.export import Dim

    symbols = {s: Dim(s, min=1) for s in spec.symbols()}
    dynamic_shapes = tuple(
        {axis: symbols[sym] for axis, sym in t.dynamic_axes.items()} or None for t in spec.inputs
    )
    program = torch.onnx.export(
        spec.module, args, None,
        input_names=list(spec.input_names), output_names=list(spec.output_names),
        dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, verbose=False,
    )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError(f"{spec.name}: the dynamo exporter returned nothing")
    program.save(str(path))


def _set_io_shapes(path: Path, spec: GraphSpec) -> None:
    """Write the spec's shapes on the graph's inputs/outputs: symbols on dynamic axes, ints else.

    Exporters name dimensions after their own shape inference (the TorchScript one even calls
    a VAE tap's height ``batch``); the spec's shapes were checked against PyTorch's outputs.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    by_name = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        t = by_name.get(value.name)
        if t is None:
            continue
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in t.shape:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    onnx.save(model, str(path))


def _check_spec(spec: GraphSpec, args: tuple[Any, ...], dims: Mapping[str, int]) -> None:
    """PyTorch's outputs at the trace sizes must have the spec's shapes and dtypes."""
    outs = spec.run(*args)
    if len(outs) != len(spec.outputs):
        raise ExportError(f"graph {spec.name!r}: {len(outs)} outputs, spec has {len(spec.outputs)}")
    for t, x in zip(spec.outputs, outs, strict=True):
        if tuple(x.shape) != t.concrete(dims) or x.dtype != t.dtype:
            raise ExportError(
                f"graph {spec.name!r} output {t.name!r}: PyTorch gives {tuple(x.shape)} "
                f"{x.dtype}, the spec says {t.concrete(dims)} {t.dtype}"
            )


def _finalise(tmp: Path, out_dir: Path, name: str) -> tuple[Path, tuple[str, ...]]:
    """Move the exported model to ``out_dir/<name>.onnx``; big weights into one data file."""
    import onnx

    target = out_dir / f"{name}.onnx"
    data_name = f"{name}.onnx.data"
    for stale in (target, out_dir / data_name):
        stale.unlink(missing_ok=True)
    loose = [p for p in tmp.parent.iterdir() if p != tmp]
    size = tmp.stat().st_size + sum(p.stat().st_size for p in loose)
    if not loose and size < _EXTERNAL_DATA_BYTES:
        shutil.move(str(tmp), target)
        return target, ()
    model = onnx.load(str(tmp), load_external_data=True)
    if size < _EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(target))
        return target, ()
    onnx.save_model(model, str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
    return target, (data_name,)


def _summary(err: Exception) -> str:
    """One line of an exporter error (torch.export's reports are pages long, with colours)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "## Exception summary" in text:
        tail = text.split("## Exception summary", 1)[1]
        text = next((ln for ln in tail.splitlines() if ln.strip()), text)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return f"{type(err).__name__}: {first.strip()[:400]}"


def export_graph(
    spec: GraphSpec,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    dims: Mapping[str, int] | None = None,
) -> ExportRecord:
    """Export ``spec`` to ``out_dir/<name>.onnx``, check it with ``onnx.checker`` and describe it.

    ``exporter``: ``auto`` (the graph's preferred one), ``torchscript`` or ``dynamo`` (either
    falls back to the other on failure; the record's ``notes`` say so). Raises
    :class:`ExportError` naming the graph when both fail.
    """
    import onnx

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if opset < 16:
        raise ValueError(f"opset: {opset} < 16; GridSample (deformable attention) needs >= 16")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = spec.exporter if exporter == "auto" else exporter
    order = [first, "dynamo" if first == "torchscript" else "torchscript"]
    trace_dims = dict(dims or example_dims())
    args = sample_inputs(spec, trace_dims, seed=0)
    spec.module.eval()
    _check_spec(spec, args, trace_dims)
    notes: list[str] = []
    errors: list[str] = []
    start = time.perf_counter()
    for attempt in order:
        work = out / f".export_{spec.name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        tmp = work / f"{spec.name}.onnx"
        try:
            with _export_mode():
                if attempt == "torchscript":
                    _export_torchscript(spec, args, tmp, opset)
                else:
                    _export_dynamo(spec, args, tmp, opset)
            _set_io_shapes(tmp, spec)
            target, data = _finalise(tmp, out, spec.name)
        except Exception as err:  # noqa: BLE001 - try the other exporter, report both
            errors.append(f"{attempt}: {_summary(err)}")
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if attempt != first:
            notes.append(f"{first} exporter failed ({errors[0][:300]}); used {attempt}")
        break
    else:
        raise ExportError(f"graph {spec.name!r}: both exporters failed:\n  " + "\n  ".join(errors))
    onnx.checker.check_model(str(target))
    model = onnx.load(str(target), load_external_data=False)
    opset_used = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs, outputs = onnx_io(target)
    files = [target, *(out / d for d in data)]
    return ExportRecord(
        graph=spec.name, file=target.name, external_data=data, exporter=attempt,
        opset=int(opset_used), inputs=inputs, outputs=outputs,
        seconds=time.perf_counter() - start,
        size_bytes=sum(p.stat().st_size for p in files), sha256=files_sha256(files),
        notes=tuple(notes),
    )


def export_graphs(
    graphs: Mapping[str, GraphSpec],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    log: Any = None,
) -> dict[str, ExportRecord]:
    """Export ``names`` (default: all) of ``graphs``; ``log(str)`` reports progress."""
    chosen = list(graphs) if names is None else list(names)
    unknown = [n for n in chosen if n not in graphs]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; available: {', '.join(graphs)}")
    records = {}
    for name in chosen:
        rec = export_graph(graphs[name], out_dir, opset=opset, exporter=exporter)
        records[name] = rec
        if log is not None:
            log(f"exported {name}: {rec.exporter}, opset {rec.opset}, "
                f"{rec.size_bytes / 1e6:.1f} MB, {rec.seconds:.1f} s")
    return records
