"""Shared fixtures of the data tests: small, fast synthetic-room configs."""

from __future__ import annotations

import pytest

from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.synthetic import SyntheticCfg


@pytest.fixture(scope="session")
def small_cfg() -> SyntheticCfg:
    """Tiny images and a coarse ground-truth spacing: every test stays well under a second."""
    return from_dict(SyntheticCfg, {
        "camera": {"width": 64, "height": 48},
        "ground_truth": {"point_spacing_m": 0.08},
    })
