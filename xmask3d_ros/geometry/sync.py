"""Time synchroniser for N message streams (message_filters semantics, no ROS needed).

Used for bag replay and wherever ``message_filters`` is not importable. Streams are indices
``0 .. num_streams - 1`` (e.g. rgb, depth, camera_info); stamps are integer nanoseconds.

``mode='approximate'`` (message_filters ``ApproximateTimeSynchronizer``, Python flavour): each
arriving message is the pivot; among the queued messages of the other streams within ``slop``
of it, the set (one per stream, pivot included) with the smallest spread ``max - min`` is emitted
at once if that spread is ``<= slop`` (ties: smallest total distance to the pivot, then oldest).
``mode='exact'``: a set is emitted when every stream holds the same stamp.

Common rules, each drop counted in :class:`SyncStats`:
- a queue holding more than ``queue_size`` messages drops its oldest (``queue_overflow``);
- after a set is emitted, every queued message older than the one its stream contributed can no
  longer be matched and is discarded (``out_of_slop``), and later arrivals not newer than that
  stamp are refused (``older_than_last_emitted``); output stamps are thus strictly increasing per
  stream, as with the C++ policies;
- a second message with a stamp already queued on that stream replaces the first
  (``duplicate_stamp``; message_filters' dict queue does the same).
Time jumping backwards (bag loop, sim reset) would refuse everything: call :meth:`reset`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from typing import Any

__all__ = ["SYNC_MODES", "SyncStats", "TimeSynchronizer"]

SYNC_MODES = ("approximate", "exact")


@dataclasses.dataclass
class SyncStats:
    """Counters since construction (``reset`` keeps them)."""

    received: int = 0  # add() calls
    emitted_sets: int = 0  # matched sets returned
    queue_overflow: int = 0  # oldest message evicted from a full queue
    older_than_last_emitted: int = 0  # arrived with a stamp <= its stream's last emitted stamp
    duplicate_stamp: int = 0  # replaced by a later message with the same stamp on the same stream
    out_of_slop: int = 0  # discarded unmatched: a newer set was emitted first
    dropped_reset: int = 0  # still queued when reset() was called (time jumped back)

    @property
    def dropped(self) -> int:
        """Messages that will never be part of an emitted set."""
        return (self.queue_overflow + self.older_than_last_emitted + self.duplicate_stamp
                + self.out_of_slop + self.dropped_reset)

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "dropped": self.dropped}


class TimeSynchronizer:
    """Match messages of ``num_streams`` streams by stamp; see the module docstring for the policy.

    ``queue_size``: messages kept per stream; ``slop_s``: max spread of a set (approximate mode;
    ignored in exact mode). Thread-safe: ``add`` may be called from several callbacks.
    """

    def __init__(
        self, num_streams: int, queue_size: int, slop_s: float = 0.0, mode: str = "approximate"
    ) -> None:
        if int(num_streams) < 1:
            raise ValueError(f"num_streams must be >= 1, got {num_streams}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not (slop_s >= 0.0 and math.isfinite(slop_s)):
            raise ValueError(f"slop_s must be finite and >= 0, got {slop_s}")
        if mode not in SYNC_MODES:
            raise ValueError(f"mode must be one of {', '.join(SYNC_MODES)}, got {mode!r}")
        self.num_streams = int(num_streams)
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop_s * 1e9))
        self.mode = mode
        self.stats = SyncStats()
        self._lock = threading.Lock()
        self._stamps: list[list[int]] = [[] for _ in range(self.num_streams)]  # sorted per stream
        self._items: list[dict[int, Any]] = [{} for _ in range(self.num_streams)]
        self._last: list[int | None] = [None] * self.num_streams

    def add(self, stream_index: int, stamp_ns: int, item: Any) -> list[tuple[Any, ...]]:
        """Queue ``item``; returns the sets (tuples in stream order) completed by it, oldest first."""
        if not 0 <= stream_index < self.num_streams:
            raise IndexError(f"stream_index {stream_index} out of range for {self.num_streams} streams")
        stamp = int(stamp_ns)
        with self._lock:
            self.stats.received += 1
            last = self._last[stream_index]
            if last is not None and stamp <= last:
                self.stats.older_than_last_emitted += 1
                return []
            stamps, items = self._stamps[stream_index], self._items[stream_index]
            if stamp in items:
                self.stats.duplicate_stamp += 1
            else:
                bisect.insort(stamps, stamp)
                if len(stamps) > self.queue_size:
                    oldest = stamps.pop(0)
                    self.stats.queue_overflow += 1
                    if oldest == stamp:  # the new message itself was the oldest
                        return []
                    del items[oldest]
            items[stamp] = item
            if self.mode == "exact":
                chosen = self._match_exact(stamp)
            else:
                chosen = self._match_approx(stream_index, stamp)
            if chosen is None:
                return []
            return [self._emit(chosen)]

    def _match_exact(self, stamp: int) -> list[int] | None:
        if all(stamp in items for items in self._items):
            return [stamp] * self.num_streams
        return None

    def _match_approx(self, pivot_stream: int, pivot: int) -> list[int] | None:
        slop = self.slop_ns
        cands: list[list[int]] = []  # per stream: queued stamps within slop of the pivot
        for j, stamps in enumerate(self._stamps):
            if j == pivot_stream:
                cands.append([pivot])
                continue
            a = bisect.bisect_left(stamps, pivot - slop)
            b = bisect.bisect_right(stamps, pivot + slop)
            if a == b:
                return None
            cands.append(stamps[a:b])
        # Pass 1: the smallest spread W. An optimal set's window [lo, lo + W] starts at a candidate
        # lo <= pivot, and for a given lo each stream's best pick is its smallest stamp >= lo.
        spreads: dict[int, int] = {}
        for lo in sorted({s for c in cands for s in c if s <= pivot}):
            hi = lo
            for c in cands:
                k = bisect.bisect_left(c, lo)
                if k == len(c):
                    break
                hi = max(hi, c[k])
            else:
                spreads[lo] = hi - lo
        if not spreads or min(spreads.values()) > slop:
            return None
        width = min(spreads.values())
        # Pass 2 (tie-break): inside each optimal window every stamp keeps the spread <= W, so
        # each stream independently takes the one closest to the pivot (older on a tie).
        best: tuple[int, int] | None = None
        best_pick: list[int] = []
        for lo, spread in spreads.items():
            if spread != width:
                continue
            pick = [self._closest(c, lo, lo + width, pivot) for c in cands]
            key = (sum(abs(s - pivot) for s in pick), min(pick))
            if best is None or key < best:
                best, best_pick = key, pick
        return best_pick

    @staticmethod
    def _closest(c: list[int], lo: int, hi: int, pivot: int) -> int:
        """Stamp of sorted ``c`` within [lo, hi] closest to ``pivot`` (older on a tie)."""
        a, b = bisect.bisect_left(c, lo), bisect.bisect_right(c, hi)
        k = min(max(bisect.bisect_left(c, pivot, a, b), a), b - 1)
        if k > a and pivot - c[k - 1] <= abs(c[k] - pivot):
            return c[k - 1]
        return c[k]

    def _emit(self, chosen: list[int]) -> tuple[Any, ...]:
        out = []
        for j, stamp in enumerate(chosen):
            stamps, items = self._stamps[j], self._items[j]
            k = bisect.bisect_left(stamps, stamp)
            for old in stamps[:k]:
                del items[old]
            self.stats.out_of_slop += k
            del stamps[: k + 1]
            out.append(items.pop(stamp))
            self._last[j] = stamp
        self.stats.emitted_sets += 1
        return tuple(out)

    def pending(self) -> list[int]:
        """Messages waiting per stream (for diagnostics)."""
        with self._lock:
            return [len(s) for s in self._stamps]

    def reset(self) -> None:
        """Drop queued messages and the last-emitted stamps (after a time jump); keeps stats."""
        with self._lock:
            self.stats.dropped_reset += sum(len(s) for s in self._stamps)
            for s, i in zip(self._stamps, self._items):
                s.clear()
                i.clear()
            self._last = [None] * self.num_streams
