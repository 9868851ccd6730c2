"""Entry point of ``xmask3d_node``: ``main(argv=None) -> int``.

``xmask3d_node [--segmenter xmask3d|ground_truth] [--synthetic-seed N]
[--lifecycle off|managed|autostart] [--ros-args ...]``

- ``xmask3d`` (default): the XMask3D model of parameter ``node.model_config``: ``demo`` (the
  committed checkpoint trained on synthetic rooms), a checkpoint folder, a config name under
  config/model/ or a YAML path; start-up logs what the weights are (randomly initialised ones
  with a warning).
- ``ground_truth``: a TEST DOUBLE for the synthetic rooms of ``xmask3d_ros.data.synthetic``: the
  "segmenter" re-renders room ``--synthetic-seed`` at each keyframe's pose and reads the true class
  labels. Never use it on real data; it must be named explicitly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="xmask3d_node", description=__doc__.split("\n\n")[0])
    p.add_argument("--segmenter", choices=("xmask3d", "ground_truth"), default="xmask3d",
                   help="model behind the map (ground_truth: test double for synthetic rooms)")
    p.add_argument("--synthetic-seed", type=int, default=0,
                   help="room seed of the ground_truth test double")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device of the XMask3D model (runtime.device of the model config)")
    p.add_argument("--feature-dim", type=int, default=64,
                   help="embedding size of the ground_truth test double")
    p.add_argument("--lifecycle", choices=("off", "managed", "autostart"), default="off",
                   help="off: a plain node that runs at once; managed: a lifecycle node that waits "
                        "for configure / activate (ros2 lifecycle set, a lifecycle manager); "
                        "autostart: a lifecycle node that configures and activates itself")
    return p.parse_args(list(argv))


def _ground_truth(cfg: Any, args: argparse.Namespace, log: Any) -> Any:
    import numpy as np

    from xmask3d_ros.data.classes import SYNTHETIC_CLASSES, SYNTHETIC_RAW_IDS
    from xmask3d_ros.data.synthetic import generate_room, render_frame
    from xmask3d_ros.pipeline import GroundTruthSegmenter, PerceptionPipeline, TableTextEncoder

    room = generate_room(args.synthetic_seed)
    enc = TableTextEncoder(SYNTHETIC_CLASSES, args.feature_dim)

    def label_image(posed: Any) -> Any:
        cam = posed.frame.camera
        f = render_frame(room, posed.T_map_cam.matrix, cam.K, cam.width, cam.height)
        return np.asarray(f.label)

    seg = GroundTruthSegmenter(enc, dict(zip(SYNTHETIC_RAW_IDS, SYNTHETIC_CLASSES)), label_image)
    log.warning(f"segmenter: ground_truth TEST DOUBLE for synthetic room {args.synthetic_seed} "
                "(reads true labels; not a model)")
    return PerceptionPipeline(cfg, seg, enc)


def _xmask3d(cfg: Any, args: argparse.Namespace, log: Any) -> Any:
    from xmask3d_ros.pipeline import PerceptionPipeline
    from xmask3d_ros.pipeline.xmask3d_segmenter import (
        ClipTextEncoder,
        XMask3DSegmenter,
        load_model,
    )

    model, what = load_model(cfg.node.model_config, [f"runtime.device={args.device}"])
    seg = XMask3DSegmenter.with_runtime(model)
    (log.warning if "RANDOMLY" in what else log.info)(f"segmenter: XMask3D, {what}")
    return PerceptionPipeline(cfg, seg, ClipTextEncoder(seg.model))


def _autostart(node: Any, log: Any) -> None:
    """configure then activate; a failure is logged and leaves the node for a manager to retry."""
    from rclpy.lifecycle import TransitionCallbackReturn

    for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
        if trigger() != TransitionCallbackReturn.SUCCESS:
            log.error(f"autostart: {name} failed; the node waits for a lifecycle manager")
            return


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from xmask3d_ros.ros.executor import DrainingExecutor

    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = rclpy.utilities.remove_ros_args(["xmask3d_node", *argv])[1:]
    args = _parse(ros_args)
    # Our own SIGINT/SIGTERM handling: the executor stops taking work and waits for the callbacks
    # in flight (DrainingExecutor; rclpy's MultiThreadedExecutor does not wait), then the node and
    # the context go, so no callback or executor task runs into a destroyed handle.
    rclpy.init(args=["xmask3d_node", *argv],
               signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = None
    executor = None
    log = rclpy.logging.get_logger("xmask3d")
    try:
        from xmask3d_ros.ros.node import PerceptionLifecycleNode, PerceptionNode

        def make(cfg: Any) -> Any:
            if args.segmenter == "ground_truth":
                return _ground_truth(cfg, args, log)
            return _xmask3d(cfg, args, log)

        if args.lifecycle == "off":
            node = PerceptionNode(make)
        else:
            node = PerceptionLifecycleNode(make)
            if args.lifecycle == "autostart":
                _autostart(node, log)
            else:
                log.info("lifecycle node: waiting for configure and activate")
        executor = DrainingExecutor(num_threads=4)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok() and not getattr(node, "finalized", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt cleanup
        if executor is not None:
            if not executor.shutdown(timeout_sec=10.0):
                log.warning("shutdown: callbacks still running after 10 s")
            for err in executor.shutdown_errors:
                log.error(f"shutdown: a callback failed: {type(err).__name__}: {err}")
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
