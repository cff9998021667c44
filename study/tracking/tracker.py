"""Resume-safe MLflow tracking of a study's trials (a ``ray.tune.Callback``).

Why not Ray's ``MLflowLoggerCallback``: it keeps trial → run ids only in memory and opens a new
MLflow run whenever a trial (re)starts in a new driver, so every ``Tuner.restore`` duplicates
runs. :class:`MLflowTracker` looks the trial → run map up in MLflow itself (by ``ray_trial_id``
and parent run) whenever a trial starts, so a resumed trial continues its own run. Pruned trials
end FINISHED with a state tag (they ended as planned), errors FAILED, trials still running at an
interruption KILLED. Writes go through an :class:`~study.tracking.queue.OperationQueue`.
"""

from __future__ import annotations

import logging
import math
import time
from numbers import Number
from typing import Any, Iterable, Protocol

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT

from trainables.config import flatten

from ..console.labels import trial_label
from .queue import OperationQueue, record_undelivered
from .runs import PARENT_TAG, ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_ID_TAG, flatten_params, log_params_and_tags, quote
from .server import client as _client

__all__ = ["MLflowTracker", "PrunedSignal"]

logger = logging.getLogger(__name__)

# Result keys that are not the project's metrics: Ray's bookkeeping (ray.tune.result) and the
# trainable's own (wall-clock stamp, optimizer step, the planned sample count: a constant per trial).
_NOT_METRICS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, DONE, SHOULD_CHECKPOINT, EXPERIMENT_TAG,
                "time_unix", "step", "samples_total"}


class PrunedSignal(Protocol):
    def was_pruned(self, trial_id: str) -> bool: ...


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
    uses.  Its checkpointed state is only the undelivered buffer.
    """

    def __init__(
        self,
        tracking_uri: str,
        parent_run_id: str,
        *,
        pruned_signal: PrunedSignal | None = None,
        step_attr: str = "samples_seen",
        searched: Iterable[str] = (),
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
        self.role, self.name_prefix, self.tags, self.pruned_state = role, name_prefix, dict(tags or {}), pruned_state
        self.final_flush_timeout_s = final_flush_timeout_s
        self._queue = OperationQueue(retry_interval_s)
        self._client_obj: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}  # cache only; MLflow is the source of truth

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client_obj"] = None  # not picklable / not worth pickling
        return state

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
        self._submit("sweep", None, None)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("start", trial.trial_id, (self._run_name(trial), flatten_params(trial.config or {})))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = self._metrics(result)
        if metrics:
            self._submit("metrics", trial.trial_id, metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        pruned = self.pruned_signal is not None and self.pruned_signal.was_pruned(trial.trial_id)
        if pruned:
            word = getattr(self, "pruned_state", "pruned")
            seen = (getattr(trial, "last_result", None) or {}).get(self.step_attr)
            marker = f" · {word} at {seen} samples" if isinstance(seen, Number) else f" · {word}"
            self._submit("end", trial.trial_id, ("FINISHED", word, (self._run_name(trial) + marker)[:250]))
        else:
            self._submit("end", trial.trial_id, ("FINISHED", "completed", None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("end", trial.trial_id, ("FAILED", "failed", (self._run_name(trial) + " · failed")[:250]))

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
    def _run_name(self, trial: Any) -> str:
        """``<trial id> <searched values>`` after the name prefix (a tracker pickled before
        ``searched`` existed: the id)."""
        label = trial_label(trial.trial_id, trial.config or {}, getattr(self, "searched", ()))
        return (getattr(self, "name_prefix", "") + label)[:250]

    def _metrics(self, result: dict) -> list[tuple[str, float, int, int]]:
        """The project's numeric entries of a Tune result as (key, value, timestamp_ms, step)."""
        step = result.get(self.step_attr, result.get("training_iteration", 0))
        step = int(step) if isinstance(step, Number) and math.isfinite(step) else 0
        now = int(time.time() * 1000)
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
            run = self._client.create_run(
                self._experiment(),
                run_name=run_name,
                tags={
                    **getattr(self, "tags", {}),
                    PARENT_TAG: self.parent_run_id,
                    TRIAL_ID_TAG: trial_id,
                    ROLE_TAG: getattr(self, "role", "trial"),
                    STUDY_TAG: parent_tags.get(STUDY_TAG, ""),
                    STATE_TAG: "running",
                },
            )
            run_id = run.info.run_id
        self._run_ids[trial_id] = run_id
        return run_id

    def _apply(self, kind: str, trial_id: str | None, payload: Any) -> None:
        try:
            self._apply_now(kind, trial_id, payload)
        except Exception:
            self._client_obj = None  # reconnect next time
            raise

    def _apply_now(self, kind: str, trial_id: str | None, payload: Any) -> None:
        client = self._client
        if kind == "sweep":
            for run in list(self._children(" and attributes.status = 'RUNNING'")):
                client.set_tag(run.info.run_id, STATE_TAG, "interrupted")
                client.set_terminated(run.info.run_id, status="KILLED")
        elif kind == "start":
            run_name, params = payload
            run_id = self._run_id(trial_id, run_name)
            # Identical params may be re-logged (resumed trial); MLflow only rejects changes.
            log_params_and_tags(client, run_id, params, {STATE_TAG: "running"})
            if client.get_run(run_id).info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
        elif kind == "metrics":
            run_id = self._run_id(trial_id)
            if run_id is not None:
                metrics = [Metric(k, v, ts, step) for k, v, ts, step in payload]
                for i in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[i : i + 1000])
        elif kind == "end":
            status, state, name = (*payload, None)[:3]  # a buffer restored from before names: 2-tuples
            run_id = self._run_id(trial_id)
            if run_id is not None:
                client.set_tag(run_id, STATE_TAG, state)
                if name:
                    client.update_run(run_id, name=name)
                client.set_terminated(run_id, status=status)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown MLflow operation {kind!r}")
