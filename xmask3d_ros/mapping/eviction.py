"""Deterministic choice of the voxels to evict when the map is over ``max_voxels``.

Rules (``MapCfg.eviction``):

- ``farthest``: largest distance from the sensor first; ties: oldest ``last_seen``, then the
  smallest packed key.
- ``oldest``: oldest ``last_seen`` first; ties: largest distance, then the smallest packed key.

Distances are float32 squared distances of the voxel positions (running means) from the sensor,
so the result is a pure function of the map state and the sensor position. Cost: one
``np.partition`` over the map plus a ``lexsort`` of the voxels tied at the threshold.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["EVICTION_RULES", "select_evictions"]

EVICTION_RULES = ("farthest", "oldest")


def select_evictions(
    k: int,
    rule: str,
    dist2: npt.NDArray[np.float32],
    last_seen_ns: npt.NDArray[np.int64],
    keys: npt.NDArray[np.int64],
) -> npt.NDArray[np.intp]:
    """Row indices (sorted ascending) of the ``k`` voxels that ``rule`` evicts first."""
    n = dist2.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k >= n:
        return np.arange(n, dtype=np.intp)
    if rule == "farthest":
        primary: npt.NDArray[np.generic] = -dist2  # smallest first
        secondary: npt.NDArray[np.generic] = last_seen_ns
    elif rule == "oldest":
        primary, secondary = last_seen_ns, -dist2
    else:
        raise ValueError(f"unknown eviction rule {rule!r}; valid: {', '.join(EVICTION_RULES)}")
    threshold = np.partition(primary, k - 1)[k - 1]
    below = np.flatnonzero(primary < threshold)
    tied = np.flatnonzero(primary == threshold)
    need = k - below.size
    order = np.lexsort((keys[tied], secondary[tied]))  # last key is the primary sort key
    chosen = np.concatenate([below, tied[order[:need]]])
    chosen.sort()
    return chosen
