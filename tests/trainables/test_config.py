from pathlib import Path

import pytest

from trainables.config import (
    ConfigError,
    TrialConfig,
    apply_overrides,
    load_yaml,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    # (override, substring the one-line error must contain)
    ({"lora.r": 0}, "lora.r"),
    ({"lora.r": -4}, "lora.r"),
    ({"lora.dropout": 1.5}, "lora.dropout"),
    ({"lora.target_modules": "qvk"}, "unknown preset"),
    ({"lora.target_modules": []}, "lora.target_modules"),
    ({"lora.rank": 8}, "lora.rank: unknown key"),
    ({"train.lr": 0}, "train.lr"),
    ({"train.batch_size": 0}, "train.batch_size"),
    ({"train.device": "tpu"}, "train.device"),
    ({"data.size": 0}, "data.size"),
    ({"data.size": 1.5}, "data.size"),
    ({"data.size": True}, "data.size"),
    ({"data.max_length": 2}, "data.max_length"),
    ({"optimizer.lr": 1}, "optimizer: unknown key"),
]


@pytest.mark.parametrize("override,needle", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        TrialConfig.from_dict(override)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_overrides_parse_yaml_values_and_merge():
    o = parse_overrides(["lora.r=16", "lora.target_modules=[query, value]", "data.size=all", "train.lr=1e-3"])
    cfg = TrialConfig.from_dict(apply_overrides({"lora": {"r": 4, "alpha": 8}}, o))
    assert cfg.lora.r == 16 and cfg.lora.alpha == 8
    assert cfg.lora.module_list() == ["query", "value"]
    assert cfg.data.size is None
    assert cfg.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("item", ["lora.r", "=3"])
def test_malformed_set(item):
    with pytest.raises(ConfigError):
        parse_overrides([item])


def test_alpha_multiple_and_presets():
    cfg = TrialConfig.from_dict({"lora.r": 8, "lora.alpha_multiple": 2, "lora.target_modules": "all"})
    assert cfg.lora.effective_alpha() == 16
    assert "intermediate.dense" in cfg.lora.module_list()


def test_flat_roundtrip():
    cfg = TrialConfig.from_dict({"lora.r": 4})
    assert TrialConfig.from_dict(cfg.to_flat()) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "trainables" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_trial_configs_load(path):
    TrialConfig.from_dict(load_yaml(path))


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
