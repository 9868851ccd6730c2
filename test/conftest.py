"""Suite-wide checks: the package under test is the installed one when the test command says so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import xmask3d_ros


def pytest_report_header(config: pytest.Config) -> str:
    return f"xmask3d_ros imported from {Path(xmask3d_ros.__file__).parent}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test the source tree when scripts/test.sh asked for the colcon install space."""
    expected = os.environ.get("XMASK3D_EXPECT_INSTALL_SPACE")
    if not expected:
        return
    actual = Path(xmask3d_ros.__file__).resolve()
    if Path(expected).resolve() not in actual.parents:
        raise pytest.UsageError(
            f"xmask3d_ros was imported from {actual}, not from the install space {expected}: "
            "the tests would not exercise the colcon build"
        )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The source checkout (for data files such as config/ and msg/)."""
    return Path(__file__).resolve().parent.parent
