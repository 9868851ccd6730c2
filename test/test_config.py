"""Typed configuration: loading, overrides, and every validation error path."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from xmask3d_ros.config.paths import config_dir
from xmask3d_ros.config.perception import (
    NodeCfg,
    PerceptionConfig,
    load_perception_config,
    ros_parameters,
)
from xmask3d_ros.config.schema import (
    ConfigError,
    field_doc,
    from_dict,
    load_config,
    param,
    save_config,
    to_dict,
)


def _write(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _error(tmp_path: Path, data: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_perception_config(_write(tmp_path, data))
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_defaults_and_shipped_file_agree() -> None:
    """config/perception.yaml lists every parameter with its declared default: no drift."""
    shipped = config_dir() / "perception.yaml"
    cfg = load_perception_config(shipped)
    assert cfg == PerceptionConfig()
    raw = yaml.safe_load(shipped.read_text())["/**"]["ros__parameters"]
    flat_file = ros_parameters(from_dict(PerceptionConfig, raw))
    assert set(flat_file) == set(ros_parameters(PerceptionConfig()))
    assert set(raw) == {f.name for f in dataclasses.fields(PerceptionConfig)}
    for section_name, section in raw.items():
        cls = type(getattr(PerceptionConfig(), section_name))
        assert set(section) == {f.name for f in dataclasses.fields(cls)}, section_name


def test_plain_and_ros_parameter_forms(tmp_path: Path) -> None:
    plain = load_perception_config(_write(tmp_path, {"node": {"map_frame": "map"}}, "a.yaml"))
    wrapped = load_perception_config(
        _write(tmp_path, {"xmask3d": {"ros__parameters": {"node": {"map_frame": "map"}}}}, "b.yaml")
    )
    assert plain == wrapped
    assert plain.node.map_frame == "map"
    assert plain.node.publish_rate_hz == NodeCfg().publish_rate_hz


def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    cfg = load_perception_config(
        None, ["node.map_frame=map", "sync.slop_s=0.1", "visibility.border_px=4"]
    )
    assert (cfg.node.map_frame, cfg.sync.slop_s, cfg.visibility.border_px) == ("map", 0.1, 4)
    assert isinstance(cfg.sync.slop_s, float)
    with pytest.raises(ConfigError, match=r"^node\.publish_rate_hz: expected float, got str 'fast'"):
        load_perception_config(None, ["node.publish_rate_hz=fast"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_perception_config(None, ["node.map_frame"])


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    message = _error(tmp_path, {"node": {"map_fram": "odom"}})
    assert message.startswith("node.map_fram: unknown key in NodeCfg; did you mean 'map_frame'?")
    assert str(tmp_path / "cfg.yaml") in message
    assert _error(tmp_path, {"nodes": {}}).startswith("nodes: unknown key in PerceptionConfig")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"node": {"input_depth": "five"}}, "node.input_depth: expected int, got str 'five'"),
        ({"node": {"input_depth": True}}, "node.input_depth: expected int, got bool True"),
        ({"node": {"input_depth": 2.5}}, "node.input_depth: expected int, got float 2.5"),
        ({"node": {"map_frame": 3}}, "node.map_frame: expected str, got int 3"),
        ({"node": 3}, "node: expected a mapping (section NodeCfg), got int"),
        ({"sync": {"slop_s": None}}, "sync.slop_s: expected float, got NoneType None"),
    ],
)
def test_wrong_types(tmp_path: Path, data: dict, expected: str) -> None:
    assert _error(tmp_path, data).startswith(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"node": {"publish_rate_hz": 0}}, "node.publish_rate_hz: 0.0 is out of range, expected > 0"),
        ({"node": {"input_depth": 0}}, "node.input_depth: 0 is out of range, expected >= 1 and <= 1000"),
        ({"query": {"min_score": 1.5}}, "query.min_score: 1.5 is out of range, expected >= -1 and <= 1"),
        (
            {"node": {"input_reliability": "sometimes"}},
            "node.input_reliability: 'sometimes' is out of range, expected one of 'best_effort', "
            "'reliable'",
        ),
    ],
)
def test_out_of_range(tmp_path: Path, data: dict, expected: str) -> None:
    assert _error(tmp_path, data).startswith(expected)


def test_cross_field_check_names_the_section(tmp_path: Path) -> None:
    message = _error(tmp_path, {"depth": {"min_depth_m": 20.0}})
    assert message.startswith("depth: min_depth_m (20.0) must be smaller than max_depth_m")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_perception_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_perception_config(_write(tmp_path, "node: {map_frame: [", "bad.yaml"))
    with pytest.raises(ConfigError, match="expected a mapping at the top"):
        load_perception_config(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match="unexpected top-level key beside ros__parameters"):
        load_perception_config(
            _write(tmp_path, {"a": {"ros__parameters": {}}, "node": {}}, "mixed.yaml")
        )
    assert load_perception_config(_write(tmp_path, "", "empty.yaml")) == PerceptionConfig()


@dataclasses.dataclass(frozen=True)
class _Shapes:
    size: tuple[int, int] = param((240, 320), "two positive ints", gt=0)
    names: tuple[str, ...] = param(("a",), "any number of strings")
    kind: typing.Literal["x", "y"] = param("x", "a literal")
    maybe: float | None = param(None, "optional float", ge=0)


def test_tuples_literals_and_optionals() -> None:
    cfg = from_dict(_Shapes, {"size": [480, 640], "names": ["x", "y"], "maybe": 2})
    assert cfg == _Shapes(size=(480, 640), names=("x", "y"), maybe=2.0)
    for data, expected in [
        ({"size": [240]}, "size: expected 2 items"),
        ({"size": [240, 0]}, "size: (240, 0) is out of range, expected > 0"),
        ({"size": "240x320"}, "size: expected tuple[int, int], got str"),
        ({"names": ["ok", 3]}, "names[1]: expected str, got int 3"),
        ({"kind": "z"}, "kind: 'z' is not allowed, expected one of 'x', 'y'"),
        ({"maybe": -1}, "maybe: -1.0 is out of range, expected >= 0"),
        ({"maybe": "no"}, "maybe: expected float | None, got 'no'"),
    ]:
        with pytest.raises(ConfigError) as info:
            from_dict(_Shapes, data)
        assert str(info.value).startswith(expected), (data, str(info.value))


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_perception_config(None, ["node.map_frame=map", "sync.mode=exact", "sync.slop_s=0.0"])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    assert load_config(PerceptionConfig, path) == cfg
    assert to_dict(cfg)["sync"] == {"queue_size": 10, "slop_s": 0.0, "mode": "exact"}


def _assert_documented(cls: type) -> None:
    """Every field of ``cls`` and of its nested sections carries a doc string."""
    for f in dataclasses.fields(cls):
        assert field_doc(cls, f.name).strip(), f"{cls.__name__}.{f.name} has no doc"
        sub = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(sub):
            _assert_documented(sub)


def test_every_field_is_documented() -> None:
    _assert_documented(PerceptionConfig)


def test_param_refuses_mutable_defaults() -> None:
    with pytest.raises(TypeError, match="tuple"):
        param([1, 2], "a list default would be shared between instances")


# --- model configs -------------------------------------------------------------------------

from xmask3d_ros.config.model import ModelConfig  # noqa: E402
from xmask3d_ros.config.paths import resolve_model_config  # noqa: E402


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_shipped_model_configs_load(name: str) -> None:
    cfg = load_config(ModelConfig, resolve_model_config(name))
    assert cfg.name == name
    assert cfg.captioner.cross_attention_dim == cfg.clip.embed_dim


def test_paper_config_is_the_reference() -> None:
    cfg = load_config(ModelConfig, resolve_model_config("paper"))
    assert cfg.backbone3d.layers == (2, 3, 4, 6, 2, 2, 2, 2)
    assert cfg.backbone3d.planes == (32, 64, 128, 256, 256, 128, 96, 96)
    assert cfg.binary3d.planes == (32, 64, 128, 256, 128, 128, 96, 96)
    assert (cfg.backbone3d.voxel_size_m, cfg.clip.embed_dim) == (0.02, 768)
    assert (cfg.mask_generator.num_queries, cfg.mask_generator.dec_layers) == (50, 9)
    assert cfg.mask_generator.mask_shape == (240, 320)
    assert not cfg.allow_random_init


def test_model_config_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, {"clip": {"embed_dim": 512}, "allow_random_init": True})
    with pytest.raises(ConfigError, match=r"captioner.cross_attention_dim: 768 must equal clip.embed_dim=512"):
        load_config(ModelConfig, path)
    with pytest.raises(ConfigError, match=r"^clip.weights_path: empty, but allow_random_init is false"):
        load_config(ModelConfig, _write(tmp_path, {"name": "x"}, "noweights.yaml"))
    with pytest.raises(ConfigError, match=r"planes: .* differs from MinkUNet34C's"):
        load_config(
            ModelConfig,
            _write(tmp_path, {"allow_random_init": True, "backbone3d": {"planes": [8] * 8}}, "p.yaml"),
        )
    with pytest.raises(ConfigError, match="unknown model config"):
        resolve_model_config("huge")


def test_every_model_field_is_documented() -> None:
    _assert_documented(ModelConfig)


def test_readme_parameter_table_is_generated_from_the_config(repo_root: Path) -> None:
    from xmask3d_ros.config.perception import parameter_table_markdown

    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- parameters:begin -->\n", 1)[1].split("<!-- parameters:end -->", 1)[0]
    assert block == parameter_table_markdown(), "run: python scripts/readme_parameters.py"
    assert "| `node.publish_rate_hz` | `1.0` | > 0 and <= 100 | yes |" in block


def test_jetson_orin_profile_loads_and_fits_its_memory_budget() -> None:
    from xmask3d_ros.config.schema import load_config as load

    cfg = load_perception_config(config_dir() / "jetson_orin.yaml")
    model = load(ModelConfig, resolve_model_config(cfg.node.model_config))
    assert model.runtime.head_runtime == "tensorrt" and model.runtime.dtype == "float16"
    assert model.backbone3d.planes == load(ModelConfig, resolve_model_config("paper")).backbone3d.planes
    # map features: max_voxels x (73 + 4 D) bytes (LocalVoxelMap.bytes_per_voxel) stay < 256 MiB
    from xmask3d_ros.mapping.voxel_map import LocalVoxelMap

    per_voxel = LocalVoxelMap.bytes_per_voxel(model.clip.embed_dim)
    assert cfg.mapping.max_voxels * per_voxel < 256 * 2**20


def test_override_words_off_on_stay_words_for_strings() -> None:
    """``binary.gating=off`` on a command line is the choice 'off', not YAML's False; a bool
    field still takes on/off, and a bare off in a YAML file gets an explanation."""
    from xmask3d_ros.config.model import ModelConfig
    from xmask3d_ros.config.paths import resolve_model_config
    from xmask3d_ros.config.schema import ConfigError, from_dict, load_config, parse_override

    assert parse_override("binary.gating=off") == (["binary", "gating"], "off")
    assert parse_override("binary.enabled=false") == (["binary", "enabled"], False)
    cfg = load_config(ModelConfig, resolve_model_config("tiny"),
                      ["binary.gating=off", "ensemble.enabled=off"])
    assert cfg.binary.gating == "off" and cfg.ensemble.enabled is False
    import pytest

    with pytest.raises(ConfigError, match="quote it"):
        from_dict(ModelConfig, {"binary": {"gating": False}})
