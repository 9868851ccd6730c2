"""launch/perception.launch.py, checked without launch/launch_ros (not installable here).

The file is executed against recording stand-ins of the launch API; the node action it builds is
turned into the command line launch_ros would run (executable, arguments, ``--ros-args`` with
node name, namespace, params files, parameters, remaps), checked against the node's declared
parameters and topics, and then run over real DDS: the node must come up under the namespace with
the remapped subscriptions and the parameter values the launch arguments give.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Jazzy wheels not installed")
if not os.environ.get("XMASK3D_EXPECT_INSTALL_SPACE"):
    pytest.importorskip("xmask3d_ros.msg", reason="needs the colcon install space (scripts/test.sh)")

from xmask3d_ros.ros.main import _parse  # noqa: E402
from xmask3d_ros.ros.node import INPUT_TOPICS, OUTPUT_TOPICS  # noqa: E402
from xmask3d_ros.ros.parameters import param_specs  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "perception.launch.py"


class _Rec:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(_Rec):
    pass


class PathJoinSubstitution(_Rec):
    pass


class FindPackageShare(_Rec):
    pass


def _stubs() -> dict[str, types.ModuleType]:
    names = {
        "launch": {"LaunchDescription": type("LaunchDescription", (_Rec,), {})},
        "launch.actions": {"DeclareLaunchArgument": type("DeclareLaunchArgument", (_Rec,), {})},
        "launch.conditions": {"IfCondition": type("IfCondition", (_Rec,), {})},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration,
                                 "PathJoinSubstitution": PathJoinSubstitution},
        "launch_ros.actions": {"Node": type("Node", (_Rec,), {})},
        "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
        "launch_ros": {},
    }
    mods = {}
    for name, attrs in names.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
    return mods


def _description():
    tree = ast.parse(LAUNCH.read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    stubs = _stubs()
    for mod, name in imported:
        if mod.startswith("launch"):
            assert hasattr(stubs[mod], name), f"{mod}.{name} not covered by the stand-ins"
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        ns: dict = {"__name__": "perception_launch"}
        exec(compile(tree, str(LAUNCH), "exec"), ns)
        return ns["generate_launch_description"]()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _share() -> Path:
    install = os.environ.get("XMASK3D_EXPECT_INSTALL_SPACE") or str(ROOT / "install")
    return Path(install) / "xmask3d_ros" / "share" / "xmask3d_ros"


def _resolve(value, launch_args: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, LaunchConfiguration):
        return launch_args[value.args[0]]
    if isinstance(value, FindPackageShare):
        assert value.args[0] == "xmask3d_ros"
        return str(_share())
    if isinstance(value, PathJoinSubstitution):
        return os.path.join(*[_resolve(v, launch_args) for v in value.args[0]])
    raise TypeError(f"unhandled substitution {value!r}")


def _node_command(overrides: dict[str, str]) -> tuple[list[str], dict]:
    desc = _description()
    actions = desc.args[0]
    declared = {a.args[0]: a.kwargs for a in actions if type(a).__name__ == "DeclareLaunchArgument"}
    for name, kw in declared.items():
        assert kw.get("description"), name
    launch_args = {name: _resolve(kw["default_value"], {}) for name, kw in declared.items()}
    assert set(overrides) <= set(launch_args)
    launch_args.update(overrides)
    nodes = [a for a in actions if type(a).__name__ == "Node"]
    node = next(n for n in nodes if n.kwargs["package"] == "xmask3d_ros")
    kw = node.kwargs
    exe = _share().parents[1] / "lib" / "xmask3d_ros" / kw["executable"]
    cmd = [str(exe), *[_resolve(a, launch_args) for a in kw.get("arguments", [])], "--ros-args",
           "-r", f"__node:={kw['name']}"]
    ns = _resolve(kw.get("namespace", ""), launch_args)
    if ns:
        cmd += ["-r", f"__ns:=/{ns.strip('/')}"]
    params: dict[str, str] = {}
    for p in kw["parameters"]:
        if isinstance(p, dict):
            params.update({k: _resolve(v, launch_args) for k, v in p.items()})
            cmd += [x for k, v in p.items() for x in ("-p", f"{k}:={_resolve(v, launch_args)}")]
        else:
            cmd += ["--params-file", _resolve(p, launch_args)]
    remaps = {src: _resolve(dst, launch_args) for src, dst in kw.get("remappings", [])}
    for src, dst in remaps.items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd, {"params": params, "remaps": remaps, "declared": declared, "nodes": nodes,
                 "namespace": ns, "name": kw["name"]}


def test_launch_matches_the_node() -> None:
    cmd, info = _node_command({})
    assert Path(cmd[0]).is_file() and os.access(cmd[0], os.X_OK), cmd[0]
    expected = {"namespace", "rgb_topic", "depth_topic", "camera_info_topic", "map_frame",
                "params_file", "model_config", "device", "use_sim_time", "rviz", "lifecycle"}
    assert expected <= set(info["declared"])
    names = {s.name for s in param_specs()} | {"use_sim_time"}
    assert set(info["params"]) <= names, set(info["params"]) - names
    assert set(info["remaps"]) <= set(INPUT_TOPICS)
    assert {"rgb/image", "depth/image", "rgb/camera_info"} == set(info["remaps"])
    params_file = cmd[cmd.index("--params-file") + 1]
    assert Path(params_file).is_file(), params_file  # installed config/perception.yaml
    assert (_share() / "config" / "xmask3d.rviz").is_file() or (ROOT / "config" / "xmask3d.rviz").is_file()
    # the node's own arguments parse
    args = _parse(cmd[1:cmd.index("--ros-args")])
    assert args.segmenter == "xmask3d" and args.device == "auto" and args.lifecycle == "off"
    rviz = [n for n in info["nodes"] if n.kwargs["package"] == "rviz2"]
    assert rviz and "condition" in rviz[0].kwargs
    assert set(OUTPUT_TOPICS) >= {"semantic_cloud", "query_cloud", "query_result", "labels"}


def test_launch_command_line_runs_over_dds() -> None:
    overrides = {"namespace": "robot1", "rgb_topic": "/cam/color", "depth_topic": "/cam/depth",
                 "camera_info_topic": "/cam/info", "map_frame": "map", "segmenter": "ground_truth",
                 "lifecycle": "autostart"}
    cmd, info = _node_command(overrides)
    assert shutil.which(Path(cmd[0]).name)
    domain = os.environ.get("ROS_DOMAIN_ID") or str(50 + os.getpid() % 40)
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    from rcl_interfaces.srv import GetParameters
    from rclpy.node import Node

    node = Node(f"launch_test_{uuid.uuid4().hex[:8]}", context=ctx)
    try:
        want = {"/cam/color", "/cam/depth", "/cam/info", "/robot1/query", "/robot1/query_text"}
        end = time.monotonic() + 90  # the node imports torch and loads the demo model first
        subs: set[str] = set()
        while time.monotonic() < end and not want <= subs:
            subs = set()
            for topic, _types in node.get_topic_names_and_types():
                for ep in node.get_subscriptions_info_by_topic(topic):
                    if ep.node_name == "xmask3d" and ep.node_namespace == "/robot1":
                        subs.add(topic)
            time.sleep(0.2)
        assert want <= subs, (subs, proc.poll())
        client = node.create_client(GetParameters, "/robot1/xmask3d/get_parameters")
        assert client.wait_for_service(timeout_sec=10)
        fut = client.call_async(GetParameters.Request(names=["node.map_frame", "use_sim_time",
                                                             "node.model_config"]))
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        executor.spin_until_future_complete(fut, timeout_sec=10)
        values = fut.result().values
        assert values[0].string_value == "map"
        assert values[1].bool_value is False
        assert values[2].string_value == "demo"  # the launch default: the committed checkpoint
        # lifecycle:=autostart: a managed node that configured and activated itself
        from lifecycle_msgs.srv import GetState

        get_state = node.create_client(GetState, "/robot1/xmask3d/get_state")
        assert get_state.wait_for_service(timeout_sec=10)
        fut = get_state.call_async(GetState.Request())
        executor.spin_until_future_complete(fut, timeout_sec=10)
        assert fut.result().current_state.label == "active"
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
