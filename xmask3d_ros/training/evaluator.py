"""Run a model over a view dataset and accumulate the confusion matrix (reference-notes §1.13,
§2.5).

``mode="scene"`` reproduces ``run/infer.py``: every accepted view of a scene votes one label
per visible point, the arg-max vote wins, points never seen take their nearest seen point's
label (KD-tree on xyz), metrics are computed on every point of the scene. With per-pixel
(``label_source=image``) labels a point's ground truth is the majority of its views' labels and
points no view sees are left out. ``mode="view"`` scores each view's visible points on their
own (the training-time validation). The vocabulary is every evaluated class of the partition
(base and novel), flagged for the binary gating.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from scipy.spatial import cKDTree

from xmask3d_ros.config.training import EvalCfg
from xmask3d_ros.data.partitions import Partition
from xmask3d_ros.metrics.confusion import ConfusionMatrix, IoUResult
from xmask3d_ros.metrics.report import markdown_table, save_confusion_png, save_json
from xmask3d_ros.model.xmask3d import Vocabulary, XMask3D
from xmask3d_ros.training.views import ViewDataset, ViewSample

__all__ = ["EvalResult", "evaluate", "partition_vocabulary", "write_reports"]


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    result: IoUResult
    scenes: int
    views: int


def partition_vocabulary(p: Partition) -> tuple[Vocabulary, npt.NDArray[np.int64]]:
    """Vocabulary of the evaluated classes and the label-set index of each entry."""
    idx = p.evaluated_indices
    names = tuple(p.classes[i] for i in idx)
    return Vocabulary.from_names(names, p.base), idx


@contextlib.contextmanager
def _ensemble(model: XMask3D, enabled: bool) -> Iterator[None]:
    old = model.cfg
    if old.ensemble.enabled != enabled:
        model.cfg = dataclasses.replace(old, ensemble=dataclasses.replace(old.ensemble,
                                                                          enabled=enabled))
    try:
        yield
    finally:
        model.cfg = old


def _predict(model: XMask3D, v: ViewSample, vocab: Vocabulary,
             to_label: npt.NDArray[np.int64], features: str) -> npt.NDArray[np.int64]:
    if features == "map":  # per view, what a map query computes: class-agnostic masks (the
        # map's channels do not depend on a vocabulary), then the model's rule
        out = model.infer(v.image, v.points, v.colors, v.rows, v.cols, vocabulary=None)
        labels = model.classify_points(out.fused, out.mask_clip, out.point_mask, out.p_base,
                                       model.text_embeddings(vocab.names), vocab,
                                       out.logit_scale)["labels"]
        return np.asarray(to_label[labels.cpu().numpy()], dtype=np.int64)
    out = model.infer(v.image, v.points, v.colors, v.rows, v.cols, vocabulary=vocab)
    labels = out.labels
    if features == "pure_3d":  # the 3D branch alone: no mask feature, no MaskCLIP term
        none = torch.full_like(out.point_mask, -1)
        labels = model.classify_points(out.feat_3d, out.mask_clip, none, out.p_base,
                                       model.text_embeddings(vocab.names), vocab,
                                       out.logit_scale)["labels"]
    assert labels is not None
    return np.asarray(to_label[labels.cpu().numpy()], dtype=np.int64)


@torch.no_grad()
def evaluate(model: XMask3D, dataset: ViewDataset, cfg: EvalCfg, *,
             max_scenes: int | None = None) -> EvalResult:
    """Confusion matrix over the scenes of ``dataset`` and its IoU summary (``cfg.convention``)."""
    p = dataset.partition
    vocab, to_label = partition_vocabulary(p)
    nc = len(p.classes)
    cm = ConfusionMatrix.for_indices(nc, p.evaluated_indices.tolist())
    n_views = 0
    names = dataset.scene_names[: max_scenes] if max_scenes else dataset.scene_names
    was_training = model.training
    model.eval()
    with _ensemble(model, cfg.ensemble):
        for name in names:
            views = dataset.views_of_scene(name)
            n_views += len(views)
            if cfg.mode == "view":
                for v in views:
                    cm.update(v.labels, _predict(model, v, vocab, to_label, cfg.features))
                continue
            scene = dataset.scene(name)
            n = len(scene.points)
            votes = np.zeros((n, nc), dtype=np.int32)
            gt_votes = np.zeros((n, nc + 1), dtype=np.int32)
            for v in views:
                np.add.at(votes, (v.point_index, _predict(model, v, vocab, to_label, cfg.features)), 1)
                lab = np.where((v.labels >= 0) & (v.labels < nc), v.labels, nc)
                np.add.at(gt_votes, (v.point_index, lab), 1)
            seen = votes.sum(axis=1) > 0
            pred = np.full(n, -1, dtype=np.int64)
            if seen.any():
                pred[seen] = votes[seen].argmax(axis=1)
                if (~seen).any():
                    _, nn = cKDTree(scene.points[seen]).query(scene.points[~seen])
                    pred[~seen] = pred[seen][nn]
            if dataset.cfg.label_source == "image":
                gt_seen = gt_votes.sum(axis=1) > 0
                gt = np.where(gt_seen, gt_votes.argmax(axis=1), nc)
                gt[gt == nc] = -1
            else:
                gt = scene.labels
            cm.update(gt, pred)
    model.train(was_training)
    res = cm.iou(base=p.base_indices.tolist(), novel=p.novel_indices.tolist(),
                 convention=cfg.convention, names=p.classes)
    return EvalResult(cm, res, len(names), n_views)


def write_reports(ev: EvalResult, out_dir: str | Path, title: str) -> list[Path]:
    """``metrics.md``, ``metrics.json`` and ``confusion.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "metrics.md"
    md.write_text(markdown_table(ev.result, title) +
                  f"\n{ev.scenes} scenes, {ev.views} views.\n", encoding="utf-8")
    return [md, save_json(ev.result, out / "metrics.json",
                          {"scenes": ev.scenes, "views": ev.views, "title": title}),
            save_confusion_png(ev.confusion.matrix, ev.result, out / "confusion.png")]
