"""The study's best adapter in the MLflow model registry: logged under its trial's run, registered, aliased.

Why: a registered version is what users serve (``mlflow models serve -m models:/NAME@best``); it
must say where it came from (source run = the best trial's own run, its hyperparameters and metrics
as tags) and the ``best`` alias must only ever move to a better version, since one registered name
may be shared by several studies.

Registering is idempotent by *what* is registered: each version carries the tags ``study``,
``trial_id`` and ``checkpoint`` (the checkpoint's directory name), set when the version is
created, and a checkpoint already registered under the name is found by them and not registered
again — wherever the study's files or its tracking store have moved since.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from trainables import META_FILE

from ..tracking.runs import quote
from .export import export_checkpoint

__all__ = ["log_best_adapter", "log_adapter", "tag_version", "find_registered", "identity_tags"]

log = logging.getLogger(__name__)


def _version_description(headline: str, entry: dict[str, Any], metric: str, meta: dict[str, Any], name: str, run_id: str) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted((entry.get("params") or {}).items()))
    text_col = meta["config"]["data"].get("text_column", "sentence")
    return (f"{headline}: trial {entry['trial_id']} (MLflow run {run_id}), "
            f"{metric} {entry.get(metric, float('nan')):.4f}. Searched: {params or '-'}. Base model {meta['base_model']}, "
            f"{meta.get('pooling', 'cls')} pooling, labels {meta['label_names']}. Input: a list of texts or a table with a "
            f"{text_col!r} or 'text' column; output: label, confidence. Self-contained (its code in code/, requirements.txt "
            f"without lora-study): serve with mlflow models serve -m models:/{name}@best --env-manager virtualenv, or "
            "--env-manager local in an environment with torch and the model's requirements.txt installed.")


def _is_better(client: Any, name: str, value: float | None, metric: str, mode: str) -> bool:
    """Whether a new version scoring ``value`` should take the ``best`` alias from the version
    holding it (a registered model name may be shared by several studies)."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, "best")
    except MlflowException:
        return True  # no version holds the alias yet
    held = current.tags.get(metric)
    if value is None or held is None:
        return held is None
    return value >= float(held) if mode == "max" else value <= float(held)


def identity_tags(study: str, entry: dict[str, Any]) -> dict[str, str]:
    """What a registered version is: the study, the trial and its checkpoint's directory name
    (never its path, which changes when a study is moved)."""
    return {"study": str(study), "trial_id": str(entry["trial_id"]), "checkpoint": Path(str(entry["checkpoint"]).rstrip("/")).name}


def find_registered(client: Any, name: str, identity: dict[str, str]) -> Any | None:
    """The version of ``name`` that registered this checkpoint, or ``None``. A version without
    a ``checkpoint`` tag matches by study and trial alone."""
    from mlflow.exceptions import MlflowException

    query = f"name = {quote(name)} and tags.study = {quote(identity['study'])} and tags.trial_id = {quote(identity['trial_id'])}"
    try:
        found = client.search_model_versions(query, order_by=["version_number ASC"])
    except MlflowException:  # no such registered model yet
        return None
    return next((v for v in found if v.tags.get("checkpoint", identity["checkpoint"]) == identity["checkpoint"]), None)


def _version_tags(study: str, entry: dict[str, Any], meta: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, str]:
    tags = {key: entry[key] for key in ("accuracy", "f1", "eval_loss", "dev_accuracy", "trainable_params", "samples_seen")
            if entry.get(key) is not None}
    tags.update({f"param.{k}": v for k, v in (entry.get("params") or {}).items()})
    tags.update(base_model=meta["base_model"], pooling=meta.get("pooling", "cls"), **(extra or {}), **identity_tags(study, entry))
    return {k: str(v) for k, v in tags.items()}


def _register(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], entry: dict[str, Any], name: str, out: Path,
              headline: str, tags: dict[str, Any] | None) -> tuple[Any, str, Path]:
    """Export ``entry``'s checkpoint, log it under its trial's run (plain files on the parent run
    too, under ``out``'s name) and register it with its tags; (model version, source run id, export dir)."""
    import mlflow
    from mlflow import MlflowClient

    from ..tracking.runs import trial_run_id
    from ..tracking.trust import check_run_artifacts
    from .logged_model import log_model, model_name

    client = MlflowClient(tracking_uri)
    run_id = trial_run_id(tracking_uri, parent_run_id, entry["trial_id"])
    if run_id is None:
        log.warning("trial %s has no MLflow run under %s; the model is logged under the study's run", entry["trial_id"], parent_run_id)
        run_id = parent_run_id
    for run in {parent_run_id, run_id}:  # before any upload: the store picks where artifacts go
        check_run_artifacts(client, run, tracking_uri)
    out = export_checkpoint(entry["checkpoint"], out, {**entry, "study": summary["name"]}, force=True)
    meta = json.loads((out / META_FILE).read_text())
    client.log_artifacts(parent_run_id, str(out), out.name)
    with _fluent_tracking_uri(tracking_uri):
        info = log_model(out, run_id, model_name(summary["name"], entry["trial_id"]), int(entry.get("samples_seen") or 0), meta["base_model"])
        version = mlflow.register_model(info.model_uri, name, tags=_version_tags(summary["name"], entry, meta, tags))
    metric = summary.get("metric", "accuracy")
    client.update_model_version(name, version.version, description=_version_description(headline, entry, metric, meta, name, run_id))
    return version, run_id, out


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``register_model``) pointed at ``uri`` for the block, and
    back where it was after: ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which
    every study started later from this process (and its children) would otherwise inherit."""
    import mlflow

    before, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_best_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], registered_name: str, paths: Any) -> dict[str, Any]:
    """Register the study's best checkpoint (:func:`log_adapter`) as ``best_adapter``."""
    return log_adapter(tracking_uri, parent_run_id, summary, summary["best"], registered_name, Path(paths.local) / "best_adapter",
                       headline=f"Best trial of lora-study study {summary['name']!r}")


def log_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], entry: dict[str, Any], registered_name: str,
                out: Path, headline: str, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register ``entry``'s checkpoint (a trial of the study: ``trial_id``, ``checkpoint``,
    ``params`` and its metrics) as a version of ``registered_name`` — or find the version that
    already holds it — with a description and tags (its metrics, its values as ``param.<key>``,
    and ``tags``), and move the alias ``best`` to it when it is at least as good as the version
    holding it; returns the registry coordinates."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    version = find_registered(client, registered_name, identity_tags(summary["name"], entry))
    if version is not None:
        log.info("trial %s's checkpoint is registered already as %s version %s; not registering it again",
                 entry["trial_id"], registered_name, version.version)
        run_id = version.run_id
    else:
        version, run_id, out = _register(tracking_uri, parent_run_id, summary, entry, registered_name, out, headline, tags)
    number = str(version.version)
    metric, mode = summary.get("metric", "accuracy"), summary.get("mode", "max")
    alias = None
    if _is_better(client, registered_name, entry.get(metric), metric, mode):
        client.set_registered_model_alias(registered_name, "best", number)
        alias = "best"
    return {"name": registered_name, "version": number, "uri": f"models:/{registered_name}/{number}", "run_id": run_id,
            "alias": alias, "export_dir": str(out)}


def tag_version(tracking_uri: str, registration: dict[str, Any], tags: dict[str, Any]) -> None:
    """Add ``tags`` to a registered version (``registration``: what :func:`log_adapter` returned)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(registration["name"], registration["version"], key, str(value))
