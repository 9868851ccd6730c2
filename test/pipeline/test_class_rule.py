"""The query-time classification rule against the model's own heads (torch), brute force in
float64, and the map channels it reads (running means against a group-by)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.config.perception import QueryCfg
from xmask3d_ros.mapping.voxel_map import LocalVoxelMap
from xmask3d_ros.model.heads import ensemble_log_scores, gate_probabilities
from xmask3d_ros.pipeline import QueryEngine, TableTextEncoder
from xmask3d_ros.pipeline.class_rule import ClassRule, class_probabilities, normalize_name
from xmask3d_ros.pipeline.segmenter import SegmentationResult, check_segmentation

D = 32
NAMES = ("wall", "floor", "chair", "sofa", "desk")
BASE = ("wall", "floor", "chair")


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Unit rows; zero rows (no observation) stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)


def _heads_reference(rule: ClassRule, f: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
                     covered: npt.NDArray[np.bool_], pb: npt.NDArray[np.float64],
                     has_pb: npt.NDArray[np.bool_], text: npt.NDArray[np.float64],
                     base: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """The model's own functions (heads.py), point by point in float64."""
    t = torch.from_numpy(_unit(text))
    fl = rule.logit_scale * (torch.from_numpy(_unit(f)) @ t.T)
    cl = rule.logit_scale * (torch.from_numpy(_unit(c)) @ t.T)
    ids = torch.where(torch.from_numpy(covered), torch.arange(len(f)), torch.tensor(-1))
    b = torch.from_numpy(base)
    if rule.ensemble:
        log_s = ensemble_log_scores(fl, cl, ids, b, base_ratio=rule.base_ratio,
                                    novel_ratio=rule.novel_ratio)
    else:
        log_s = torch.log_softmax(fl, -1)
    gated = gate_probabilities(log_s, torch.from_numpy(pb), b, rule.gating, threshold=rule.threshold)
    plain = torch.softmax(log_s, -1)
    return torch.where(torch.from_numpy(has_pb)[:, None], gated, plain).numpy()


@pytest.mark.parametrize("gating", ["hard", "soft", "off"])
@pytest.mark.parametrize("ensemble", [True, False])
def test_class_probabilities_equal_the_model_heads(gating: str, ensemble: bool) -> None:
    rng = np.random.default_rng(3)
    n = 400
    f, c = rng.standard_normal((n, D)), rng.standard_normal((n, D))
    text = rng.standard_normal((len(NAMES), D))
    covered = rng.random(n) < 0.7
    pb = rng.random(n)
    has_pb = rng.random(n) < 0.9
    rule = ClassRule(logit_scale=14.0, base_names=frozenset(BASE), ensemble=ensemble,
                     base_ratio=0.8, novel_ratio=0.3, gating=gating, threshold=0.4)
    base = rule.base_flags(NAMES)
    assert base.tolist() == [True, True, True, False, False]
    t = _unit(text)
    got = class_probabilities(rule, (_unit(f) @ t.T).astype(np.float32),
                              (_unit(c) @ t.T).astype(np.float32), covered,
                              pb.astype(np.float32), has_pb, base)
    want = _heads_reference(rule, f, c, covered, pb, has_pb, text, base)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    if gating == "hard":  # a gated voxel only takes labels of its group
        g = has_pb & (pb > 0.4)
        assert base[got[g].argmax(1)].all() and not base[got[has_pb & (pb <= 0.4)].argmax(1)].any()


def test_rule_checks_and_names() -> None:
    assert normalize_name("  Shower_Curtain ") == "shower curtain"
    rule = ClassRule(1.0, frozenset({"Shower Curtain"}))
    assert rule.base_flags(["shower_curtain", "curtain"]).tolist() == [True, False]
    for bad in (dict(logit_scale=0.0), dict(logit_scale=1.0, gating="maybe"),
                dict(logit_scale=1.0, base_ratio=1.5), dict(logit_scale=1.0, threshold=1.0)):
        with pytest.raises(ValueError):
            ClassRule(**bad)  # type: ignore[arg-type]


