"""PerceptionConfig <-> ROS parameters: descriptors, the params file, validation on set."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Jazzy wheels not installed")
from rclpy.parameter import Parameter  # noqa: E402

from xmask3d_ros.config.perception import (  # noqa: E402
    PerceptionConfig,
    load_perception_config,
    ros_parameters,
)
from xmask3d_ros.ros.parameters import (  # noqa: E402
    DYNAMIC,
    PerceptionParameters,
    config_from_values,
    param_specs,
)

pytestmark = pytest.mark.ros
PARAMS_FILE = Path(__file__).resolve().parents[2] / "config" / "perception.yaml"


@pytest.fixture(scope="module")
def ros_context():
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    yield ctx
    rclpy.shutdown(context=ctx)


_count = iter(range(10_000))


def _node(ctx, **kw):
    from rclpy.node import Node

    return Node(f"param_test_{next(_count)}", context=ctx, **kw)


def test_every_config_field_is_a_described_parameter() -> None:
    specs = {s.name: s for s in param_specs()}
    assert set(specs) == set(ros_parameters(PerceptionConfig()))
    for s in specs.values():
        assert s.descriptor.description, s.name
        assert s.descriptor.read_only == (s.name not in DYNAMIC)
    rate = specs["node.publish_rate_hz"].descriptor.floating_point_range[0]
    assert (rate.from_value, rate.to_value) == (0.0, 100.0)
    age = specs["node.tf_wait_max_age_s"].descriptor.floating_point_range[0]
    assert age.from_value == 0.0 and math.isinf(age.to_value)
    depth = specs["node.input_depth"].descriptor.integer_range[0]
    assert (depth.from_value, depth.to_value) == (1, 1000)
    assert "best_effort" in specs["node.input_reliability"].descriptor.description
    assert "pipeline.keyframe.max_interval_s" in specs


def test_roundtrip_values_to_config() -> None:
    cfg = load_perception_config(PARAMS_FILE)
    assert config_from_values(ros_parameters(cfg)) == cfg


def test_params_file_and_overrides_reach_the_config(ros_context) -> None:
    node = _node(
        ros_context,
        cli_args=["--ros-args", "--params-file", str(PARAMS_FILE), "-p", "node.map_frame:=map"],
    )
    try:
        params = PerceptionParameters(node)
        expected = load_perception_config(PARAMS_FILE, ["node.map_frame=map"])
        assert params.config == expected
        desc = node.describe_parameter("mapping.voxel_size_m")
        assert desc.read_only and "voxel" in desc.description.lower()
    finally:
        node.destroy_node()


def test_invalid_start_up_value_is_refused_with_its_name(ros_context) -> None:
    from xmask3d_ros.config.schema import ConfigError

    node = _node(
        ros_context,
        parameter_overrides=[
            Parameter("depth.min_depth_m", value=5.0),
            Parameter("depth.max_depth_m", value=2.0),
        ],
    )
    try:
        with pytest.raises(ConfigError, match="min_depth_m"):
            PerceptionParameters(node)
    finally:
        node.destroy_node()


def test_set_validates_and_keeps_the_old_value(ros_context) -> None:
    node = _node(ros_context)
    seen: list[frozenset[str]] = []
    try:
        params = PerceptionParameters(node, on_change=lambda cfg, names: seen.append(names))
        ok = node.set_parameters([Parameter("query.min_score", value=0.5)])[0]
        assert ok.successful and params.config.query.min_score == 0.5
        assert seen == [frozenset({"query.min_score"})]
        # out of the descriptor's range (rclpy refuses) and a strict bound (our callback refuses)
        for name, bad in [("query.min_score", 5.0), ("node.publish_rate_hz", 0.0)]:
            before = node.get_parameter(name).value
            res = node.set_parameters([Parameter(name, value=bad)])[0]
            assert not res.successful and res.reason
            assert node.get_parameter(name).value == before
        res = node.set_parameters([Parameter("node.publish_rate_hz", value=0.0)])[0]
        assert "publish_rate_hz" in res.reason
        # a value with no upper bound (inf range end) is accepted
        assert node.set_parameters([Parameter("node.tf_wait_max_age_s", value=2.5)])[0].successful
        assert params.config.node.tf_wait_max_age_s == 2.5
        # read-only parameters cannot change at run time
        res = node.set_parameters([Parameter("mapping.voxel_size_m", value=0.1)])[0]
        assert not res.successful
        assert params.config.mapping.voxel_size_m == PerceptionConfig().mapping.voxel_size_m
        assert len(seen) == 2
    finally:
        node.destroy_node()
