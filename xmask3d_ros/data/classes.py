"""Class lists and label maps: ScanNet-20 (NYU40 ids) and the synthetic-room vocabulary.

Two id spaces are used:

- *raw ids* (uint16): what a label image or a ground-truth point stores. For ScanNet these are
  NYU40 ids (``label/<i>.png``); the synthetic rooms use the NYU40 id wherever NYU40 has the
  concept (ceiling 22, pillow 18, box 29, night stand 32, lamp 35) and ids from
  ``SYNTHETIC_ONLY_FIRST_ID`` (41) upwards for concepts NYU40 lacks (monitor 41, plant 42), so a
  synthetic raw id never collides with an NYU40 class of another meaning. 0 = unlabelled.
- *class indices*: positions in a class list. ScanNet-20 indices 0..19 with ``IGNORE_INDEX``
  (255) for every other raw id, exactly as the OpenScene ``.pth`` files store them; synthetic
  vocabulary indices 0..26 (the first 20 are the ScanNet-20 classes in order) with 255 for
  unlabelled.

The synthetic-only classes (ceiling, pillow, box, night stand, lamp, monitor, plant) map to 255
in ScanNet-20, as they do in real ScanNet, and give the open-vocabulary pipeline classes that
no ScanNet-20 partition contains.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "IGNORE_INDEX",
    "NYU40_MAX_ID",
    "SCANNET20_CLASSES",
    "SCANNET20_NYU40_IDS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_ONLY_FIRST_ID",
    "SYNTHETIC_RAW_IDS",
    "class_raw_id",
    "raw_to_scannet20",
    "raw_to_synthetic",
    "scannet20_lut",
    "synthetic_lut",
]

IGNORE_INDEX = 255
NYU40_MAX_ID = 40
SYNTHETIC_ONLY_FIRST_ID = 41

SCANNET20_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip
SCANNET20_NYU40_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39,
)  # fmt: skip

# Synthetic-only classes: (name, raw id). NYU40 ids where NYU40 has the concept, else >= 41.
_SYNTHETIC_EXTRA: tuple[tuple[str, int], ...] = (
    ("ceiling", 22),
    ("pillow", 18),
    ("box", 29),
    ("nightstand", 32),
    ("lamp", 35),
    ("monitor", 41),
    ("plant", 42),
)
SYNTHETIC_CLASSES: tuple[str, ...] = SCANNET20_CLASSES + tuple(n for n, _ in _SYNTHETIC_EXTRA)
SYNTHETIC_RAW_IDS: tuple[int, ...] = SCANNET20_NYU40_IDS + tuple(i for _, i in _SYNTHETIC_EXTRA)

_RAW_BY_NAME = dict(zip(SYNTHETIC_CLASSES, SYNTHETIC_RAW_IDS))
# Label images are uint8 or uint16; a 65536-entry table covers both without bounds checks.
_LUT_SIZE = 1 << 16


def class_raw_id(name: str) -> int:
    """Raw (NYU40-style) id of a synthetic-vocabulary class name; KeyError lists the names."""
    try:
        return _RAW_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown class {name!r}; known: {', '.join(SYNTHETIC_CLASSES)}") from None


def _lut(raw_ids: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    lut = np.full(_LUT_SIZE, IGNORE_INDEX, dtype=np.uint8)
    lut[np.asarray(raw_ids)] = np.arange(len(raw_ids), dtype=np.uint8)
    lut.flags.writeable = False
    return lut


_SCANNET20_LUT = _lut(SCANNET20_NYU40_IDS)
_SYNTHETIC_LUT = _lut(SYNTHETIC_RAW_IDS)


def scannet20_lut() -> npt.NDArray[np.uint8]:
    """(65536,) uint8 read-only table raw id -> ScanNet-20 index (255 = ignore)."""
    return _SCANNET20_LUT


def synthetic_lut() -> npt.NDArray[np.uint8]:
    """(65536,) uint8 read-only table raw id -> synthetic-vocabulary index (255 = unlabelled)."""
    return _SYNTHETIC_LUT


def _apply(lut: npt.NDArray[np.uint8], raw: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"raw label ids must be integers, got dtype {arr.dtype}")
    # Negative or huge ids (e.g. -100 ignore markers) are out of every class list.
    valid = (arr >= 0) & (arr < _LUT_SIZE)
    out = np.full(arr.shape, IGNORE_INDEX, dtype=np.uint8)
    out[valid] = lut[arr[valid].astype(np.int64)]
    return out


def raw_to_scannet20(raw: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Map raw NYU40 ids (any int array) to ScanNet-20 indices 0..19, 255 elsewhere."""
    return _apply(_SCANNET20_LUT, raw)


def raw_to_synthetic(raw: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Map raw ids to synthetic-vocabulary indices (0..len(SYNTHETIC_CLASSES)-1), 255 elsewhere."""
    return _apply(_SYNTHETIC_LUT, raw)
