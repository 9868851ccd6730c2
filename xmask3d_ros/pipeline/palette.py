"""One fixed label palette for every output: RViz clouds, legends, PLY files and pictures.

Label index i (the position of a class in the query's vocabulary) takes ``PALETTE[i % 40]``; the
40 colours are pairwise distinct (tab20 then tab20b), so vocabularies up to 40 labels never share
a colour. Unknown voxels (below the query's min_score) are grey.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xmask3d_ros.pipeline.answers import UNKNOWN_LABEL

__all__ = ["PALETTE", "UNKNOWN_RGB", "label_colors"]

PALETTE = np.array(
    [
        # tab20
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
        (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
        (247, 182, 210), (219, 219, 141), (158, 218, 229), (57, 59, 121), (99, 121, 57),
        # tab20b
        (82, 84, 163), (107, 110, 207), (156, 158, 222), (140, 162, 82), (181, 207, 107),
        (206, 219, 156), (140, 109, 49), (189, 158, 57), (231, 186, 82), (231, 203, 148),
        (132, 60, 57), (173, 73, 74), (214, 97, 107), (231, 150, 156), (123, 65, 115),
        (165, 81, 148), (206, 109, 189), (222, 158, 214), (99, 99, 99), (189, 189, 189),
    ],
    dtype=np.uint8,
)  # fmt: skip
UNKNOWN_RGB = (128, 128, 128)


def label_colors(labels: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(N,) label indices -> (N, 3) uint8 RGB; ``UNKNOWN_LABEL`` -> grey."""
    lab = np.asarray(labels).astype(np.int64)
    rgb = PALETTE[lab % len(PALETTE)]
    rgb[lab == UNKNOWN_LABEL] = UNKNOWN_RGB
    return rgb
