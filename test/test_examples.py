"""The README's Python example runs as written (against whichever package is under test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import xmask3d_ros


def test_quickstart_example_runs(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "examples" / "quickstart.py"), "--frames", "4",
         "--size", "96x72"],
        capture_output=True, text=True, timeout=600, cwd=repo_root / "examples",
        env=_env_importing_package_under_test(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("map: ") and int(lines[0].split()[1]) > 1000
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["chair", "table", "wall"]
    # min_score=-1 means every voxel with semantics gets some label of the vocabulary
    assert int(lines[-1].split(":")[1].split(";")[0]) > 0


def _env_importing_package_under_test() -> dict[str, str]:
    """The child imports the same xmask3d_ros as this process (install space or source)."""
    site = str(Path(xmask3d_ros.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    return env
