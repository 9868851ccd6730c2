"""``PerceptionNode``: RGB-D + TF in, semantic clouds and query answers out (a thin adapter).

Callbacks hand messages to the shared :class:`~xmask3d_ros.pipeline.ingest.FrameAssembler`
(decode, sync, TF wait queue) and to the :class:`PerceptionPipeline` (map, async segmentation,
queries). Callback groups: sensors, TF, queries and timers each run mutually exclusive within their
group and in parallel across groups under a multi-threaded executor (main.py: DrainingExecutor);
the model runs in the pipeline's worker thread, never in a callback. Time: the TF wait's max age,
the publish and diagnostics timers and the diagnostics stamps use ROS time (``/clock`` under
``use_sim_time``); the TF retry timer runs on the steady clock; outputs carry the newest
integrated frame's stamp.

Topics (relative, so namespaces and remaps apply):

=================== ===================== ====================================================
``rgb/image``        sensor_msgs/Image     in; rgb8 / bgr8 / rgba8 / bgra8; sensor QoS (params)
``depth/image``      sensor_msgs/Image     in; 16UC1 (mm) / 32FC1 (m), registered to colour
``rgb/camera_info``  sensor_msgs/CameraInfo in; sensor QoS
``/tf``, ``/tf_static`` tf2_msgs/TFMessage in; tf2_ros QoS (volatile / transient-local)
``query``            xmask3d_ros/TextQuery in; reliable, transient-local, depth 1
``query_text``       std_msgs/String       in; comma-separated labels (segment mode), same QoS
``semantic_cloud``   sensor_msgs/PointCloud2 out; x y z rgb label score; reliable, transient-local
``query_cloud``      sensor_msgs/PointCloud2 out; highlight mode, intensity = score; reliable
``query_result``     xmask3d_ros/QueryResult out; reliable, transient-local
``labels``           visualization_msgs/MarkerArray out; legend text; reliable, transient-local
``/diagnostics``     diagnostic_msgs/DiagnosticArray out; as diagnostic_updater
=================== ===================== ====================================================

Services (``ros.map_services``): ``~/save_map`` (.safetensors map file or labelled .ply),
``~/load_map`` and ``~/clear_map``; after a load or clear the latched outputs are republished.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from xmask3d_ros.config.perception import PerceptionConfig
from xmask3d_ros.geometry.tf_buffer import TfBuffer, TransformError
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.msg import QueryResult, TextQuery
from xmask3d_ros.pipeline import PerceptionPipeline, QueryError
from xmask3d_ros.pipeline.decode import DecodeError, stamp_ns, transforms_from_tf
from xmask3d_ros.pipeline.ingest import FrameAssembler
from xmask3d_ros.ros import conversions as conv
from xmask3d_ros.ros import qos
from xmask3d_ros.ros.gate import CallbackGate, gated
from xmask3d_ros.ros.map_services import MapServices, resolve_map_path
from xmask3d_ros.ros.parameters import PerceptionParameters

__all__ = ["INPUT_TOPICS", "OUTPUT_TOPICS", "PerceptionLifecycleNode", "PerceptionNode"]

INPUT_TOPICS = ("rgb/image", "depth/image", "rgb/camera_info", "/tf", "/tf_static", "query",
                "query_text")
OUTPUT_TOPICS = ("semantic_cloud", "query_cloud", "query_result", "labels", "/diagnostics")
# A stamp this far behind the newest image means the source restarted (e.g. a bag loop).
_BACKWARDS_JUMP_NS = 1_000_000_000
_THROTTLE_S = 2.0
_TEARDOWN_WAIT_S = 10.0  # a lifecycle transition waits this long for running callbacks
# FrameAssembler.stats keys that name a rejected input or a dropped frame.
_FAULT_PREFIXES = ("decode_error_", "rejected_", "tf_dropped_", "tf_queue_overflow")


class _TfLookup:
    """The FrameAssembler's lookup over the project's TfBuffer, with the configured tolerance."""

    def __init__(self, buffer: TfBuffer, tolerance_s: float) -> None:
        self.buffer = buffer
        self._tol_ns = int(round(tolerance_s * 1e9))

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> SE3:
        return self.buffer.lookup(target_frame, source_frame, stamp_ns, self._tol_ns)


class _PerceptionCore:
    """What the node does, on a plain or a lifecycle rclpy node (mixed in before the Node class).

    Four steps, which :class:`PerceptionNode` runs at once and :class:`PerceptionLifecycleNode`
    on its transitions: ``_init_core`` (parameters), ``_configure_core`` (TF buffer, frame
    assembler, pipeline with the model, publishers, map services), ``_activate_core``
    (subscriptions and timers), and back: ``_deactivate_core``, ``_cleanup_core``.
    """

    def __init__(
        self,
        make_pipeline: Callable[[PerceptionConfig], PerceptionPipeline],
        *,
        node_name: str = "xmask3d",
        defaults: PerceptionConfig | None = None,
        **node_kwargs: Any,
    ) -> None:
        """``make_pipeline(cfg)`` builds the pipeline (and loads the model) once the parameters
        are read; the rclpy node class comes next in the MRO (Node or LifecycleNode)."""
        super().__init__(node_name, **node_kwargs)  # type: ignore[call-arg]
        self._init_core(make_pipeline, defaults)

    def _init_core(self, make_pipeline: Callable[[PerceptionConfig], PerceptionPipeline],
                   defaults: PerceptionConfig | None) -> None:
        self._make_pipeline = make_pipeline
        self.params = PerceptionParameters(self, defaults, on_change=self._on_params)
        self.counters: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.pipeline: PerceptionPipeline | None = None
        self.assembler: FrameAssembler | None = None
        self.synchronizer = ""
        self._inputs: list[Any] = []  # subscriptions made by _activate_core
        self._timers: list[Any] = []
        self._publish_timer: Any = None
        self._diag_timer: Any = None
        self._outputs: list[Any] = []  # publishers made by _configure_core
        self.map_services: MapServices | None = None
        # input, query and timer callbacks run only while active; deactivate waits for them
        self._active_gate = CallbackGate()

    def _configure_core(self) -> None:
        cfg = self.params.config
        self.tf_buffer = TfBuffer(cfg.tf.cache_duration_s)
        self.assembler = FrameAssembler(cfg, _TfLookup(self.tf_buffer, cfg.tf.lookup_tolerance_s))
        self.pipeline = self._make_pipeline(cfg)
        if cfg.node.initial_map:
            self._load_initial_map(cfg.node.initial_map)
        self._query: tuple[list[str], int, float | None] | None = None
        self._dirty = False  # map changed since the last published answer
        self._newest_image_ns: int | None = None
        self._inputs_prev = (self._ros_now_ns(), 0)
        self.pub_semantic = self.create_publisher(PointCloud2, "semantic_cloud", qos.latched_qos())
        self.pub_query_cloud = self.create_publisher(PointCloud2, "query_cloud", qos.volatile_qos())
        self.pub_result = self.create_publisher(QueryResult, "query_result", qos.latched_qos())
        self.pub_labels = self.create_publisher(MarkerArray, "labels", qos.latched_qos())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        self._outputs = [self.pub_semantic, self.pub_query_cloud, self.pub_result, self.pub_labels,
                         self.pub_diag]
        self.map_services = MapServices(self, self.pipeline, current_query=self._current_query,
                                        min_score=self._min_score, map_replaced=self._republish,
                                        fault=self._fault,
                                        callback_group=MutuallyExclusiveCallbackGroup())

    def _load_initial_map(self, path: str) -> None:
        """node.initial_map: a map that cannot be loaded is a logged, counted fault and the node
        starts with an empty map (the load_map service can try again)."""
        try:
            info = self.pipeline.load_map(resolve_map_path(path))
        except Exception as err:  # noqa: BLE001 - a bad file must not stop the node
            self._fault("map_load_failed", f"node.initial_map: {err}; starting with an empty map")
            return
        self.get_logger().info(f"node.initial_map: loaded {info.voxels} voxels from {info.path}")

    def _activate_core(self) -> None:
        cfg = self.params.config
        sensors = MutuallyExclusiveCallbackGroup()
        tf_group = MutuallyExclusiveCallbackGroup()
        queries = MutuallyExclusiveCallbackGroup()
        self._timers_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        sq = qos.sensor_qos(cfg.node.input_reliability, cfg.node.input_depth)
        self.synchronizer = self._subscribe_sensors(cfg, sq, sensors)
        self._inputs += [
            self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False),
                                     qos.tf_qos(), callback_group=tf_group),
            self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                     qos.tf_static_qos(), callback_group=tf_group),
            self.create_subscription(TextQuery, "query", self._on_query, qos.latched_qos(),
                                     callback_group=queries),
            self.create_subscription(String, "query_text", self._on_query_text, qos.latched_qos(),
                                     callback_group=queries),
        ]
        # TF polling runs on the steady clock: it is a retry loop, and must keep its pace whatever
        # the /clock rate (or before the first /clock); its max-age test uses ROS time. The
        # publish and diagnostics timers use ROS time (sim time under use_sim_time), as
        # diagnostic_updater does.
        self._timers = [self.create_timer(cfg.node.tf_retry_period_s, self._drain,
                                          callback_group=self._timers_group, clock=self._steady)]
        self._publish_timer = self.create_timer(1.0 / cfg.node.publish_rate_hz, self._publish_tick,
                                                callback_group=self._timers_group)
        self._diag_timer = self.create_timer(cfg.node.diagnostics_period_s, self._diagnostics,
                                             callback_group=self._diag_group)
        self._active_gate.open()
        self.get_logger().info(
            f"xmask3d perception node up: map frame '{cfg.node.map_frame}', sync "
            f"{self.synchronizer}, inputs "
            f"{cfg.node.input_reliability} depth {cfg.node.input_depth}, pipeline {cfg.pipeline.mode}, "
            f"clock {'sim time (/clock)' if self._use_sim_time() else 'system time'}"
        )

    def _deactivate_core(self) -> None:
        """Stop taking inputs and publishing on timers; the map, the model and the query stay."""
        if not self._active_gate.close(_TEARDOWN_WAIT_S):
            self.get_logger().warning(f"deactivate: callbacks still running after "
                                      f"{_TEARDOWN_WAIT_S:g} s; going on")
        for sub in self._inputs:
            self.destroy_subscription(sub)
        for timer in (*self._timers, self._publish_timer, self._diag_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._inputs, self._timers = [], []
        self._publish_timer = self._diag_timer = None
        self._mf = None

    def _cleanup_core(self) -> None:
        """Release the pipeline (the map and the model) and the outputs."""
        if self.map_services is not None:
            self.map_services.destroy(_TEARDOWN_WAIT_S)
            self.map_services = None
        for pub in self._outputs:
            self.destroy_publisher(pub)
        self._outputs = []
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        self.assembler = None
        release_accelerator_memory()

    def destroy_node(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
        super().destroy_node()  # type: ignore[misc]

    def _subscribe_sensors(self, cfg: PerceptionConfig, sq: Any, group: Any) -> str:
        """message_filters' synchroniser when importable, else the FrameAssembler's own."""
        try:
            import message_filters
        except ImportError:
            message_filters = None
        if message_filters is None:
            self._inputs += [
                self.create_subscription(Image, "rgb/image", self._on_rgb, sq, callback_group=group),
                self.create_subscription(Image, "depth/image", self._on_depth, sq,
                                         callback_group=group),
                self.create_subscription(CameraInfo, "rgb/camera_info", self._on_info, sq,
                                         callback_group=group),
            ]
            return "xmask3d_ros.geometry.sync"
        subs = [message_filters.Subscriber(self, t, name, qos_profile=sq, callback_group=group)
                for t, name in ((Image, "rgb/image"), (Image, "depth/image"),
                                (CameraInfo, "rgb/camera_info"))]
        if cfg.sync.mode == "exact":
            sync = message_filters.TimeSynchronizer(subs, cfg.sync.queue_size)
        else:
            sync = message_filters.ApproximateTimeSynchronizer(subs, cfg.sync.queue_size,
                                                               cfg.sync.slop_s)
        sync.registerCallback(self._on_synced)
        self._mf = (subs, sync)  # keep them alive
        self._inputs += [s.sub for s in subs]
        return "message_filters"

    @gated("_active_gate")
    def _on_synced(self, rgb: Image, depth: Image, info: CameraInfo) -> None:
        self.counters["rgb_msgs"] += 1
        self._check_time(rgb)
        self._feed("synced", lambda _m: self.assembler.add_synced(rgb, depth, info), rgb)

    # ------------------------------------------------------------------ time
    def _use_sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    def _ros_now_ns(self) -> int:
        """ROS time: /clock under use_sim_time (0 until the first /clock arrives), else system time."""
        return self.get_clock().now().nanoseconds

    # ------------------------------------------------------------------ logging
    def _warn_throttled(self, key: str, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_log.get(key, -1e9) < _THROTTLE_S:
                return
            self._last_log[key] = now
        self.get_logger().warning(text)

    def _fault(self, key: str, text: str) -> None:
        """Count a fault and log it, at most once per key every few seconds."""
        with self._lock:
            self.counters[key] += 1
            now = time.monotonic()
            if now - self._last_log.get(key, -1e9) < _THROTTLE_S:
                return
            self._last_log[key] = now
            n = self.counters[key]
        self.get_logger().warning(f"{key} (x{n}): {text}")

    # ------------------------------------------------------------------ inputs
    def _check_time(self, msg: Any) -> None:
        try:
            t = stamp_ns(msg.header)
        except (DecodeError, AttributeError, ValueError):
            return
        newest = self._newest_image_ns
        if newest is not None and t < newest - _BACKWARDS_JUMP_NS:
            self.assembler.reset()
            self._newest_image_ns = t
            self._fault("time_jumped_back", f"image stamp went back {(newest - t) / 1e9:.2f} s; "
                        "sync and TF queues reset (the map is kept)")
            return
        self._newest_image_ns = t if newest is None else max(newest, t)

    def _report_new_faults(self, before: dict[str, int], where: str) -> None:
        """Log (throttled) each assembler fault counter that grew since ``before``."""
        after = self.assembler.stats
        for key, value in after.items():
            if key.startswith(_FAULT_PREFIXES) and value > before.get(key, 0):
                self._fault(key, f"{where}: {self.assembler.last_error or key}")

    def _feed(self, stream: str, fn: Callable[[Any], bool], msg: Any) -> None:
        before = self.assembler.stats
        try:
            fn(msg)
        except Exception as err:  # noqa: BLE001 - a bad message must never stop the node
            self._fault(f"bad_{stream}", f"{type(err).__name__}: {err}")
            return
        self._report_new_faults(before, stream)

    @gated("_active_gate")
    def _on_rgb(self, msg: Image) -> None:
        self.counters["rgb_msgs"] += 1
        self._check_time(msg)
        self._feed("rgb", self.assembler.add_rgb, msg)

    @gated("_active_gate")
    def _on_depth(self, msg: Image) -> None:
        self.counters["depth_msgs"] += 1
        self._feed("depth", self.assembler.add_depth, msg)

    @gated("_active_gate")
    def _on_info(self, msg: CameraInfo) -> None:
        self.counters["camera_info_msgs"] += 1
        self._feed("camera_info", self.assembler.add_camera_info, msg)

    @gated("_active_gate")
    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        try:
            records = transforms_from_tf(msg)
        except Exception as err:  # noqa: BLE001
            self._fault("bad_tf", f"{type(err).__name__}: {err}")
            return
        for rec in records:
            try:
                self.tf_buffer.set_transform(rec, static=static)
            except (TransformError, ValueError) as err:
                self._fault("bad_tf", f"{rec.parent_frame} -> {rec.child_frame}: {err}")

    @gated("_active_gate")
    def _drain(self) -> None:
        """Timer: frames whose TF arrived go into the map (segmentation is queued, not run here)."""
        if self.assembler.pending() == 0:
            return
        now_ns = self._ros_now_ns()
        if now_ns == 0 and self._use_sim_time():
            self._warn_throttled("no_clock", "use_sim_time is true but no /clock has arrived: "
                                 "frames are integrated, but outputs and diagnostics wait for "
                                 "/clock (play bags with `ros2 bag play --clock`)")
        before = self.assembler.stats
        try:
            frames = self.assembler.poll(now_ns)
        except Exception as err:  # noqa: BLE001
            self._fault("poll_error", f"{type(err).__name__}: {err}")
            return
        self._report_new_faults(before, "TF")
        for f in frames:
            try:
                self.pipeline.step(f)
                self._dirty = True
            except Exception as err:  # noqa: BLE001 - one bad frame must not stop the node
                self._fault("step_error", f"{type(err).__name__}: {err}")

    # ------------------------------------------------------------------ queries
    def _set_query(self, labels: list[str], mode: int, min_score: float | None) -> None:
        cfg = self.params.config.query
        if len(labels) > cfg.max_labels:
            self._fault("query_refused_too_many_labels",
                        f"{len(labels)} labels > query.max_labels {cfg.max_labels}")
            return
        long = [lab for lab in labels if len(lab) > cfg.max_label_chars]
        if long:
            self._fault("query_refused_label_too_long", f"a label has {len(long[0])} characters > "
                        f"query.max_label_chars {cfg.max_label_chars}")
            return
        try:
            answer = self.pipeline.query(labels, mode, self._min_score(min_score))
        except (QueryError, ValueError) as err:
            self._fault("query_refused", str(err))
            return
        if answer.dropped_labels:
            self.get_logger().info(f"query: dropped empty/duplicate labels {answer.dropped_labels!r}")
        with self._lock:
            self._query = (labels, mode, min_score)
            self._dirty = False
        self.counters["queries"] += 1
        self._publish(answer, force=True)

    def _current_query(self) -> tuple[list[str], int, float | None] | None:
        with self._lock:
            return self._query

    def _republish(self) -> None:
        """The map was replaced (load, clear): latched outputs must not show the old one."""
        query = self._current_query()
        answer = None if query is None else self._answer(query)
        if answer is None:
            return
        with self._lock:
            self._dirty = False
        self._publish(answer, force=True)

    def _answer(self, query: tuple[list[str], int, float | None]) -> Any | None:
        """The map's answer to the current query; None after a failure (counted as query_error:
        the query was accepted once, so a failure now is the node's, not the caller's)."""
        try:
            return self.pipeline.query(query[0], query[1], self._min_score(query[2]))
        except Exception as err:  # noqa: BLE001 - an output tick must not end the node
            self._fault("query_error", f"{type(err).__name__}: {err}")
            return None

    def _min_score(self, min_score: float | None) -> float:
        return self.params.config.query.min_score if min_score is None else min_score

    @gated("_active_gate")
    def _on_query(self, msg: TextQuery) -> None:
        min_score = float(msg.min_score) if msg.min_score != 0.0 else None
        self._set_query(list(msg.labels), int(msg.mode), min_score)

    @gated("_active_gate")
    def _on_query_text(self, msg: String) -> None:
        self._set_query([s for s in msg.data.split(",")], TextQuery.MODE_SEGMENT, None)

    # ------------------------------------------------------------------ outputs
    def _publish(self, answer: Any, *, force: bool) -> None:
        """Publish an answer; latched topics always after a new query, else only if subscribed."""
        if force or self.pub_result.get_subscription_count():
            self.pub_result.publish(conv.query_result_msg(answer))
        if force or self.pub_labels.get_subscription_count():
            self.pub_labels.publish(conv.legend_markers(answer))
        if int(answer.mode) == TextQuery.MODE_HIGHLIGHT:
            if self.pub_query_cloud.get_subscription_count():
                self.pub_query_cloud.publish(conv.query_cloud_from_answer(answer))
        elif force or self.pub_semantic.get_subscription_count():
            self.pub_semantic.publish(conv.semantic_cloud_from_answer(answer))

    @gated("_active_gate")
    def _publish_tick(self) -> None:
        with self._lock:
            query, dirty = self._query, self._dirty
            self._dirty = False
        if query is None or not dirty:
            return
        if not any(p.get_subscription_count() for p in
                   (self.pub_semantic, self.pub_query_cloud, self.pub_result, self.pub_labels)):
            with self._lock:
                self._dirty = True  # build it when someone listens
            return
        answer = self._answer(query)
        if answer is not None:
            self._publish(answer, force=False)

    @gated("_active_gate")
    def _diagnostics(self) -> None:
        s = self.assembler.stats
        ps = self.pipeline.stats
        # rate over ROS time (the timer's clock): under sim time it is the recorded sensor rate
        now = self._ros_now_ns()
        t0, n0 = self._inputs_prev
        n = self.counters["rgb_msgs"]
        received = n - n0
        # no rate over a period that began before the first /clock or across a backward jump
        rate = received / ((now - t0) / 1e9) if 0 < t0 < now else 0.0
        self._inputs_prev = (now, n)
        drops = {k: v for k, v in s.items() if ("drop" in k or "overflow" in k or k.startswith("sync_")
                                                or k.startswith(_FAULT_PREFIXES)) and v}
        faults = {k: v for k, v in self.counters.items() if k.startswith(("bad_", "query_", "step_",
                                                                            "time_", "poll_", "map_"))}
        seg = ps.timings.get("segment")
        with self.pipeline.locked_map() as m:
            voxels = len(m)
        max_voxels = self.params.config.mapping.max_voxels
        inp_level = "OK" if received > 0 else "WARN"
        statuses = [
            conv.diagnostic_status(
                "xmask3d: input", inp_level,
                (f"{rate:.1f} Hz" if rate > 0 else f"{received} images in the last period")
                if received > 0 else "no images received in the last period",
                {"rgb_rate_hz": rate, "tf_waiting": s.get("tf_waiting", 0), **drops, **faults},
            ),
            conv.diagnostic_status(
                "xmask3d: inference", "ERROR" if ps.segmenter_errors else "OK",
                f"{ps.segmented} keyframes segmented",
                {"keyframes": ps.keyframes, "segmented": ps.segmented,
                 "dropped_keyframes": ps.dropped_keyframes, "empty_keyframes": ps.empty_keyframes,
                 "segmenter_errors": ps.segmenter_errors,
                 "latency_mean_ms": seg.mean_ms if seg else 0.0,
                 "latency_last_ms": seg.last_ms if seg else 0.0},
            ),
            conv.diagnostic_status(
                "xmask3d: map", "WARN" if voxels >= max_voxels else "OK",
                f"{voxels} voxels", {"voxels": voxels, "max_voxels": max_voxels,
                                     "frames": ps.frames, "rss_bytes": conv.rss_bytes()},
            ),
        ]
        self.pub_diag.publish(conv.diagnostic_array(statuses, stamp_ns=now))

    # ------------------------------------------------------------------ parameters
    def _on_params(self, cfg: PerceptionConfig, names: frozenset[str]) -> None:
        if "node.publish_rate_hz" in names and self._publish_timer is not None:
            self.destroy_timer(self._publish_timer)
            self._publish_timer = self.create_timer(1.0 / cfg.node.publish_rate_hz,
                                                    self._publish_tick,
                                                    callback_group=self._timers_group)
        if "node.diagnostics_period_s" in names and self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(cfg.node.diagnostics_period_s, self._diagnostics,
                                                 callback_group=self._diag_group)
        if "node.tf_wait_max_age_s" in names and self.assembler is not None:
            self.assembler.cfg = cfg
        if "query.min_score" in names:
            with self._lock:
                self._dirty = True


class PerceptionNode(_PerceptionCore, Node):
    """The perception node, running from construction (arguments: :class:`_PerceptionCore`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configure_core()
        self._activate_core()


class PerceptionLifecycleNode(_PerceptionCore, LifecycleNode):
    """The perception node as a ROS 2 managed (lifecycle) node.

    ``configure`` reads the parameters, loads the model and creates the outputs and the map
    services; ``activate`` subscribes to the inputs and starts the timers; ``deactivate`` stops
    both (the map, the model and the current query stay: the next ``activate`` goes on from
    there, and the map can still be saved); ``cleanup`` releases the map and the model (and
    the accelerator memory they held); ``shutdown`` does what is needed of these and sets
    :attr:`finalized` (the executable then exits). A failed ``configure`` (e.g. missing
    weights) is logged and leaves the node unconfigured, ready for another try.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finalized = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure_core()
        except Exception as err:  # noqa: BLE001 - reported as a failed transition, node stays up
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}")
            self._cleanup_core()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate_core()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate_core()
        self.get_logger().info("deactivated: inputs and timers stopped, map and model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup_core()
        self.get_logger().info("cleaned up: map and model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate_core()
        self._cleanup_core()
        self.finalized = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in {state.label}: releasing everything")
        self._deactivate_core()
        self._cleanup_core()
        return TransitionCallbackReturn.SUCCESS


def release_accelerator_memory() -> None:
    """Give cached CUDA memory back after the model is dropped (no-op without torch or CUDA)."""
    gc.collect()  # the model's tensors, if a reference cycle still held them
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
