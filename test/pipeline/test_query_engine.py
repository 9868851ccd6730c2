"""QueryEngine against independent references: float64 brute force, hand-built scenes."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.config.perception import QueryCfg
from xmask3d_ros.mapping.voxel_map import LocalVoxelMap
from xmask3d_ros.pipeline import (
    UNKNOWN_LABEL,
    QueryEngine,
    QueryError,
    QueryMode,
    TableTextEncoder,
    normalize_labels,
)

D = 64
NAMES = ("chair", "table", "sofa", "lamp", "floor")


@dataclasses.dataclass(frozen=True, eq=False)
class Voxels:
    """A minimal VoxelView."""

    keys: npt.NDArray[np.int32]
    features: npt.NDArray[np.float16]
    feature_weights: npt.NDArray[np.float32]
    voxel_size_m: float = 0.05

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def positions(self) -> npt.NDArray[np.float32]:
        return ((self.keys + 0.5) * self.voxel_size_m).astype(np.float32)


def random_voxels(rng: np.random.Generator, n: int, d: int, unknown: float = 0.2) -> Voxels:
    keys = rng.choice(40**3, size=n, replace=False)
    keys = np.stack(np.unravel_index(keys, (40, 40, 40)), axis=1).astype(np.int32) - 20
    # Running means of unit vectors: norms below 1, some voxels with no semantics at all.
    f = rng.standard_normal((n, d)) * rng.uniform(0.05, 1.0, (n, 1)) / np.sqrt(d)
    w = rng.uniform(0.5, 5.0, n).astype(np.float32)
    w[rng.random(n) < unknown] = 0.0
    f[w == 0] = 0.0
    return Voxels(keys, f.astype(np.float16), w)


def brute_force_scores(vox: Voxels, text: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    f = vox.features.astype(np.float64)
    t = text.astype(np.float64)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (f @ t.T) / np.linalg.norm(f, axis=1, keepdims=True)
    s[vox.feature_weights == 0] = np.nan
    return s


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("bfloat16", 6e-3)])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 700), n_labels=st.integers(1, 12),
       chunk=st.sampled_from([64, 100, 4096]))
def test_scores_equal_float64_brute_force(dtype: str, tol: float, seed: int, n: int,
                                          n_labels: int, chunk: int) -> None:
    rng = np.random.default_rng(seed)
    vox = random_voxels(rng, n, D)
    enc = TableTextEncoder((), D, seed=seed)
    labels = [f"word{i}" for i in range(n_labels)]
    eng = QueryEngine(enc, QueryCfg(min_score=0.05, compute_dtype=dtype, chunk_rows=chunk))
    ref = brute_force_scores(vox, enc.encode(labels))
    known = ~np.isnan(ref[:, 0])

    hl = eng.query(vox, labels, QueryMode.HIGHLIGHT, objects=False)
    assert hl.scores is not None and hl.scores.shape == (n, n_labels)
    assert np.all(np.isnan(hl.scores[~known]))
    np.testing.assert_allclose(hl.scores[known], ref[known], atol=tol, rtol=0)

    seg = eng.query(vox, labels, "segment", objects=False)
    np.testing.assert_allclose(seg.voxel_score[known], ref[known].max(axis=1), atol=tol, rtol=0)
    assert np.all(np.isnan(seg.voxel_score[~known]))
    best = ref[known].max(axis=1)
    clear = np.sort(ref[known], axis=1)
    # Where the best label is not a near tie (and not near the threshold) it must be the argmax.
    sure = (clear[:, -1] - (clear[:, -2] if n_labels > 1 else -2)) > 2 * tol
    sure &= np.abs(best - 0.05) > 2 * tol
    expect = np.where(best >= 0.05, ref[known].argmax(axis=1), UNKNOWN_LABEL)
    assert np.array_equal(seg.voxel_label[known][sure], expect[sure])
    assert np.all(seg.voxel_label[~known] == UNKNOWN_LABEL)
    for r in seg.results:
        assert r.num_voxels == np.count_nonzero(seg.voxel_label == r.label_index)
        if known.any():
            assert r.max_score == pytest.approx(np.nanmax(ref[:, r.label_index]), abs=tol)
        else:
            assert np.isnan(r.max_score)
    with np.errstate(invalid="ignore"):
        hl_counts = np.count_nonzero(hl.scores >= np.float32(0.05), axis=0)
    assert [r.num_voxels for r in hl.results] == hl_counts.tolist()


def box_surface(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> npt.NDArray[np.int32]:
    g = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1)
    g = g.reshape(-1, 3)
    on = np.any((g == np.asarray(lo)) | (g == np.asarray(hi)), axis=1)
    return g[on].astype(np.int32)


def labelled_scene(enc: TableTextEncoder) -> tuple[Voxels, list[tuple[str, npt.NDArray[np.int32], float]]]:
    """Two chairs, a table and a 3-voxel 'lamp' speck, each voxel's feature = label embedding
    scaled (the cosine is 1 whatever the norm) plus a fixed tilt setting each object's score."""
    parts = [
        ("chair", box_surface((0, 0, 0), (4, 4, 8)), 0.9),
        ("chair", box_surface((20, 0, 0), (24, 4, 8)), 0.7),
        ("table", box_surface((8, 10, 0), (16, 18, 6)), 0.8),
        ("lamp", np.array([[30, 30, 0], [30, 30, 1], [31, 31, 2]], np.int32), 0.95),
    ]
    other = enc.embedding("unrelated")
    keys, feats = [], []
    for name, k, score in parts:
        e = enc.embedding(name)
        f = score * e + np.sqrt(1 - score**2) * (other - (other @ e) * e) / np.linalg.norm(other - (other @ e) * e)
        keys.append(k)
        feats.append(np.repeat(0.5 * f[None], len(k), axis=0))
    f = np.concatenate(feats)
    return Voxels(np.concatenate(keys), f.astype(np.float16), np.ones(len(f), np.float32)), parts


