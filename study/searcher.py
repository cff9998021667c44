"""Optuna TPE + ASHA for Ray Tune, with honest feedback for pruned trials.

Why this module exists
----------------------
The study pairs TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
Optimization", NeurIPS) for *which* configurations to try with ASHA (Li et al.
2020, "A System for Massively Parallel Hyperparameter Tuning", MLSys) for *how
long* to train each of them.  Stock Ray glues them together badly: when ASHA
stops a trial, ``TuneController.stop_trial`` calls
``OptunaSearch.on_trial_complete(trial_id, result=last_result)`` -- the same
call a naturally finished trial gets -- and ``OptunaSearch`` tells Optuna the
trial is COMPLETE with its *low-fidelity* accuracy.  TPE then models a
config stopped after 1/9 of the budget as if that accuracy were its final
result.

The fix is two small subclasses:

* :class:`RecordingASHAScheduler` -- ASHA that records which trials it
  stopped *below a rung cutoff* (a STOP because ``time_attr >= max_t`` is a
  finished budget, not a prune) and tells the searcher immediately.  The
  scheduler gets the (wrapped) ``TuneController`` in ``on_trial_result``,
  whose whitelisted ``search_alg`` attribute leads, through
  ``SearchGenerator.searcher`` / ``ConcurrencyLimiter.searcher``, to our
  searcher.  In ``TuneController._process_trial_result`` the scheduler's
  STOP is processed before ``stop_trial`` calls
  ``search_alg.on_trial_complete`` for the same trial, so the mark is always
  there in time.  (Marking the result dict does not work: the scheduler gets
  a ``flatten_dict`` *copy* of the result.)
* :class:`PrunedFeedbackOptunaSearch` -- ``OptunaSearch`` that reports every
  result as an Optuna intermediate value at ``step=samples_seen`` (the ASHA
  fidelity; stock Ray uses ``training_iteration``) and tells Optuna
  ``PRUNED`` for marked trials, ``COMPLETE`` with the *last* value for trials
  that finished (naturally or at ``max_t``), ``FAIL`` for errors.  TPE ranks
  PRUNED trials below every COMPLETE one, ordered by the furthest step reached
  and then by the value there (``optuna.samplers._tpe.sampler._split_pruned_trials``),
  which is exactly the information ASHA produced.

Why the *last* value and not the best: ASHA itself ranks trials by the value at
the current fidelity, the checkpoint a finished trial ends with is its last
one, and the max over many noisy dev evaluations is biased upward and favours
trials that were evaluated more often.

Restore (``Tuner.restore(path, trainable, resume_unfinished=True,
restart_errored=True)``): the searcher -- Optuna study, trial-id map, pruned
marks -- is pickled into ``searcher-state-*.pkl`` by the same
``TuneController.save_to_dir`` call that writes the trial table, so the two
stay consistent.  The scheduler-to-searcher link itself is not pickled: it is
looked up through the controller on every STOP, so it works in the restored
driver as well.  One edge case is handled explicitly: a trial that reports a
checkpoint is "saving" and Tune defers executing a STOP until the save
resolves; if the driver stops in between, the trial is checkpointed as
RUNNING (with the mark) and is resumed.  Any new result for a trial therefore
clears its mark, in the scheduler and in the searcher alike.

What Ray 2.60 does *not* do, and this module adds:

* checkpoint the scheduler -- it is only pickled once, in its initial state,
  in ``tuner.pkl``, so a restored ASHA has empty rungs.  Add
  :class:`SchedulerStateCallback` to ``RunConfig.callbacks`` to keep them.
* cope with ``restart_errored``: it re-creates errored trials with a *new*
  trial id, which stock ``OptunaSearch.on_trial_result`` meets with a
  KeyError and stock ``ConcurrencyLimiter.on_trial_complete`` silently drops.
  The searcher registers such trials as new Optuna trials with the same
  parameters, and ``make_searcher`` uses a limiter that forwards them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.util import flatten_dict

__all__ = [
    "PrunedFeedbackOptunaSearch",
    "RecordingASHAScheduler",
    "SchedulerStateCallback",
    "RepairCheckpointRecords",
    "OptunaJournalCallback",
    "make_searcher",
    "make_scheduler",
    "get_optuna_study",
    "load_optuna_study",
    "read_optuna_journal",
    "save_optuna_study",
]

logger = logging.getLogger(__name__)

#: Optuna user attribute holding the Ray trial id (joins Optuna <-> Tune <-> MLflow).
RAY_TRIAL_ID_ATTR = "ray_trial_id"


def _unwrap(search_alg: Any) -> Any:
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
                searcher = _unwrap(getattr(tune_controller, "search_alg", None))
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


class RepairCheckpointRecords(Callback):
    """Make every trial resume from a checkpoint that exists, that can be read, and that its
    stored history reaches, so that no result goes missing and no trial fails on a bad checkpoint.

    Three ways Ray 2.60 can be left holding a latest checkpoint that cannot be resumed as is:

    * *gone*: with ``CheckpointConfig(num_to_keep, checkpoint_score_attribute)`` Ray deletes a
      trial's previous checkpoint as soon as a newer one registers unless it is among the best
      ``num_to_keep``, but persists the experiment snapshot only every ``num_to_keep`` trial
      checkpoints (or 10 s).  A driver killed in between leaves a latest checkpoint that no
      longer exists: the restore fails ``max_failures + 1`` times, the trial ends ERROR and the
      next ``--resume`` (``restart_errored``) re-creates it from scratch under a new trial id,
      orphaning its history, trial dir and MLflow run.
    * *ahead*: a snapshot copies the driver's staging dir to storage file by file, in parallel,
      ``experiment_state-*.json`` (which names each trial's latest checkpoint) among them.  A
      driver killed during that copy can leave the new state beside a trial's *previous*
      ``result.json``; the trial would resume after evaluations its history never got.
    * *torn*: a checkpoint whose files cannot be read (truncated by a crash outside our atomic
      writes, a disk error, a hand edit).  Ray would hand it to the trainable on every restart
      and the trial would FAIL with an error naming a temp dir.

    The trial's history is its ``result.json`` *on storage* (``trial.path`` on the storage
    filesystem): after a driver crash the staging copy under ``trial.local_path`` belonged to the
    crashed run's Ray session and is gone, which made every unfinished trial restart from
    scratch.  Checked once per driver at the first step, before any restored trial is scheduled
    (all three), and whenever Ray is about to restart a failed trial (``on_trial_recover``: gone
    and torn).  The newest checkpoint that passes becomes the latest; a torn one is renamed to a
    hidden ``.torn-…`` dir so nothing picks it as a "best" checkpoint later; none left: the trial
    restarts from scratch under its own id.  One log line per repaired trial says which and why.
    The trainable resumes exactly, so evaluations it reports again repeat the same values.
    """

    def __init__(self, progress_attr: str = "samples_seen", verify: Any = None) -> None:
        self._checked = False
        self._attr = progress_attr
        self._verify = verify

    @staticmethod
    def _history(trial: Any) -> list[dict]:
        """The trial's result rows on storage (``[]``: no result.json yet; torn lines skipped)."""
        try:
            with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/result.json") as f:
                lines = f.readall().decode("utf-8", "replace").splitlines()
        except Exception:  # a trial that never reported
            return []
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:  # a torn last line
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def _recorded(self, rows: list[dict]) -> float:
        """How far the stored history goes (``-1``: nothing recorded)."""
        seen = [v for v in (r.get(self._attr) for r in rows) if isinstance(v, (int, float))]
        return float(max(seen, default=-1.0))

    def _unreadable(self, result: Any) -> str | None:
        """Why a checkpoint cannot be resumed from (``None``: it loads)."""
        verify = getattr(self, "_verify", None)
        if verify is None:
            from trainables.lora import load_checkpoint as verify
        where = None
        try:
            with result.checkpoint.as_directory() as where:
                verify(where)
        except Exception as e:
            msg = (str(e).splitlines() or [type(e).__name__])[0]
            if where:  # name the checkpoint, not the temp copy it was read from
                msg = msg.replace(f"checkpoint {where}: ", "").replace(str(where), result.checkpoint.path)
            if msg.startswith("unreadable (") and msg.endswith(")"):  # load_checkpoint's wording
                msg = msg[len("unreadable ("):-1]
            return msg[:200]
        return None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                self._repair(trial, "driver crash")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._repair(trial, "trial restart")

    def _repair(self, trial: Any, when: str) -> None:
        """After a driver crash a checkpoint must not be ahead of the stored history; a trial
        Ray restarts within this driver has its history in memory, so nothing is ahead."""
        from ray.train._internal.storage import _exists_at_fs_path

        def gone(r: Any) -> bool:
            return not _exists_at_fs_path(r.checkpoint.filesystem, r.checkpoint.path)

        def progress(r: Any) -> float:
            return float(r.metrics.get(self._attr, 0))

        manager = trial.run_metadata.checkpoint_manager
        latest = manager._latest_checkpoint_result
        manager._checkpoint_results = [r for r in manager._checkpoint_results if not gone(r)]
        if latest is None:
            return
        rows = self._history(trial)
        recorded = self._recorded(rows) if when == "driver crash" else float("inf")
        known = [latest, *manager._checkpoint_results]
        unlisted = self._unlisted_checkpoints(trial, {Path(r.checkpoint.path).name for r in known}, rows)
        candidates = sorted({id(r): r for r in [*known, *unlisted]}.values(), key=progress, reverse=True)
        skipped: list[str] = []
        chosen = None
        for r in candidates:
            if gone(r):
                why = "is gone"
            elif progress(r) > recorded:
                why = f"is beyond its stored results ({self._attr} {recorded:g})"
            else:
                bad = self._unreadable(r)
                if bad is None:
                    chosen = r
                    break
                why = f"is unreadable ({bad})"
                self._set_aside(r)
                manager._checkpoint_results = [x for x in manager._checkpoint_results if x is not r]
            skipped.append(f"{Path(r.checkpoint.path).name} {why}")
        if chosen is latest and not skipped:  # nothing newer on storage, nothing torn: as Ray left it
            return
        if chosen is not None and all(chosen is not r for r in known):
            self._adopt(manager, chosen)
        manager._latest_checkpoint_result = chosen
        if not skipped:  # a newer checkpoint than the snapshot's latest was found on storage
            skipped.append(f"{Path(latest.checkpoint.path).name} is not the newest on storage")
        logger.warning(
            "Trial %s: latest checkpoint %s (%s); resuming from %s.",
            trial.trial_id,
            "; ".join(skipped),
            when,
            chosen.checkpoint.path if chosen else "scratch",
        )

    def _unlisted_checkpoints(self, trial: Any, known: set[str], rows: list[dict]) -> list[Any]:
        """Checkpoints on storage that the restored snapshot does not list, with the metrics their
        ``result.json`` row recorded: Ray snapshots the experiment only every few checkpoints, so
        a driver killed in between leaves newer checkpoints (and deletes older ones) that the
        snapshot never saw. Without them a torn latest checkpoint meant a restart from scratch."""
        import pyarrow.fs
        from ray.train import Checkpoint
        from ray.train._internal.session import _TrainingResult

        by_name = {r["checkpoint_dir_name"]: r for r in rows if r.get("checkpoint_dir_name")}
        if not by_name:
            return []
        fs = trial.storage.storage_filesystem
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(trial.path, allow_not_found=True))
        except Exception:  # unreadable dir: nothing to add
            return []
        return [_TrainingResult(checkpoint=Checkpoint(f"{trial.path}/{i.base_name}", filesystem=fs), metrics=by_name[i.base_name])
                for i in infos
                if i.type == pyarrow.fs.FileType.Directory and i.base_name in by_name and i.base_name not in known]

    @staticmethod
    def _adopt(manager: Any, result: Any) -> None:
        """Book a checkpoint found on storage the way Ray books a reported one (kept in score
        order), without deleting anything: the repair only ever moves the resume point."""
        from ray.train._internal.checkpoint_manager import _insert_into_sorted_list

        score_attr = manager._checkpoint_config.checkpoint_score_attribute
        if score_attr is not None and score_attr in result.metrics:
            _insert_into_sorted_list(manager._checkpoint_results, result, key=manager._get_checkpoint_score)
        else:
            manager._checkpoint_results.append(result)

    @staticmethod
    def _set_aside(result: Any) -> None:
        """Rename a torn checkpoint to a hidden sibling: kept for a post-mortem, never read."""
        fs, path = result.checkpoint.filesystem, result.checkpoint.path
        head, tail = path.rsplit("/", 1)
        try:
            fs.move(path, f"{head}/.torn-{tail}")
        except Exception as e:  # read-only storage: leave it, the record is dropped anyway
            logger.info("Could not set aside torn checkpoint %s: %s", path, e)


