"""The node's map services (``xmask3d_ros/srv``): ``~/save_map``, ``~/load_map``, ``~/clear_map``.

What a robot's operator does with a map besides querying it: keep it (a ``.safetensors`` map
file to load on the next run, or a labelled ``.ply`` to look at), bring it back, or start over
after relocalisation. Every failure is an answer with ``success = false`` and a message naming
the cause, plus a counted, logged fault (``map_save_failed`` ...); the node and its map carry on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xmask3d_ros.mapping import MapFileError
from xmask3d_ros.pipeline import UNKNOWN_LABEL, PerceptionPipeline
from xmask3d_ros.replay.outputs import write_ply, write_voxels_ply
from xmask3d_ros.ros.gate import CallbackGate, gated
from xmask3d_ros.srv import ClearMap, LoadMap, SaveMap

__all__ = ["MAP_SERVICES", "MapServices", "resolve_map_path"]

MAP_SERVICES = ("~/save_map", "~/load_map", "~/clear_map")
# The current query as the node keeps it: (labels, mode, min_score or None for the default).
Query = tuple[list[str], int, "float | None"]


def _refused(_services: Any, _req: Any, res: Any) -> Any:
    """The answer of a request that arrives while the services are being removed."""
    res.success = False
    res.message = "the node is cleaning up its map"
    return res


def resolve_map_path(text: str) -> Path:
    """Absolute path of a service request (``~`` expanded, relative to the working directory)."""
    if not text.strip():
        raise MapFileError("the path is empty")
    return Path(os.path.expanduser(text.strip())).absolute()


class MapServices:
    """Creates the three services on ``node``; the map work is the pipeline's.

    ``current_query()``: the node's query, for the labels of a ``.ply``; ``min_score(value)``:
    the threshold a query uses; ``map_replaced()``: called after a load or clear (the node
    republishes its latched outputs); ``fault(key, text)``: the node's counted, throttled log.
    """

    def __init__(self, node: Any, pipeline: PerceptionPipeline, *,
                 current_query: Callable[[], Query | None],
                 min_score: Callable[[float | None], float],
                 map_replaced: Callable[[], None], fault: Callable[[str, str], None],
                 callback_group: Any = None) -> None:
        self._node = node
        self._pipeline = pipeline
        self._current_query = current_query
        self._min_score = min_score
        self._map_replaced = map_replaced
        self._fault = fault
        self._gate = CallbackGate(is_open=True)
        self._services = [node.create_service(srv, name, fn, callback_group=callback_group)
                          for srv, name, fn in ((SaveMap, MAP_SERVICES[0], self.save),
                                                (LoadMap, MAP_SERVICES[1], self.load),
                                                (ClearMap, MAP_SERVICES[2], self.clear))]

    def destroy(self, timeout_s: float | None = None) -> None:
        """Remove the services from the node (lifecycle cleanup), after the requests being
        served finish (they use the pipeline and the publishers)."""
        self._gate.close(timeout_s)
        for srv in self._services:
            self._node.destroy_service(srv)
        self._services = []

    def _failed(self, res: Any, key: str, err: Exception) -> Any:
        text = str(err) if isinstance(err, (MapFileError, OSError)) else f"{type(err).__name__}: {err}"
        self._fault(key, text)
        res.success = False
        res.message = text
        return res

    @gated("_gate", closed=_refused)
    def save(self, req: Any, res: Any) -> Any:
        try:
            path = resolve_map_path(req.path)
            suffix = path.suffix.lower()
            if suffix == ".safetensors":
                voxels = self._pipeline.save_map(path).voxels
            elif suffix == ".ply":
                voxels = self._save_ply(path)
            else:
                raise MapFileError(f"{req.path!r}: the path must end in .safetensors (the whole "
                                   "map, for load_map) or .ply (labelled points)")
        except Exception as err:  # noqa: BLE001 - a failed save must never stop the node
            return self._failed(res, "map_save_failed", err)
        res.success, res.path, res.voxels = True, str(path), voxels
        res.message = f"saved {voxels} voxels to {path}"
        self._node.get_logger().info(res.message)
        return res

    def _save_ply(self, path: Path) -> int:
        query = self._current_query()
        frame = self._pipeline.cfg.node.map_frame
        if query is not None:
            labels, mode, min_score = query
            answer = self._pipeline.query(labels, mode, self._min_score(min_score), objects=False)
            write_ply(path, answer)
            return int(answer.map_voxels)
        snap = self._pipeline.snapshot()  # no vocabulary yet: camera colours, every voxel unknown
        n = snap.size
        write_voxels_ply(path, snap.positions, snap.colors, np.full(n, UNKNOWN_LABEL, np.uint16),
                         np.full(n, np.nan, np.float32), (), frame)
        return n

    @gated("_gate", closed=_refused)
    def load(self, req: Any, res: Any) -> Any:
        try:
            info = self._pipeline.load_map(resolve_map_path(req.path))
        except Exception as err:  # noqa: BLE001 - a bad file must never stop the node
            return self._failed(res, "map_load_failed", err)
        self._map_replaced()
        res.success, res.voxels = True, info.voxels
        res.message = f"loaded {info.voxels} voxels from {info.path}"
        self._node.get_logger().info(res.message)
        return res

    @gated("_gate", closed=_refused)
    def clear(self, req: Any, res: Any) -> Any:
        try:
            n = self._pipeline.clear_map()
        except Exception as err:  # noqa: BLE001
            return self._failed(res, "map_clear_failed", err)
        self._map_replaced()
        res.success, res.voxels_removed = True, n
        res.message = f"cleared the map ({n} voxels)"
        self._node.get_logger().info(res.message)
        return res
