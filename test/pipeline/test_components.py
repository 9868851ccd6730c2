"""Connected components of voxel sets against a brute-force BFS over a Python dict."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.pipeline import components
from xmask3d_ros.pipeline.components import connected_components, summarize_components

NEIGHBOURS = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]


def bfs_components(keys: npt.NDArray[np.int64], groups: npt.NDArray[np.int64]) -> list[set[int]]:
    where = {(int(g), *map(int, k)): i for i, (k, g) in enumerate(zip(keys, groups))}
    seen: set[int] = set()
    out = []
    for start in range(len(keys)):
        if start in seen:
            continue
        comp, queue = {start}, collections.deque([start])
        seen.add(start)
        while queue:
            i = queue.popleft()
            g, k = int(groups[i]), keys[i]
            for d in NEIGHBOURS:
                j = where.get((g, int(k[0]) + d[0], int(k[1]) + d[1], int(k[2]) + d[2]))
                if j is not None and j not in seen:
                    seen.add(j)
                    comp.add(j)
                    queue.append(j)
        out.append(comp)
    return out


def as_partition(labels: npt.NDArray[np.int64]) -> set[frozenset[int]]:
    parts: dict[int, set[int]] = collections.defaultdict(set)
    for i, c in enumerate(labels.tolist()):
        parts[c].add(i)
    return {frozenset(p) for p in parts.values()}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 250),
    extent=st.sampled_from([3, 6, 12, 4000]),  # dense clusters ... far apart (sorted path)
    n_groups=st.integers(1, 4),
    overlap=st.booleans(),
)
def test_components_equal_bfs(seed: int, n: int, extent: int, n_groups: int, overlap: bool) -> None:
    rng = np.random.default_rng(seed)
    if overlap:  # the same key may appear in several groups (highlight mode)
        keys = rng.integers(-extent, extent, (n, 3))
        groups = rng.integers(0, n_groups, n)
        _, first = np.unique(np.column_stack([keys, groups]), axis=0, return_index=True)
        keys, groups = keys[np.sort(first)], groups[np.sort(first)]
    else:
        keys = np.unique(rng.integers(-extent, extent, (n, 3)), axis=0)
        rng.shuffle(keys)
        groups = rng.integers(0, n_groups, len(keys))
    labels, n_comp = connected_components(keys, groups * 3)  # sparse group values are fine
    ref = bfs_components(keys, groups)
    assert n_comp == len(ref)
    assert labels.min() == 0 and labels.max() == n_comp - 1
    assert as_partition(labels) == {frozenset(c) for c in ref}


def test_dense_and_sorted_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(0, 30, (3000, 3)), axis=0)
    groups = rng.integers(0, 3, len(keys))
    dense = as_partition(connected_components(keys, groups)[0])
    monkeypatch.setattr(components, "_DENSE_MIN_CELLS", 0)
    monkeypatch.setattr(components, "_DENSE_MAX_CELLS", 0)
    assert as_partition(connected_components(keys, groups)[0]) == dense


def test_huge_coordinate_ranges_are_compressed() -> None:
    """Keys a million voxels apart (bbox of 2**60+ cells) still work and stay separate."""
    keys = np.array([[0, 0, 0], [1, 1, 1], [1_000_000, -1_000_000, 1_000_000],
                     [1_000_001, -1_000_000, 1_000_000], [-1_000_000, 1_000_000, -1_000_000]])
    labels, n = connected_components(keys, np.array([0, 0, 0, 0, 1_000]))
    assert n == 3 and labels[0] == labels[1] and labels[2] == labels[3] and labels[1] != labels[2]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="distinct"):
        connected_components(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="within each group"):
        connected_components(np.zeros((2, 3), np.int32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        connected_components(np.zeros((2, 2), np.int32))
    assert connected_components(np.empty((0, 3), np.int32))[1] == 0


def test_summary_of_two_boxes() -> None:
    a = np.stack(np.meshgrid(range(3), range(3), range(3), indexing="ij"), -1).reshape(-1, 3)
    b = a + [10, 0, 0]
    keys = np.concatenate([a, b])
    pos = (keys + 0.5) * 0.1
    scores = np.concatenate([np.full(27, 0.5), np.full(27, 0.8)])
    comp, n = connected_components(keys)
    s = summarize_components(comp, n, keys, pos, scores)
    order = np.argsort(s.score)
    assert s.num_voxels[order].tolist() == [27, 27]
    assert s.score[order] == pytest.approx([0.5, 0.8])
    assert s.centroid[order[1]] == pytest.approx([1.15, 0.15, 0.15])
    assert s.key_min[order[1]].tolist() == [10, 0, 0] and s.key_max[order[1]].tolist() == [12, 2, 2]


def test_one_palette_for_every_output_with_distinct_colours() -> None:
    from xmask3d_ros.pipeline.answers import UNKNOWN_LABEL
    from xmask3d_ros.pipeline.palette import PALETTE, UNKNOWN_RGB, label_colors
    from xmask3d_ros.replay import outputs

    assert len({tuple(c) for c in PALETTE.tolist()}) == len(PALETTE) == 40
    assert tuple(UNKNOWN_RGB) not in {tuple(c) for c in PALETTE.tolist()}
    colors = label_colors(np.array([0, 39, 40, UNKNOWN_LABEL]))
    assert colors[0].tolist() == colors[2].tolist() == PALETTE[0].tolist()
    assert colors[3].tolist() == list(UNKNOWN_RGB)
    assert outputs.label_colors is label_colors  # replay pictures/PLY use the node's colours