class OptunaJournalCallback(Callback):
    """Keep the searcher's Optuna study in an Optuna journal file while the study runs.

    The study TPE uses lives only in Ray's pickled searcher state, which nothing read-only should
    unpickle.  After every finished trial (and at the end) this writes it to ``path`` with
    :func:`save_optuna_study` (atomic replace): ``optuna-dashboard PATH`` opens it with no code,
    and the report reads it as JSON lines.  Pickled in ``tuner.pkl`` together with the searcher,
    so after a restore it still sees the searcher the Tuner uses.  A failed write is a warning:
    the journal is a view, never a reason to stop a study.
    """

    def __init__(self, searcher: Any, path: str | os.PathLike) -> None:
        self.searcher = searcher
        self.path = Path(path)

    def _save(self) -> None:
        try:
            save_optuna_study(self.searcher, self.path)
        except Exception as e:
            logger.warning("Could not write the Optuna journal %s: %s", self.path, (str(e).splitlines() or [""])[0][:200])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._save()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._save()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._save()


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
        if value is None or step is None or int(step) <= self._last_step.get(trial_id, -1):
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
            elif value is None:
                # Stopped before reporting (e.g. removed while pending): not evidence
                # about the config, so FAIL (ignored by TPE) rather than PRUNED.
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:
                # state=None: COMPLETE, or FAIL with a warning if the value is NaN.
                self._ot_study.tell(ot_trial, value)
        except Exception as exc:  # never take the study down over bookkeeping
            logger.warning("Could not tell Optuna about trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


class _ForwardingConcurrencyLimiter(ConcurrencyLimiter):
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
) -> Searcher:
    """TPE searcher (Bergstra et al. 2011) over ``space`` (Ray Tune distributions).

    Uses an explicit ``TPESampler(multivariate=True, constant_liar=True,
    seed=seed)``: multivariate TPE models the interactions between e.g. rank
    and learning rate, and the constant liar keeps concurrent suggestions from
    piling onto the same point while trials are still running.

    ``pruned_feedback=False`` returns the stock ``OptunaSearch`` and
    ``ConcurrencyLimiter`` (pruned trials told COMPLETE with their low-fidelity
    value; no ``restart_errored`` support) for the benchmark comparison.

    Pass only *fixed* values as the Tuner's ``param_space`` (suggestions are
    merged into it): Ray raises if ``param_space`` still contains search
    distributions while the searcher has its own space.  If ``max_concurrent``
    is given, do not also set a different ``TuneConfig.max_concurrent_trials``.
    """
    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
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
        limiter = _ForwardingConcurrencyLimiter if pruned_feedback else ConcurrencyLimiter
        searcher = limiter(searcher, max_concurrent=max_concurrent)
    return searcher


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


