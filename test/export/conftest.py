"""Shared tiny-config fixtures of the export tests: one model, one export folder per session.

Exporting every graph and checking parity takes ~30 s on 2 CPU cores, so it happens once; tests
that damage an export work on a copy (:func:`export_copy`).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config import load_config
from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.model.compat import ensure_torchvision_importable

ensure_torchvision_importable()
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter (MaskCLIP) needs it

from xmask3d_ros.export.bundle import export_model  # noqa: E402
from xmask3d_ros.export.graphs import (  # noqa: E402
    ExportParts,
    GraphSpec,
    build_graphs,
    build_parts,
)
from xmask3d_ros.export.manifest import Manifest  # noqa: E402


def _tiny(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, resolve_model_config("tiny"), overrides)


@pytest.fixture(scope="session")
def tiny_cfg() -> ModelConfig:
    return _tiny()


@pytest.fixture(scope="session")
def cfg_with() -> Callable[..., ModelConfig]:
    """``cfg_with("a.b=1", ...)``: the tiny config with overrides."""
    return _tiny


@pytest.fixture(scope="session")
def parts(tiny_cfg: ModelConfig) -> ExportParts:
    return build_parts(tiny_cfg, seed=0)  # build_model(tiny, seed 0) -> parts_from_model


@pytest.fixture(scope="session")
def graphs(parts: ExportParts, tiny_cfg: ModelConfig) -> dict[str, GraphSpec]:
    return build_graphs(parts, tiny_cfg)


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory, parts: ExportParts, tiny_cfg: ModelConfig
) -> tuple[Path, Manifest]:
    """Every graph of the tiny model exported, parity-checked, with its manifest.

    One torch thread: on a busy 2-core machine two OpenMP threads made the tiny VAE ~60x
    slower (barrier waits), which took this fixture from ~15 s to over a minute.
    """
    out = tmp_path_factory.mktemp("export")
    with _one_thread():
        manifest = export_model(tiny_cfg, out, parts=parts)
    return out, manifest


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every export test runs torch single-threaded (see ``exported``), restored afterwards."""
    with _one_thread():
        yield


@pytest.fixture
def export_copy(exported: tuple[Path, Manifest], tmp_path: Path) -> Callable[[], Path]:
    """A fresh copy of the export folder to damage."""

    def copy() -> Path:
        dst = tmp_path / "engines"
        shutil.copytree(exported[0], dst)
        return dst

    return copy
