"""study.search.registry: every registered searcher builds through ``build_search`` and answers
``suggest``; an unknown ``study.searcher`` is a one-line config error; rung-tpe gets ASHA's rungs."""

import pytest

from study.config import StudyConfig, load_study_config
from study.search.registry import SEARCHERS, build_search
from study.search.rung_tpe import RungTPESearch
from trainables.config import ConfigError


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_registered_searcher_builds_and_suggests(name):
    cfg = StudyConfig.model_validate({
        "study": {"searcher": name, "seed_points": False},
        "search": {"train.lr": {"loguniform": [1e-5, 5e-3]}},
    })
    searcher = build_search(cfg, 1000).searcher
    config = searcher.suggest("t0")
    assert set(config) == {"train.lr"} and 1e-5 <= config["train.lr"] <= 5e-3, config


def test_unknown_searcher_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as e:
        load_study_config(None, ["study.searcher=nope"])
    message = str(e.value)
    assert "study.searcher" in message and "'nope'" in message and "\n" not in message, message
    assert all(name in message for name in SEARCHERS), message


def test_build_search_gives_rung_tpe_the_asha_rungs():
    """``study.searcher: rung-tpe`` builds the BOHB-style searcher over ASHA's rungs (grace 500,
    factor 2, max 8000 → 500 … 8000); the model uses the highest rung with d + 2 results."""
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