def get_optuna_study(searcher: Any) -> optuna.Study:
    """The ``optuna.Study`` behind a searcher (also through ConcurrencyLimiter/SearchGenerator)."""
    base = _unwrap(searcher)
    study = getattr(base, "_ot_study", None)
    if study is None:
        raise ValueError(f"{type(base).__name__} has no Optuna study (space not set yet?)")
    return study


def load_optuna_study(experiment_path: str | os.PathLike) -> optuna.Study:
    """The Optuna study from a (local) Tune experiment dir's ``searcher-state-*.pkl``.

    This *unpickles*: only for an experiment this process trusts (its own, e.g. in tests or right
    after ``Tuner.restore``). Read-only tools use :func:`read_optuna_journal` instead.
    """
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(experiment_path))
    return get_optuna_study(searcher)


def read_optuna_journal(path: str | os.PathLike) -> optuna.Study:
    """The study in an Optuna journal file written by :func:`save_optuna_study`, copied into
    memory: the journal is JSON lines, so reading it runs no code and leaves the file as it was."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    summaries = storage.get_all_studies()
    if len(summaries) != 1:
        raise ValueError(f"{path}: expected one study, found {len(summaries)}")
    name = summaries[0].study_name
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=name, storage=memory)


def save_optuna_study(
    searcher_or_study: Any, path: str | os.PathLike, study_name: str | None = None
) -> Path:
    """Write the study's trials to an Optuna journal file (``JournalStorage``).

    The in-memory study only lives in Ray's pickled searcher state; a journal
    file can be opened by plain Optuna (``optuna.load_study(study_name=...,
    storage=JournalStorage(JournalFileBackend(path)))``) for ``optuna.importance``
    and dashboards.  The file is replaced atomically, so calling this again
    after a resumed run just refreshes it.
    """
    study = (
        searcher_or_study
        if isinstance(searcher_or_study, optuna.Study)
        else get_optuna_study(searcher_or_study)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # the journal backend creates the file itself
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(tmp))
        optuna.copy_study(
            from_study_name=study.study_name,
            from_storage=study._storage,
            to_storage=storage,
            to_study_name=study_name or study.study_name,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
