"""Replay layer: rosbag2 reading/writing with ``rosbags`` and offline evaluation (no rclpy).

Submodules are imported explicitly (e.g. ``xmask3d_ros.replay.bag_writer``) so that importing
this package stays cheap.
"""
