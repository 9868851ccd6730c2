"""Reports of an :class:`~xmask3d_ros.metrics.confusion.IoUResult`: markdown, JSON, picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.metrics.confusion import IoUResult

__all__ = ["markdown_table", "save_confusion_png", "save_json", "summary_line"]


def _pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{100.0 * x:.1f}"


def summary_line(res: IoUResult) -> str:
    """``hIoU 61.7 | mIoU base 70.2 | novel 55.1 | all 65.0`` (percent)."""
    return (f"hIoU {_pct(res.hiou)} | mIoU base {_pct(res.miou_base)} | novel "
            f"{_pct(res.miou_novel)} | all {_pct(res.miou_all)}")


def markdown_table(res: IoUResult, title: str | None = None) -> str:
    """Summary table plus one row per evaluated class (IoU in percent)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"Convention: `{res.convention}`.", "",
        "| hIoU | mIoU base | mIoU novel | mIoU all |", "|---|---|---|---|",
        f"| {_pct(res.hiou)} | {_pct(res.miou_base)} | {_pct(res.miou_novel)} | "
        f"{_pct(res.miou_all)} |", "",
        "| class | split | IoU | GT points |", "|---|---|---|---|",
    ]
    base, novel = set(res.base.tolist()), set(res.novel.tolist())
    for i in res.evaluated:
        split = "base" if i in base else "novel" if i in novel else "-"
        lines.append(f"| {res.names[i]} | {split} | {_pct(res.iou[i])} | {int(res.gt_count[i])} |")
    return "\n".join(lines) + "\n"


def save_json(res: IoUResult, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write :meth:`IoUResult.as_dict` (plus ``extra``) as JSON; NaN become null."""
    data = res.as_dict()
    if extra:
        data.update(extra)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return p


def save_confusion_png(matrix: npt.ArrayLike, res: IoUResult, path: str | Path) -> Path:
    """Row-normalised confusion matrix of the evaluated classes (novel names marked ``*``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)[np.ix_(res.evaluated, res.evaluated)]
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    novel = set(res.novel.tolist())
    labels = [res.names[i] + ("*" if i in novel else "") for i in res.evaluated]
    k = len(labels)
    size = max(4.0, 0.35 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis")
    if k <= 60:
        ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth (* = novel)")
    ax.set_title(f"row-normalised confusion ({res.convention}); {summary_line(res)}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
