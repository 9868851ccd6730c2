"""Label maps beyond ScanNet-20: ScanNet200 and S3DIS (reference-notes §2.1, §2.3).

ScanNet-20 and the synthetic vocabulary live in :mod:`xmask3d_ros.data.classes`; this module
adds the other two class lists and one lookup, :func:`label_set`, so every reader and the
evaluator get class names, raw ids and the ignore value from one place.

- ScanNet200: ``VALID_CLASS_IDS_200`` are raw ScanNet category ids (the ``id`` column of
  ``scannetv2-labels.combined.tsv``, 1..1191, *not* NYU40), in the official class order of
  ScanNet's ``scannet200_constants.py``; any other id maps to ``SCANNET200_IGNORE`` (200), as
  the XMask3D loader does.
- S3DIS (PLA's ``.npy`` layout): semantic labels are already indices 0..12; clutter (12) is
  ignored by every open-vocabulary protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.classes import (
    IGNORE_INDEX,
    SCANNET20_CLASSES,
    SCANNET20_NYU40_IDS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_RAW_IDS,
)

__all__ = [
    "S3DIS_CLASSES",
    "S3DIS_IGNORED",
    "SCANNET200_CLASSES",
    "SCANNET200_IGNORE",
    "SCANNET200_RAW_IDS",
    "LabelSet",
    "label_set",
    "raw_to_scannet200",
    "scannet200_lut",
]

# ScanNet's BenchmarkScripts/ScanNet200/scannet200_constants.py (VALID_CLASS_IDS_200).
SCANNET200_RAW_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28,
    29, 31, 32, 33, 34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55,
    56, 57, 58, 59, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    82, 84, 86, 87, 88, 89, 90, 93, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107,
    110, 112, 115, 116, 118, 120, 121, 122, 125, 128, 130, 131, 132, 134, 136, 138, 139, 140,
    141, 145, 148, 154, 155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170, 177, 180, 185,
    188, 191, 193, 195, 202, 208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276,
    283, 286, 300, 304, 312, 323, 325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540,
    562, 570, 572, 581, 609, 748, 776, 1156, 1163, 1164, 1165, 1166, 1167, 1168, 1169, 1170,
    1171, 1172, 1173, 1174, 1175, 1176, 1178, 1179, 1180, 1181, 1182, 1183, 1184, 1185, 1186,
    1187, 1188, 1189, 1190, 1191,
)  # fmt: skip
# Same file, CLASS_LABELS_200.
SCANNET200_CLASSES: tuple[str, ...] = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk",
    "office chair", "bed", "pillow", "sink", "picture", "window", "toilet", "bookshelf",
    "monitor", "curtain", "book", "armchair", "coffee table", "box", "refrigerator", "lamp",
    "kitchen cabinet", "towel", "clothes", "tv", "nightstand", "counter", "dresser", "stool",
    "cushion", "plant", "ceiling", "bathtub", "end table", "dining table", "keyboard", "bag",
    "backpack", "toilet paper", "printer", "tv stand", "whiteboard", "blanket",
    "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe",
    "computer tower", "bottle", "bin", "ottoman", "bench", "board", "washing machine",
    "mirror", "copier", "basket", "sofa chair", "file cabinet", "fan", "laptop", "shower",
    "paper", "person", "paper towel dispenser", "oven", "blinds", "rack", "plate",
    "blackboard", "piano", "suitcase", "rail", "radiator", "recycling bin", "container",
    "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand", "light",
    "laundry basket", "pipe", "clothes dryer", "guitar", "toilet paper holder", "seat",
    "speaker", "column", "bicycle", "ladder", "bathroom stall", "shower wall", "cup", "jacket",
    "storage bin", "coffee maker", "dishwasher", "paper towel roll", "machine", "mat",
    "windowsill", "bar", "toaster", "bulletin board", "ironing board", "fireplace",
    "soap dish", "kitchen counter", "doorframe", "toilet paper dispenser", "mini fridge",
    "fire extinguisher", "ball", "hat", "shower curtain rod", "water cooler", "paper cutter",
    "tray", "shower door", "pillar", "ledge", "toaster oven", "mouse",
    "toilet seat cover dispenser", "furniture", "cart", "storage container", "scale",
    "tissue box", "light switch", "crate", "power outlet", "decoration", "sign", "projector",
    "closet door", "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones",
    "dish rack", "broom", "guitar case", "range hood", "dustpan", "hair dryer", "water bottle",
    "handicap bar", "purse", "vent", "shower floor", "water pitcher", "mailbox", "bowl",
    "paper bag", "alarm clock", "music stand", "projector screen", "divider",
    "laundry detergent", "bathroom counter", "object", "bathroom vanity", "closet wall",
    "laundry hamper", "bathroom stall door", "ceiling light", "trash bin", "dumbbell",
    "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle",
    "structure", "shower head", "keyboard piano", "case of water bottles", "coat rack",
    "storage organizer", "folded chair", "fire alarm", "power strip", "calendar", "poster",
    "potted plant", "luggage", "mattress",
)  # fmt: skip
SCANNET200_IGNORE = 200  # XMask3D's ignore value for ScanNet200 (ids outside the 200)

# PLA pcseg/datasets/s3dis: semantic label = index in this tuple; clutter is ignored.
S3DIS_CLASSES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
    "bookcase", "board", "clutter",
)  # fmt: skip
S3DIS_IGNORED: tuple[str, ...] = ("clutter",)

_LUT_SIZE = 1 << 16


def _lut(raw_ids: tuple[int, ...], ignore: int) -> npt.NDArray[np.int64]:
    lut = np.full(_LUT_SIZE, ignore, dtype=np.int64)
    lut[np.asarray(raw_ids)] = np.arange(len(raw_ids))
    lut.flags.writeable = False
    return lut


_SCANNET200_LUT = _lut(SCANNET200_RAW_IDS, SCANNET200_IGNORE)


def scannet200_lut() -> npt.NDArray[np.int64]:
    """(65536,) int64 read-only table raw ScanNet id -> ScanNet200 index (200 = ignore)."""
    return _SCANNET200_LUT


def raw_to_scannet200(raw: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Raw ScanNet category ids (any int array) -> ScanNet200 indices 0..199, 200 elsewhere."""
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"raw label ids must be integers, got dtype {arr.dtype}")
    valid = (arr >= 0) & (arr < _LUT_SIZE)
    out = np.full(arr.shape, SCANNET200_IGNORE, dtype=np.int64)
    out[valid] = _SCANNET200_LUT[arr[valid].astype(np.int64)]
    return out


