"""Compatibility shims for third-party packages the model layer imports.

The one shim today: torchvision from PyPI (0.28) is a CUDA build. On a CPU-only torch its compiled
extension ``torchvision/_C.so`` does not load, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``, because
that module registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms``
unconditionally. open_clip, diffusers and transformers import torchvision, so all of them break.
(ENVIRONMENT.md, "Python stack".)

``ensure_torchvision_importable()`` defines just those two operator *schemas* (no kernels) in the
``torchvision`` namespace when, and only when, the real compiled ops cannot be loaded. The
pure-Python parts of torchvision then import; calling ``torchvision.ops.nms`` would still fail with
torch's "no kernel" error, which the model never does. On a machine where torchvision's extension
loads (matching CUDA/CPU builds), nothing is defined and the real ops are used.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import threading
from pathlib import Path

import torch

__all__ = ["TORCHVISION_STUB_SCHEMAS", "ensure_torchvision_importable", "torchvision_ops_stubbed"]

# Schemas copied from torchvision/csrc/ops/nms.cpp (TORCH_LIBRARY_FRAGMENT(torchvision, m)).
TORCHVISION_STUB_SCHEMAS: tuple[str, ...] = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_LOCK = threading.Lock()
# Must stay referenced for the life of the process: a torch.library.Library removes its
# registrations when it is garbage-collected.
_STUB_LIBRARY: torch.library.Library | None = None
_CHECKED = False


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _load_real_extension() -> bool:
    """Load torchvision's compiled ops the way torchvision does, without importing torchvision.

    Importing ``torchvision`` itself is what fails, so the package is located with ``find_spec``
    (which does not execute ``torchvision/__init__.py``) and its ``_C`` extension loaded directly.
    Loading the same library again later from torchvision is a no-op for the dynamic loader.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib_dir = str(Path(next(iter(spec.submodule_search_locations))))
    finder = importlib.machinery.FileFinder(
        lib_dir,
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )
    ext = finder.find_spec("_C")
    if ext is None or ext.origin is None:
        return False
    try:
        torch.ops.load_library(ext.origin)
    except (OSError, RuntimeError, ImportError):
        return False
    return _op_exists("nms") and _op_exists("qnms")


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work on a CPU-only torch with a CUDA torchvision wheel.

    Idempotent and thread-safe; call it before the first import of open_clip / diffusers /
    torchvision. Returns True when this module's stub schemas are in place (the real ops were
    missing), False when the real ops exist or torchvision is not installed (nothing to do).
    """
    global _STUB_LIBRARY, _CHECKED
    with _LOCK:
        if _CHECKED:
            return _STUB_LIBRARY is not None
        if (_op_exists("nms") and _op_exists("qnms")) or _load_real_extension():
            _CHECKED = True
            return False
        if importlib.util.find_spec("torchvision") is None:
            _CHECKED = True
            return False
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schema-only stubs
        for schema in TORCHVISION_STUB_SCHEMAS:
            op_name = schema.split("(", 1)[0]
            if not _op_exists(op_name):
                lib.define(schema)
        _STUB_LIBRARY = lib
        _CHECKED = True
        return True


def torchvision_ops_stubbed() -> bool:
    """True when ``ensure_torchvision_importable`` defined stub schemas in this process."""
    return _STUB_LIBRARY is not None
