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

import json
import logging
from pathlib import Path
from typing import Any

from trainables import META_FILE

from ..tracking.runs import quote
from .export import export_checkpoint

__all__ = ["log_best_adapter", "find_registered", "identity_tags"]

log = logging.getLogger(__name__)


def _version_description(summary: dict[str, Any], meta: dict[str, Any], name: str, run_id: str) -> str:
    best, metric = summary["best"], summary.get("metric", "accuracy")
    params = ", ".join(f"{k}={v}" for k, v in sorted((best.get("params") or {}).items()))
    text_col = meta["config"]["data"].get("text_column", "sentence")
    return (f"Best trial of lora-study study {summary['name']!r}: trial {best['trial_id']} (MLflow run {run_id}), "
            f"dev {metric} {best.get(metric, float('nan')):.4f}. Searched: {params or '-'}. Base model {meta['base_model']}, "
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


def identity_tags(study: str, best: dict[str, Any]) -> dict[str, str]:
    """What a registered version is: the study, the trial and its checkpoint's directory name
    (never its path, which changes when a study is moved)."""
    return {"study": str(study), "trial_id": str(best["trial_id"]), "checkpoint": Path(str(best["checkpoint"]).rstrip("/")).name}


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


def _version_tags(summary: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    best = summary["best"]
    tags = {key: best[key] for key in ("accuracy", "f1", "eval_loss", "trainable_params", "samples_seen") if best.get(key) is not None}
    tags.update({f"param.{k}": v for k, v in (best.get("params") or {}).items()})
    tags.update(base_model=meta["base_model"], pooling=meta.get("pooling", "cls"), **identity_tags(summary["name"], best))
    return {k: str(v) for k, v in tags.items()}


def _register(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], name: str, paths: Any) -> tuple[Any, str, Path]:
    """Export the best checkpoint, log it under its trial's run (plain files on the parent run
    too) and register it with its tags; (model version, source run id, export dir)."""
    import mlflow
    from mlflow import MlflowClient

    from ..tracking.runs import trial_run_id
    from ..tracking.trust import check_run_artifacts
    from .logged_model import log_model, model_name

    best = summary["best"]
    client = MlflowClient(tracking_uri)
    run_id = trial_run_id(tracking_uri, parent_run_id, best["trial_id"])
    if run_id is None:
        log.warning("trial %s has no MLflow run under %s; the model is logged under the study's run", best["trial_id"], parent_run_id)
        run_id = parent_run_id
    for run in {parent_run_id, run_id}:  # before any upload: the store picks where artifacts go
        check_run_artifacts(client, run, tracking_uri)
    out = export_checkpoint(best["checkpoint"], Path(paths.local) / "best_adapter", {**best, "study": summary["name"]}, force=True)
    meta = json.loads((out / META_FILE).read_text())
    client.log_artifacts(parent_run_id, str(out), "best_adapter")
    mlflow.set_tracking_uri(tracking_uri)
    info = log_model(out, run_id, model_name(summary["name"], best["trial_id"]), int(best.get("samples_seen") or 0), meta["base_model"])
    version = mlflow.register_model(info.model_uri, name, tags=_version_tags(summary, meta))
    client.update_model_version(name, version.version, description=_version_description(summary, meta, name, run_id))
    return version, run_id, out


def log_best_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], registered_name: str, paths: Any) -> dict[str, Any]:
    """Register the study's best checkpoint as a version of ``registered_name`` — or find the
    version that already holds it — and give it the alias ``best`` if it is better than the
    version holding it; returns the registry coordinates."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    best = summary["best"]
    version = find_registered(client, registered_name, identity_tags(summary["name"], best))
    if version is not None:
        log.info("trial %s's checkpoint is registered already as %s version %s; not registering it again",
                 best["trial_id"], registered_name, version.version)
        run_id, out = version.run_id, Path(paths.local) / "best_adapter"
    else:
        version, run_id, out = _register(tracking_uri, parent_run_id, summary, registered_name, paths)
    number = str(version.version)
    metric, mode = summary.get("metric", "accuracy"), summary.get("mode", "max")
    alias = None
    if _is_better(client, registered_name, best.get(metric), metric, mode):
        client.set_registered_model_alias(registered_name, "best", number)
        alias = "best"
    return {"name": registered_name, "version": number, "uri": f"models:/{registered_name}/{number}", "run_id": run_id,
            "alias": alias, "export_dir": str(out)}
