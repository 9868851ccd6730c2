"""QoS profiles of the perception node (ros-peers-notes.md §9, REP-2003 draft).

- sensor inputs: keep-last ``node.input_depth``, volatile, reliability ``node.input_reliability``
  (best_effort by default = SensorDataQoS; a best-effort subscription also matches reliable
  publishers);
- ``/tf``: reliable, volatile, keep-last 100; ``/tf_static``: reliable, transient-local, keep-last
  100 (what tf2_ros uses, so static transforms published before the node started arrive);
- queries and latched outputs (``query``, ``query_text``, ``semantic_cloud``, ``query_result``,
  ``labels``): reliable, transient-local, keep-last 1, so late joiners get the last one;
- ``query_cloud`` and ``/diagnostics``: reliable, volatile, keep-last 1 / 10.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["diagnostics_qos", "latched_qos", "sensor_qos", "tf_qos", "tf_static_qos", "volatile_qos"]

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def sensor_qos(reliability: str = "best_effort", depth: int = 5) -> QoSProfile:
    """Image / camera_info subscriptions; ``reliability`` is 'best_effort' or 'reliable'."""
    try:
        rel = _RELIABILITY[reliability]
    except KeyError as err:
        raise ValueError(
            f"node.input_reliability: {reliability!r}, expected one of {sorted(_RELIABILITY)}"
        ) from err
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=rel,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos(depth: int = 1) -> QoSProfile:
    """Reliable + transient-local, keep-last ``depth``: queries and map-like outputs."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def volatile_qos(depth: int = 1) -> QoSProfile:
    """Reliable + volatile, keep-last ``depth``."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def tf_qos() -> QoSProfile:
    """``/tf`` as tf2_ros subscribes to it."""
    return volatile_qos(100)


def tf_static_qos() -> QoSProfile:
    """``/tf_static`` as tf2_ros subscribes to it (latched)."""
    return latched_qos(100)


def diagnostics_qos() -> QoSProfile:
    """``/diagnostics`` as diagnostic_updater publishes it."""
    return volatile_qos(10)
