"""Errors of the export layer (STYLE: one errors.py per layer).

Every message names the file involved and, for mismatches, the manifest key and both values.
"""

from __future__ import annotations

__all__ = [
    "EngineMismatchError",
    "ExportError",
    "MissingEngineError",
    "ParityError",
    "TensorRTUnavailableError",
]


class ExportError(RuntimeError):
    """Exporting a graph to ONNX (or checking the written file) failed; names the graph."""


class ParityError(ExportError):
    """An exported graph disagrees with PyTorch beyond its tolerance; names graph and output."""


class MissingEngineError(FileNotFoundError):
    """A manifest, ONNX file or TensorRT engine the runtime needs is not on disk."""


class EngineMismatchError(ValueError):
    """Exported files do not match the config, the checkpoint, the installed TensorRT or the GPU."""


class TensorRTUnavailableError(RuntimeError):
    """TensorRT cannot be used here (not importable, or no CUDA device); says which and why."""
