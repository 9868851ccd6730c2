"""pip-installable library without ROS: pipeline, mapping, model, replay, training, export.

The ROS 2 build (`colcon build`, ament_cmake, see CMakeLists.txt) installs the same sources plus
the generated `xmask3d_ros.msg` interfaces. Do not `pip install -e .` into an environment where
the colcon install space is sourced as well: whichever copy comes first on sys.path wins.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _data_files() -> list[tuple[str, list[str]]]:
    """Configs and launch files under share/xmask3d_ros, where the colcon build puts them too."""
    out = []
    for folder in ("config", "launch"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file():
                rel = path.relative_to(ROOT)
                out.append((f"share/xmask3d_ros/{rel.parent}", [str(rel)]))
    return out


setup(
    name="xmask3d_ros",
    version="0.1.0",
    description="Open-vocabulary 3D semantic mapping with XMask3D (ROS 2 node + plain-Python library)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["xmask3d_ros", "xmask3d_ros.*"]),
    data_files=_data_files(),
    install_requires=[
        "numpy>=1.26",
        "pyyaml>=6",
        "safetensors>=0.4",
        "torch>=2.1",
        "pillow>=10",
        "tqdm>=4.66",
        "rosbags>=0.10",
    ],
    extras_require={
        "model": ["diffusers>=0.30", "transformers>=4.40", "open_clip_torch>=2.24"],
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        "viz": ["matplotlib>=3.8", "plyfile>=1.0"],
        "test": ["pytest>=8", "hypothesis>=6", "mcap>=1.1", "mcap-ros2-support>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "xmask3d-synth = xmask3d_ros.cli.synth:main",
            "xmask3d-replay = xmask3d_ros.cli.replay:main",
            "xmask3d-train = xmask3d_ros.cli.train:main",
            "xmask3d-eval = xmask3d_ros.cli.evaluate:main",
            "xmask3d-train-demo = xmask3d_ros.cli.train_demo:main",
            "xmask3d-export = xmask3d_ros.cli.export:main",
        ],
    },
)
