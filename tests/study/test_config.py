"""Study config validation: every shipped YAML loads (its seed points inside the space), a bad value
names its key in one line, ``--set`` reaches any key (no Ray)."""

from pathlib import Path

import pytest

from study.config import load_study_config
from study.search.space import in_space, seed_points
from trainables.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "study" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_study_config_loads(path):
    cfg = load_study_config(path)
    assert cfg.search, "a study searches something"
    for point in seed_points(cfg):  # complete points inside the space
        assert set(point) == set(cfg.search)
        assert all(in_space(cfg.search[k], v) for k, v in point.items())


def test_shipped_configs_cover_the_planned_studies():
    names = {p.name for p in CONFIGS}
    assert {"sst2.yaml", "sst2-quick.yaml", "sst2-datasize.yaml"} <= names
    full = load_study_config(ROOT / "study" / "configs" / "sst2.yaml")
    assert full.search["lora.r"].choice == [4, 8, 16, 32]
    assert set(full.search["lora.target_modules"].choice) == {"qv", "qkv", "attn", "all"}


BAD = [
    (["lora.r=0"], "lora.r"),
    (["search.lora.r.choice=[0,4]"], "search.lora.r: value 0"),
    (["search.lora.target_modules.choice=[qv,foo]"], "search.lora.target_modules"),
    (["search.train.lr.loguniform=[0,1]"], "loguniform needs low > 0"),
    (["search.train.weight_decay.uniform=[0.5,0.1]"], "low < high"),
    (["search.train.lr.uniform=[1e-4,1e-3]"], "give exactly one of"),
    (["search.lora.rank.choice=[4]"], "search.lora.rank: not a trial key"),
    (["study.num_samples=0"], "study.num_samples"),
    (["study.metric=loss"], "study.metric"),
    (["resources.gpus_per_trial=-1"], "resources.gpus_per_trial"),
    (["asha.reduction_factor=1"], "asha.reduction_factor"),
    (["bogus.key=1"], "bogus: unknown key"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_study_config_names_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_study_config(ROOT / "study" / "configs" / "sst2-quick.yaml", overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_set_reaches_any_key_and_search_overrides():
    cfg = load_study_config(ROOT / "study" / "configs" / "sst2-quick.yaml",
                            ["data.path=reviews.csv", "data.text_column=review", "search.lora.r.choice=[4,8]"])
    assert cfg.trial.data.text_column == "review"
    assert cfg.search["lora.r"].choice == [4, 8]
