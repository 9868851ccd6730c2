"""A tiny synthetic dataset in the ScanNet layout, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.synthetic import generate_room
from xmask3d_ros.data.synthetic.export import export_scannet_scene


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: bit-reproducible CPU runs (multi-threaded scatter-adds reorder
    float sums) and, on a shared 2-core machine, faster than oversubscribed threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_scannet")
    cfg = from_dict(SyntheticCfg, {"camera": {"width": 64, "height": 48},
                                   "ground_truth": {"point_spacing_m": 0.08}})
    for seed, name in ((3, "scene0000_00"), (4, "scene0001_00")):
        export_scannet_scene(root, name, generate_room(seed, cfg), 4)
    return root


def data_overrides(root: Path) -> dict[str, object]:
    return {"root": str(root), "train_split": "train", "val_split": "train",
            "label_set": "synthetic", "label_source": "image", "partition": "synthetic_B15N4",
            "min_visible": 20, "min_labelled": 5, "border_px": 2}
