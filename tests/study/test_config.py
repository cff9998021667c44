"""Study config validation, the search space and the seed points (no Ray)."""

from pathlib import Path

import pytest

from study.config import StudyConfig, load_study_config
from study.search.space import SEED_RECIPES, in_space, max_samples, param_space, seed_points
from trainables.config import ConfigError, TrialConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "study" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_study_config_loads(path):
    cfg = load_study_config(path)
    assert cfg.search, "a study searches something"
    for point in seed_points(cfg):  # complete points inside the space
        assert set(point) == set(cfg.search)
        assert all(in_space(cfg.search[k], v) for k, v in point.items())


def test_shipped_configs_cover_the_issue():
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


def test_seed_points_translate_alpha_to_a_multiple():
    cfg = StudyConfig.model_validate({
        "search": {"lora.r": {"choice": [4, 8, 16]}, "lora.alpha_multiple": {"choice": [1, 2, 4]},
                   "train.lr": {"loguniform": [1e-5, 5e-3]}, "data.size": {"choice": [1000, "all"]}},
        "train": {"lr": 3e-4},
    })
    p000, p002 = seed_points(cfg)
    assert p000 == {"lora.r": 4, "lora.alpha_multiple": 4, "train.lr": 1e-4, "data.size": "all"}
    assert p002 == {"lora.r": 8, "lora.alpha_multiple": 2, "train.lr": 3e-4, "data.size": "all"}
    assert len(SEED_RECIPES) == 2


def test_param_space_is_flat_and_validates_as_a_trial():
    from ray.tune.search.sample import Domain

    cfg = load_study_config(ROOT / "study" / "configs" / "sst2-quick.yaml")
    space = param_space(cfg, {"train.threads": 1})
    assert isinstance(space["lora.r"], Domain) and space["train.threads"] == 1
    fixed = {k: v for k, v in space.items() if not isinstance(v, Domain)}
    TrialConfig.from_dict({**fixed, "lora.r": 4})


def test_max_samples_is_largest_size_times_epochs():
    cfg = StudyConfig.model_validate({"search": {"data.size": {"choice": [100, 0.5, "all"]}}, "train": {"epochs": 2}})
    assert max_samples(cfg, 1000) == 2000
    cfg = StudyConfig.model_validate({"search": {"data.size": {"choice": [100, 300]}}, "train": {"epochs": 1.5}})
    assert max_samples(cfg, 1000) == 450


def test_rung_tpe_strategy_compares_trials_at_asha_rungs():
    """``study.searcher: rung-tpe`` builds the BOHB-style searcher over ASHA's rungs (grace 500,
    factor 2, max 8000 → 500 … 8000); the model uses the highest rung with d + 2 results."""
    from study.config import StudyConfig
    from study.search.registry import build_search
    from study.search.rung_tpe import RungTPESearch

    cfg = StudyConfig.model_validate({
        "study": {"searcher": "rung-tpe", "seed_points": False, "max_concurrent": 2},
        "asha": {"grace_period": 500, "reduction_factor": 2, "max_t": 8000},
        "search": {"train.lr": {"loguniform": [1e-5, 5e-3]}, "lora.r": {"choice": [4, 8]}},
    })
    searcher = build_search(cfg, 60000).searcher.searcher
    assert isinstance(searcher, RungTPESearch) and searcher._rungs == [500, 1000, 2000, 4000, 8000]
    searcher.set_search_properties("accuracy", "max", {})
    for i in range(4):  # four trials reach rung 500, two of them rung 1000
        tid = f"t{i}"
        searcher.suggest(tid)
        searcher.on_trial_result(tid, {"accuracy": 0.5 + i / 10, "samples_seen": 512})
        if i < 2:
            searcher.on_trial_result(tid, {"accuracy": 0.8, "samples_seen": 1024})
        searcher.on_trial_complete(tid)
    assert searcher.model_rung() == 500  # 4 = d + 2 results at 500; only 2 at 1000
    assert set(searcher.suggest("t9")) == {"train.lr", "lora.r"}
