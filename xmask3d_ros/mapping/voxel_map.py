"""The bounded local voxel map: geometry, colour, occupancy and per-voxel semantic state.

Storage is structure-of-arrays with a capacity (rows ``0..size-1`` are the live voxels, packed:
removal moves the last rows into the holes), plus a sorted index ``(packed key, row)`` searched
with ``np.searchsorted``. No Python object per voxel; every step is a handful of numpy calls.
Why a sorted index and not a numpy open-addressing hash table: a frame's keys come out of the
group-by already sorted, so the lookup is one ``searchsorted`` of sorted needles (0.05 ms for
20 k keys into 200 k) and new keys go in with ``np.insert`` (0.2-0.7 ms at 300 k); per frame
that is < 10 % of the integration time, and the index costs 12 B per voxel with no load factor.

Per voxel (``bytes_per_voxel(D)`` = 73 + 4 D bytes with the MaskCLIP channel: 2121 B at D = 512,
3145 B at D = 768; 73 + 2 D without it, ``MapCfg.clip_channel``):

=================  ==============  =====  ==================================================
array              dtype           bytes  meaning
=================  ==============  =====  ==================================================
row key            int64           8      packed voxel coordinates (``mapping.keys``)
position           float32 x 3     12     running mean of the points, map frame, metres
colour             float32 x 3     12     running mean RGB (0..255); ``colors`` rounds it
count              uint32          4      points merged (saturates at 2**32 - 1)
last_seen_ns       int64           8      newest stamp that hit the voxel
misses             uint8           1      free-space misses since the last hit
features           float16 x D     2 D    weighted mean of L2-normalised features
feature_weight     float32         4      sum of the feature weights
clip_features      float16 x D     2 D    weighted mean of the unit MaskCLIP embeddings of the
                                          masks that covered the voxel (0 columns when off)
clip_weight        float32         4      sum of the MaskCLIP weights
base_prob          float32         4      weighted mean of p(base), the binary head's output
base_prob_weight   float32         4      sum of the p(base) weights
sorted index       int64 + int32   12     key and row, sorted by key
=================  ==============  =====  ==================================================

The ``keys`` and ``colors`` views are derived on first access after a change (+15 B per voxel
while held). Storage is reserved once for ``max_voxels`` plus 50 % (calloc'd zero pages, capped
at 2 GiB of address space; it doubles if ever exceeded), so there is no growth copy; memory in
use is the rows ever written (``memory_bytes``), flat once the map is full.

Order inside ``integrate``: merge (hits reset misses) -> radius eviction -> free-space clearing
-> capacity eviction, so ``size <= max_voxels`` holds after every call and clearing frees room
before anything is evicted for capacity.

Why two feature channels and p(base): XMask3D classifies a point by a per-class geometric
ensemble of its fused feature with the MaskCLIP embedding of its mask, gated by p(base), and
both need the query's vocabulary. Stored separately, a query applies the model's own rule to
the voxel's averages (``pipeline.scoring``); a single blended feature cannot (16 held-out demo
rooms, per-point means over their views: hIoU 31 for the blended cosine, 56 for the rule on
the stored channels).

Not thread-safe: the pipeline holds a lock; other threads read :meth:`snapshot` copies. Views
(``positions`` ...) are valid until the next mutating call; row indices (``visible``,
``update_semantics``) are valid while ``layout_version`` is unchanged (appending new voxels
keeps existing rows; removals move rows). :meth:`rows_of` maps keys back to current rows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.mapping.clearing import min_filter_depth, see_through
from xmask3d_ros.mapping.eviction import select_evictions
from xmask3d_ros.mapping.keys import GroupedPoints, group_columns, pack_keys, unpack_keys
from xmask3d_ros.mapping.records import IntegrationStats, MapStats, VoxelMapSnapshot, VoxelMapState
from xmask3d_ros.mapping.semantics import update_features, update_mean
from xmask3d_ros.mapping.transform import transform_columns, transform_points

__all__ = ["STATE_NAMES", "LocalVoxelMap", "MapStateError"]

_U32_MAX = np.iinfo(np.uint32).max
# Address space reserved up front for the storage arrays (calloc: untouched pages cost nothing).
_RESERVE_BYTES = 1 << 31
_STORAGE = ("_rkey", "_pos", "_col", "_cnt", "_last", "_miss", "_feat", "_fw", "_cfeat", "_cw",
            "_pb", "_pbw")
# Feature matrices and the weight whose zero means "the row is all zeros" (invariant).
_FEATURES = (("_feat", "_fw"), ("_cfeat", "_cw"))
# The public name of each storage array in :meth:`LocalVoxelMap.state` (and map files).
STATE_NAMES = {"_rkey": "packed_keys", "_pos": "positions", "_col": "mean_colors", "_cnt": "counts",
               "_last": "last_seen_ns", "_miss": "misses", "_feat": "features",
               "_fw": "feature_weights", "_cfeat": "clip_features", "_cw": "clip_weights",
               "_pb": "base_prob", "_pbw": "base_prob_weights"}


class MapStateError(ValueError):
    """Arrays given to :meth:`LocalVoxelMap.load_state` that cannot be this map's content."""


