"""The study's MLflow runs: one experiment per study, a parent run, one child run per trial.

Layout: the parent run carries the study's fixed config, its search space as ``search.<key>``,
the node's system metrics while the trials run and, at the end, the best trial's values as
``best.<key>``; each trial's child run (tags ``mlflow.parentRunId``, ``ray_trial_id``,
``lora_study.role=trial``, ``lora_study.state``, the git commit, its checkpoint) carries its config,
its datasets and the project's metrics as step series at ``step = samples_seen``, the ASHA
fidelity, so curves of trials with different batch sizes line up. Params are the values a trial
trains with (``TrialConfig.effective``): ``lora.alpha`` is ``alpha_multiple × r`` where a multiple is
set, ``data.size`` a count, a preset the module names.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from numbers import Number
from pathlib import Path
from typing import Any, Iterable, Iterator

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from trainables.config import flatten

from ..config import effective_values
from ..console.labels import short_values, trial_label
from .server import client as _client

__all__ = [
    "flatten_params", "study_params", "start_parent_run", "finish_parent_run", "describe_best", "refit_note", "trial_run_id",
    "log_params_and_tags", "log_new_params", "system_metrics", "quote", "STUDY_TAG", "ROLE_TAG", "STATE_TAG",
    "TRIAL_ID_TAG", "PARENT_TAG", "GIT_TAG", "TRIAL_DIR_TAG", "CHECKPOINT_TAG",
]

logger = logging.getLogger(__name__)

STUDY_TAG = "lora_study.study"
ROLE_TAG = "lora_study.role"
STATE_TAG = "lora_study.state"
TRIAL_ID_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"
TRIAL_DIR_TAG = "lora_study.trial_dir"  # the trial's directory in the study's storage
CHECKPOINT_TAG = "lora_study.checkpoint"  # its newest checkpoint (Ray always keeps the newest)

_MAX_PARAM_LEN = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LEN = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH; metrics allow 1000


def flatten_params(config: dict) -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` with values cut to MLflow's 6000 chars; unset
    (``None``) keys are left out (a column of ``None`` says nothing)."""
    return {k: str(v)[:_MAX_PARAM_LEN] for k, v in flatten(config).items() if v is not None}


def _dist_text(dist: Any) -> str:
    v = getattr(dist, dist.kind)
    return f"{dist.kind} {list(v)}"


def study_params(cfg: Any, n_train: int | None = None) -> dict[str, str]:
    """The parent run's params for a ``StudyConfig``: every trial's fixed config (defaults
    included, unset keys left out) with the values trials train with where those are the same in
    every trial (``lora.alpha`` = multiple × r, ``data.size`` as a count of the ``n_train`` split,
    the steps …), the search space as ``search.<key>`` (``choice [4, 8, 16]``) *instead of* the base
    values it overrides (and of values derived from a searched key: ``lora.alpha`` when the rank or
    the multiple is searched), and the study's own sections (``study.*``, ``asha.*``, ``optuna.*``,
    ``resources.*``, ``storage.*``, ``mlflow.*``)."""
    n_train = cfg.shared_n_train(n_train)
    shared = cfg.trial.effective(n_train, varied=cfg.search)
    varying = set(cfg.trial.effective(n_train)) - set(shared)
    overridden = set(cfg.search) | varying | ({"lora.alpha"} if "lora.alpha_multiple" in cfg.search else set())
    fixed = {k: v for k, v in {**cfg.trial.to_flat(), **shared}.items() if k not in overridden}
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


def quote(value: str) -> str:
    """Quote a value for an MLflow filter string."""
    return "'" + str(value).replace("'", "\\'") + "'"


def log_params_and_tags(
    client: MlflowClient, run_id: str, params: dict[str, str], tags: dict[str, Any]
) -> None:
    params_l = [Param(k, v) for k, v in params.items()]
    tags_l = [RunTag(k, str(v)[:_MAX_TAG_LEN]) for k, v in tags.items()]
    for i in range(0, max(len(params_l), len(tags_l)), _BATCH):
        client.log_batch(run_id, params=params_l[i : i + _BATCH], tags=tags_l[i : i + _BATCH])


def log_new_params(client: MlflowClient, run_id: str, params: dict[str, str], tags: dict[str, Any]) -> None:
    """``tags`` and those of ``params`` the run does not have yet. Why: MLflow params are written
    once; a resumed study logs them again, and a run written by an earlier version of this code
    may hold another spelling (``qv`` where the module names now stand), which MLflow would refuse."""
    have = client.get_run(run_id).data.params if params else {}
    log_params_and_tags(client, run_id, {k: v for k, v in params.items() if k not in have}, tags)