def test_objects_segment_mode() -> None:
    enc = TableTextEncoder(NAMES, D)
    vox, parts = labelled_scene(enc)
    eng = QueryEngine(enc, QueryCfg(min_score=0.5, min_object_voxels=5))
    ans = eng.query(vox, ["table", "chair", "lamp", "sofa"])
    assert ans.mode is QueryMode.SEGMENT and ans.map_voxels == vox.size
    chairs = ans.result("chair").objects
    assert [o.label for o in chairs] == ["chair", "chair"]
    assert [o.score for o in chairs] == pytest.approx([0.9, 0.7], abs=2e-3)  # sorted by score
    k = parts[0][1]
    assert chairs[0].num_voxels == len(k)
    assert chairs[0].centroid == pytest.approx(vox.positions[: len(k)].mean(axis=0), abs=1e-5)
    assert chairs[0].bbox_min == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    assert chairs[0].bbox_max == pytest.approx((0.25, 0.25, 0.45), abs=1e-6)  # centre + half voxel
    assert len(ans.result("table").objects) == 1
    lamp = ans.result("lamp")
    assert lamp.num_voxels == 3 and lamp.objects == ()  # below min_object_voxels
    assert ans.result("sofa").num_voxels == 0 and ans.result("sofa").objects == ()
    assert ans.result("sofa").max_score < 0.5
    # voxel_object points into the flattened objects, only for voxels in a reported object.
    objs = ans.objects
    assert len(objs) == 3
    for j, o in enumerate(objs):
        assert np.count_nonzero(ans.voxel_object == j) == o.num_voxels
    assert np.all(ans.voxel_object[ans.voxel_label == 2] == -1)  # the lamp speck


def test_objects_highlight_mode_allow_overlaps() -> None:
    enc = TableTextEncoder(NAMES, D)
    k = box_surface((0, 0, 0), (5, 5, 5))
    e = (enc.embedding("chair") + enc.embedding("sofa")) / np.sqrt(2)  # cos 0.707 with both
    vox = Voxels(k, np.repeat(e[None], len(k), 0).astype(np.float16), np.ones(len(k), np.float32))
    eng = QueryEngine(enc, QueryCfg(min_object_voxels=5))
    ans = eng.query(vox, ["chair", "sofa", "table"], QueryMode.HIGHLIGHT, min_score=0.5)
    for label in ("chair", "sofa"):
        r = ans.result(label)
        assert r.num_voxels == len(k) and len(r.objects) == 1
        assert r.objects[0].score == pytest.approx(np.sqrt(0.5), abs=1e-3)
    assert ans.result("table").num_voxels == 0
    assert ans.scores is not None and ans.scores.shape == (len(k), 3)


