"""The study's best adapter in the MLflow model registry: logged under its trial's run, registered, aliased.

Why: a registered version is what users serve (``mlflow models serve -m models:/NAME@best``); it
must say where it came from (source run = the best trial's own run, its hyperparameters and metrics
as tags) and the ``best`` alias must only ever move to a better version, since one registered name
may be shared by several studies.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trainables import META_FILE

from .export import export_checkpoint

__all__ = ["log_best_adapter", "log_adapter", "tag_version"]

log = logging.getLogger(__name__)


def _version_description(headline: str, entry: dict[str, Any], metric: str, meta: dict[str, Any], name: str, run_id: str) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted((entry.get("params") or {}).items()))
    text_col = meta["config"]["data"].get("text_column", "sentence")
    return (f"{headline}: trial {entry['trial_id']} (MLflow run {run_id}), "
            f"{metric} {entry.get(metric, float('nan')):.4f}. Searched: {params or '-'}. Base model {meta['base_model']}, "
            f"{meta.get('pooling', 'cls')} pooling, labels {meta['label_names']}. Input: a list of texts or a table with a "
            f"{text_col!r} or 'text' column; output: label, confidence. Serve: mlflow models serve -m models:/{name}@best "
            "--env-manager local (with the lora-study virtualenv's bin on PATH).")


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


def log_best_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], registered_name: str, paths: Any) -> dict[str, Any]:
    """Export the best trial, log it as a pyfunc model under the best trial's own MLflow run
    (plain files on the parent run too), register it with a description, the trial's
    hyperparameters and metrics as tags, and the alias ``best``; returns the registry coordinates."""
    return log_adapter(tracking_uri, parent_run_id, summary, summary["best"], registered_name, Path(paths.local) / "best_adapter",
                       headline=f"Best trial of lora-study study {summary['name']!r}")


def log_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], entry: dict[str, Any], registered_name: str,
                out: Path, headline: str, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``entry``'s checkpoint (a trial of the study: ``trial_id``, ``checkpoint``, ``params``
    and its metrics) to ``out``, log it under that trial's own MLflow run (its files on the parent
    run too, under ``out``'s name), register it with a description and tags (its metrics, its
    values as ``param.<key>``, and ``tags``), and move the alias ``best`` to it when it is at least
    as good as the version holding it; returns the registry coordinates."""
    import mlflow
    from mlflow import MlflowClient

    from ..tracking.runs import trial_run_id
    from .serving import log_model

    out = export_checkpoint(entry["checkpoint"], out, {**entry, "study": summary["name"]}, force=True)
    meta = json.loads((out / META_FILE).read_text())
    client = MlflowClient(tracking_uri)
    client.log_artifacts(parent_run_id, str(out), out.name)
    run_id = trial_run_id(tracking_uri, parent_run_id, entry["trial_id"])
    if run_id is None:
        log.warning("trial %s has no MLflow run under %s; the model is logged under the study's run", entry["trial_id"], parent_run_id)
        run_id = parent_run_id
    mlflow.set_tracking_uri(tracking_uri)
    info = log_model(out, run_id, registered_name)
    version = str(info.registered_model_version)
    metric, mode = summary.get("metric", "accuracy"), summary.get("mode", "max")
    all_tags = {key: entry[key] for key in ("accuracy", "f1", "eval_loss", "dev_accuracy", "trainable_params", "samples_seen")
                if entry.get(key) is not None}
    all_tags.update({f"param.{k}": v for k, v in (entry.get("params") or {}).items()})
    all_tags.update(study=summary["name"], trial_id=entry["trial_id"], base_model=meta["base_model"], pooling=meta.get("pooling", "cls"))
    all_tags.update(tags or {})
    for key, value in all_tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.update_model_version(registered_name, version, description=_version_description(headline, entry, metric, meta, registered_name, run_id))
    alias = None
    if _is_better(client, registered_name, entry.get(metric), metric, mode):
        client.set_registered_model_alias(registered_name, "best", version)
        alias = "best"
    return {"name": registered_name, "version": version, "uri": f"models:/{registered_name}/{version}", "run_id": run_id,
            "alias": alias, "export_dir": str(out)}


def tag_version(tracking_uri: str, registration: dict[str, Any], tags: dict[str, Any]) -> None:
    """Add ``tags`` to a registered version (``registration``: what :func:`log_adapter` returned)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(registration["name"], registration["version"], key, str(value))