def _map_with_channels(rng: np.random.Generator, n_obs: int = 3000, clip: bool = True):
    """A map of 400 voxels and a random stream of observations (repeats included)."""
    m = LocalVoxelMap(MapCfg(voxel_size_m=0.1, radius_m=100.0, clip_channel=clip), D)
    keys = np.stack(np.unravel_index(rng.choice(20**3, 400, replace=False), (20, 20, 20)), 1)
    m.integrate_points(((keys + 0.5) * 0.1).astype(np.float32), np.zeros((400, 3), np.uint8), 1,
                       np.zeros(3))
    rows = rng.integers(0, 400, n_obs)
    f = rng.standard_normal((n_obs, D))
    c = rng.standard_normal((n_obs, D))
    w = rng.uniform(0.2, 2.0, n_obs)
    pb = rng.random(n_obs)
    on_mask = rng.random(n_obs) < 0.6
    for part in np.array_split(np.arange(n_obs), 7):
        m.update_semantics(rows[part], f[part], w[part], base_prob=pb[part])
        sel = part[on_mask[part]]
        m.update_clip_features(rows[sel], c[sel], w[sel])
    return m, rows, f, c, w, pb, on_mask


def test_map_channels_are_running_means() -> None:
    rng = np.random.default_rng(0)
    m, rows, f, c, w, pb, on_mask = _map_with_channels(rng)
    for r in (0, 17, 399):
        hit = rows == r
        if hit.any():
            want_f = (w[hit, None] * _unit(f[hit])).sum(0) / w[hit].sum()
            np.testing.assert_allclose(m.features[r], want_f, atol=2e-3)
            np.testing.assert_allclose(m.base_prob[r], (w[hit] * pb[hit]).sum() / w[hit].sum(), rtol=1e-5)
            np.testing.assert_allclose(m.base_prob_weights[r], w[hit].sum(), rtol=1e-5)
        hc = hit & on_mask
        if hc.any():
            want_c = (w[hc, None] * _unit(c[hc])).sum(0) / w[hc].sum()
            np.testing.assert_allclose(m.clip_features[r], want_c, atol=2e-3)
        assert (m.clip_weights[r] > 0) == hc.any()
    # removal keeps every channel with its voxel (rows move, keys find them)
    before = {k: (m.features[i].copy(), m.clip_features[i].copy(), m.base_prob[i])
              for i, k in enumerate(map(tuple, m.keys))}
    m.integrate_points(np.full((1, 3), 0.05, np.float32), np.zeros((1, 3), np.uint8), 2,
                       np.array([1.0, 1.0, 1.0]))
    m._remove(np.arange(m.size) % 3 == 0)  # noqa: SLF001 - exercise the row moves directly
    for i, k in enumerate(map(tuple, m.keys)):
        if k in before:
            np.testing.assert_array_equal(m.features[i], before[k][0])
            np.testing.assert_array_equal(m.clip_features[i], before[k][1])
            assert m.base_prob[i] == before[k][2]
    snap = m.snapshot(include_features=True)
    assert snap.clip_features is not None and snap.clip_features.shape == (m.size, D)
    np.testing.assert_array_equal(snap.base_prob_weights, m.base_prob_weights)


def test_clip_channel_off_costs_nothing_and_queries_fall_back() -> None:
    rng = np.random.default_rng(1)
    m, *_ = _map_with_channels(rng, clip=False)
    assert m.clip_dim == 0 and m.clip_features.shape == (m.size, 0) and not m.clip_weights.any()
    enc = TableTextEncoder(NAMES, D, seed=2)
    rule = ClassRule(12.0, frozenset(BASE))
    got = QueryEngine(enc, QueryCfg(min_score=0.0), rule).query(m, list(NAMES))
    t = enc.encode(list(NAMES)).astype(np.float64)
    f = m.features.astype(np.float64)
    want = _heads_reference(rule, f, f, np.zeros(m.size, bool), m.base_prob.astype(np.float64),
                            m.base_prob_weights > 0, t, rule.base_flags(NAMES))
    np.testing.assert_array_equal(got.voxel_label, want.argmax(1))


