"""Resume-safe MLflow tracking of a study's trials (a ``ray.tune.Callback``).

Why not Ray's ``MLflowLoggerCallback``: it keeps trial → run ids only in memory and opens a new
MLflow run whenever a trial (re)starts in a new driver, so every ``Tuner.restore`` duplicates
runs. :class:`MLflowTracker` looks the trial → run map up in MLflow itself (by ``ray_trial_id``
and parent run) whenever a trial starts, so a resumed trial continues its own run. Pruned trials
end FINISHED with a state tag (they ended as planned), errors FAILED, trials still running at an
interruption KILLED. Writes go through an :class:`~study.tracking.queue.OperationQueue`.

A trial run carries the values the trial trains with (``TrialConfig.effective``: ``lora.alpha`` =
multiple × r, ``data.size`` as a count, the module names, its steps; ``train.total_samples`` as the
trial reports it), the git commit, its datasets (:mod:`study.tracking.datasets`), its directory and
newest checkpoint as tags, and its Optuna trial gets the run's id (``mlflow_run_id``).
"""

from __future__ import annotations

import logging
import math
import time
from numbers import Number
from typing import Any, Callable, Iterable, Protocol

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT

from trainables.config import flatten

from ..config import effective_values
from ..console.labels import trial_label
from ..search.journal import link_trial
from ..search.tpe import MLFLOW_RUN_ID_ATTR, RAY_TRIAL_ID_ATTR
from ..storage.trials import stored_results
from .queue import OperationQueue, record_undelivered
from .runs import (
    CHECKPOINT_TAG,
    GIT_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_DIR_TAG,
    TRIAL_ID_TAG,
    flatten_params,
    log_new_params,
    quote,
)
from .server import client as _client

__all__ = ["MLflowTracker", "PrunedSignal", "use_destination"]

logger = logging.getLogger(__name__)

# Result keys that are not the project's metrics: Ray's bookkeeping (ray.tune.result) and the
# trainable's own (wall-clock stamp, optimizer step, the planned sample count: a constant per trial).
_NOT_METRICS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, DONE, SHOULD_CHECKPOINT, EXPERIMENT_TAG,
                "time_unix", "step", "samples_total"}


class PrunedSignal(Protocol):
    def was_pruned(self, trial_id: str) -> bool: ...


#: Where the trackers of this process write: (tracking URI, parent run id), set by the driver from
#: what the user runs now. A tracker restored from ``tuner.pkl`` carries no destination of its own.
_destination: dict[str, str] = {}


def use_destination(tracking_uri: str, parent_run_id: str) -> None:
    """Where an :class:`MLflowTracker` unpickled by ``Tuner.restore`` in this process writes:
    ``tracking_uri``, under ``parent_run_id`` (a tracker built in this process was told already)."""
    _destination.update(tracking_uri=tracking_uri, parent_run_id=parent_run_id)