@contextlib.contextmanager
def system_metrics(tracking_uri: str, run_id: str, resume: bool = False, interval_s: float = 10.0) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network; GPU where ``pynvml`` sees one) of this
    node on the run ``run_id`` while the block runs, every ``interval_s``. The study puts them on
    its parent run: trials run in Ray's worker processes, which know nothing of MLflow, and
    per-trial monitors in the driver would all measure the same node. Never stops the study:
    without ``psutil`` or MLflow it logs why and runs the block as is."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=resume, tracking_uri=tracking_uri)
        monitor.start()
    except Exception as e:  # psutil missing, MLflow unreachable
        logger.info("no system metrics on run %s: %s", run_id, (str(e).splitlines() or [type(e).__name__])[0][:200])
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
            _closing_sample(tracking_uri, run_id)


def _closing_sample(tracking_uri: str, run_id: str) -> None:
    """One last sample as the block ends. MLflow's monitor drops the sample it is holding when it
    stops, so a study shorter than the interval would otherwise show no system metrics at all."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        last = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=tracking_uri)
        last.collect_metrics()
        last.publish_metrics(last.aggregate_metrics())
        last.mlflow_logger.flush()
    except Exception as e:  # MLflow gone by now: the study's results are already stored
        logger.info("no closing system metrics on run %s: %s", run_id, (str(e).splitlines() or [type(e).__name__])[0][:200])


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
            f"tags.`{STUDY_TAG}` = {quote(study_name)} and tags.`{ROLE_TAG}` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            log_params_and_tags(client, run_id, {}, {**run_tags, STATE_TAG: "running"})
            return run_id
        logger.warning("No parent run for study %r to resume; creating one.", study_name)

    run = client.create_run(experiment_id, run_name=study_name, tags=run_tags)
    run_id = run.info.run_id
    log_params_and_tags(client, run_id, flatten_params(params), {STATE_TAG: "running"})
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
            log_params_and_tags(client, run_id, {}, tags)
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
        f"tags.`{PARENT_TAG}` = {quote(parent_run_id)} and tags.`{TRIAL_ID_TAG}` = {quote(trial_id)}",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def describe_best(tracking_uri: str, parent_run_id: str, best: dict[str, Any], searched: Iterable[str],
                  metric: str = "accuracy", n_train: int | None = None, summary: dict[str, Any] | None = None) -> str | None:
    """Put the best trial on the study's parent run: its searched values and the values it trained
    with (``lora.alpha``, ``data.size``, the steps …: from its ``config`` and the ``n_train`` split)
    as params ``best.<key>``, tags ``lora_study.best_trial`` / ``lora_study.best_run_id``, and a
    description (``mlflow.note.content``, shown on the run page) naming it with a link to its run;
    with the study's ``summary``, also the refit beside it and the test score (:func:`refit_note`).
    Returns the best trial's run id (``None`` if it has no run)."""
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
    if summary is not None:
        extra, more = refit_note(tracking_uri, parent_run_id, experiment_id, summary, metric)
        tags["mlflow.note.content"] += extra
        tags.update(more)
    trained = {**values, **effective_values(best.get("config") or {}, n_train)}
    log_new_params(client, parent_run_id, flatten_params({f"best.{k}": v for k, v in trained.items()}), tags)
    return run_id


def refit_note(tracking_uri: str, parent_run_id: str, experiment_id: str, summary: dict[str, Any], metric: str) -> tuple[str, dict[str, str]]:
    """The parent run's description lines after the best trial: the refit (a link to its run, its
    score beside the pick's, the verdict) and the test score, or "no test set"; and the tags
    ``lora_study.shipped`` (``pick`` or ``refit``), ``lora_study.refit_trial`` /
    ``lora_study.refit_run_id``, ``lora_study.test``."""
    refit, test, shipped = summary.get("refit") or {}, summary.get("test"), summary.get("shipped") or {}
    lines, tags = [], {"lora_study.shipped": str(shipped.get("model", "pick"))}
    if refit.get("trial_id"):
        run_id = trial_run_id(tracking_uri, parent_run_id, refit["trial_id"])
        name = f"refit of {refit.get('of')}"
        where = f"[{name}](#/experiments/{experiment_id}/runs/{run_id})" if run_id else name
        score = refit.get(metric)
        lines.append(f"**Refit**: {where}" + (f" — {metric} {score:.4f}" if isinstance(score, Number) else "")
                     + f"; {(refit.get('verdict') or {}).get('reason', refit.get('state', ''))}.")
        tags["lora_study.refit_trial"] = refit["trial_id"]
        if run_id:
            tags["lora_study.refit_run_id"] = run_id
    if test is not None:
        if test.get("accuracy") is not None:
            text = (f"accuracy {test['accuracy']:.4f}, f1 {test['f1']:.4f} on {test['n']} examples of {test['path']}, "
                    f"the shipped model ({test.get('model')} {test.get('trial_id')}), scored once")
        else:
            text = test.get("note") or f"not scored ({test.get('error', '')})"
        lines.append(f"**Test**: {text}.")
        tags["lora_study.test"] = text
    return "".join(f"\n\n{line}" for line in lines), tags
