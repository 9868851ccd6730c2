"""Segmentation metrics (pure numpy): confusion matrix, IoU, mIoU base/novel, hIoU, reports."""

from xmask3d_ros.metrics.confusion import (
    CONVENTIONS,
    ConfusionMatrix,
    IoUResult,
    harmonic_iou,
    iou_from_confusion,
)

__all__ = ["CONVENTIONS", "ConfusionMatrix", "IoUResult", "harmonic_iou", "iou_from_confusion"]
