"""Multi-fidelity TPE: the density model is fitted on one ASHA rung at a time (BOHB-style).

Why: TPE (Bergstra et al. 2011) splits the trials it knows into a "good" and a "bad" group and
proposes what is likely under the good one. Behind ASHA (Li et al. 2020) most trials stop early,
so what the model is fitted on decides what it learns:
* stock Ray ``OptunaSearch`` tells Optuna that a trial ASHA stopped after 500 samples COMPLETED with
  its accuracy at 500 samples, and compares it with trials that trained on 8,000;
* Optuna's PRUNED state (``study.search.tpe.PrunedFeedbackOptunaSearch``) ranks every pruned trial
  below every completed one — but with the data size searched, *completed* means "small": a
  1,000-sample trial completes at the first rungs while an 8,000-sample trial is still running, so
  small sizes look best exactly when the model matters most.
BOHB (Falkner et al. 2018, "BOHB: Robust and Efficient Hyperparameter Optimization at Scale")
instead fits the model on the observations *at one budget*: the largest rung with enough of them.
Every trial that reached that rung is compared at the same number of samples seen, early in a
study on the first rung (all trials), later on higher rungs (the promoted ones).

This searcher implements that with Optuna's own TPE over Optuna's public API: for each suggestion
it builds an in-memory Optuna study holding one COMPLETE trial per observation at the chosen rung
(value = the metric there) plus one RUNNING trial per configuration still being evaluated (TPE's
constant liar then keeps concurrent suggestions apart), and asks a ``TPESampler`` for the next
point. Until a rung has ``min_points`` observations, points come from ``startup`` (given points,
then the sampler's random draws).
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

__all__ = ["RungTPESearch"]

logger = logging.getLogger(__name__)


class RungTPESearch(Searcher):
    """Ray Tune searcher: TPE fitted on the highest rung with at least ``min_points`` observations.

    Args:
        space: searched keys → Ray Tune distributions (``tune.choice``, ``tune.loguniform`` …).
        rungs: fidelity levels (samples seen) at which values are compared, ascending — ASHA's
            rungs; a trial's value at rung ``r`` is its metric at the first result with
            ``fidelity_attr >= r``.
        min_points: observations a rung needs before the model uses it (default: dimensions + 2).
        points_to_evaluate: configurations to try first (the seed recipes, prior draws).
        seed: seeds the sampler.
    """

    def __init__(self, space: dict[str, Any], metric: str, mode: str, *, rungs: list[int], seed: int = 0,
                 min_points: int | None = None, points_to_evaluate: list[dict[str, Any]] | None = None,
                 fidelity_attr: str = "samples_seen", n_ei_candidates: int = 24) -> None:
        super().__init__(metric=metric, mode=mode)
        self._dists = OptunaSearch.convert_search_space(space)
        self._rungs = sorted(rungs)
        self._min_points = min_points or len(self._dists) + 2
        self._queue = [dict(p) for p in points_to_evaluate or []]
        self._fidelity = fidelity_attr
        self._seed = seed
        self._n_ei = n_ei_candidates
        self._configs: dict[str, dict[str, Any]] = {}
        self._values: dict[str, dict[int, float]] = {}  # trial → rung → metric at that rung
        self._running: set[str] = set()
        self._direction = "maximize" if mode == "max" else "minimize"
        self._count = 0

    # -- Searcher API ---------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._count += 1
        config = self._queue.pop(0) if self._queue else self._sample()
        self._configs[trial_id] = config
        self._values[trial_id] = {}
        self._running.add(trial_id)
        return dict(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._observe(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self._observe(trial_id, result)
        self._running.discard(trial_id)

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    # -- internals ------------------------------------------------------------------------------
    def _observe(self, trial_id: str, result: dict) -> None:
        value, step = result.get(self.metric), result.get(self._fidelity)
        if trial_id not in self._values or value is None or step is None:
            return
        for r in self._rungs:
            if step >= r and r not in self._values[trial_id]:
                self._values[trial_id][r] = float(value)

    def model_rung(self) -> int | None:
        """The rung the model is fitted on: the highest with at least ``min_points`` observations."""
        for r in reversed(self._rungs):
            if sum(r in v for v in self._values.values()) >= self._min_points:
                return r
        return None

    def _sample(self) -> dict[str, Any]:
        rung = self.model_rung()
        sampler = optuna.samplers.TPESampler(seed=self._seed * 100_003 + self._count, multivariate=True,
                                             constant_liar=True, n_startup_trials=0 if rung else 10**9,
                                             n_ei_candidates=self._n_ei)
        study = optuna.create_study(direction=self._direction, sampler=sampler)
        if rung is not None:
            trials = [optuna.trial.create_trial(params=self._configs[t], distributions=self._dists, value=v[rung])
                      for t, v in self._values.items() if rung in v]
            trials += [optuna.trial.create_trial(params=self._configs[t], distributions=self._dists, state=TrialState.RUNNING)
                       for t in self._running if rung not in self._values[t]]
            study.add_trials(trials)
        trial = study.ask(self._dists)
        return dict(trial.params)
