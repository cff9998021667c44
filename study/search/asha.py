"""ASHA on the ``samples_seen`` fidelity, remembering which trials it pruned.

Why a subclass of Ray's ``AsyncHyperBandScheduler`` (ASHA: Li et al. 2020, "A System for Massively
Parallel Hyperparameter Tuning"): the searcher must learn that a trial was *pruned* (stopped below
a rung cutoff), not *completed* at low fidelity, and Ray 2.60 never checkpoints a scheduler, so a
restored ASHA would start with empty rungs. :class:`RecordingASHAScheduler` records its stops and
tells the searcher at once; :class:`SchedulerStateCallback` keeps its rungs across
``Tuner.restore``. ``docs/design.md`` walks through the Ray call order this relies on.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

__all__ = ["RecordingASHAScheduler", "SchedulerStateCallback", "make_scheduler", "unwrap_searcher"]


def unwrap_searcher(search_alg: Any) -> Any:
    """Follow ``SearchGenerator``/``ConcurrencyLimiter`` ``.searcher`` links to the base searcher."""
    while hasattr(search_alg, "searcher"):
        search_alg = search_alg.searcher
    return search_alg


class RecordingASHAScheduler(AsyncHyperBandScheduler):
    """ASHA (Li et al. 2020) that remembers which trials it pruned.

    A trial counts as *pruned* when ASHA returns STOP for a result below
    ``max_t``.  A STOP at ``time_attr >= max_t`` (``stop_last_trials``) means
    the trial used its whole budget and is reported as completed.  Comparing
    ``samples_seen`` with ``max_t`` after the fact would be wrong: a trial can
    also finish naturally below ``max_t`` (e.g. a smaller training set).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pruned_trial_ids: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision != TrialScheduler.STOP:
            # Trains on: a mark from before a restore (STOP decided, then the driver
            # stopped before executing it) is void.  The searcher does the same.
            self.pruned_trial_ids.discard(trial.trial_id)
        elif self._time_attr in result:
            budget_done = self._stop_last_trials and result[self._time_attr] >= self._max_t
            if not budget_done:
                self.pruned_trial_ids.add(trial.trial_id)
                searcher = unwrap_searcher(getattr(tune_controller, "search_alg", None))
                if hasattr(searcher, "mark_pruned"):
                    searcher.mark_pruned(trial.trial_id)
        return decision

    def was_pruned(self, trial_id: str) -> bool:
        """True if this scheduler stopped ``trial_id`` below ``max_t`` (the tracker's signal)."""
        return trial_id in self.pruned_trial_ids

    # -- state for SchedulerStateCallback -------------------------------------------
    def get_state(self) -> dict:
        return {
            "rungs": [[dict(rec) for _, rec in b._rungs] for b in self._brackets],
            "pruned_trial_ids": set(self.pruned_trial_ids),
            "num_stopped": self._num_stopped,
        }

    def set_state(self, state: dict) -> None:
        for bracket, recorded in zip(self._brackets, state["rungs"]):
            for (_, rec), saved in zip(bracket._rungs, recorded):
                rec.clear()
                rec.update(saved)
        self.pruned_trial_ids = set(state["pruned_trial_ids"])
        self._num_stopped = state["num_stopped"]


class SchedulerStateCallback(Callback):
    """Checkpoints a :class:`RecordingASHAScheduler` with the experiment state.

    Ray 2.60 saves searcher and callback state in ``TuneController.save_to_dir``
    but never the scheduler's, so after ``Tuner.restore`` ASHA's rungs would be
    empty and the first trials to reach each rung after a crash could not be
    pruned.  Callback state *is* saved (``callback-states-*.pkl``) and restored
    before restored trials are re-added; the callback and the scheduler are
    pickled together in ``tuner.pkl``, so after a restore this callback still
    points at the scheduler the Tuner uses.
    """

    def __init__(self, scheduler: RecordingASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict | None:
        return {"asha": self.scheduler.get_state()}

    def set_state(self, state: dict) -> None:
        self.scheduler.set_state(state["asha"])


def make_scheduler(
    time_attr: str = "samples_seen",
    metric: str = "accuracy",
    mode: str = "max",
    *,
    grace_period: int,
    reduction_factor: float = 3,
    max_t: int,
) -> RecordingASHAScheduler:
    """ASHA (Li et al. 2020) on the ``samples_seen`` fidelity.

    Asynchronous successive halving promotes/stops trials at rungs
    ``grace_period * reduction_factor**k`` without waiting for a full rung,
    which keeps every worker busy -- the reason to prefer it over synchronous
    Hyperband for a handful of concurrent LoRA trials.  The fidelity is
    samples seen rather than epochs/iterations so trials with different batch
    sizes or eval intervals are compared at equal training cost.

    The scheduler carries metric/mode itself, so do not also pass them to
    ``TuneConfig`` (Ray raises).  Add ``SchedulerStateCallback(scheduler)`` to
    ``RunConfig.callbacks`` to keep the rung records across ``Tuner.restore``.
    """
    return RecordingASHAScheduler(
        time_attr=time_attr,
        metric=metric,
        mode=mode,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        max_t=max_t,
    )
