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

Trials that end below a rung. When the data size is searched, a 1,000-sample trial ends before
the rungs at 2,000 and more; if it never counted there, the model fitted on those rungs would never
see small sizes, and TPE's prior (uniform over the choices) would keep proposing the sizes it has
no evidence against. A trial that finished at its own end (``samples_seen == samples_total``) is
therefore observed at every higher rung with its final metric. That is its true value at those
budgets, not an estimate: it has nothing left to train, so more budget would not change it, and
the quantity the study ranks configurations by is exactly that final metric. (Comparing trials
only at rungs they can reach instead would fit the model on the lowest rung for good and lose the
high-fidelity comparisons BOHB is for.) A trial ASHA stopped early is not observed above where it
stopped. The model's rung is still chosen by the trials that trained up to it, so a few small
trials that finished early do not move the model onto a rung no larger trial has reached yet.

How, incrementally (the cost of a suggestion is TPE's own, not a rebuild): one in-memory Optuna
study per rung, each with its own ``TPESampler`` (multivariate, constant liar). A value at a rung
is told to that rung's study as it arrives. A suggestion asks the study of the highest rung with
``min_points`` observations after adding the trials still running there as RUNNING (TPE's
constant liar then keeps concurrent suggestions apart); such a stand-in becomes COMPLETE when its
value arrives or FAIL (ignored by TPE) when the trial ends without one. Until a rung qualifies,
the first rung's study is asked; its sampler draws at random until it holds ``min_points``
observations.
Non-finite metrics (NaN, inf) are failed observations: skipped, never told, never saved. The saved
state is the observations themselves; the studies are rebuilt from them after a restore.
``random_fraction`` > 0 draws that share of configurations at random, as BOHB does (1/3).
"""

from __future__ import annotations

import logging
import math
import pickle
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .samplers import RandomFractionSampler, derived_seed

__all__ = ["RungTPESearch"]

logger = logging.getLogger(__name__)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RungTPESearch(Searcher):
    """Ray Tune searcher: TPE fitted on the highest rung with at least ``min_points`` observations.

    Args:
        space: searched keys → Ray Tune distributions (``tune.choice``, ``tune.loguniform`` …).
        rungs: fidelity levels (samples seen) at which values are compared, ascending — ASHA's
            rungs; a trial's value at rung ``r`` is its metric at the first result with
            ``fidelity_attr >= r`` (or its final metric if it finished below ``r``).
        min_points: observations a rung needs before the model uses it (default: dimensions + 2).
        points_to_evaluate: configurations to try first (the seed recipes, prior draws).
        seed: seeds the samplers.
        random_fraction: share of configurations drawn at random (BOHB: 1/3).
    """

    def __init__(self, space: dict[str, Any], metric: str | None = None, mode: str | None = None, *, rungs: list[int],
                 seed: int = 0, min_points: int | None = None, points_to_evaluate: list[dict[str, Any]] | None = None,
                 fidelity_attr: str = "samples_seen", total_attr: str = "samples_total", n_ei_candidates: int = 24,
                 random_fraction: float = 0.0) -> None:
        super().__init__(metric=metric, mode=mode)
        self._dists = OptunaSearch.convert_search_space(space)
        self._rungs = sorted(set(rungs))
        self._min_points = min_points or len(self._dists) + 2
        self._queue = [dict(p) for p in points_to_evaluate or []]
        self._fidelity, self._total = fidelity_attr, total_attr
        self._seed, self._n_ei, self._random_fraction = seed, n_ei_candidates, random_fraction
        self._configs: dict[str, dict[str, Any]] = {}  # trial → params, in the studies' trial order
        self._values: dict[str, dict[int, float]] = {}  # trial → rung → metric at that rung (finite)
        self._running: set[str] = set()
        self._ends: dict[str, int] = {}  # trial that finished at its own end → samples seen there
        self._studies: dict[int, optuna.Study] | None = None  # rung → study; rebuilt from the above
        self._numbers: dict[int, dict[str, int]] = {}  # rung → trial → its number in that study

    # -- Searcher API ---------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self._configs:  # asked again (e.g. after a restore): same configuration
            return dict(self._configs[trial_id])
        if self._queue:
            config = self._queue.pop(0)
            self._register(trial_id, config)
        else:
            config = self._ask(trial_id)
        return dict(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._known_running(trial_id, result):
            self._observe(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self._known_running(trial_id, result):
            return
        if result and not error:
            self._observe(trial_id, result)
            if self._ended_at_own_end(result):
                self._observe_above(trial_id, result)
        self._finish(trial_id)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        """Warm start with a trial evaluated elsewhere (Ray's API; ``parameters`` may hold every
        trial key). Without its fidelities: a finished trial counts at every rung with ``value``
        (as a trial that ended at its own end does), a pruned one at the first rung only (ASHA
        stops no trial below it), an errored one or a non-finite value nowhere."""
        tid = f"evaluated-{len(self._configs)}"
        self._register(tid, {k: parameters[k] for k in self._dists})
        if not error and _finite(value):
            for r in self._rungs[:1] if pruned else self._rungs:
                self._record(tid, r, float(value))
        self._finish(tid)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_studies": None, "_numbers": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_ends": {}, "_total": "samples_total", "_random_fraction": 0.0, **state})
        self._values = {t: {r: v for r, v in vals.items() if _finite(v)} for t, vals in self._values.items()}
        self._studies, self._numbers = None, {}

    def model_rung(self) -> int | None:
        """The rung the model is fitted on: the highest that at least ``min_points`` trials trained
        up to (trials that ended below it count there too, but do not make it the model's rung)."""
        for r in reversed(self._rungs):
            if sum(r in v and self._ends.get(t, r) >= r for t, v in self._values.items()) >= self._min_points:
                return r
        return None

    # -- observations ---------------------------------------------------------------------------
    def _known_running(self, trial_id: str, result: dict | None) -> bool:
        """Whether ``trial_id`` is a running trial, registering one Tune re-created with a new id
        (``restart_errored``) from the ``config/<key>`` entries of its result."""
        if trial_id in self._running:
            return True
        if trial_id in self._configs or not result:
            return False
        try:
            config = {k: result[f"config/{k}"] for k in self._dists}
        except KeyError:
            return False
        self._register(trial_id, config)
        return True

    def _observe(self, trial_id: str, result: dict) -> None:
        value, step = result.get(self.metric), result.get(self._fidelity)
        if not _finite(value) or step is None:
            return
        for r in self._rungs:
            if step >= r:
                self._record(trial_id, r, float(value))

    def _ended_at_own_end(self, result: dict) -> bool:
        seen, total = result.get(self._fidelity), result.get(self._total)
        return seen is not None and total is not None and seen >= total

    def _observe_above(self, trial_id: str, result: dict) -> None:
        """A trial that finished at its own end counts at every higher rung with its final metric."""
        value = result.get(self.metric)
        if _finite(value):
            self._ends[trial_id] = result[self._fidelity]
            for r in self._rungs:
                self._record(trial_id, r, float(value))

    def _record(self, trial_id: str, rung: int, value: float) -> None:
        """``trial_id``'s value at ``rung``: its RUNNING stand-in there is told COMPLETE, or it is added."""
        if rung in self._values[trial_id]:
            return
        number = self._numbers_at(rung).get(trial_id)  # builds the studies before the state changes
        self._values[trial_id][rung] = value
        if number is None:
            self._add(rung, trial_id, TrialState.COMPLETE, value)
        else:
            self._studies[rung].tell(number, value)

    def _finish(self, trial_id: str) -> None:
        """The trial is over: its RUNNING stand-ins in rungs it has no value at become FAIL (ignored by TPE)."""
        self._running.discard(trial_id)
        for r in self._rungs:
            number = self._numbers_at(r).get(trial_id)
            if number is not None and r not in self._values[trial_id]:
                self._studies[r].tell(number, state=TrialState.FAIL)

    # -- the studies ----------------------------------------------------------------------------
    def _register(self, trial_id: str, config: dict[str, Any]) -> None:
        self._configs[trial_id] = config
        self._values[trial_id] = {}
        self._running.add(trial_id)

    def _ask(self, trial_id: str) -> dict[str, Any]:
        """TPE's proposal at the model rung, with every running trial there as RUNNING (the constant liar)."""
        rung = self.model_rung() or self._rungs[0]
        numbers = self._numbers_at(rung)
        for t in self._running:
            if t not in numbers and rung not in self._values[t]:
                self._add(rung, t, TrialState.RUNNING)
        trial = self._studies[rung].ask(self._dists)
        self._numbers[rung][trial_id] = trial.number
        self._register(trial_id, dict(trial.params))
        return dict(trial.params)

    def _add(self, rung: int, trial_id: str, state: TrialState, value: float | None = None) -> None:
        study = self._studies[rung]
        study.add_trial(optuna.trial.create_trial(params=self._configs[trial_id], distributions=self._dists, value=value, state=state))
        self._numbers[rung][trial_id] = len(self._numbers[rung])

    def _numbers_at(self, rung: int) -> dict[str, int]:
        """trial → its number in ``rung``'s study (the trials that study holds); builds the studies."""
        if self._studies is None:
            self._rebuild()
        return self._numbers[rung]

    def _rebuild(self) -> None:
        """The rung studies from the observations (first use, and after a restore); running trials
        join a study when it is next asked. Samplers are seeded with the number of trials so far,
        so a restored search does not replay its first random draws."""
        direction = "minimize" if self.mode == "min" else "maximize"
        self._studies = {r: optuna.create_study(direction=direction, sampler=self._sampler(i)) for i, r in enumerate(self._rungs)}
        self._numbers = {r: {} for r in self._rungs}
        for r in self._rungs:
            for t, values in self._values.items():
                if r in values:
                    self._add(r, t, TrialState.COMPLETE, values[r])

    def _sampler(self, rung_index: int) -> optuna.samplers.BaseSampler:
        seed = derived_seed(self._seed, rung_index, len(self._configs))
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=self._min_points,
                                         n_ei_candidates=self._n_ei)
        return RandomFractionSampler(tpe, self._random_fraction, seed) if self._random_fraction else tpe
