"""TimeSynchroniser: realistic jittered/reordered/duplicated streams, counters, exact mode, and a
property test against a brute-force (itertools.product) model of the documented policy."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.geometry.sync import TimeSynchronizer

MS = 1_000_000


def feed(sync: TimeSynchronizer, events: list[tuple[int, int, Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for stream, stamp, item in events:
        out.extend(sync.add(stream, stamp, item))
    return out


def camera_events(n: int, seed: int, latency_ms: float = 10.0) -> list[tuple[int, int, Any]]:
    """rgb / depth / camera_info at 30 Hz; rgb and info share a stamp, depth is +-5 ms off;
    each message reaches us after a random latency, so streams interleave out of stamp order."""
    rng = np.random.default_rng(seed)
    msgs = []
    for k in range(n):
        base = 1_000 * MS + k * 33 * MS
        rgb = base + int(rng.integers(-2, 3)) * MS
        depth = base + int(rng.integers(-5, 6)) * MS
        for stream, stamp in ((0, rgb), (1, depth), (2, rgb)):
            arrival = stamp + rng.uniform(0, latency_ms) * MS
            msgs.append((arrival, stream, stamp, (stream, k)))
    msgs.sort(key=lambda m: m[0])
    # Per-stream FIFO delivery (one topic = one ordered connection).
    return [(s, t, item) for _, s, t, item in msgs]


def test_jittered_interleaved_streams_all_match() -> None:
    sync = TimeSynchronizer(3, queue_size=10, slop_s=0.02)
    sets = feed(sync, camera_events(60, seed=1))
    assert len(sets) == 60
    for k, s in enumerate(sets):
        assert s == ((0, k), (1, k), (2, k))
    assert sync.stats.dropped == 0 and sync.stats.emitted_sets == 60 and sync.stats.received == 180
    assert sync.pending() == [0, 0, 0]


def test_missing_duplicated_and_late_messages_are_counted() -> None:
    events = [e for e in camera_events(30, seed=2) if e[2] != (1, 10)]  # depth of frame 10 lost
    dup_before = next(e for e in events if e[2] == (0, 20))
    events.insert(events.index(dup_before), (dup_before[0], dup_before[1], "dup"))  # re-sent early
    events.append(next(e for e in events if e[2] == (2, 5)))  # re-sent long after it was used
    sync = TimeSynchronizer(3, queue_size=10, slop_s=0.02)
    sets = feed(sync, events)
    assert [s[0][1] for s in sets] == [k for k in range(30) if k != 10]
    assert sets[19][0] == (0, 20)  # the later copy of the same stamp replaced "dup"
    st_ = sync.stats
    assert st_.out_of_slop == 2  # rgb 10 and info 10 never found a depth partner
    assert st_.duplicate_stamp == 1 and st_.older_than_last_emitted == 1
    assert st_.received == st_.emitted_sets * 3 + st_.dropped + sum(sync.pending())


def test_queue_overflow_drops_oldest() -> None:
    sync = TimeSynchronizer(2, queue_size=10, slop_s=0.01)
    for k in range(15):
        assert sync.add(0, k * 100 * MS, k) == []
    assert sync.stats.queue_overflow == 5 and sync.pending() == [10, 0]
    assert sync.add(1, 12 * 100 * MS + 3 * MS, "d") == [(12, "d")]
    assert sync.stats.out_of_slop == 7  # 5 .. 11 were older than the emitted set
    assert sync.pending() == [2, 0]
    # A message older than everything in a full queue is itself the one dropped.
    sync2 = TimeSynchronizer(2, queue_size=2, slop_s=0.01)
    sync2.add(0, 500 * MS, "a")
    sync2.add(0, 600 * MS, "b")
    assert sync2.add(0, 100 * MS, "old") == [] and sync2.stats.queue_overflow == 1
    assert sync2.add(1, 100 * MS, "x") == []  # "old" is gone


def test_minimal_spread_candidate_wins() -> None:
    sync = TimeSynchronizer(3, queue_size=5, slop_s=0.05)
    sync.add(0, 100 * MS, "a100")
    sync.add(0, 130 * MS, "a130")
    sync.add(1, 120 * MS, "b120")
    # Sets containing the pivot c125: (a100, b120) spread 25 ms, (a130, b120) spread 10 ms.
    assert sync.add(2, 125 * MS, "c125") == [("a130", "b120", "c125")]
    assert sync.stats.out_of_slop == 1  # a100 can no longer be matched


def test_out_of_slop_not_matched() -> None:
    sync = TimeSynchronizer(2, queue_size=5, slop_s=0.01)
    assert sync.add(0, 0, "a") == []
    assert sync.add(1, 11 * MS, "b") == []  # 11 ms > 10 ms slop
    assert sync.add(1, 10 * MS, "c") == [("a", "c")]  # spread == slop is accepted


def test_exact_mode() -> None:
    sync = TimeSynchronizer(3, queue_size=10, mode="exact")
    assert feed(sync, [(0, 5, "r5"), (2, 5, "i5"), (1, 6, "d6"), (0, 6, "r6"), (2, 6, "i6")]) == [
        ("r6", "d6", "i6")
    ]
    assert sync.stats.out_of_slop == 2  # r5, i5: no depth with stamp 5 before 6 was emitted
    assert sync.add(1, 5, "d5") == [] and sync.stats.older_than_last_emitted == 1
    assert feed(sync, [(1, 9, "d9"), (2, 9, "i9"), (0, 8, "r8"), (0, 9, "r9")]) == [("r9", "d9", "i9")]


def test_reset_and_validation() -> None:
    sync = TimeSynchronizer(2, queue_size=3, slop_s=0.01)
    sync.add(0, 100, 1)
    sync.add(1, 100, 2)
    assert sync.add(0, 50, 3) == []  # time went backwards (bag loop): refused ...
    sync.reset()  # ... until the caller resets
    sync.add(0, 50, 3)
    assert sync.add(1, 50, 4) == [(3, 4)]
    assert sync.stats.as_dict()["dropped"] == 1
    sync.add(0, 60, 5)
    sync.add(0, 70, 6)  # two queued, unmatched ...
    sync.reset()  # ... are counted when a reset throws them away
    assert sync.stats.dropped_reset == 2 and sync.stats.dropped == 3
    with pytest.raises(IndexError):
        sync.add(2, 0, None)
    for kwargs in ({"num_streams": 0, "queue_size": 1}, {"num_streams": 2, "queue_size": 0},
                   {"num_streams": 2, "queue_size": 1, "slop_s": -1.0},
                   {"num_streams": 2, "queue_size": 1, "mode": "fuzzy"}):
        with pytest.raises(ValueError):
            TimeSynchronizer(**kwargs)  # type: ignore[arg-type]


class NaiveSync:
    """Brute-force model of the documented policy: every combination via itertools.product."""

    def __init__(self, n: int, queue_size: int, slop: int, mode: str) -> None:
        self.n, self.qs, self.slop, self.mode = n, queue_size, slop, mode
        self.q: list[dict[int, Any]] = [{} for _ in range(n)]
        self.last: list[int | None] = [None] * n
        self.counts = dict(overflow=0, older=0, dup=0, out=0)

    def add(self, i: int, s: int, item: Any) -> list[tuple[Any, ...]]:
        if self.last[i] is not None and s <= self.last[i]:
            self.counts["older"] += 1
            return []
        if s in self.q[i]:
            self.counts["dup"] += 1
        elif len(self.q[i]) == self.qs:
            self.counts["overflow"] += 1
            oldest = min(self.q[i])
            if s < oldest:
                return []
            del self.q[i][oldest]
        self.q[i][s] = item
        if self.mode == "exact":
            choice = [s] * self.n if all(s in q for q in self.q) else None
        else:
            options = [
                [s] if j == i else [t for t in self.q[j] if abs(t - s) <= self.slop] for j in range(self.n)
            ]
            combos = [c for c in itertools.product(*options) if max(c) - min(c) <= self.slop]
            key = lambda c: (max(c) - min(c), sum(abs(t - s) for t in c), min(c))  # noqa: E731
            choice = list(min(combos, key=key)) if combos else None
        if choice is None:
            return []
        out = []
        for j, t in enumerate(choice):
            older = [u for u in self.q[j] if u < t]
            self.counts["out"] += len(older)
            for u in older:
                del self.q[j][u]
            out.append(self.q[j].pop(t))
            self.last[j] = t
        return [tuple(out)]


events_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 60)), min_size=1, max_size=80
)


@settings(max_examples=120, deadline=None)
@given(events_strategy, st.integers(1, 6), st.integers(0, 8), st.sampled_from(["approximate", "exact"]))
def test_matches_brute_force_model(events: list[tuple[int, int]], qs: int, slop: int, mode: str) -> None:
    sync = TimeSynchronizer(3, queue_size=qs, slop_s=slop * 1e-9, mode=mode)
    model = NaiveSync(3, qs, slop, mode)
    last_out: list[int] = [-1, -1, -1]
    for k, (stream, stamp) in enumerate(events):
        item = (stream, stamp, k)
        got = sync.add(stream, stamp, item)
        assert got == model.add(stream, stamp, item)
        for s in got:
            stamps = [m[1] for m in s]
            assert max(stamps) - min(stamps) <= (slop if mode == "approximate" else 0)
            assert all(a > b for a, b in zip(stamps, last_out))  # strictly increasing per stream
            last_out = stamps
    c = sync.stats
    assert (c.queue_overflow, c.older_than_last_emitted, c.duplicate_stamp, c.out_of_slop) == (
        model.counts["overflow"], model.counts["older"], model.counts["dup"], model.counts["out"]
    )
    assert c.received == c.emitted_sets * 3 + c.dropped + sum(sync.pending())
