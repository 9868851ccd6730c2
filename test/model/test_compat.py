"""compat.ensure_torchvision_importable: torchvision / open_clip import on a CPU torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fresh_interpreter_imports_torchvision_and_open_clip() -> None:
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip not installed")
    out = _run(
        """
        import threading
        import torch
        from xmask3d_ros.model.compat import ensure_torchvision_importable, torchvision_ops_stubbed
        results = []
        threads = [threading.Thread(target=lambda: results.append(ensure_torchvision_importable()))
                   for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len(set(results)) == 1, results           # every thread sees the same decision
        assert ensure_torchvision_importable() == results[0]  # idempotent
        assert torchvision_ops_stubbed() == results[0]
        import torchvision, open_clip                    # the point of the shim
        assert hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")
        print("stubbed" if results[0] else "real")
        """
    )
    assert out.strip() in {"stubbed", "real"}


def test_stub_only_when_real_ops_missing() -> None:
    """With the ops already defined (as a working torchvision build would), nothing is stubbed."""
    out = _run(
        """
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from xmask3d_ros.model.compat import ensure_torchvision_importable, torchvision_ops_stubbed
        assert ensure_torchvision_importable() is False
        assert torchvision_ops_stubbed() is False
        print("ok")
        """
    )
    assert out.strip() == "ok"
