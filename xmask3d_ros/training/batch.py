"""View samples -> :class:`~xmask3d_ros.model.xmask3d.TrainBatch` with partition labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from xmask3d_ros.data.partitions import Partition
from xmask3d_ros.model.xmask3d import TrainBatch, semantic_set_target
from xmask3d_ros.training.views import ViewSample

__all__ = ["collate_views"]


def collate_views(views: Sequence[ViewSample], partition: Partition) -> TrainBatch:
    """B views (their images resized to the first view's size) -> one TrainBatch.

    3D labels become compact base indices (novel, excluded, ignored -> B = CE ignore, §2.1);
    2D targets hold base-class masks plus the "other" mask (§1.6); no captions.
    """
    h, w = views[0].image.shape[:2]
    images, pts, cols_, view, rows, cc, lab, binl, targets = ([] for _ in range(9))
    for i, v in enumerate(views):
        img, r, c = v.image, v.rows, v.cols
        if img.shape[:2] != (h, w):
            sy, sx = h / img.shape[0], w / img.shape[1]
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
            r = np.minimum((r * sy).astype(np.int64), h - 1)
            c = np.minimum((c * sx).astype(np.int64), w - 1)
        images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
        pts.append(v.points)
        cols_.append(v.colors)
        view.append(np.full(len(v.points), i, dtype=np.int64))
        rows.append(r)
        cc.append(c)
        lab.append(partition.train_labels(v.labels))
        binl.append(partition.binary_labels(v.labels))
        l2d = v.labels_2d
        if l2d is None:  # no 2D labels: everything is "other"
            l2d = np.full((h, w), -1, dtype=np.int64)
        elif l2d.shape != (h, w):
            l2d = np.asarray(Image.fromarray(l2d.astype(np.int32)).resize(
                (w, h), Image.Resampling.NEAREST)).astype(np.int64)
        targets.append(semantic_set_target(torch.from_numpy(partition.train_labels(l2d)),
                                           partition.num_base))

    def cat(x: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(x))

    return TrainBatch(
        images=torch.stack(images), points=cat(pts).float(), colors=cat(cols_), view=cat(view),
        rows=cat(rows), cols=cat(cc), labels_3d=cat(lab), binary_labels=cat(binl),
        set_targets=targets, captions=None,
    )
