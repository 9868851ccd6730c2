"""Shared by the tests that start the installed node as its own process."""

from __future__ import annotations

import os
import shutil

import pytest


def _installed_node() -> tuple[str, dict[str, str]]:
    """(path of the installed xmask3d_node, environment for its process), DDS kept local."""
    domain = os.environ.get("ROS_DOMAIN_ID") or str(50 + os.getpid() % 40)
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    exe = shutil.which("xmask3d_node")
    assert exe, "xmask3d_node is not on PATH (build with scripts/setup.sh)"
    install = os.environ.get("XMASK3D_EXPECT_INSTALL_SPACE")
    if install:
        assert exe.startswith(install), f"{exe} is not the installed executable under {install}"
    return exe, env


@pytest.fixture(scope="module")
def installed_node() -> tuple[str, dict[str, str]]:
    return _installed_node()
