"""``rung-tpe`` (study.search.rung_tpe): which observations each rung's model gets, and that a
non-finite metric or a restore changes nothing else. Pure Python, no Ray."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import numpy as np
import pytest
from ray import tune

from study.search.rung_tpe import RungTPESearch

RUNGS = [500, 1000, 2000, 4000, 8000]
SPACE = {"train.lr": tune.loguniform(1e-5, 5e-3), "data.size": tune.choice([1000, 8000])}


def searcher(**kwargs) -> RungTPESearch:
    return RungTPESearch(SPACE, "accuracy", "max", rungs=RUNGS, seed=0, **kwargs)


def res(seen: int, total: int, acc: float) -> dict:
    return {"accuracy": acc, "samples_seen": seen, "samples_total": total}


def test_a_trial_finished_below_a_rung_counts_there_with_its_final_metric():
    s = searcher()
    s.suggest("small")
    s.on_trial_result("small", res(500, 1000, 0.70))
    s.on_trial_complete("small", res(1000, 1000, 0.80))  # its own end, below 2,000
    s.suggest("stopped")
    s.on_trial_result("stopped", res(500, 8000, 0.60))
    s.on_trial_complete("stopped", res(1000, 8000, 0.65))  # ASHA stopped it: 1,000 of 8,000
    s.suggest("errored")
    s.on_trial_complete("errored", res(1000, 1000, 0.99), error=True)

    assert s._values["small"] == {500: 0.70, 1000: 0.80, 2000: 0.80, 4000: 0.80, 8000: 0.80}
    assert s._values["stopped"] == {500: 0.60, 1000: 0.65}
    assert s._values["errored"] == {}
    for rung, study in s._studies.items():  # the studies TPE asks hold exactly these values
        assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == \
            sorted(v[rung] for v in s._values.values() if rung in v)


def simulate(s: RungTPESearch, n: int, sizes: dict[int, float], rungs: list[int], workers: int = 4) -> list[dict]:
    """``n`` trials on a toy problem whose accuracy is ``sizes[data.size]`` minus a learning-rate
    penalty, evaluated at every rung and at the trial's own end; ASHA-like stops keep the better
    half at each rung. Returns the proposals in order."""
    rng = np.random.default_rng(0)
    seen_at: dict[int, list[float]] = {r: [] for r in rungs}
    running: dict[str, tuple[dict, list[int]]] = {}
    proposals: list[dict] = []
    while len(proposals) < n or running:
        while len(running) < workers and len(proposals) < n:
            tid = f"t{len(proposals)}"
            config = s.suggest(tid)
            proposals.append(config)
            total = config["data.size"]
            running[tid] = (config, [r for r in rungs if r < total] + [total])
        tid = next(iter(running))
        config, evals = running.pop(tid)
        seen, total = evals[0], config["data.size"]
        acc = sizes[total] - 0.02 * abs(math.log10(config["train.lr"]) + 3.3) + 0.003 * rng.standard_normal()
        stop = seen in seen_at and len(seen_at[seen]) > 3 and acc < np.median(seen_at[seen])
        seen_at.get(seen, []).append(acc)
        if seen >= total or stop:
            s.on_trial_complete(tid, res(seen, total, acc))
        else:
            s.on_trial_result(tid, res(seen, total, acc))
            running[tid] = (config, evals[1:])
    return proposals


def test_a_searched_data_size_does_not_starve_the_model():
    """Sizes below the first rungs (as sst2.yaml's 1,000 and 8,000 against rungs 4,000, 12,000,
    36,000): observed at their end on the higher rungs, the worst size is in the model fitted
    there and is hardly proposed any more. Not observed there, it would be what TPE's prior keeps
    proposing (a size it has no evidence against): about half the late proposals."""
    rungs = [4000, 12000, 36000]
    space = {"train.lr": tune.loguniform(1e-5, 5e-3), "data.size": tune.choice([1000, 8000, 56000])}
    s = RungTPESearch(space, "accuracy", "max", rungs=rungs, seed=0)
    proposals = simulate(s, 100, {1000: 0.80, 8000: 0.84, 56000: 0.88}, rungs)
    model = s._studies[s.model_rung()]
    assert {t.params["data.size"] for t in model.trials if t.state.name == "COMPLETE"} == {1000, 8000, 56000}
    late = Counter(p["data.size"] for p in proposals[-40:])
    assert late[1000] <= 5, late


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_are_never_observed_nor_saved(bad, tmp_path):
    s = searcher()
    for i in range(8):
        s.suggest(f"t{i}")
        acc = bad if i % 2 else 0.5 + i / 100
        s.on_trial_result(f"t{i}", res(500, 8000, acc))
        s.on_trial_complete(f"t{i}", res(1000, 8000, acc))
    assert all(math.isfinite(v) for vals in s._values.values() for v in vals.values())
    assert s.model_rung() == 1000 and set(s.suggest("next")) == set(SPACE)  # 4 finite trials: the model proposes
    path = tmp_path / "state.pkl"
    s.save(str(path))
    assert all(math.isfinite(v) for vals in pickle.loads(path.read_bytes())["_values"].values() for v in vals.values())


def test_a_saved_state_holding_nan_restores_and_suggests(tmp_path):
    """A state a study saved with a NaN observation in it, in the layout of the searcher that
    rebuilt its study per suggestion, restores without the NaN and proposes."""
    configs = {f"t{i}": {"train.lr": 10 ** -(3 + i / 4), "data.size": 8000} for i in range(5)}
    values = {t: {500: 0.5 + i / 10, 1000: 0.6 + i / 10} for i, t in enumerate(configs)}
    values["t0"][1000] = math.nan
    state = {"_metric": "accuracy", "_mode": "max", "_dists": searcher()._dists, "_rungs": RUNGS, "_min_points": 4,
             "_queue": [], "_fidelity": "samples_seen", "_seed": 0, "_n_ei": 24, "_configs": configs, "_values": values,
             "_running": {"t4"}, "_direction": "maximize", "_count": 5}
    (tmp_path / "state.pkl").write_bytes(pickle.dumps(state))
    restored = searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored._values["t0"] == {500: 0.5} and restored.model_rung() == 1000
    assert set(restored.suggest("t9")) == set(SPACE)
    restored.on_trial_complete("t4", res(2000, 8000, 0.9))
    assert restored._values["t4"][2000] == 0.9


def test_restore_rebuilds_the_same_observations_and_continues(tmp_path):
    s = searcher()
    simulate(s, 40, {1000: 0.80, 8000: 0.85}, RUNGS)
    path = tmp_path / "state.pkl"
    s.save(str(path))
    restored = searcher()
    restored.restore(str(path))
    assert restored._values == s._values and restored.model_rung() == s.model_rung()
    config = restored.suggest("new")
    assert set(config) == set(SPACE) and config not in list(s._configs.values())


def test_warm_start_points_count_where_their_fidelity_allows():
    s = searcher()
    point = {"train.lr": 3e-4, "data.size": 8000, "lora.r": 8}  # a whole trial config: extra keys ignored
    s.add_evaluated_point(point, 0.9)
    s.add_evaluated_point(point, 0.6, pruned=True)
    s.add_evaluated_point(point, 0.0, error=True)
    s.add_evaluated_point(point, math.nan)
    assert [v for v in s._values.values()] == [dict.fromkeys(RUNGS, 0.9), {500: 0.6}, {}, {}]
    assert not s._running


def test_random_fraction_draws_a_third_at_random():
    """bohb: one proposal in three ignores the model (Falkner et al. 2018)."""
    from study.search.samplers import RandomFractionSampler

    s = searcher(random_fraction=1 / 3)
    simulate(s, 60, {1000: 0.80, 8000: 0.85}, RUNGS)
    sampler = s._studies[s.model_rung()].sampler
    assert isinstance(sampler, RandomFractionSampler)
