"""Geometry configs: defaults, range and cross-field errors naming the key, and that they feed
the geometry objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmask3d_ros.config.geometry import DepthCfg, SyncCfg, TfCfg, VisibilityCfg
from xmask3d_ros.config.schema import ConfigError, from_dict, load_config
from xmask3d_ros.geometry.camera import PinholeCamera, decode_depth
from xmask3d_ros.geometry.sync import TimeSynchronizer
from xmask3d_ros.geometry.tf_buffer import TfBuffer


def test_defaults() -> None:
    assert (DepthCfg().min_depth_m, DepthCfg().max_depth_m) == (0.1, 10.0)
    assert (VisibilityCfg().border_px, VisibilityCfg().depth_tolerance_rel) == (10, 0.25)
    assert TfCfg().cache_duration_s == 10.0 and TfCfg().lookup_tolerance_ns == 10_000_000
    assert (SyncCfg().queue_size, SyncCfg().slop_s, SyncCfg().mode) == (10, 0.05, "approximate")


@pytest.mark.parametrize(
    ("cls", "data", "match"),
    [
        (DepthCfg, {"min_depth_m": -0.1}, r"min_depth_m: -0\.1 is out of range, expected >= 0"),
        (DepthCfg, {"min_depth_m": 5.0, "max_depth_m": 2.0}, "must be smaller than max_depth_m"),
        (VisibilityCfg, {"border_px": -1}, "border_px"),
        (VisibilityCfg, {"depth_tolerance_rel": 0.0}, "depth_tolerance_rel"),
        (VisibilityCfg, {"border_px": 2.5}, "expected int"),
        (TfCfg, {"cache_duration_s": 0}, "cache_duration_s"),
        (TfCfg, {"cache_duration_s": 0.5, "lookup_tolerance_s": 0.5}, "smaller than cache_duration_s"),
        (SyncCfg, {"mode": "fuzzy"}, "'approximate', 'exact'"),
        (SyncCfg, {"slop_s": 0.0}, "slop_s must be > 0 in approximate mode"),
        (SyncCfg, {"queue_size": 0}, "queue_size"),
        (SyncCfg, {"slop": 0.1}, "did you mean 'slop_s'"),
    ],
)
def test_errors_name_the_key(cls: type, data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(cls, data)


def test_exact_mode_allows_zero_slop() -> None:
    assert from_dict(SyncCfg, {"mode": "exact", "slop_s": 0}).slop_s == 0.0


def test_yaml_configs_feed_geometry(tmp_path: Path) -> None:
    path = tmp_path / "geo.yaml"
    path.write_text(
        "depth: {min_depth_m: 0.5, max_depth_m: 3.0}\n"
        "sync: {queue_size: 4, slop_s: 0.02, mode: approximate}\n"
        "tf: {cache_duration_s: 2.0, lookup_tolerance_s: 0.0}\n",
        encoding="utf-8",
    )
    depth_cfg = load_config(DepthCfg, path, section_key="depth")
    sync_cfg = load_config(SyncCfg, path, section_key="sync")
    tf_cfg = load_config(TfCfg, path, section_key="tf", overrides=["lookup_tolerance_s=0.001"])
    raw = np.array([[400, 1000, 3500]], np.uint16)
    d = decode_depth(raw, "16UC1", min_depth_m=depth_cfg.min_depth_m, max_depth_m=depth_cfg.max_depth_m)
    np.testing.assert_allclose(d, [[0.0, 1.0, 0.0]])
    sync = TimeSynchronizer(2, sync_cfg.queue_size, sync_cfg.slop_s, sync_cfg.mode)
    assert sync.slop_ns == 20_000_000 and sync.queue_size == 4
    assert tf_cfg.lookup_tolerance_ns == 1_000_000
    TfBuffer(tf_cfg.cache_duration_s)
    vis = VisibilityCfg()
    cam = PinholeCamera(10.0, 10.0, 1.5, 1.5, 4, 4)
    cam.visible_mask(np.zeros((0, 3)), np.ones((4, 4), np.float32), vis.border_px, vis.depth_tolerance_rel)
