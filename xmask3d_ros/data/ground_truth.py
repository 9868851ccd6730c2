"""Ground truth written beside a synthetic rosbag: ``<bag>.gt.npz``.

One ``np.savez_compressed`` file (read with ``allow_pickle=False``; strings are unicode arrays)
holding the labelled surface points of the room in the bag's map frame plus the exact camera
trajectory, so replay evaluation needs nothing but the bag and this file:

======================  ==============  ===================================================
key                     dtype, shape    meaning
======================  ==============  ===================================================
format_version          int64 ()        ``GT_FORMAT_VERSION``
points                  float32 (N, 3)  surface samples in ``frame_id`` (m)
colors                  uint8 (N, 3)    RGB the renderer gives that surface point
normals                 float32 (N, 3)  outward unit normals
label                   uint16 (N,)     raw class id (NYU40 where defined; data/classes.py)
label_scannet20         uint8 (N,)      ScanNet-20 index, 255 = ignore
label_synthetic         uint8 (N,)      index in ``class_names``, 255 = unlabelled
instance                uint16 (N,)     instance id (> 0)
class_names             str (C,)        synthetic vocabulary (ScanNet-20 first, in order)
class_raw_ids           uint16 (C,)     raw id of each vocabulary class
instance_classes        str (I,)        class name of instance id i ("none" at 0)
T_world_cam             float64 (F,4,4) optical-frame pose of every image (camera-to-world)
stamps_ns               int64 (F,)      header stamp of every image
K                       float64 (3, 3)  intrinsics of the colour (and aligned depth) images
image_size              int64 (2,)      (width, height)
frame_id                str ()          map frame of points and poses (e.g. ``odom``)
optical_frame           str ()          frame_id of the images
room_size_m             float64 (3,)    room extent; the room spans [0, size] in frame_id
room_type, seed         str (), int64 ()
======================  ==============  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GT_FORMAT_VERSION", "GroundTruth", "ground_truth_path", "load_ground_truth",
           "save_ground_truth"]

GT_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """In-memory form of a ``.gt.npz`` file (field meanings in the module table)."""

    points: npt.NDArray[np.float32]
    colors: npt.NDArray[np.uint8]
    normals: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint16]
    label_scannet20: npt.NDArray[np.uint8]
    label_synthetic: npt.NDArray[np.uint8]
    instance: npt.NDArray[np.uint16]
    class_names: tuple[str, ...]
    class_raw_ids: npt.NDArray[np.uint16]
    instance_classes: tuple[str, ...]
    T_world_cam: npt.NDArray[np.float64]
    stamps_ns: npt.NDArray[np.int64]
    K: npt.NDArray[np.float64]
    image_size: tuple[int, int]
    frame_id: str
    optical_frame: str
    room_size_m: npt.NDArray[np.float64]
    room_type: str
    seed: int


def ground_truth_path(bag_path: str | Path) -> Path:
    """``<bag>.gt.npz`` beside the bag directory (or file)."""
    p = Path(bag_path)
    return p.with_name(p.name + ".gt.npz")


def save_ground_truth(path: str | Path, gt: GroundTruth) -> Path:
    """Write ``gt`` to ``path`` (compressed npz)."""
    data: dict[str, Any] = {"format_version": np.int64(GT_FORMAT_VERSION)}
    for f in fields(gt):
        v = getattr(gt, f.name)
        is_text = f.name in ("class_names", "instance_classes")
        data[f.name] = np.asarray(v, dtype=str) if is_text else np.asarray(v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **data)
    return path


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ``.gt.npz``; a missing key or a newer format is a ValueError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable ground-truth .npz: {err}") from err
    version = int(data.get("format_version", -1))
    if version != GT_FORMAT_VERSION:
        raise ValueError(f"{path}: ground-truth format_version {version}, expected {GT_FORMAT_VERSION}")
    kw: dict[str, Any] = {}
    for f in fields(GroundTruth):
        if f.name not in data:
            raise ValueError(f"{path}: ground-truth key {f.name!r} is missing")
        v = data[f.name]
        if f.name in ("class_names", "instance_classes"):
            v = tuple(str(s) for s in v)
        elif f.name in ("frame_id", "optical_frame", "room_type"):
            v = str(v)
        elif f.name == "seed":
            v = int(v)
        elif f.name == "image_size":
            v = (int(v[0]), int(v[1]))
        kw[f.name] = v
    return GroundTruth(**kw)
