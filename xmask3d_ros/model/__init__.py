"""XMask3D model: 3D branch (MinkUNet on a sparse backend), 2D branch, CLIP, fusion and heads.

Kept import-free so that ``import xmask3d_ros.model.<part>`` loads only that part.
"""
