"""study.search.space: the seed points, the flat param space, the largest trial budget and ASHA's rungs (no Ray run)."""

from study.config import StudyConfig, load_study_config
from study.search.space import SEED_RECIPES, asha_rungs, max_samples, param_space, seed_points
from tests.conftest import ROOT
from trainables.config import TrialConfig


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


def test_asha_rungs():
    assert asha_rungs(150, 2, 600) == [150, 300, 600]
    assert asha_rungs(100, 2, 600) == [100, 200, 400]
    assert asha_rungs(500, 3, 2000) == [500, 1500]
    assert asha_rungs(5000, 2, 1000) == [1000]  # the runner caps grace_period at max_t
