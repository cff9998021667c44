"""Optuna TPE behind Ray Tune, told PRUNED for the trials ASHA stopped.

Why: stock Ray ``OptunaSearch`` tells Optuna that a trial ASHA stopped after 1/9 of its budget
COMPLETED with its low-fidelity value, so TPE (Bergstra et al. 2011) models it as a final result.
:class:`PrunedFeedbackOptunaSearch` reports every result as an intermediate value at
``step=samples_seen`` and tells Optuna PRUNED for trials the scheduler marked
(:mod:`study.search.asha`), COMPLETE with the last value otherwise (FAIL, which TPE ignores, when
that value is NaN or ±inf: an infinite accuracy would rank best); TPE ranks PRUNED trials below
every COMPLETE one by the furthest step reached. It also survives ``restart_errored`` (new trial
ids for old configurations). ``docs/design.md`` has the state mapping and the restore details.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import flatten_dict

__all__ = ["PrunedFeedbackOptunaSearch", "ForwardingConcurrencyLimiter", "make_searcher", "RAY_TRIAL_ID_ATTR", "MLFLOW_RUN_ID_ATTR"]

logger = logging.getLogger(__name__)

#: Optuna user attribute holding the Ray trial id (joins Optuna <-> Tune <-> MLflow).
RAY_TRIAL_ID_ATTR = "ray_trial_id"
#: Optuna user attribute holding the trial's MLflow run id (set by the study's MLflow tracker).
MLFLOW_RUN_ID_ATTR = "mlflow_run_id"


def _finite(value: Any) -> bool:
    """A metric value the sampler may learn from (NaN and ±inf are failed observations)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class PrunedFeedbackOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna PRUNED for trials the scheduler stopped.

    Intermediate values are reported with ``step=result[fidelity_attr]`` so
    Optuna (and TPE's pruned-trial ranking) sees the real fidelity.  See the
    module docstring for the state mapping and why it survives a restore.
    """

    def __init__(self, *args: Any, fidelity_attr: str = "samples_seen", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self._metric, list):
            raise ValueError("PrunedFeedbackOptunaSearch is single-objective (Optuna prunes only those)")
        self._fidelity_attr = fidelity_attr
        self._pruned_trial_ids: set[str] = set()
        self._last_step: dict[str, int] = {}

    def mark_pruned(self, trial_id: str) -> None:
        """Called by :class:`RecordingASHAScheduler` when it stops ``trial_id`` early."""
        self._pruned_trial_ids.add(trial_id)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        return config

    def _ot_trial_for(self, trial_id: str, result: dict | None) -> optuna.Trial | None:
        """Optuna trial of ``trial_id``; registers trials Tune re-created with a new id.

        ``restart_errored=True`` re-creates errored trials via ``Trial.reset()``
        (new trial id, same config).  We add them as new RUNNING Optuna trials
        with the parameters read back from the result's ``config/...`` keys.
        """
        if trial_id in self._ot_trials:
            return self._ot_trials[trial_id]
        if not result or callable(self._space):
            return None
        try:
            params = {k: result[f"config/{k}"] for k in self._space}
        except KeyError:
            return None
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=params,
            distributions=self._space,
            user_attrs={RAY_TRIAL_ID_ATTR: trial_id},
        )
        self._ot_study.add_trial(template)
        frozen = self._ot_study.get_trials(deepcopy=False)[-1]
        self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
        return self._ot_trials[trial_id]

    def _report(self, trial_id: str, ot_trial: optuna.Trial, result: dict) -> None:
        value = result.get(self.metric)
        step = result.get(self._fidelity_attr)
        # Steps only grow within a trial; a trial resumed from a checkpoint re-reports
        # steps Optuna already has (it would ignore them with a warning).
        if not _finite(value) or step is None or int(step) <= self._last_step.get(trial_id, -1):
            return
        ot_trial.report(value, step=int(step))
        self._last_step[trial_id] = int(step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return
        # A new result means the trial is (again) training: a mark from before a
        # crash/restore (possible if the trial was mid-save) must not stick.
        self._pruned_trial_ids.discard(trial_id)
        ot_trial = self._ot_trial_for(trial_id, result)
        if ot_trial is not None:
            self._report(trial_id, ot_trial, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trial_for(trial_id, result)
        if ot_trial is None:
            logger.warning("Trial %s unknown to Optuna; not recorded.", trial_id)
            return
        value = result.get(self.metric) if result else None
        if result:
            # The final result never reaches on_trial_result when it triggered a STOP.
            self._report(trial_id, ot_trial, result)
        try:
            if error:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif trial_id in self._pruned_trial_ids:
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            elif not _finite(value):
                # Stopped before reporting (e.g. removed while pending), or NaN/inf: not
                # evidence about the config (an inf accuracy would rank best), so FAIL
                # (ignored by TPE) rather than PRUNED or COMPLETE.
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:
                self._ot_study.tell(ot_trial, value)
        except Exception as exc:  # never take the study down over bookkeeping
            logger.warning("Could not tell Optuna about trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def add_evaluated_point(self, parameters: dict, value: float | None, error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        """Warm start with a trial evaluated elsewhere (Ray's API). ``parameters`` may hold every
        trial key (Ray's ``add_evaluated_trials`` passes ``trial.config``); Optuna takes the searched
        ones. A non-finite value is a FAIL, as :meth:`on_trial_complete` makes it; a pruned trial
        without intermediate values gets its value as one, which TPE ranks pruned trials by."""
        params = {k: parameters[k] for k in self._space}
        finite = _finite(value)
        if pruned and finite and not intermediate_values:
            intermediate_values = [value]
        super().add_evaluated_point(params, value if finite else None, error=error or not finite, pruned=pruned and finite,
                                    intermediate_values=intermediate_values)


class ForwardingConcurrencyLimiter(ConcurrencyLimiter):
    """``ConcurrencyLimiter`` that does not swallow completions of unknown trials.

    Stock ``ConcurrencyLimiter.on_trial_complete`` drops trials it did not
    suggest, e.g. trials re-created by ``restart_errored`` after a restore, so
    their Optuna trials would stay RUNNING forever.
    """

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.live_trials and not self.batch:
            return self.searcher.on_trial_complete(trial_id, result=result, error=error)
        return super().on_trial_complete(trial_id, result=result, error=error)


def make_searcher(
    space: dict,
    metric: str = "accuracy",
    mode: str = "max",
    *,
    seed: int,
    points_to_evaluate: list[dict] | None = None,
    max_concurrent: int | None = None,
    pruned_feedback: bool = True,
    fidelity_attr: str = "samples_seen",
    sampler: optuna.samplers.BaseSampler | None = None,
) -> Searcher:
    """TPE searcher (Bergstra et al. 2011) over ``space`` (Ray Tune distributions).

    Uses an explicit ``TPESampler(multivariate=True, constant_liar=True,
    seed=seed)``: multivariate TPE models the interactions between e.g. rank
    and learning rate, and the constant liar keeps concurrent suggestions from
    piling onto the same point while trials are still running.

    ``sampler`` replaces that TPE (the other searchers of the registry: GP, TPE with random
    proposals …), seeded by the caller; everything else stays as described here.

    ``pruned_feedback=False`` returns the stock ``OptunaSearch`` and
    ``ConcurrencyLimiter`` (pruned trials told COMPLETE with their low-fidelity
    value; no ``restart_errored`` support) for the benchmark comparison.

    Pass only *fixed* values as the Tuner's ``param_space`` (suggestions are
    merged into it): Ray raises if ``param_space`` still contains search
    distributions while the searcher has its own space.  If ``max_concurrent``
    is given, do not also set a different ``TuneConfig.max_concurrent_trials``.
    """
    sampler = sampler or optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
    kwargs = dict(
        space=OptunaSearch.convert_search_space(space),
        metric=metric,
        mode=mode,
        points_to_evaluate=[flatten_dict(p, "/") for p in points_to_evaluate or []] or None,
        sampler=sampler,
    )
    if pruned_feedback:
        searcher: Searcher = PrunedFeedbackOptunaSearch(fidelity_attr=fidelity_attr, **kwargs)
    else:
        searcher = OptunaSearch(**kwargs)
    if max_concurrent:
        limiter = ForwardingConcurrencyLimiter if pruned_feedback else ConcurrencyLimiter
        searcher = limiter(searcher, max_concurrent=max_concurrent)
    return searcher
