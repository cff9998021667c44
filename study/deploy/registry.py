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

__all__ = ["log_best_adapter"]

log = logging.getLogger(__name__)


def _version_description(summary: dict[str, Any], meta: dict[str, Any], name: str, run_id: str) -> str:
    best, metric = summary["best"], summary.get("metric", "accuracy")
    params = ", ".join(f"{k}={v}" for k, v in sorted((best.get("params") or {}).items()))
    text_col = meta["config"]["data"].get("text_column", "sentence")
    return (f"Best trial of lora-study study {summary['name']!r}: trial {best['trial_id']} (MLflow run {run_id}), "
            f"dev {metric} {best.get(metric, float('nan')):.4f}. Searched: {params or '-'}. Base model {meta['base_model']}, "
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
    import mlflow
    from mlflow import MlflowClient

    from ..tracking.runs import trial_run_id
    from ..tracking.trust import check_run_artifacts
    from .serving import log_model

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
    info = log_model(out, run_id, registered_name)
    version = str(info.registered_model_version)
    metric, mode = summary.get("metric", "accuracy"), summary.get("mode", "max")
    tags = {key: best[key] for key in ("accuracy", "f1", "eval_loss", "trainable_params", "samples_seen") if best.get(key) is not None}
    tags.update({f"param.{k}": v for k, v in (best.get("params") or {}).items()})
    tags.update(study=summary["name"], trial_id=best["trial_id"], base_model=meta["base_model"], pooling=meta.get("pooling", "cls"))
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.update_model_version(registered_name, version, description=_version_description(summary, meta, registered_name, run_id))
    alias = None
    if _is_better(client, registered_name, best.get(metric), metric, mode):
        client.set_registered_model_alias(registered_name, "best", version)
        alias = "best"
    return {"name": registered_name, "version": version, "uri": f"models:/{registered_name}/{version}", "run_id": run_id,
            "alias": alias, "export_dir": str(out)}
