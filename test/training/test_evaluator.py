"""Evaluator on the tiny synthetic dataset: scene and view modes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.config.schema import from_dict, load_config
from xmask3d_ros.config.training import DataCfg, EvalCfg
from xmask3d_ros.model.build import build_model
from xmask3d_ros.training.evaluator import evaluate, partition_vocabulary, write_reports
from xmask3d_ros.training.views import ViewDataset

from .conftest import data_overrides


def test_evaluate_scene_and_view(synth_root: Path, tmp_path: Path) -> None:
    ds = ViewDataset(from_dict(DataCfg, data_overrides(synth_root)), "train", seed=0)
    model = build_model(load_config(ModelConfig, resolve_model_config("tiny")), seed=0)
    vocab, to_label = partition_vocabulary(ds.partition)
    assert len(vocab.names) == 26 and vocab.names[to_label.tolist().index(5)] == "sofa"
    assert not vocab.base[vocab.names.index("sofa")]
    scene = evaluate(model, ds, from_dict(EvalCfg, {"mode": "scene"}), max_scenes=1)
    view = evaluate(model, ds, from_dict(EvalCfg, {"mode": "view", "ensemble": False}),
                    max_scenes=1)
    assert scene.views == view.views > 0
    # view mode counts each visible point once per view, scene mode once per seen point
    assert view.confusion.matrix.sum() >= scene.confusion.matrix.sum() > 0
    r = scene.result
    assert 0.0 <= r.miou_base <= 1.0 and 0.0 <= r.miou_novel <= 1.0
    files = write_reports(scene, tmp_path, "tiny, random init")
    data = json.loads(files[1].read_text())
    assert data["views"] == scene.views and np.isfinite(data["miou_base"])


def test_pure_3d_features_classify_the_3d_branch_alone(synth_root: Path) -> None:
    """features=pure_3d: labels = gated softmax of cos(3D feature, text), no mask term."""
    import torch

    from xmask3d_ros.model.heads import cosine_logits, gate_probabilities
    from xmask3d_ros.training.evaluator import _predict

    ds = ViewDataset(from_dict(DataCfg, data_overrides(synth_root)), "train", seed=0)
    model = build_model(load_config(ModelConfig, resolve_model_config("tiny")), seed=0).eval()
    vocab, to_label = partition_vocabulary(ds.partition)
    v = ds.views_of_scene(ds.scene_names[0])[0]
    got = _predict(model, v, vocab, to_label, "pure_3d")
    out = model.infer(v.image, v.points, v.colors, v.rows, v.cols, vocabulary=vocab)
    logits = cosine_logits(out.feat_3d, model.text_embeddings(vocab.names), out.logit_scale)
    probs = gate_probabilities(torch.log_softmax(logits, -1), out.p_base,
                               vocab.base_mask(), model.cfg.binary.gating,
                               threshold=model.cfg.binary.threshold)
    np.testing.assert_array_equal(got, to_label[probs.argmax(-1).numpy()])
    fused = _predict(model, v, vocab, to_label, "fused")
    assert not np.array_equal(fused, got)  # the 2D branch changes covered points