class MLflowTracker(Callback):
    """One nested MLflow child run per Ray trial, safe across restores and outages.

    Args:
        tracking_uri: MLflow tracking URI (an explicit ``MlflowClient`` is
            used, never the fluent global state).
        parent_run_id: from :func:`start_parent_run`.
        pruned_signal: object with ``was_pruned(trial_id) -> bool``, normally
            the ``RecordingASHAScheduler`` (``study.search.asha.make_scheduler``).
            Without it every trial that stops without error counts as completed.
        step_attr: result key used as the MLflow step (the ASHA fidelity).
        searched: the searched config keys; trial runs are named after their values.
        n_train: the train split every trial draws from (``StudyConfig.shared_n_train``): trial
            runs then show ``data.size`` as a count and the steps; ``None`` leaves those out.
        experiment_path: the study's Ray experiment (``StudyPaths.experiment``), for the trial
            directory and checkpoint tags (default: Ray's own path of the trial).
        searcher: the Tuner's searcher; each Optuna trial behind it gets its run's id.
        log_datasets: log each trial's datasets (train subset, validation, dev) as run inputs.
        retry_interval_s: wait this long after a failed MLflow call before
            trying to drain the buffer again.
        final_flush_timeout_s: how long ``on_experiment_end`` keeps retrying.
        role: the runs' ``lora_study.role`` tag (``trial``; a refit's trials say ``refit``).
        name_prefix: put before every run name (``refit of abe404f9 · ``).
        tags: more tags for every run it creates (a refit: which trial it refits).
        pruned_state: the state tag, and the word in the run name, of a trial ``pruned_signal``
            says was stopped (``pruned``; a refit's learning-rate check says ``checked``).

    The callback is pickled into ``tuner.pkl`` together with the scheduler, so
    after ``Tuner.restore`` ``pruned_signal`` is still the scheduler the Tuner
    uses.  Its destination is not pickled: ``--resume --tracking-uri NEW`` must
    write to NEW, so a restored tracker takes it from :func:`use_destination`.
    Its checkpointed state is only the undelivered buffer.
    """

    #: Not pickled: where to write comes from the driver that runs now, never from ``tuner.pkl``.
    _NOT_PICKLED = ("tracking_uri", "parent_run_id", "_client_obj", "_experiment_id", "_run_ids", "_logged", "_inputs", "_planned")

    def __init__(
        self,
        tracking_uri: str,
        parent_run_id: str,
        *,
        pruned_signal: PrunedSignal | None = None,
        step_attr: str = "samples_seen",
        searched: Iterable[str] = (),
        n_train: int | None = None,
        experiment_path: str | None = None,
        searcher: Any = None,
        log_datasets: bool = False,
        retry_interval_s: float = 10.0,
        final_flush_timeout_s: float = 60.0,
        role: str = "trial",
        name_prefix: str = "",
        tags: dict[str, str] | None = None,
        pruned_state: str = "pruned",
    ) -> None:
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.pruned_signal = pruned_signal
        self.step_attr = step_attr
        self.searched = list(searched)
        self.n_train = n_train
        self.experiment_path = experiment_path
        self.searcher = searcher
        self.log_datasets = log_datasets
        self.role, self.name_prefix, self.tags, self.pruned_state = role, name_prefix, dict(tags or {}), pruned_state
        self.final_flush_timeout_s = final_flush_timeout_s
        self._queue = OperationQueue(retry_interval_s)
        self._client_obj: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}  # cache only; MLflow is the source of truth
        self._inputs: dict[str, list[Any]] = {}  # data config (JSON) -> its dataset inputs, built once
        self._planned: set[str] = set()  # trials whose train.total_samples this driver has logged
        self._logged: dict[str, _StepsLogged] = {}  # run id -> the (metric, step) points it holds

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._NOT_PICKLED}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k not in self._NOT_PICKLED})
        self.tracking_uri = self.parent_run_id = None  # type: ignore[assignment]
        self._client_obj, self._experiment_id, self._run_ids, self._logged = None, None, {}, {}
        self._inputs, self._planned = {}, set()

    # -- public helpers -------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Number of MLflow operations waiting for delivery."""
        return len(self._queue)

    def flush(self, timeout_s: float = 0.0) -> bool:
        """Deliver buffered operations now, retrying for up to ``timeout_s``; True if empty."""
        return self._queue.flush(self._apply, timeout_s)

    # -- Tune callback hooks --------------------------------------------------------
    def setup(self, **info: Any) -> None:
        if self.tracking_uri is None:  # restored from tuner.pkl: the driver that runs now says where
            if not _destination:
                raise RuntimeError("MLflowTracker restored without a destination: call use_destination() before Tuner.fit")
            self.tracking_uri, self.parent_run_id = _destination["tracking_uri"], _destination["parent_run_id"]
        self._submit("sweep", None, None)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        config = trial.config or {}
        params = flatten_params({**config, **effective_values(config, getattr(self, "n_train", None))})
        tags = {TRIAL_DIR_TAG: self._trial_dir(trial)} if self._trial_dir(trial) else {}
        self._submit("start", trial.trial_id, (self._run_name(trial), params, tags, self._dataset_inputs(config)))
        stored = [m for row in stored_results(trial) for m in self._metrics(row, at=row.get("time_unix") or row.get("timestamp"))]
        if stored:  # a resumed trial: what its stored history holds and its run lacks (lost with a driver, or
            self._submit("metrics", trial.trial_id, {"metrics": stored})  # recovered from a checkpoint) reaches MLflow too

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = self._metrics(result)
        tags, params = {}, {}
        if result.get("checkpoint_dir_name") and self._trial_dir(trial):
            tags[CHECKPOINT_TAG] = f"{self._trial_dir(trial)}/{result['checkpoint_dir_name']}"
        planned = getattr(self, "_planned", set())
        if isinstance(result.get("samples_total"), Number) and trial.trial_id not in planned:
            params["train.total_samples"] = str(int(result["samples_total"]))
            planned.add(trial.trial_id)
        if metrics or tags or params:
            self._submit("metrics", trial.trial_id, {"metrics": metrics, "tags": tags, "params": params})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        pruned = self.pruned_signal is not None and self.pruned_signal.was_pruned(trial.trial_id)
        if pruned:
            word = getattr(self, "pruned_state", "pruned")
            seen = (getattr(trial, "last_result", None) or {}).get(self.step_attr)
            # the state first: MLflow's runs table cuts long names, and the state is what a reader scans for
            state = f"{word} at {seen} samples · " if isinstance(seen, Number) else f"{word} · "
            self._submit("end", trial.trial_id, ("FINISHED", word, (state + self._run_name(trial))[:250]))
        else:
            self._submit("end", trial.trial_id, ("FINISHED", "completed", None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("end", trial.trial_id, ("FAILED", "failed", ("failed · " + self._run_name(trial))[:250]))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._queue.items.append(("sweep", None, None))
        delivered = self.flush(self.final_flush_timeout_s)
        record_undelivered(self.parent_run_id, len(self._queue))
        if not delivered:
            logger.error(
                "MLflow still unreachable at experiment end: %d operations for parent "
                "run %s were NOT delivered (kept in the callback state for a restore).",
                len(self._queue),
                self.parent_run_id,
            )

    def get_state(self) -> dict:
        # Always non-empty so the newest callback checkpoint never holds a stale buffer.
        return {"pending": list(self._queue.items)}

    def set_state(self, state: dict) -> None:
        self._queue.items.extendleft(reversed(state.get("pending", [])))

    # -- internals --------------------------------------------------------------------
    def _trial_dir(self, trial: Any) -> str | None:
        """The trial's directory: in the study's experiment (a URI on remote storage), else Ray's path."""
        path = getattr(trial, "path", None)
        root = getattr(self, "experiment_path", None)
        if not path:
            return None
        return f"{root.rstrip('/')}/{str(path).rstrip('/').rsplit('/', 1)[-1]}" if root else str(path)

    def _dataset_inputs(self, config: dict) -> list[Any]:
        """The trial's dataset inputs, built once per data config; none when off, or when they
        cannot be built (a warning: datasets describe a study, they never stop one)."""
        if not getattr(self, "log_datasets", False):
            return []
        try:
            from trainables import TrialConfig

            data = TrialConfig.from_dict(config).data
            key = data.model_dump_json()
            if key not in self._inputs:
                from .datasets import dataset_inputs

                self._inputs[key] = dataset_inputs(data)
            return self._inputs[key]
        except Exception as e:
            logger.warning("No MLflow datasets for this trial's data: %s", (str(e).splitlines() or [type(e).__name__])[0][:200])
            return []

    def _link_optuna(self, trial_id: str, run_id: str) -> None:
        """The Optuna trial behind ``trial_id`` names its MLflow run (user attributes)."""
        if getattr(self, "searcher", None) is not None:
            link_trial(self.searcher, trial_id, {RAY_TRIAL_ID_ATTR: trial_id, MLFLOW_RUN_ID_ATTR: run_id})

    def _run_name(self, trial: Any) -> str:
        """``<trial id> <searched values>`` after the name prefix (a tracker pickled before
        ``searched`` existed: the id)."""
        label = trial_label(trial.trial_id, trial.config or {}, getattr(self, "searched", ()))
        return (getattr(self, "name_prefix", "") + label)[:250]

    def _metrics(self, result: dict, at: float | None = None) -> list[tuple[str, float, int, int]]:
        """The project's numeric entries of a Tune result as (key, value, timestamp_ms, step),
        stamped now, or ``at`` (seconds) for a result reported earlier."""
        step = result.get(self.step_attr, result.get("training_iteration", 0))
        step = int(step) if isinstance(step, Number) and math.isfinite(step) else 0
        now = int((at if isinstance(at, Number) else time.time()) * 1000)
        flat = flatten({k: v for k, v in result.items() if k != "config"})
        return [
            (key, float(value), now, step)
            for key, value in flat.items()
            if key not in _NOT_METRICS and isinstance(value, Number) and not isinstance(value, bool)
        ]

    def _submit(self, kind: str, trial_id: str | None, payload: Any) -> None:
        self._queue.submit((kind, trial_id, payload), self._apply)

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            self._client_obj = _client(self.tracking_uri)
        return self._client_obj

    def _experiment(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._client.get_run(self.parent_run_id).info.experiment_id
        return self._experiment_id

    def _children(self, extra_filter: str = "") -> Iterable[Any]:
        flt = f"tags.`{PARENT_TAG}` = {quote(self.parent_run_id)}" + extra_filter
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment()], flt, order_by=["attributes.start_time ASC"], page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return

    def _run_id(self, trial_id: str, run_name: str | None = None) -> str | None:
        """The trial's run: cached, else looked up in MLflow, else (with ``run_name``) created.

        Only ``on_trial_start`` passes ``run_name``: a trial Tune stops before it
        ever started gets no run.
        """
        if trial_id in self._run_ids:
            return self._run_ids[trial_id]
        found = list(self._children(f" and tags.`{TRIAL_ID_TAG}` = {quote(trial_id)}"))
        if found:
            if len(found) > 1:
                logger.warning("Trial %s has %d MLflow runs; using the oldest.", trial_id, len(found))
            run_id = found[0].info.run_id
        elif run_name is None:
            return None
        else:
            parent_tags = self._client.get_run(self.parent_run_id).data.tags
            tags = {**getattr(self, "tags", {}), PARENT_TAG: self.parent_run_id, TRIAL_ID_TAG: trial_id,
                    ROLE_TAG: getattr(self, "role", "trial"), STUDY_TAG: parent_tags.get(STUDY_TAG, ""), STATE_TAG: "running"}
            if parent_tags.get(GIT_TAG):
                tags[GIT_TAG] = parent_tags[GIT_TAG]
            run = self._client.create_run(self._experiment(), run_name=run_name, tags=tags)
            run_id = run.info.run_id
            self._logged[run_id] = _StepsLogged(None)  # a new run holds no points: nothing to ask
        self._run_ids[trial_id] = run_id
        return run_id

    def _unlogged(self, run_id: str, payload: list) -> list:
        """The points of ``payload`` the run does not hold yet: a trial resumed from a checkpoint
        re-reports the evaluations after it, and a buffer restored from the callback state may
        hold writes that were delivered before the driver died. Each (metric, step) goes once."""
        if run_id not in self._logged:
            self._logged[run_id] = _StepsLogged(lambda key: {m.step for m in self._client.get_metric_history(run_id, key)})
        logged = self._logged[run_id]
        return [(k, v, ts, step) for k, v, ts, step in payload if logged.add(k, step)]

    def _apply(self, kind: str, trial_id: str | None, payload: Any) -> None:
        try:
            self._apply_now(kind, trial_id, payload)
        except Exception:
            self._client_obj = None  # reconnect next time
            self._logged.clear()  # a write may have landed before the failure: ask MLflow again
            raise

    def _apply_now(self, kind: str, trial_id: str | None, payload: Any) -> None:
        client = self._client
        if kind == "sweep":
            for run in list(self._children(" and attributes.status = 'RUNNING'")):
                client.set_tag(run.info.run_id, STATE_TAG, "interrupted")
                client.set_terminated(run.info.run_id, status="KILLED")
        elif kind == "start":
            run_name, params, tags, inputs = (*payload, {}, [])[:4]  # a buffer restored from before tags: 2-tuples
            run_id = self._run_id(trial_id, run_name)
            log_new_params(client, run_id, params, {STATE_TAG: "running", **tags})  # a resumed trial logs its params again
            if inputs:
                client.log_inputs(run_id, datasets=inputs)
            if client.get_run(run_id).info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            self._link_optuna(trial_id, run_id)
        elif kind == "metrics":
            run_id = self._run_id(trial_id)
            if run_id is not None:
                op = payload if isinstance(payload, dict) else {"metrics": payload}  # a buffer restored from before tags: a list
                metrics = [Metric(k, v, ts, step) for k, v, ts, step in self._unlogged(run_id, op["metrics"])]
                for i in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[i : i + 1000])
                if op.get("tags") or op.get("params"):
                    log_new_params(client, run_id, op.get("params") or {}, op.get("tags") or {})
        elif kind == "end":
            status, state, name = (*payload, None)[:3]  # a buffer restored from before names: 2-tuples
            run_id = self._run_id(trial_id)
            if run_id is not None:
                client.set_tag(run_id, STATE_TAG, state)
                if name:
                    client.update_run(run_id, name=name)
                client.set_terminated(run_id, status=status)
                logger.info("Trial %s: MLflow run %s ended %s (%s).", trial_id, run_id, status, state)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown MLflow operation {kind!r}")


class _StepsLogged:
    """The steps each metric of one run holds in MLflow, read from MLflow at most once per metric
    (``fetch``; ``None``: a run created by this process, which holds nothing yet)."""

    def __init__(self, fetch: Callable[[str], set[int]] | None) -> None:
        self._fetch, self._steps = fetch, {}

    def add(self, key: str, step: int) -> bool:
        """Note (``key``, ``step``) as logged; False if the run already held it."""
        if key not in self._steps:
            self._steps[key] = self._fetch(key) if self._fetch else set()
        if step in self._steps[key]:
            return False
        self._steps[key].add(step)
        return True
