"""S3DIS rooms in PLA's preprocessed layout (reference-notes §2.3).

``<root>/stanford_indoor3d_inst/Area_<a>_<room>.npy``: float array (N, 8) = xyz (shifted to a
zero minimum), rgb (0..255), semantic label (index in :data:`~xmask3d_ros.data.labels.
S3DIS_CLASSES`), instance label. Read with ``allow_pickle=False``. Area 5 is the test area.
XMask3D's per-view pipeline would also need 2D-3D-S frames and poses, which PLA's layout lacks;
these rooms serve 3D-only evaluation and the partitions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.classes import IGNORE_INDEX
from xmask3d_ros.data.labels import S3DIS_CLASSES

__all__ = ["S3DISFormatError", "S3DISRoom", "list_s3dis_rooms", "read_s3dis_room"]

S3DIS_DIR = "stanford_indoor3d_inst"
_NAME = re.compile(r"Area_(\d+)_(.+)\.npy")


class S3DISFormatError(ValueError):
    """An S3DIS ``.npy`` file is missing, unreadable or not (N, 8)."""


@dataclass(frozen=True, eq=False)
class S3DISRoom:
    name: str  # e.g. Area_5_office_1
    area: int
    points: npt.NDArray[np.float32]  # (N, 3) metres
    colors: npt.NDArray[np.uint8]  # (N, 3) RGB
    labels: npt.NDArray[np.int64]  # (N,) index in S3DIS_CLASSES, IGNORE_INDEX if out of range
    instances: npt.NDArray[np.int64]  # (N,)


def list_s3dis_rooms(root: str | Path, *, test_area: int = 5, split: str = "test") -> list[Path]:
    """Room files of the test area (``split="test"``) or of every other area (``"train"``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = []
    for p in sorted((Path(root) / S3DIS_DIR).glob("Area_*.npy")):
        m = _NAME.fullmatch(p.name)
        if m and ((int(m.group(1)) == test_area) == (split == "test")):
            out.append(p)
    return out


def read_s3dis_room(path: str | Path) -> S3DISRoom:
    """Read one room; semantic labels outside 0..12 become ``IGNORE_INDEX``."""
    path = Path(path)
    m = _NAME.fullmatch(path.name)
    if m is None:
        raise S3DISFormatError(f"{path}: expected a name like Area_5_office_1.npy")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise S3DISFormatError(f"{path}: not a readable .npy array: {err}") from err
    if arr.ndim != 2 or arr.shape[1] != 8 or arr.dtype.kind not in "fiu":
        raise S3DISFormatError(f"{path}: expected a numeric (N, 8) array (xyz, rgb, semantic, "
                               f"instance), got {arr.dtype} {arr.shape}")
    sem = arr[:, 6].astype(np.int64)
    sem = np.where((sem >= 0) & (sem < len(S3DIS_CLASSES)), sem, IGNORE_INDEX)
    return S3DISRoom(path.stem, int(m.group(1)), arr[:, :3].astype(np.float32),
                     np.clip(arr[:, 3:6], 0, 255).astype(np.uint8), sem,
                     arr[:, 7].astype(np.int64))
