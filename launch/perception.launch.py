"""Launch the xmask3d_ros perception node (and optionally RViz).

    ros2 launch xmask3d_ros perception.launch.py \
        rgb_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/color/camera_info map_frame:=odom rviz:=true

Every argument has a default; ``params_file`` defaults to the installed
share/xmask3d_ros/config/perception.yaml, and ``map_frame`` / ``model_config`` / ``device`` /
``use_sim_time`` override it.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "namespace of the node and its relative topics"),
    ("rgb_topic", "rgb/image", "colour image topic (rgb8/bgr8/rgba8/bgra8)"),
    ("depth_topic", "depth/image", "depth image registered to colour (16UC1 mm / 32FC1 m)"),
    ("camera_info_topic", "rgb/camera_info", "CameraInfo of the colour camera"),
    ("map_frame", "odom", "fixed frame of the map and of every output"),
    ("params_file", "", "parameter YAML (empty: share/xmask3d_ros/config/perception.yaml)"),
    ("model_config", "demo", "'demo' checkpoint, a checkpoint folder, a config name under "
     "config/model/ or a YAML path"),
    ("device", "auto", "torch device of the model: auto, cpu or cuda"),
    ("segmenter", "xmask3d", "xmask3d, or ground_truth (test double for synthetic rooms only)"),
    ("use_sim_time", "false", "use /clock (bag replay with --clock)"),
    ("lifecycle", "off", "off: plain node; managed: lifecycle node waiting for configure and "
     "activate; autostart: lifecycle node that configures and activates itself"),
    ("rviz", "false", "start RViz with config/xmask3d.rviz"),
]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("xmask3d_ros")
    default_params = PathJoinSubstitution([share, "config", "perception.yaml"])
    args = [DeclareLaunchArgument(name, default_value=default, description=doc)
            for name, default, doc in ARGUMENTS]
    args[[a[0] for a in ARGUMENTS].index("params_file")] = DeclareLaunchArgument(
        "params_file", default_value=default_params, description=ARGUMENTS[5][2])
    cfg = LaunchConfiguration
    node = Node(
        package="xmask3d_ros",
        executable="xmask3d_node",
        name="xmask3d",
        namespace=cfg("namespace"),
        output="screen",
        emulate_tty=True,
        arguments=["--segmenter", cfg("segmenter"), "--device", cfg("device"),
                   "--lifecycle", cfg("lifecycle")],
        parameters=[
            cfg("params_file"),
            {
                "node.map_frame": cfg("map_frame"),
                "node.model_config": cfg("model_config"),
                "use_sim_time": cfg("use_sim_time"),
            },
        ],
        remappings=[
            ("rgb/image", cfg("rgb_topic")),
            ("depth/image", cfg("depth_topic")),
            ("rgb/camera_info", cfg("camera_info_topic")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "xmask3d.rviz"])],
        parameters=[{"use_sim_time": cfg("use_sim_time")}],
        condition=IfCondition(cfg("rviz")),
    )
    return LaunchDescription([*args, node, rviz])
