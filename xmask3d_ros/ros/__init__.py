"""ROS 2 adapter layer: the only package importing rclpy (ARCHITECTURE.md §3).

Modules: ``conversions`` (numpy / answers -> messages), ``parameters`` (PerceptionConfig <-> ROS
parameters with descriptors), ``qos`` (the node's QoS profiles). Nothing is imported here so that
``import xmask3d_ros.ros`` stays cheap.
"""