def _all_finite(a: npt.NDArray[np.floating]) -> bool:
    """No NaN or infinity in ``a``. float16 by its exponent bits, in chunks: 8x faster than
    ``np.isfinite`` (which converts each element) and no full-size temporary."""
    if a.dtype != np.float16:
        return bool(np.all(np.isfinite(a)))
    bits = np.ascontiguousarray(a).reshape(-1).view(np.uint16)
    if bits.size == 0:
        return True
    buf = np.empty(min(bits.size, 1 << 22), np.uint16)
    for lo in range(0, bits.size, buf.size):
        chunk = buf[: min(buf.size, bits.size - lo)]
        np.bitwise_and(bits[lo:lo + chunk.size], 0x7C00, out=chunk)
        if np.any(chunk == 0x7C00):  # exponent all ones: infinity or NaN
            return False
    return True


def _ro(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    v = a.view()
    v.flags.writeable = False
    return v


def _frozen_copy(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    c = np.array(a, copy=True)
    c.flags.writeable = False
    return c


class LocalVoxelMap:
    """Bounded voxel map in the map frame. See the module docstring for layout and semantics."""

    def __init__(self, cfg: MapCfg | None = None, feature_dim: int = 512, *,
                 initial_capacity: int | None = None) -> None:
        cfg = MapCfg() if cfg is None else cfg
        if not isinstance(cfg, MapCfg):
            raise TypeError(f"cfg must be a MapCfg, got {type(cfg).__name__}")
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, (int, np.integer)) or feature_dim < 0:
            raise ValueError(f"feature_dim must be an int >= 0, got {feature_dim!r}")
        self._cfg = cfg
        self._d = int(feature_dim)
        self._dc = self._d if cfg.clip_channel else 0
        if initial_capacity is None:  # the cap plus room for the overflow of a frame, as far as
            # _RESERVE_BYTES of address space allows (untouched rows cost no memory)
            want = cfg.max_voxels + max(4096, cfg.max_voxels // 2)
            initial_capacity = min(want, max(4096, _RESERVE_BYTES // self._row_bytes()))
        self._initial_capacity = max(1, int(initial_capacity))
        self.clear()

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Drop every voxel and reset the counters (storage shrinks to the initial capacity)."""
        self._n = 0
        self._cap = 0
        self._alloc(self._initial_capacity)
        self._skeys = np.empty(0, dtype=np.int64)
        self._srow = np.empty(0, dtype=np.int32)
        self._counters = dict.fromkeys((f.name for f in dataclasses.fields(MapStats)), 0)
        self._version = getattr(self, "_version", -1) + 1
        self._layout_version = getattr(self, "_layout_version", -1) + 1
        self._cache: dict[str, tuple[int, npt.NDArray[Any]]] = {}
        self._stamp_ns = 0
        self._origin = np.zeros(3)

    def _row_bytes(self) -> int:
        """Storage bytes per row (everything but the sorted index)."""
        return self.bytes_per_voxel(self._d, clip_channel=self._dc > 0) - 12

    def _alloc(self, cap: int) -> None:
        # np.zeros is calloc: large blocks are fresh zero pages from the OS, so rows never
        # written cost no memory, and rows at or above the high-water mark are known zero.
        n, d, dc = self._n, self._d, self._dc
        new = {
            "_rkey": np.zeros(cap, np.int64),
            "_pos": np.zeros((cap, 3), np.float32),
            "_col": np.zeros((cap, 3), np.float32),
            "_cnt": np.zeros(cap, np.uint32),
            "_last": np.zeros(cap, np.int64),
            "_miss": np.zeros(cap, np.uint8),
            "_feat": np.zeros((cap, d), np.float16),
            "_fw": np.zeros(cap, np.float32),
            "_cfeat": np.zeros((cap, dc), np.float16),
            "_cw": np.zeros(cap, np.float32),
            "_pb": np.zeros(cap, np.float32),
            "_pbw": np.zeros(cap, np.float32),
        }
        for name, arr in new.items():
            if n:
                arr[:n] = getattr(self, name)[:n]
            setattr(self, name, arr)
        self._cap = cap
        self._hw = n  # rows [0, hw) may hold data; rows >= hw are untouched zeros

    def _reserve(self, needed: int) -> None:
        if needed <= self._cap:
            return
        mx = self._cfg.max_voxels
        if needed <= mx:
            cap = min(max(needed, 2 * self._cap, 1024), mx)
        else:  # room for twice the largest overflow seen, then flat
            cap = mx + 2 * (needed - mx)
        self._alloc(max(cap, needed))

    @property
    def cfg(self) -> MapCfg:
        return self._cfg

    @property
    def feature_dim(self) -> int:
        return self._d

    @property
    def voxel_size_m(self) -> float:
        return self._cfg.voxel_size_m

    @property
    def size(self) -> int:
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Rows of address space reserved (>= size); see :meth:`memory_bytes`."""
        return self._cap

    @property
    def version(self) -> int:
        """Incremented by every change of the map's content."""
        return self._version

    @property
    def layout_version(self) -> int:
        """Incremented whenever existing row indices change (any voxel removed)."""
        return self._layout_version

    @property
    def stats(self) -> MapStats:
        return MapStats(**self._counters)

    @property
    def clip_dim(self) -> int:
        """Width of the MaskCLIP channel: ``feature_dim``, or 0 with ``clip_channel`` off."""
        return self._dc

    @staticmethod
    def bytes_per_voxel(feature_dim: int, *, clip_channel: bool = True) -> int:
        """Stored bytes per voxel (module docstring table), excluding capacity slack."""
        return 73 + 2 * int(feature_dim) * (2 if clip_channel else 1)

    def memory_bytes(self) -> int:
        """Bytes of memory the map uses: storage rows ever written (the high-water mark: at most
        ``max_voxels`` plus the largest per-frame overflow), the sorted index and cached views.

        Storage rows beyond the high-water mark are reserved address space only (calloc'd zero
        pages); :meth:`reserved_bytes` reports that.
        """
        total = self._hw * self._row_bytes()
        total += self._skeys.nbytes + self._srow.nbytes
        total += sum(a.nbytes for _, a in self._cache.values())
        return int(total)

    def reserved_bytes(self) -> int:
        """Address space of the storage arrays (capacity x row bytes), mostly untouched."""
        return int(sum(getattr(self, name).nbytes for name in _STORAGE))

    # ------------------------------------------------------------------ views
    @property
    def positions(self) -> npt.NDArray[np.float32]:
        """(N, 3) float32 running-mean positions, map frame (read-only view)."""
        return _ro(self._pos[: self._n])

    @property
    def counts(self) -> npt.NDArray[np.uint32]:
        """(N,) uint32 number of points merged into each voxel (read-only view)."""
        return _ro(self._cnt[: self._n])

    @property
    def last_seen_ns(self) -> npt.NDArray[np.int64]:
        return _ro(self._last[: self._n])

    @property
    def misses(self) -> npt.NDArray[np.uint8]:
        """(N,) uint8 free-space misses since the last hit."""
        return _ro(self._miss[: self._n])

    @property
    def features(self) -> npt.NDArray[np.float16]:
        """(N, D) float16 weighted mean of unit features (norm <= 1; normalise before cosine)."""
        return _ro(self._feat[: self._n])

    @property
    def feature_weights(self) -> npt.NDArray[np.float32]:
        """(N,) float32 total feature weight (0 = no semantics yet)."""
        return _ro(self._fw[: self._n])

    @property
    def clip_features(self) -> npt.NDArray[np.float16]:
        """(N, clip_dim) float16 weighted mean of unit MaskCLIP embeddings (read-only view)."""
        return _ro(self._cfeat[: self._n])

    @property
    def clip_weights(self) -> npt.NDArray[np.float32]:
        """(N,) float32 total MaskCLIP weight (0 = no mask ever covered the voxel)."""
        return _ro(self._cw[: self._n])

    @property
    def base_prob(self) -> npt.NDArray[np.float32]:
        """(N,) float32 weighted mean p(base) (meaningful where ``base_prob_weights`` > 0)."""
        return _ro(self._pb[: self._n])

    @property
    def base_prob_weights(self) -> npt.NDArray[np.float32]:
        """(N,) float32 total p(base) weight (0 = the segmenter never gave one)."""
        return _ro(self._pbw[: self._n])

    @property
    def packed_keys(self) -> npt.NDArray[np.int64]:
        """(N,) int64 packed keys per row (``mapping.keys.pack_keys``)."""
        return _ro(self._rkey[: self._n])

    def _cached(self, name: str, make: Any) -> npt.NDArray[Any]:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        arr = make()
        arr.flags.writeable = False
        self._cache[name] = (self._version, arr)
        return arr

    @property
    def keys(self) -> npt.NDArray[np.int32]:
        """(N, 3) int32 integer voxel coordinates ``floor(p / voxel_size_m)`` (read-only)."""
        return self._cached("keys", lambda: unpack_keys(self._rkey[: self._n]))

    @property
    def colors(self) -> npt.NDArray[np.uint8]:
        """(N, 3) uint8 running-mean RGB, rounded (read-only)."""
        return self._cached("colors", lambda: np.rint(self._col[: self._n]).astype(np.uint8))

    def rows_of(self, keys: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Current row of each voxel: (M, 3) int voxel coordinates or (M,) packed keys -> (M,)
        int64, -1 where the voxel is not in the map."""
        k = np.asarray(keys)
        packed = pack_keys(k) if k.ndim == 2 else k.astype(np.int64, copy=False)
        out = np.full(packed.shape[0], -1, dtype=np.int64)
        if self._n == 0 or packed.size == 0:
            return out
        pos = np.searchsorted(self._skeys, packed)
        ok = pos < self._n
        ok[ok] = self._skeys[pos[ok]] == packed[ok]
        out[ok] = self._srow[pos[ok]]
        return out

    def snapshot(self, *, include_features: bool = True) -> VoxelMapSnapshot:
        """An immutable copy for publishers and other threads (features: N x D x 2 bytes)."""
        n = self._n
        return VoxelMapSnapshot(
            keys=_frozen_copy(self.keys),
            positions=_frozen_copy(self._pos[:n]),
            colors=_frozen_copy(self.colors),
            counts=_frozen_copy(self._cnt[:n]),
            last_seen_ns=_frozen_copy(self._last[:n]),
            features=_frozen_copy(self._feat[:n]) if include_features else None,
            feature_weights=_frozen_copy(self._fw[:n]),
            clip_features=_frozen_copy(self._cfeat[:n]) if include_features else None,
            clip_weights=_frozen_copy(self._cw[:n]),
            base_prob=_frozen_copy(self._pb[:n]),
            base_prob_weights=_frozen_copy(self._pbw[:n]),
            voxel_size_m=self.voxel_size_m,
            feature_dim=self._d,
            version=self._version,
            layout_version=self._layout_version,
            stamp_ns=self._stamp_ns,
            sensor_origin=_frozen_copy(self._origin),
        )

    # ------------------------------------------------------------------ persistence
    def state(self) -> VoxelMapState:
        """A copy of the whole content (every stored column of the live rows), to save or move."""
        n = self._n
        return VoxelMapState(
            arrays={public: np.array(getattr(self, name)[:n]) for name, public in STATE_NAMES.items()
                    if not (self._dc == 0 and name in ("_cfeat", "_cw"))},
            voxel_size_m=self.voxel_size_m, feature_dim=self._d, stamp_ns=self._stamp_ns,
            sensor_origin=tuple(float(x) for x in self._origin))

    def load_state(self, state: VoxelMapState) -> None:
        """Replace the content by ``state`` (as :meth:`state` gives it).

        Everything is checked before anything changes, so a :class:`MapStateError` leaves the
        map as it was. Checked: voxel size and feature width; names, shapes and dtypes; at most
        ``max_voxels`` rows; unique keys; each position inside its own voxel; finite values,
        weights >= 0 and p(base) in [0, 1]. Without the MaskCLIP arrays (a map saved with
        ``clip_channel`` off) that channel starts empty; a map with the channel off ignores
        them. Counters restart; ``version`` and ``layout_version`` grow.
        """
        if not isinstance(state, VoxelMapState):
            raise TypeError(f"load_state needs a VoxelMapState, got {type(state).__name__}")
        if state.voxel_size_m != self.voxel_size_m:
            raise MapStateError(f"the map has {state.voxel_size_m:g} m voxels, "
                                f"mapping.voxel_size_m is {self.voxel_size_m:g}")
        if state.feature_dim != self._d:
            raise MapStateError(f"the map holds {state.feature_dim}-d features, this map "
                                f"{self._d}-d: it was built with another model")
        origin = np.asarray(state.sensor_origin, np.float64)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            raise MapStateError(f"sensor_origin must be 3 finite numbers, got {state.sensor_origin!r}")
        cols = self._checked_state(state.arrays)
        n = cols["_rkey"].shape[0]
        self.clear()
        self._reserve(n)
        for name, col in cols.items():
            getattr(self, name)[:n] = col
        for feat, weight in _FEATURES:  # invariant: zero weight => zero row
            getattr(self, feat)[:n][getattr(self, weight)[:n] == 0] = 0
        self._n = self._hw = n
        order = np.argsort(self._rkey[:n], kind="stable")
        self._srow = order.astype(np.int32)
        self._skeys = self._rkey[:n][order]
        self._stamp_ns = int(state.stamp_ns)
        self._origin = origin
        self._version += 1

    def _checked_state(self, arrays: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
        """Storage name -> validated array (see :meth:`load_state`)."""
        optional = {"clip_features", "clip_weights"}
        missing = [p for p in STATE_NAMES.values() if p not in arrays and p not in optional]
        if missing:
            raise MapStateError(f"missing arrays: {', '.join(missing)}")
        n = np.shape(arrays["packed_keys"])[0] if np.ndim(arrays["packed_keys"]) == 1 else -1
        if n < 0:
            raise MapStateError(f"packed_keys must be 1-D, got shape {np.shape(arrays['packed_keys'])}")
        if n > self._cfg.max_voxels:
            raise MapStateError(f"{n} voxels exceed mapping.max_voxels = {self._cfg.max_voxels}")
        has_clip = "clip_features" in arrays and "clip_weights" in arrays
        cols: dict[str, npt.NDArray[Any]] = {}
        for name, public in STATE_NAMES.items():
            if name in ("_cfeat", "_cw") and (self._dc == 0 or not has_clip):
                continue
            want = getattr(self, name)
            a = np.asarray(arrays[public])
            shape = (n, *want.shape[1:])
            if a.shape != shape or a.dtype != want.dtype:
                raise MapStateError(f"{public} must be {want.dtype} of shape {shape} (the map has "
                                    f"feature_dim {self._d}), got {a.dtype} of shape {a.shape}")
            if a.dtype.kind == "f" and not _all_finite(a):
                raise MapStateError(f"{public} holds NaN or infinite values")
            cols[name] = a
        if n and np.any(np.diff(np.sort(cols["_rkey"])) == 0):
            raise MapStateError("packed_keys holds duplicate voxels")
        for weight in ("_fw", "_cw", "_pbw"):
            if weight in cols and n and cols[weight].min() < 0:
                raise MapStateError(f"{STATE_NAMES[weight]} must be >= 0")
        if n and not np.all((cols["_pb"] >= 0) & (cols["_pb"] <= 1)):
            raise MapStateError("base_prob must lie in [0, 1]")
        vs = self._cfg.voxel_size_m
        lo = unpack_keys(cols["_rkey"]).astype(np.float64) * vs
        p = cols["_pos"].astype(np.float64)
        tol = 1e-4 * vs + 1e-6 * np.abs(p)
        if n and not np.all((p >= lo - tol) & (p <= lo + vs + tol)):
            bad = int(np.count_nonzero(~np.all((p >= lo - tol) & (p <= lo + vs + tol), axis=1)))
            raise MapStateError(f"{bad} of {n} positions lie outside their voxels of "
                                f"{vs:g} m: the map was built with another mapping.voxel_size_m")
        return cols

    # ------------------------------------------------------------------ integration
    def integrate(self, posed: PosedFrame) -> IntegrationStats:
        """Back-project ``posed`` (every ``stride_px``-th pixel), merge it, evict and clear."""
        if not isinstance(posed, PosedFrame):
            raise TypeError(f"integrate needs a PosedFrame, got {type(posed).__name__}")
        t0 = time.perf_counter()
        frame = posed.frame
        pts_cam, pix = frame.camera.backproject(frame.depth_m, self._cfg.stride_px)
        xyz = transform_columns(posed.T_map_cam, pts_cam)  # 3 x (N,) float32, map frame
        colors = np.take(frame.rgb.reshape(-1, 3), pix, axis=0)  # (N, 3) uint8
        rgb = [colors[:, i] for i in range(3)]
        return self._integrate(xyz, rgb, frame.stamp_ns, posed.T_map_cam.translation, posed, t0)

    def integrate_points(
        self,
        points_map: npt.ArrayLike,
        colors: npt.ArrayLike,
        stamp_ns: int,
        sensor_origin: npt.ArrayLike,
    ) -> IntegrationStats:
        """Merge (N, 3) map-frame points with (N, 3) uint8 colours seen from ``sensor_origin``.

        The same as :meth:`integrate` without a camera (so without free-space clearing).
        """
        t0 = time.perf_counter()
        p = np.asarray(points_map)
        c = np.asarray(colors)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points_map must have shape (N, 3), got {p.shape}")
        if c.shape != p.shape:
            raise ValueError(f"colors must have shape {p.shape} like the points, got {c.shape}")
        if c.dtype != np.uint8:
            raise ValueError(f"colors must be uint8, got {c.dtype}")
        o = np.asarray(sensor_origin, dtype=np.float64)
        if o.shape != (3,) or not np.all(np.isfinite(o)):
            raise ValueError(f"sensor_origin must be 3 finite numbers, got {o.tolist()}")
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
            raise ValueError(f"stamp_ns must be an int (nanoseconds), got {stamp_ns!r}")
        p = p.astype(np.float32, copy=False)
        xyz = [p[:, i] for i in range(3)]
        rgb = [c[:, i] for i in range(3)]
        return self._integrate(xyz, rgb, int(stamp_ns), o, None, t0)

    def _integrate(
        self,
        xyz: list[npt.NDArray[np.float32]],
        rgb: list[npt.NDArray[np.uint8]],
        stamp_ns: int,
        origin: npt.NDArray[np.float64],
        posed: PosedFrame | None,
        t0: float,
    ) -> IntegrationStats:
        cfg = self._cfg
        n_in = xyz[0].shape[0]
        grouped = group_columns(xyz, rgb, cfg.voxel_size_m)
        dropped = grouped.dropped
        hit_rows, n_new = self._merge(grouped, stamp_ns)

        n = self._n
        dist2 = self._dist2(origin)  # (N,) float32
        remove = dist2 > np.float32(cfg.radius_m) ** 2
        n_radius = int(np.count_nonzero(remove))

        n_missed = n_cleared = 0
        if posed is not None and cfg.free_space_clearing and n > 0:
            n_missed, n_cleared = self._clear_free_space(posed, hit_rows, remove, dist2)

        n_capacity = 0
        over = n - int(np.count_nonzero(remove)) - cfg.max_voxels
        if over > 0:
            alive = np.flatnonzero(~remove)
            sel = select_evictions(over, cfg.eviction, dist2[alive], self._last[alive], self._rkey[alive])
            remove[alive[sel]] = True
            n_capacity = sel.size
        self._remove(remove)

        self._stamp_ns = max(self._stamp_ns, stamp_ns)
        self._origin = np.array(origin, dtype=np.float64)
        self._version += 1
        c = self._counters
        c["frames"] += 1
        c["integrated_points"] += n_in - dropped
        c["dropped_points"] += dropped
        c["inserted_voxels"] += n_new
        c["evicted_radius"] += n_radius
        c["evicted_capacity"] += n_capacity
        c["cleared_free_space"] += n_cleared
        return IntegrationStats(
            points=n_in, dropped_points=dropped, new_voxels=n_new,
            updated_voxels=int(hit_rows.size - n_new), evicted_radius=n_radius,
            missed_voxels=n_missed, cleared_free_space=n_cleared, evicted_capacity=n_capacity,
            size=self._n, elapsed_s=time.perf_counter() - t0,
        )

    def _dist2(self, origin: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        """(N,) float32 squared distance of every voxel position from ``origin``."""
        o = origin.astype(np.float32)
        pos = self._pos[: self._n]
        d = pos[:, 0] - o[0]
        out = d * d
        for i in (1, 2):
            np.subtract(pos[:, i], o[i], out=d)
            d *= d
            out += d
        return out

    def _merge(self, g: GroupedPoints, stamp_ns: int) -> tuple[npt.NDArray[np.intp], int]:
        """Merge grouped points; returns the rows hit (existing then new) and the new count."""
        n = self._n
        uk = g.keys
        at = np.searchsorted(self._skeys, uk)
        found = np.zeros(uk.size, dtype=bool)
        inb = at < n
        found[inb] = self._skeys[at[inb]] == uk[inb]
        rows = self._srow[at[found]].astype(np.intp)
        if rows.size:
            fi = np.flatnonzero(found)
            c_old = self._cnt[rows].astype(np.float64)
            c_new = c_old + g.count[fi]
            w_old = c_old / c_new
            inv_new = 1.0 / c_new
            for dst, sums in ((self._pos, g.pos_sum), (self._col, g.color_sum)):
                for i in range(3):  # column-wise: (k, 3) x (k, 1) broadcasting is slow
                    col = dst[:, i]
                    col[rows] = col[rows] * w_old + sums[fi, i] * inv_new
            self._cnt[rows] = np.minimum(c_new, _U32_MAX).astype(np.uint32)
            self._last[rows] = np.maximum(self._last[rows], stamp_ns)
            self._miss[rows] = 0
        new = ~found
        k = int(np.count_nonzero(new))
        if k:
            self._reserve(n + k)
            ni = np.flatnonzero(new)
            cnt = g.count[ni]
            inv = 1.0 / cnt
            sl = slice(n, n + k)
            self._rkey[sl] = uk[ni]
            for i in range(3):
                self._pos[sl, i] = g.pos_sum[ni, i] * inv
                self._col[sl, i] = g.color_sum[ni, i] * inv
            self._cnt[sl] = np.minimum(cnt, _U32_MAX)
            self._last[sl] = stamp_ns
            self._miss[sl] = 0
            if self._hw > n:  # rows freed by earlier removals may hold stale features
                for feat, weight in _FEATURES:
                    stale = np.flatnonzero(getattr(self, weight)[n : min(n + k, self._hw)] > 0) + n
                    getattr(self, feat)[stale] = 0
            self._hw = max(self._hw, n + k)
            for name in ("_fw", "_cw", "_pb", "_pbw"):
                getattr(self, name)[sl] = 0.0
            new_rows = np.arange(n, n + k, dtype=np.intp)
            ins = at[ni]
            self._skeys = np.insert(self._skeys, ins, uk[ni])
            self._srow = np.insert(self._srow, ins, new_rows.astype(np.int32))
            self._n = n + k
            rows = np.concatenate([rows, new_rows])
        return rows, k

    def _clear_free_space(
        self,
        posed: PosedFrame,
        hit_rows: npt.NDArray[np.intp],
        remove: npt.NDArray[np.bool_],
        dist2: npt.NDArray[np.float32],
    ) -> tuple[int, int]:
        """Give misses to voxels the frame sees through; mark those at the threshold in ``remove``."""
        cfg = self._cfg
        cand = ~remove
        cand[hit_rows] = False
        # z <= distance, so voxels beyond clearing_max_depth_m from the sensor cannot qualify.
        cand &= dist2 <= np.float32(cfg.clearing_max_depth_m) ** 2
        rows = np.flatnonzero(cand)
        if rows.size == 0:
            return 0, 0
        frame = posed.frame
        # Cheap pre-filter on the camera z (one dot product per voxel) before the full transform.
        T_cam_map = posed.T_map_cam.inverse()
        r = T_cam_map.rotation[2].astype(np.float32)
        z = self._pos[:, 0].take(rows) * r[0]
        z += self._pos[:, 1].take(rows) * r[1]
        z += self._pos[:, 2].take(rows) * r[2]
        z += np.float32(T_cam_map.translation[2])
        eps = np.float32(1e-3)  # see_through re-tests the exact range
        rows = rows[(z >= cfg.clearing_min_depth_m - eps) & (z <= cfg.clearing_max_depth_m + eps)]
        if rows.size == 0:
            return 0, 0
        pts_cam = transform_points(T_cam_map, np.take(self._pos, rows, axis=0))
        depth_min = min_filter_depth(frame.depth_m, cfg.clearing_window_px)
        through = see_through(
            pts_cam, frame.camera, depth_min,
            margin_abs_m=cfg.clearing_margin_voxels * cfg.voxel_size_m,
            margin_rel=cfg.clearing_margin_rel, border_px=cfg.clearing_border_px,
            min_depth_m=cfg.clearing_min_depth_m, max_depth_m=cfg.clearing_max_depth_m,
        )
        missed = rows[through]
        if missed.size == 0:
            return 0, 0
        m = self._miss[missed]
        m = np.where(m < 255, m + np.uint8(1), m).astype(np.uint8)
        self._miss[missed] = m
        cleared = missed[m >= cfg.miss_threshold]
        remove[cleared] = True
        return int(missed.size), int(cleared.size)

    def _remove(self, mask: npt.NDArray[np.bool_]) -> None:
        """Remove the rows where ``mask`` (length size) is True, keeping rows packed."""
        rm = np.flatnonzero(mask)
        k = rm.size
        if k == 0:
            return
        n = self._n
        m = n - k
        holes = rm[rm < m]
        movers = np.flatnonzero(~mask[m:]) + m  # survivors beyond the new end, same count
        if holes.size:
            # Invariant: weight == 0 => feature row is zero. Feature rows (2 D bytes each, most
            # of the storage) only move where either side carries semantics.
            for feat, weight in _FEATURES:
                w = getattr(self, weight)
                sem = (w[holes] > 0) | (w[movers] > 0)
                if sem.any():
                    f = getattr(self, feat)
                    f[holes[sem]] = f[movers[sem]]
            skip = {feat for feat, _ in _FEATURES}
            for name in _STORAGE:
                if name not in skip:
                    arr = getattr(self, name)
                    arr[holes] = arr[movers]
        keep = ~mask[self._srow]
        remap = np.arange(n, dtype=np.int32)
        remap[movers] = holes
        self._srow = remap[self._srow[keep]]
        self._skeys = self._skeys[keep]
        self._n = m
        self._layout_version += 1

    # ------------------------------------------------------------------ queries / semantics
    def visible(
        self,
        posed: PosedFrame,
        border_px: int = 10,
        depth_tolerance_rel: float = 0.25,
    ) -> npt.NDArray[np.int64]:
        """(M,) int64 rows of the voxels visible in ``posed`` (ascending).

        The geometry layer's reference test (``PinholeCamera.visible_mask``: projection at least
        ``border_px`` from the border, ``|depth - z| <= depth_tolerance_rel * depth``) applied to
        the voxel positions (running means, which lie on the observed surface).
        """
        if not isinstance(posed, PosedFrame):
            raise TypeError(f"visible needs a PosedFrame, got {type(posed).__name__}")
        if self._n == 0:
            return np.empty(0, dtype=np.int64)
        return self.visible_points(
            self._pos[: self._n], posed.frame.camera, posed.frame.depth_m, posed.T_map_cam,
            border_px=border_px, depth_tolerance_rel=depth_tolerance_rel,
        )

    @staticmethod
    def visible_points(
        points_map: npt.NDArray[np.float32],
        camera: PinholeCamera,
        depth_m: npt.NDArray[np.float32],
        T_map_cam: SE3,
        *,
        border_px: int = 10,
        depth_tolerance_rel: float = 0.25,
    ) -> npt.NDArray[np.int64]:
        """Indices of (N, 3) map-frame points passing the visibility test of a posed depth image."""
        pts_cam = transform_points(T_map_cam.inverse(), np.asarray(points_map, dtype=np.float32))
        vis = camera.visible_mask(pts_cam, depth_m, border_px, depth_tolerance_rel)
        return np.flatnonzero(vis).astype(np.int64)

    def update_semantics(
        self,
        indices: npt.ArrayLike,
        features: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        *,
        base_prob: npt.ArrayLike | None = None,
    ) -> None:
        """Fold per-voxel features into the running weighted mean of L2-normalised features.

        ``indices`` (M,) rows (repeats allowed: each is one observation), ``features`` (M, D)
        float, ``weights`` (M,) >= 0 (default 1). Rows of zero norm or zero weight are ignored.
        ``features[i] <- (w_i f_i + sum_j w_j u_j) / (w_i + sum_j w_j)`` with ``u_j`` unit vectors,
        computed in float32, stored as float16; ``feature_weights[i] += sum_j w_j``.
        ``base_prob`` (M,) in [0, 1]: the binary head's p(base) per observation, averaged with
        the same weights into :attr:`base_prob`.
        """
        idx, w = self._observations(indices, weights)
        m = idx.shape[0]
        f = np.asarray(features, dtype=np.float32)
        if f.shape != (m, self._d):
            raise ValueError(f"features must have shape ({m}, {self._d}), got {f.shape}")
        pb = None
        if base_prob is not None:
            pb = np.asarray(base_prob, dtype=np.float32)
            if pb.shape != (m,):
                raise ValueError(f"base_prob must have shape ({m},), got {pb.shape}")
            if not np.all((pb >= 0) & (pb <= 1)):
                raise ValueError("base_prob must lie in [0, 1]")
        update_features(self._feat, self._fw, idx, f, w)
        if pb is not None:
            update_mean(self._pb, self._pbw, idx, pb, w)
        self._counters["semantic_updates"] += 1
        self._version += 1

    def update_clip_features(
        self,
        indices: npt.ArrayLike,
        features: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """Fold MaskCLIP embeddings (the embedding of the mask covering each voxel) into the
        MaskCLIP channel, as :meth:`update_semantics` does for the fused features. A no-op when
        ``clip_channel`` is off."""
        idx, w = self._observations(indices, weights)
        f = np.asarray(features, dtype=np.float32)
        if f.shape != (idx.shape[0], self._d):
            raise ValueError(f"features must have shape ({idx.shape[0]}, {self._d}), got {f.shape}")
        if self._dc == 0:
            return
        update_features(self._cfeat, self._cw, idx, f, w)
        self._version += 1

    def _observations(
        self, indices: npt.ArrayLike, weights: npt.ArrayLike | None
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """Checked (rows, weights) of a semantic update."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape}, dtype {idx.dtype}")
        m = idx.shape[0]
        if m and (idx.min() < 0 or idx.max() >= self._n):
            raise ValueError(
                f"indices must lie in [0, {self._n}) (the map has {self._n} voxels), got "
                f"[{idx.min()}, {idx.max()}]; rows change when voxels are removed (layout_version)"
            )
        if weights is None:
            w = np.ones(m, dtype=np.float32)
        else:
            w = np.asarray(weights, dtype=np.float32)
            if w.shape != (m,):
                raise ValueError(f"weights must have shape ({m},), got {w.shape}")
            if not np.all(np.isfinite(w)) or (m and w.min() < 0):
                raise ValueError("weights must be finite and >= 0")
        return idx.astype(np.intp, copy=False), w