@dataclass(frozen=True)
class LabelSet:
    """One dataset's class list: names, raw ids (None where labels are stored as indices),
    the ignore value its files use and the classes every protocol excludes."""

    name: str
    classes: tuple[str, ...]
    raw_ids: tuple[int, ...] | None  # raw id of each class (index i -> raw_ids[i])
    ignore_index: int  # label value of unlabelled / out-of-list points in this set's files
    excluded: tuple[str, ...]  # never trained nor evaluated (otherfurniture, clutter)

    def index(self, name: str) -> int:
        """Class index of ``name``; KeyError lists the known names."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a {self.name} class; known: "
                           f"{', '.join(self.classes)}") from None


_LABEL_SETS = {
    "scannet20": LabelSet("scannet20", SCANNET20_CLASSES, SCANNET20_NYU40_IDS, IGNORE_INDEX,
                          ("otherfurniture",)),
    "scannet200": LabelSet("scannet200", SCANNET200_CLASSES, SCANNET200_RAW_IDS,
                           SCANNET200_IGNORE, ()),
    "s3dis": LabelSet("s3dis", S3DIS_CLASSES, None, IGNORE_INDEX, S3DIS_IGNORED),
    "synthetic": LabelSet("synthetic", SYNTHETIC_CLASSES, SYNTHETIC_RAW_IDS, IGNORE_INDEX,
                          ("otherfurniture",)),
}
LABEL_SET_NAMES = tuple(_LABEL_SETS)


def label_set(name: str) -> LabelSet:
    """The :class:`LabelSet` called ``name`` (scannet20, scannet200, s3dis, synthetic)."""
    try:
        return _LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(_LABEL_SETS)}") from None