def test_unknown_voxels_and_empty_map() -> None:
    enc = TableTextEncoder(NAMES, D)
    eng = QueryEngine(enc)
    empty = Voxels(np.empty((0, 3), np.int32), np.empty((0, D), np.float16), np.empty(0, np.float32))
    ans = eng.query(empty, ["chair"])
    assert ans.map_voxels == 0 and ans.result("chair").num_voxels == 0
    assert np.isnan(ans.result("chair").max_score)
    no_sem = Voxels(np.zeros((1, 3), np.int32), np.zeros((1, D), np.float16), np.zeros(1, np.float32))
    ans = eng.query(no_sem, ["chair"], "highlight")
    assert ans.voxel_label.tolist() == [UNKNOWN_LABEL] and np.isnan(ans.voxel_score[0])


def test_label_normalisation_and_refusals() -> None:
    assert normalize_labels([" chair", "chair ", "", "  ", "potted plant"], max_labels=5,
                            max_label_chars=20) == (("chair", "potted plant"), ("chair ", "", "  "))
    assert normalize_labels("chair, table ,,chair", max_labels=5, max_label_chars=20)[0] == ("chair", "table")
    enc = TableTextEncoder(NAMES, D)
    eng = QueryEngine(enc, QueryCfg(max_labels=3, max_label_chars=10))
    vox = random_voxels(np.random.default_rng(0), 50, D)
    bad: list[tuple[object, object, object, str]] = [
        (["a", "b", "c", "d"], "segment", None, "max_labels"),
        (["x" * 11], "segment", None, "max_label_chars"),
        (["", " "], "segment", None, "no label left"),
        ([3], "segment", None, "expected a string"),
        (["a"], "panoptic", None, "mode"),
        (["a"], 7, None, "mode"),
        (["a"], 0, 1.5, "min_score"),
        (["a"], 0, float("nan"), "min_score"),
    ]
    for labels, mode, min_score, what in bad:
        with pytest.raises(QueryError, match=what):
            eng.query(vox, labels, mode, min_score)  # type: ignore[arg-type]
    assert eng.stats.refused == len(bad)
    assert eng.stats.queries == 0
    assert enc.calls == 0, "refused queries never reach the text encoder"
    other = TableTextEncoder(NAMES, 32)
    with pytest.raises(QueryError, match="dimensions"):
        QueryEngine(other).query(vox, ["chair"])


def test_text_embeddings_are_cached_per_label() -> None:
    enc = TableTextEncoder(NAMES, D)
    eng = QueryEngine(enc, QueryCfg(text_cache_size=3))
    vox = random_voxels(np.random.default_rng(1), 100, D)
    eng.query(vox, ["chair", "table"])
    eng.query(vox, ["table", "chair"])
    assert (enc.calls, enc.encoded) == (1, 2)
    eng.query(vox, ["chair", "sofa"])  # one new word -> one call with that word only
    assert (enc.calls, enc.encoded) == (2, 3)
    eng.query(vox, ["lamp"])  # capacity 3: evicts the least recently used ('table')
    eng.query(vox, ["table"])
    assert (enc.calls, enc.encoded) == (4, 5)
    s = eng.stats.text
    assert s.evictions == 2 and s.size == 3 and s.hits == 3


def test_query_on_a_live_map_and_its_snapshot() -> None:
    """The engine reads LocalVoxelMap (and its snapshot) through the same VoxelView."""
    enc = TableTextEncoder(NAMES, D)
    m = LocalVoxelMap(None, D)
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1, (2000, 3)).astype(np.float32)
    m.integrate_points(pts, np.zeros((2000, 3), np.uint8), 1, np.zeros(3))
    rows = np.arange(m.size)
    chair = rows[m.positions[:, 0] < 0.5]
    m.update_semantics(chair, np.repeat(enc.embedding("chair")[None], chair.size, 0))
    eng = QueryEngine(enc)
    live = eng.query(m, ["chair", "table"])
    snap = eng.query(m.snapshot(), ["chair", "table"])
    assert np.array_equal(live.voxel_label, snap.voxel_label)
    assert live.result("chair").num_voxels == chair.size
    assert np.all(live.voxel_label[chair] == 0)
    with pytest.raises(QueryError, match="without features"):
        eng.query(m.snapshot(include_features=False), ["chair"])
