"""``xmask3d-export``: writes the graphs and the manifest; bad arguments exit with status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmask3d_ros.cli.export import main
from xmask3d_ros.export.manifest import Manifest


def test_export_command_writes_graphs_and_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "engines"
    rc = main(["tiny", "--out", str(out), "--graphs", "fusion,classifier,binary_head",
               "--dim", "num_points=1:1000:100000", "--set", "runtime.dtype=float32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "exported fusion: torchscript, opset 17" in text and "parity classifier random" in text
    manifest = Manifest.load(out)
    assert list(manifest.graphs) == ["fusion", "classifier", "binary_head"]
    assert manifest.dims["num_points"] == [1, 1000, 100000]
    for name, entry in manifest.graphs.items():
        assert (out / entry.file).is_file() and all(p["ok"] for p in entry.parity), name
    if "TensorRT engines skipped" in text:
        assert all(not g.engines for g in manifest.graphs.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny", "--graphs", "fusion,lidar"], "unknown ['lidar']"),
        (["tiny", "--dim", "num_points=5:1:9"], "min <= opt <= max"),
        (["tiny", "--dim", "voxels=1:2:3"], "unknown dimension 'voxels'"),
        (["tiny", "--precision", "int8"], "--precision"),
        (["tiny", "--set", "mask_generator.num_queries=-1"], "mask_generator.num_queries"),
        (["nosuchconfig"], "unknown model config"),
        (["tiny", str(Path("/no/such/ckpt.safetensors"))], "/no/such/ckpt.safetensors"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
