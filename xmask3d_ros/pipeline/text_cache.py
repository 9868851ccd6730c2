"""Per-label LRU cache of text embeddings in front of a ``TextEncoder``.

A query's labels are looked up one by one; the misses go to the encoder in one batch. So a new
vocabulary costs one encoder call for its new words only, and repeated queries cost none.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from xmask3d_ros.pipeline.segmenter import TextEncoder, check_text_embeddings

__all__ = ["TextCacheStats", "TextEmbeddingCache"]


@dataclasses.dataclass(frozen=True)
class TextCacheStats:
    hits: int = 0  # labels served from the cache
    misses: int = 0  # labels sent to the encoder
    encoder_calls: int = 0  # encode() calls (one per query with at least one miss)
    evictions: int = 0  # labels dropped as least recently used
    size: int = 0  # labels cached now


class TextEmbeddingCache:
    """Thread-safe LRU map label -> (D,) float32 unit embedding, filled through ``encoder``."""

    def __init__(self, encoder: TextEncoder, capacity: int = 4096) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._encoder = encoder
        self._dim = int(encoder.feature_dim)
        self._capacity = int(capacity)
        self._entries: collections.OrderedDict[str, npt.NDArray[np.float32]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._calls = self._evictions = 0

    @property
    def feature_dim(self) -> int:
        return self._dim

    @property
    def stats(self) -> TextCacheStats:
        with self._lock:
            return TextCacheStats(self._hits, self._misses, self._calls, self._evictions, len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, labels: Sequence[str]) -> npt.NDArray[np.float32]:
        """(L, D) float32 unit embeddings of ``labels`` (distinct strings), in order."""
        out = np.empty((len(labels), self._dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, label in enumerate(labels):
                e = self._entries.get(label)
                if e is None:
                    missing.append(i)
                else:
                    self._entries.move_to_end(label)
                    out[i] = e
            self._hits += len(labels) - len(missing)
        if not missing:
            return out
        # Encode outside the lock: a model call may take a while; a racing query may encode the
        # same word twice, which is harmless.
        words = [labels[i] for i in missing]
        emb = check_text_embeddings(self._encoder.encode(words), len(words), self._dim)
        out[missing] = emb
        with self._lock:
            self._misses += len(words)
            self._calls += 1
            for word, e in zip(words, emb):
                self._entries[word] = e.copy()
                self._entries.move_to_end(word)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
                self._evictions += 1
        return out
