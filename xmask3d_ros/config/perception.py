"""Root configuration of the perception node and the replay tool (config/perception.yaml).

The same file is the node's ROS parameter file (``/**: ros__parameters: ...``, nested keys become
dotted parameter names such as ``tf.cache_duration_s``) and a plain YAML config for the library:
:func:`load_perception_config` accepts both shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmask3d_ros.config.geometry import DepthCfg, SyncCfg, TfCfg, VisibilityCfg
from xmask3d_ros.config.mapping import MapCfg
from xmask3d_ros.config.pipeline import PipelineCfg
from xmask3d_ros.config.schema import (
    ConfigError,
    from_dict,
    merge,
    param,
    parse_override,
    read_yaml,
    section,
)

__all__ = [
    "DYNAMIC_PARAMETERS",
    "NodeCfg",
    "PerceptionConfig",
    "QueryCfg",
    "load_perception_config",
    "parameter_table_markdown",
    "ros_parameters",
]

# Parameters the node lets change while it runs (``ros2 param set``); every other one is
# read-only after start-up. The node reads these on every use (timers are re-created).
DYNAMIC_PARAMETERS: frozenset[str] = frozenset(
    {"node.publish_rate_hz", "node.diagnostics_period_s", "node.tf_wait_max_age_s", "query.min_score"}
)


@dataclass(frozen=True)
class NodeCfg:
    """ROS-facing settings: frames, QoS, rates, the TF wait queue."""

    map_frame: str = param("odom", "fixed frame of the map and of every output (REP-105)")
    model_config: str = param(
        "demo",
        "model: 'demo' (the committed checkpoint trained on synthetic rooms), a checkpoint folder, "
        "a name under config/model/ (tiny = random init, paper) or a model YAML path",
    )
    initial_map: str = param(
        "",
        "map file (.safetensors from the save_map service or xmask3d-replay --save-map) loaded "
        "when the node starts (lifecycle: at configure); empty: start with an empty map",
    )
    input_reliability: str = param(
        "best_effort",
        "QoS reliability of the image/camera_info subscriptions",
        choices=("best_effort", "reliable"),
    )
    input_depth: int = param(5, "QoS history depth of the sensor subscriptions", ge=1, le=1000)
    publish_rate_hz: float = param(1.0, "rate of semantic_cloud / query_result updates", gt=0, le=100)
    tf_wait_queue_size: int = param(
        30, "synced frames kept while waiting for their TF; oldest dropped first", ge=1, le=10000
    )
    tf_wait_max_age_s: float = param(
        1.0, "a frame whose TF has not arrived after this long is dropped and counted", gt=0
    )
    tf_retry_period_s: float = param(0.02, "period of the timer retrying TF lookups", gt=0, le=1)
    diagnostics_period_s: float = param(1.0, "period of /diagnostics messages", gt=0, le=60)


@dataclass(frozen=True)
class QueryCfg:
    """How text queries are answered from the stored per-voxel features."""

    min_score: float = param(
        0.2,
        "score below which a voxel does not show a label (when a query gives 0): the class "
        "probability under the model's rule, or the cosine for segmenters without one",
        ge=-1, le=1,
    )
    min_object_voxels: int = param(10, "smallest connected component reported as an object", ge=1)
    max_labels: int = param(
        1000, "queries with more labels are refused with a log line (65535 is 'unknown')",
        ge=1, le=65535,
    )
    max_label_chars: int = param(200, "longer labels are refused with a log line", ge=1)
    text_cache_size: int = param(
        4096, "text embeddings kept per label (least recently used dropped first)", ge=1
    )
    compute_dtype: str = param(
        "float32",
        "precision of the scoring matrix product over the fp16 features: float32 (exact to "
        "~1e-6), or bfloat16 (scores within ~2e-3; faster on CPUs with AVX512-BF16/AMX)",
        choices=("float32", "bfloat16"),
    )
    chunk_rows: int = param(
        2048, "voxels scored per block: the block's converted features stay in the CPU cache",
        ge=64, le=1_000_000,
    )
    threads: int = param(
        2,
        "scoring workers: n >= 1 private single-threaded workers taking blocks in turn (robust on "
        "a shared CPU); 0 = the calling thread with torch's intra-op thread pool",
        ge=0, le=256,
    )


@dataclass(frozen=True)
class PerceptionConfig:
    """Everything the perception pipeline and its ROS node can be tuned by."""

    node: NodeCfg = section(NodeCfg, "ROS-facing settings")
    depth: DepthCfg = section(DepthCfg, "depth decoding and valid range")
    visibility: VisibilityCfg = section(VisibilityCfg, "which map points a frame sees")
    tf: TfCfg = section(TfCfg, "transform buffer")
    sync: SyncCfg = section(SyncCfg, "RGB / depth / camera_info synchronisation")
    mapping: MapCfg = section(MapCfg, "bounded local voxel map")
    pipeline: PipelineCfg = section(PipelineCfg, "keyframes and the segmentation worker")
    query: QueryCfg = section(QueryCfg, "text queries")


def _unwrap_ros_parameters(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Accept ``{node_name or '/**': {'ros__parameters': {...}}}`` as well as the plain form."""
    wrapped = [k for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v]
    if not wrapped:
        return data
    if len(wrapped) != len(data):
        extra = sorted(set(data) - set(wrapped))
        raise ConfigError(f"{extra[0]}: unexpected top-level key beside ros__parameters ({path})")
    params: dict[str, Any] = {}
    for key in wrapped:
        params = merge(params, data[key]["ros__parameters"] or {})
    params.pop("use_sim_time", None)  # a ROS-wide parameter, not ours
    return params


def load_perception_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> PerceptionConfig:
    """Load the perception config from a plain or ROS-parameter YAML file plus ``a.b=v`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = _unwrap_ros_parameters(read_yaml(path), Path(path))
        source = str(path)
    for text in overrides:
        keys, value = parse_override(text)
        patch: Any = value
        for k in reversed(keys):
            patch = {k: patch}
        data = merge(data, patch)
    if overrides:
        source += " + overrides"
    return from_dict(PerceptionConfig, data, source=source)


def ros_parameters(cfg: PerceptionConfig) -> dict[str, Any]:
    """Flatten a config into dotted ROS parameter names -> values (tuples become lists)."""
    from xmask3d_ros.config.schema import to_dict

    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", to_dict(cfg))
    return flat


def parameter_table_markdown(cfg: PerceptionConfig | None = None) -> str:
    """The README's parameter table, generated from the dataclasses (so docs cannot drift)."""
    import dataclasses
    import typing

    from xmask3d_ros.config.schema import field_constraint

    rows = ["| parameter | default | allowed | dynamic | meaning |", "|---|---|---|---|---|"]

    def walk(section_cfg: Any, prefix: str) -> None:
        cls = type(section_cfg)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f"{prefix}.{f.name}" if prefix else f.name
            value = getattr(section_cfg, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, name)
                continue
            constraint = field_constraint(cls, f.name)
            allowed = constraint.describe() if constraint else "any value"
            if allowed == "any value":
                allowed = getattr(hints[f.name], "__name__", str(hints[f.name]))
            doc = (constraint.doc if constraint else "").replace("|", "\\|")
            dynamic = "yes" if name in DYNAMIC_PARAMETERS else ""
            rows.append(f"| `{name}` | `{value!r}` | {allowed} | {dynamic} | {doc} |")

    walk(cfg if cfg is not None else PerceptionConfig(), "")
    return "\n".join(rows) + "\n"
