"""Resume-safe MLflow tracking for lora-study (a ``ray.tune.Callback``).

Layout: one MLflow experiment per study, one *parent* run per study (tags
``lora_study.study=<name>``, ``lora_study.role=parent``) and one nested
*child* run per Ray trial (tags ``mlflow.parentRunId``, ``ray_trial_id``,
``lora_study.role=trial``, ``lora_study.state``).  Child metrics are step
series with ``step = samples_seen`` -- the ASHA fidelity -- so curves of
trials with different batch sizes line up.

What a person sees in the runs table: a trial run is named after its trial id
and searched values (``abe404f9 r=4 a=4 lr=4.0e-3 qv n=2000``, the same label
as the console's, ``study.labels.trial_label``) and carries only the
project's metrics (accuracy, f1, eval_loss, dev_*, train_loss, samples_seen,
epoch, samples_per_s, trainable_params, setup_s/train_s/eval_s -- none of
Ray's bookkeeping such as ``training_iteration`` or ``time_since_restore``)
and its config without unset (``None``) keys.  The parent run carries the
study's fixed config, its search space as ``search.<key>`` (not the base
values the space overrides) and, at the end, the best trial's values as
``best.<key>`` with a link to the best trial's run in its description
(:func:`describe_best`).

Why not Ray's ``MLflowLoggerCallback``: it keeps trial -> run ids only in
memory and opens a new MLflow run whenever a trial (re)starts in a new driver,
so every ``Tuner.restore`` duplicates runs.  :class:`MLflowTracker` keeps no
state that matters: the trial -> run map is looked up in MLflow itself
(search by ``ray_trial_id`` + parent id) whenever a trial starts, so a resumed
trial continues its own run and a trial id never gets a second run.  It also
reads the pruned/completed distinction from the same scheduler signal as the
searcher (``RecordingASHAScheduler.was_pruned``) instead of guessing from
``samples_seen``.

End states: completed -> FINISHED + ``lora_study.state=completed``; pruned by
ASHA -> FINISHED + ``pruned``, and `` · pruned at N samples`` appended to the
run name (a pruned trial ended as planned, so it must not look like a crash,
which KILLED would); error -> FAILED + ``failed`` (`` · failed`` in the name).  Tune does not call
``on_trial_complete`` for trials still running when an experiment is
interrupted (Ctrl-C, driver crash, global stop), so on experiment start
(``setup``, before any trial runs -- this covers resume after a crash) and on
experiment end every child run of the parent that is still RUNNING is set to
KILLED + ``interrupted``; a resumed trial flips its run back to RUNNING when
it starts again.

Failure policy (the choice documented here): MLflow being down must never
take the study down.  Every MLflow write is an operation in one FIFO buffer;
each Tune callback appends and then tries to drain the buffer in order,
stopping at the first failure.  After a failure, draining is retried only
every ``retry_interval_s`` (so a dead server costs the driver at most one
short HTTP timeout per interval, not one per result), with a warning saying
how many operations are buffered.  ``on_experiment_end`` keeps retrying for up
to ``final_flush_timeout_s``; what is still undelivered then is reported as
an error (and is part of the callback state Tune checkpoints, so a restored
experiment delivers it).  FIFO order keeps the semantics right after an
outage: a run is created before its metrics, and ends after them.  MLflow's
own HTTP retries default to 7 with exponential backoff (minutes of blocking),
so :func:`configure_mlflow_http` sets short defaults (overridable via the
environment) before any client is created.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import subprocess
import time
from numbers import Number
from pathlib import Path
from typing import Any, Iterable, Protocol

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT

from trainables.config import flatten

from .labels import short_values, trial_label

__all__ = [
    "MLflowTracker",
    "check_tracking",
    "tracking_problem",
    "undelivered_operations",
    "configure_mlflow_http",
    "flatten_params",
    "study_params",
    "start_parent_run",
    "finish_parent_run",
    "describe_best",
    "trial_run_id",
    "STUDY_TAG",
    "ROLE_TAG",
    "STATE_TAG",
    "TRIAL_ID_TAG",
    "PARENT_TAG",
]

logger = logging.getLogger(__name__)

STUDY_TAG = "lora_study.study"
ROLE_TAG = "lora_study.role"
STATE_TAG = "lora_study.state"
TRIAL_ID_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"

_MAX_PARAM_LEN = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LEN = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH; metrics allow 1000
# Result keys that are not the project's metrics: Ray's bookkeeping (ray.tune.result) and the
# trainable's own (wall-clock stamp, optimizer step, the planned sample count: a constant per trial).
_NOT_METRICS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, DONE, SHOULD_CHECKPOINT, EXPERIMENT_TAG,
                "time_unix", "step", "samples_total"}


class PrunedSignal(Protocol):
    def was_pruned(self, trial_id: str) -> bool: ...


def configure_mlflow_http(timeout_s: int = 5, max_retries: int = 1) -> None:
    """Short MLflow HTTP timeout/retries (setdefault: explicit env vars win).

    Our own buffer retries failed calls, so MLflow's in-client retries only
    need to absorb a single blip.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def tracking_problem(tracking_uri: str, exc: BaseException) -> str:
    """One line for an MLflow store that cannot be used: unauthorised (401), forbidden (403),
    or unreachable, with what to do about it."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    code = str(getattr(exc, "error_code", "") or "")
    if code == "UNAUTHENTICATED" or "error code 401" in msg:
        return (f"MLflow at {tracking_uri} answered 401 Unauthorized: set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for it, or pass another --tracking-uri")
    if code == "PERMISSION_DENIED" or "error code 403" in msg:
        return f"MLflow at {tracking_uri} answered 403 Forbidden: your MLflow user may not create experiments and runs there"
    if len(msg) > 200:
        msg = msg[:199] + "…"
    return f"MLflow at {tracking_uri} is unreachable ({type(exc).__name__}: {msg}); start it, or pass another --tracking-uri"


def check_tracking(tracking_uri: str) -> None:
    """One request to the tracking store before any Ray work starts; a problem is a one-line
    ``ConfigError`` (:func:`tracking_problem`) instead of a traceback from the first MLflow call.

    A ``sqlite:///`` store is created (or migrated) here, under an exclusive lock on ``<db>.lock``
    beside it: MLflow's first use of a fresh database runs its schema migrations, and two studies
    starting at once on one store both ran them (the loser crashed with ``duplicate column name:
    step``). Once migrated, concurrent use is sqlite's own business."""
    from trainables.config import ConfigError

    from .store import file_lock

    configure_mlflow_http()
    # urllib3: one "Retrying …" warning per attempt (the line below says it); MLflow's sqlite
    # migrations: INFO lines on MLflow's own stderr handler, before the study log exists
    quiet = [logging.getLogger(n) for n in ("urllib3.connectionpool", "mlflow.store.db.utils", "alembic")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///"):])
            lock = file_lock(db.with_name(db.name + ".lock"))
            try:
                MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
            finally:
                lock.close()
        else:
            _client(tracking_uri).search_experiments(max_results=1)
    except Exception as e:
        raise ConfigError(tracking_problem(tracking_uri, e)) from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


#: parent run id -> MLflow operations still undelivered when the experiment ended in this process.
_UNDELIVERED: dict[str, int] = {}


def undelivered_operations(parent_run_id: str) -> int:
    """How many operations the tracker of ``parent_run_id`` could not deliver by the end of
    ``Tuner.fit`` in this process (0 if it delivered everything). The runner turns a non-zero
    count into a non-zero exit: a finished study whose runs MLflow never got is not a success."""
    return _UNDELIVERED.get(parent_run_id, 0)


def flatten_params(config: dict) -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` with values cut to MLflow's 6000 chars; unset
    (``None``) keys are left out (a column of ``None`` says nothing)."""
    return {k: str(v)[:_MAX_PARAM_LEN] for k, v in flatten(config).items() if v is not None}


def _dist_text(dist: Any) -> str:
    v = getattr(dist, dist.kind)
    return f"{dist.kind} {list(v)}"


def study_params(cfg: Any) -> dict[str, str]:
    """The parent run's params for a ``StudyConfig``: every trial's fixed config (defaults
    included, unset keys left out), the search space as ``search.<key>`` (``choice [4, 8, 16]``)
    *instead of* the base values it overrides (``lora.alpha`` too when ``lora.alpha_multiple`` is
    searched: the multiple replaces it), and the study's own sections (``study.*``,
    ``asha.*``, ``optuna.*``, ``resources.*``, ``storage.*``, ``mlflow.*``)."""
    overridden = set(cfg.search) | ({"lora.alpha"} if "lora.alpha_multiple" in cfg.search else set())
    fixed = {k: v for k, v in cfg.base_trial().to_flat().items() if k not in overridden}
    sections = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("model", "data", "lora", "train", "search")}
    params = flatten_params({**fixed, **flatten(sections)})
    params.update({f"search.{k}": _dist_text(d)[:_MAX_PARAM_LEN] for k, d in sorted(cfg.search.items())})
    return params


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _q(value: str) -> str:
    """Quote a value for an MLflow filter string."""
    return "'" + str(value).replace("'", "\\'") + "'"


def _client(tracking_uri: str) -> MlflowClient:
    configure_mlflow_http()
    return MlflowClient(tracking_uri=tracking_uri)


def _log_params_and_tags(
    client: MlflowClient, run_id: str, params: dict[str, str], tags: dict[str, Any]
) -> None:
    params_l = [Param(k, v) for k, v in params.items()]
    tags_l = [RunTag(k, str(v)[:_MAX_TAG_LEN]) for k, v in tags.items()]
    for i in range(0, max(len(params_l), len(tags_l)), _BATCH):
        client.log_batch(run_id, params=params_l[i : i + _BATCH], tags=tags_l[i : i + _BATCH])


def start_parent_run(
    tracking_uri: str,
    experiment_name: str,
    study_name: str,
    params: dict,
    tags: dict | None = None,
    resume: bool = False,
    artifact_location: str | None = None,
) -> str:
    """Create (or, with ``resume=True``, find and reopen) the study's parent run.

    One MLflow experiment per study; the parent run carries the flattened
    study config as params and ``tags`` plus the git commit.  On resume the
    newest parent run tagged with this study name is set RUNNING again and its
    params are left alone (MLflow params are immutable).  Raises if MLflow is
    unreachable: better to fail before spending compute than to run a study
    that cannot be attributed.  For ``sqlite:///`` URIs artifacts default to
    ``mlartifacts/`` next to the database instead of ``./mlruns`` in the CWD.
    """
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///") :])
            artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(experiment_name, artifact_location)

    run_tags = {**(tags or {}), STUDY_TAG: study_name, ROLE_TAG: "parent"}
    commit = _git_commit()
    if commit:
        run_tags.setdefault(GIT_TAG, commit)

    if resume:
        found = client.search_runs(
            [experiment_id],
            f"tags.`{STUDY_TAG}` = {_q(study_name)} and tags.`{ROLE_TAG}` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            _log_params_and_tags(client, run_id, {}, {**run_tags, STATE_TAG: "running"})
            return run_id
        logger.warning("No parent run for study %r to resume; creating one.", study_name)

    run = client.create_run(experiment_id, run_name=study_name, tags=run_tags)
    run_id = run.info.run_id
    _log_params_and_tags(client, run_id, flatten_params(params), {STATE_TAG: "running"})
    return run_id


def finish_parent_run(
    tracking_uri: str,
    run_id: str,
    status: str = "FINISHED",
    summary: dict | None = None,
    timeout_s: float = 60.0,
) -> bool:
    """Close the parent run with ``status`` and a ``summary`` (numbers -> metrics, rest -> tags).

    Retries for up to ``timeout_s``; returns False (and logs an error) instead
    of raising if MLflow stays unreachable, so a finished study never fails on
    its last bookkeeping step.
    """
    now = int(time.time() * 1000)
    metrics, tags = [], {STATE_TAG: status.lower()}
    for key, value in flatten(summary or {}).items():
        if isinstance(value, Number) and not isinstance(value, bool):
            metrics.append(Metric(f"summary.{key}", float(value), now, 0))
        else:
            tags[f"lora_study.summary.{key}"] = value
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = _client(tracking_uri)
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i : i + 1000])
            _log_params_and_tags(client, run_id, {}, tags)
            client.set_terminated(run_id, status=status)
            return True
        except Exception as exc:
            if time.monotonic() >= deadline:
                logger.error("Could not finish MLflow parent run %s: %s", run_id, (str(exc).splitlines() or [type(exc).__name__])[0][:300])
                return False
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


def trial_run_id(tracking_uri: str, parent_run_id: str, trial_id: str) -> str | None:
    """The MLflow run of Ray trial ``trial_id`` under the study's parent run (``None``: none)."""
    client = _client(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    found = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = {_q(parent_run_id)} and tags.`{TRIAL_ID_TAG}` = {_q(trial_id)}",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def describe_best(tracking_uri: str, parent_run_id: str, best: dict[str, Any], searched: Iterable[str],
                  metric: str = "accuracy") -> str | None:
    """Put the best trial on the study's parent run: its searched values as params
    ``best.<key>``, tags ``lora_study.best_trial`` / ``lora_study.best_run_id``, and a description
    (``mlflow.note.content``, shown on the run page) naming it with a link to its run. Returns the
    best trial's run id (``None`` if it has no run)."""
    client = _client(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_id = trial_run_id(tracking_uri, parent_run_id, best["trial_id"])
    values = best.get("params") or {}
    label = trial_label(best["trial_id"], values, searched)
    where = f"[{label}](#/experiments/{experiment_id}/runs/{run_id})" if run_id else label
    score = best.get(metric)
    note = (f"**Best trial**: {where} — {metric} {score:.4f}" if isinstance(score, Number) else f"**Best trial**: {where}")
    if best.get("samples_seen") is not None:
        note += f" at {best['samples_seen']} samples seen ({best.get('state', '')})"
    tags = {"lora_study.best_trial": best["trial_id"], "lora_study.best_values": short_values(values, searched),
            "mlflow.note.content": note + "."}
    if run_id:
        tags["lora_study.best_run_id"] = run_id
    _log_params_and_tags(client, parent_run_id, flatten_params({f"best.{k}": v for k, v in values.items()}), tags)
    return run_id


class MLflowTracker(Callback):
    """One nested MLflow child run per Ray trial, safe across restores and outages.

    Args:
        tracking_uri: MLflow tracking URI (an explicit ``MlflowClient`` is
            used, never the fluent global state).
        parent_run_id: from :func:`start_parent_run`.
        pruned_signal: object with ``was_pruned(trial_id) -> bool``, normally
            the ``RecordingASHAScheduler`` (``study.searcher.make_scheduler``).
            Without it every trial that stops without error counts as completed.
        step_attr: result key used as the MLflow step (the ASHA fidelity).
        searched: the searched config keys; trial runs are named after their values.
        retry_interval_s: wait this long after a failed MLflow call before
            trying to drain the buffer again.
        final_flush_timeout_s: how long ``on_experiment_end`` keeps retrying.

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
    ) -> None:
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.pruned_signal = pruned_signal
        self.step_attr = step_attr
        self.searched = list(searched)
        self.retry_interval_s = retry_interval_s
        self.final_flush_timeout_s = final_flush_timeout_s
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._client_obj: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}  # cache only; MLflow is the source of truth
        self._pending: collections.deque[tuple[str, str | None, Any]] = collections.deque()
        self._retry_at = 0.0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client_obj"] = None  # not picklable / not worth pickling
        return state

    # -- public helpers -------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Number of MLflow operations waiting for delivery."""
        return len(self._pending)

    def flush(self, timeout_s: float = 0.0) -> bool:
        """Deliver buffered operations now, retrying for up to ``timeout_s``; True if empty."""
        deadline = time.monotonic() + timeout_s
        while not self._drain():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.retry_interval_s, remaining, 2.0))
        return True

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
            seen = (getattr(trial, "last_result", None) or {}).get(self.step_attr)
            marker = f" · pruned at {seen} samples" if isinstance(seen, Number) else " · pruned"
            self._submit("end", trial.trial_id, ("FINISHED", "pruned", (self._run_name(trial) + marker)[:250]))
        else:
            self._submit("end", trial.trial_id, ("FINISHED", "completed", None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("end", trial.trial_id, ("FAILED", "failed", (self._run_name(trial) + " · failed")[:250]))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._pending.append(("sweep", None, None))
        delivered = self.flush(self.final_flush_timeout_s)
        _UNDELIVERED[self.parent_run_id] = len(self._pending)
        if not delivered:
            logger.error(
                "MLflow still unreachable at experiment end: %d operations for parent "
                "run %s were NOT delivered (kept in the callback state for a restore).",
                len(self._pending),
                self.parent_run_id,
            )

    def get_state(self) -> dict:
        # Always non-empty so the newest callback checkpoint never holds a stale buffer.
        return {"pending": list(self._pending)}

    def set_state(self, state: dict) -> None:
        self._pending.extendleft(reversed(state.get("pending", [])))

    # -- internals --------------------------------------------------------------------
    def _run_name(self, trial: Any) -> str:
        """``<trial id> <searched values>`` (a tracker pickled before ``searched`` existed: the id)."""
        return trial_label(trial.trial_id, trial.config or {}, getattr(self, "searched", ()))[:250]

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
        self._pending.append((kind, trial_id, payload))
        if time.monotonic() >= self._retry_at:
            self._drain()

    def _drain(self) -> bool:
        """Apply buffered operations in order; stop at the first failure."""
        while self._pending:
            kind, trial_id, payload = self._pending[0]
            try:
                self._apply(kind, trial_id, payload)
            except Exception as exc:
                self._retry_at = time.monotonic() + self.retry_interval_s
                self._client_obj = None  # reconnect next time
                logger.warning(
                    "MLflow call failed (%s: %s); %d operation(s) buffered, retrying in %gs.",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                    len(self._pending),
                    self.retry_interval_s,
                )
                return False
            self._pending.popleft()
        return True

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
        flt = f"tags.`{PARENT_TAG}` = {_q(self.parent_run_id)}" + extra_filter
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
        found = list(self._children(f" and tags.`{TRIAL_ID_TAG}` = {_q(trial_id)}"))
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
                    PARENT_TAG: self.parent_run_id,
                    TRIAL_ID_TAG: trial_id,
                    ROLE_TAG: "trial",
                    STUDY_TAG: parent_tags.get(STUDY_TAG, ""),
                    STATE_TAG: "running",
                },
            )
            run_id = run.info.run_id
        self._run_ids[trial_id] = run_id
        return run_id

    def _apply(self, kind: str, trial_id: str | None, payload: Any) -> None:
        client = self._client
        if kind == "sweep":
            for run in list(self._children(" and attributes.status = 'RUNNING'")):
                client.set_tag(run.info.run_id, STATE_TAG, "interrupted")
                client.set_terminated(run.info.run_id, status="KILLED")
        elif kind == "start":
            run_name, params = payload
            run_id = self._run_id(trial_id, run_name)
            # Identical params may be re-logged (resumed trial); MLflow only rejects changes.
            _log_params_and_tags(client, run_id, params, {STATE_TAG: "running"})
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
