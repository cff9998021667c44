"""The candidate searchers' own pieces: the random share (study.search.samplers), the LoRA
learning-rate prior (study.search.lora_prior), and what the registry builds from them."""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import optuna
import pytest

from study.config import StudyConfig
from study.search.asha import unwrap_searcher
from study.search.lora_prior import lora_lr_center, lr_prior_draws, model_width
from study.search.registry import SEARCHERS, build_search
from study.search.samplers import RandomFractionSampler

SPACE_8K = {"lora.r": {"choice": [4, 8, 16, 32]}, "train.lr": {"loguniform": [1e-5, 5e-3]},
            "lora.dropout": {"uniform": [0.0, 0.3]}, "data.size": {"choice": [1000, 2000, 4000, 8000]}}


def cfg(searcher: str, seed: int = 3, **study) -> StudyConfig:
    return StudyConfig.model_validate({"search": SPACE_8K, "study": {"searcher": searcher, "seed": seed, **study},
                                       "asha": {"grace_period": 500, "reduction_factor": 2}})


def test_every_candidate_names_its_paper():
    for name, entry in SEARCHERS.items():
        if name not in ("optuna",):  # the stock baseline is what a bare script does, not a method
            assert re.search(r"\b(19|20)\d\d\b", entry.summary), f"{name}: cite the paper in the summary"


def test_random_fraction_is_a_third_stateless_and_its_own_stream():
    sampler = RandomFractionSampler(optuna.samplers.TPESampler(seed=0), seed=0)
    trials = [SimpleNamespace(number=n) for n in range(600)]  # the choice reads the trial number only
    chosen = [sampler.is_random(t) for t in trials]
    assert abs(sum(chosen) / len(chosen) - 1 / 3) < 0.05
    assert chosen == [RandomFractionSampler(optuna.samplers.TPESampler(seed=0), seed=0).is_random(t) for t in trials]

    study = optuna.create_study(sampler=RandomFractionSampler(optuna.samplers.TPESampler(seed=0), fraction=1.0, seed=0))
    startup = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    x = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params["x"]
    assert x != startup.ask({"x": optuna.distributions.FloatDistribution(0, 1)}).params["x"]


def test_lora_prior_rule():
    """10x full fine-tuning's rate, which is BERT-base's 3e-5 scaled by 768 / width."""
    assert model_width("embedded-minilm") == 384
    assert lora_lr_center(384) == pytest.approx(6e-4) and lora_lr_center(768) == pytest.approx(3e-4)
    draws = lr_prior_draws(6e-4, 1e-5, 5e-3, n=10, seed=1)
    assert draws == lr_prior_draws(6e-4, 1e-5, 5e-3, n=10, seed=1) and len(set(draws)) == 10
    assert all(1e-5 <= d <= 5e-3 for d in draws)
    logs = sorted(math.log(d / 6e-4) for d in draws)
    assert logs[0] < 0 < logs[-1] and abs(logs[4] + logs[5]) < 2 * math.log(3)  # straddles the centre


def test_lora_prior_width_of_an_unknown_model_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="study.search.lora_prior"):
        assert model_width("/nonexistent/model") == 768
    assert "assuming BERT-base" in caplog.text


def test_tpe_lora_prior_draws_its_start_up_learning_rates_from_the_prior():
    """The seed recipes first, then ten trials whose learning rate is the prior's."""
    c = cfg("tpe-lora-prior", max_concurrent=20)
    searcher = build_search(c, 8000).searcher
    expected = lr_prior_draws(lora_lr_center(384), 1e-5, 5e-3, n=10, seed=3)
    got = [searcher.suggest(f"t{i}") for i in range(12)]
    assert [p["train.lr"] for p in got[:2]] == [1e-4, 2e-4]  # the seed recipes' rates
    assert [p["train.lr"] for p in got[2:]] == pytest.approx(expected)
    assert len({p["lora.r"] for p in got[2:]}) > 1  # the other keys are drawn as usual


def test_samplers_the_registry_builds():
    def sampler(name: str):
        return unwrap_searcher(build_search(cfg(name), 8000).searcher)._ot_study.sampler

    assert isinstance(sampler("tpe-random"), RandomFractionSampler)
    assert sampler("tpe-group")._group and sampler("tpe-group")._multivariate
    assert isinstance(sampler("gp"), optuna.samplers.GPSampler)
    assert isinstance(sampler("random"), optuna.samplers.RandomSampler)
    rung = unwrap_searcher(build_search(cfg("bohb"), 8000).searcher)
    assert rung._random_fraction == pytest.approx(1 / 3) and rung._rungs == [500, 1000, 2000, 4000, 8000]


def test_no_sampler_warnings_from_our_builders(caplog):
    """Ray's OptunaSearch warns when it gets a seeded sampler and a seed; Optuna warns that
    ``group`` is experimental. Neither says anything a user can act on, so our builders do not
    cause them; the same warning from elsewhere still shows."""
    ray_logger = logging.getLogger("ray.tune.search.optuna.optuna_search")
    ray_logger.addHandler(caplog.handler)
    try:
        with pytest.warns(Warning) as record:
            for name in SEARCHERS:
                build_search(cfg(name, seed=7), 8000)
            optuna.samplers.TPESampler(group=True, multivariate=True)  # outside our builders it still warns
    finally:
        ray_logger.removeHandler(caplog.handler)
    assert "initialized sampler" not in caplog.text
    assert sum("group" in str(w.message) for w in record) == 1
