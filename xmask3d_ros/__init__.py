"""xmask3d_ros: open-vocabulary 3D semantic mapping with XMask3D for ROS 2.

Layers (each imports only those below it): ros -> replay -> pipeline -> mapping -> model ->
geometry -> data. Only ``xmask3d_ros.ros`` imports rclpy; everything else is plain Python.
"""

__version__ = "0.1.0"