@pytest.mark.parametrize("chunk_rows, threads", [(2048, 0), (64, 2)])
def test_query_with_rule_equals_float64_reference(chunk_rows: int, threads: int) -> None:
    rng = np.random.default_rng(2)
    m, *_ = _map_with_channels(rng)
    enc = TableTextEncoder(NAMES, D, seed=2)
    rule = ClassRule(12.0, frozenset(BASE), base_ratio=0.85, novel_ratio=0.35)
    eng = QueryEngine(enc, QueryCfg(min_score=0.3, chunk_rows=chunk_rows, threads=threads), rule)
    t = enc.encode(list(NAMES)).astype(np.float64)
    f, c = m.features.astype(np.float64), m.clip_features.astype(np.float64)
    want = _heads_reference(rule, f, c, m.clip_weights > 0, m.base_prob.astype(np.float64),
                            m.base_prob_weights > 0, t, rule.base_flags(NAMES))
    seg = eng.query(m, list(NAMES))
    best = want.max(1)
    sure = best >= 0.3
    np.testing.assert_array_equal(seg.voxel_label[sure], want.argmax(1)[sure])
    assert (seg.voxel_label[~sure] == 65535).all()
    np.testing.assert_allclose(seg.voxel_score, best, atol=1e-4)
    # highlight: every label's own probability column of the same computation
    hl = eng.query(m, list(NAMES), mode="highlight")
    assert hl.scores is not None
    np.testing.assert_allclose(hl.scores, want, atol=1e-4)
    assert [r.num_voxels for r in hl.results] == list(np.count_nonzero(want >= 0.3, axis=0))


def test_checked_segmentation_gathers_mask_embeddings_and_names_bad_input() -> None:
    emb = np.arange(3 * D, dtype=np.float32).reshape(3, D)
    res = SegmentationResult(covered=np.array([4, 1, 7]), features=np.ones((3, D), np.float32),
                             mask_embeddings=emb, point_masks=np.array([2, -1, 0]),
                             base_prob=np.array([0.1, 0.9, 0.5], np.float32))
    chk = check_segmentation(res, 8, D)
    assert chk.clip_points.tolist() == [0, 2]
    np.testing.assert_array_equal(chk.clip_features, emb[[2, 0]])
    kept = chk.select(np.array([False, True, True]))
    assert kept.covered.tolist() == [1, 7] and kept.clip_points.tolist() == [1]
    np.testing.assert_array_equal(kept.clip_features, emb[[0]])
    assert kept.base_prob is not None and kept.base_prob.tolist() == pytest.approx([0.9, 0.5])
    bad = [
        (dict(point_masks=np.array([3, -1, 0])), "point_masks must lie"),
        (dict(point_masks=np.array([0, 0])), "point_masks must be"),
        (dict(mask_embeddings=None), "needs mask_embeddings"),
        (dict(base_prob=np.array([0.1, np.nan, 0.5])), "base_prob must lie"),
        (dict(base_prob=np.array([0.1, 0.5])), "base_prob must have shape"),
    ]
    for change, message in bad:
        fields = dict(covered=res.covered, features=res.features, mask_embeddings=emb,
                      point_masks=res.point_masks, base_prob=res.base_prob)
        fields.update(change)
        with pytest.raises(ValueError, match=message):
            check_segmentation(SegmentationResult(**fields), 8, D)  # type: ignore[arg-type]


def test_a_short_segment_query_competes_with_the_trained_classes() -> None:
    """One label: probabilities over it and the trained classes it did not name (sorted); a
    voxel a trained class wins is unknown. Highlight mode scores the label alone."""
    rng = np.random.default_rng(4)
    m, *_ = _map_with_channels(rng)
    enc = TableTextEncoder(NAMES, D, seed=2)
    rule = ClassRule(12.0, frozenset(BASE))
    eng = QueryEngine(enc, QueryCfg(min_score=0.0), rule)
    for asked in (["sofa"], ["Chair", "desk"]):
        competitors = sorted(set(BASE) - {a.lower() for a in asked})
        columns = asked + competitors
        t = enc.encode(columns).astype(np.float64)
        want = _heads_reference(rule, m.features.astype(np.float64),
                                m.clip_features.astype(np.float64), m.clip_weights > 0,
                                m.base_prob.astype(np.float64), m.base_prob_weights > 0, t,
                                rule.base_flags(columns))
        best = want.argmax(1)
        got = eng.query(m, asked)
        expect = np.where(best < len(asked), best, 65535)
        np.testing.assert_array_equal(got.voxel_label, expect)
        assert 0 < np.count_nonzero(expect == 65535) < m.size  # both outcomes occur
        np.testing.assert_allclose(got.voxel_score, want.max(1), atol=1e-4)
        assert [r.num_voxels for r in got.results] == [int(np.sum(expect == i)) for i in range(len(asked))]
        hl = eng.query(m, asked, mode="highlight")  # the same probabilities, label by label
        assert hl.scores is not None
        np.testing.assert_allclose(hl.scores, want[:, : len(asked)], atol=1e-4)
