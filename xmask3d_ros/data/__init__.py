"""Datasets and label maps (bottom layer: imports only ``xmask3d_ros.config``).

Submodules are imported explicitly (``xmask3d_ros.data.classes``, ``xmask3d_ros.data.synthetic``,
``xmask3d_ros.data.scannet_layout``) so that importing this package stays cheap.
"""
