"""Sparse-tensor backends behind one interface (``base.SparseBackend``).

``get_backend(name)`` imports the chosen backend lazily: importing this package never imports
MinkowskiEngine.
"""

from __future__ import annotations

import importlib

from xmask3d_ros.model.sparse.base import (
    BACKEND_CONFIG_KEY,
    BackendUnavailableError,
    SparseBackend,
    SparseTensorLike,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "SparseBackend",
    "SparseTensorLike",
    "available_backends",
    "get_backend",
]

# name -> (module, class); the only place backends are listed.
BACKENDS: dict[str, tuple[str, str]] = {
    "torch_native": ("xmask3d_ros.model.sparse.torch_native", "TorchNativeBackend"),
    "minkowski": ("xmask3d_ros.model.sparse.minkowski", "MinkowskiBackend"),
}


def get_backend(name: str) -> SparseBackend:
    """The backend called ``name`` (a value of ``model.backbone3d.backend``).

    Raises ValueError for an unknown name and BackendUnavailableError (an ImportError) when
    the backend's library is missing; both messages name the config key.
    """
    if name not in BACKENDS:
        raise ValueError(
            f"{BACKEND_CONFIG_KEY}: unknown sparse backend {name!r}, expected one of "
            f"{', '.join(sorted(BACKENDS))}"
        )
    module_name, class_name = BACKENDS[name]
    backend: SparseBackend = getattr(importlib.import_module(module_name), class_name)()
    return backend


def available_backends() -> list[str]:
    """Names of the backends that construct on this machine (imports each one)."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names
