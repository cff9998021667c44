"""Which model a study ships, its registration, and the one score on the test set.

- :func:`decide`: the refit's verdict (``plan.verdict``: better than the pick on the validation
  split, or not) written into the summary's ``refit`` entry, and the summary's ``shipped`` entry;
- :func:`register_refit`: a refit that replaces the pick becomes the next registered version,
  with the ``best`` alias and tags saying which trial it refits and how; one that does not is not
  registered at all (the pick's version keeps the alias);
- :func:`refit_and_register` and :func:`ship`: the two steps the study's driver runs after the
  search, built from the three above;
- :func:`score_test`: the shipped model on ``data.test_path``, once: a resumed study reuses the
  score it already has for the same checkpoint, so the test set is never read twice for one model
  and nothing is ever chosen after seeing it.

Every step is idempotent across ``--resume`` (a finished study resumed, or one that crashed
between two steps): it compares with the ``summary.json`` the study had before (``previous``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plan import verdict

if TYPE_CHECKING:
    from ..config import StudyConfig

__all__ = ["decide", "register_refit", "score_test", "refit_and_register", "ship", "NO_TEST_SET", "validation_split"]

log = logging.getLogger(__name__)

NO_TEST_SET = "no test set"


def validation_split(cfg: StudyConfig) -> str:
    """What the study metric is measured on: the held-out ``validation`` split, else ``dev``."""
    return "validation" if cfg.data.holdout_size else "dev"


def decide(summary: dict[str, Any], cfg: StudyConfig) -> dict[str, Any]:
    """Set ``summary["refit"]["verdict"]`` (when a refit finished) and ``summary["shipped"]``: the
    refit when it beats the pick on the validation split, else the pick. Returns ``shipped``."""
    best, refit, metric = summary.get("best") or {}, summary.get("refit"), cfg.study.metric
    if refit:
        refit["split"] = validation_split(cfg)
    if refit and refit.get("state") == "completed":
        refit["verdict"] = verdict(best.get(metric), refit.get(metric), metric, cfg.study.mode, validation_split(cfg))
    replaces = bool(refit and (refit.get("verdict") or {}).get("replaces"))
    source = refit if replaces else best
    summary["shipped"] = {"model": "refit" if replaces else "pick", "trial_id": source.get("trial_id"),
                          "checkpoint": source.get("checkpoint"), "registered_model": None}
    return summary["shipped"]


def _same(before: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    return bool(before) and before.get("trial_id") == now.get("trial_id") and before.get("checkpoint") == now.get("checkpoint")


def register_refit(tracking_uri: str, parent: str, summary: dict[str, Any], registered_name: str, paths: Any,
                   previous: dict[str, Any]) -> dict[str, Any] | None:
    """Register the refit that replaces the pick (unless ``previous`` already registered this same
    checkpoint); ``None`` when the registry cannot be reached (the study's results stand)."""
    from ..deploy.registry import log_adapter
    from ..tracking.summary import refit_values

    refit, before = summary["refit"], previous.get("refit") or {}
    if _same(before, refit) and before.get("registered_model"):
        log.info("refit already registered as %s; not registering it again", before["registered_model"].get("uri"))
        return before["registered_model"]
    tags = {"refit_of": refit["of"], "refit.lr": refit["lr"], "refit.lr_factor": refit["lr_factor"],
            "refit.epochs": refit["epochs"], "refit.data_size": refit["data_size"] if refit["data_size"] is not None else "all",
            "refit.train_sentences": refit["plan"]["n_train"], "refit.verdict": refit["verdict"]["reason"]}
    entry = {**refit, "params": refit_values(summary)}
    headline = (f"Refit of trial {refit['of']} of lora-study study {summary['name']!r} on {refit['plan']['n_train']:,} sentences "
                f"× {refit['epochs']:g} epochs at lr {refit['lr']:.2e}")
    try:
        return log_adapter(tracking_uri, parent, summary, entry, registered_name, Path(paths.local) / "refit_adapter", headline, tags)
    except Exception as e:  # the study's results stand even if the registry is unreachable
        log.error("could not log/register the refit: %s", (str(e).splitlines() or [type(e).__name__])[0][:300])
        return None


def score_test(cfg: StudyConfig, summary: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The summary's ``test`` entry: ``{"path": None, "note": "no test set"}`` without a test file,
    else the shipped model's ``accuracy``, ``f1``, ``eval_loss`` and ``n`` on it, with which model
    (``pick`` or ``refit``, trial and checkpoint) was scored. Scored once per shipped checkpoint."""
    shipped = summary.get("shipped") or {}
    if not cfg.data.test_path:
        return {"path": None, "note": NO_TEST_SET}
    before = previous.get("test") or {}
    if _same(before, shipped) and before.get("accuracy") is not None and before.get("path") == str(Path(cfg.data.test_path).resolve()):
        return before
    entry = {"path": str(Path(cfg.data.test_path).resolve()), "model": shipped.get("model"),
             "trial_id": shipped.get("trial_id"), "checkpoint": shipped.get("checkpoint")}
    try:
        entry.update(_score(shipped))
        log.info("scored the test set %s on the shipped %s (trial %s): accuracy %.4f", entry["path"], entry["model"],
                 entry["trial_id"], entry["accuracy"])
    except Exception as e:  # a study's results stand; say why there is no number
        entry["error"] = (str(e).splitlines() or [type(e).__name__])[0][:300]
        log.error("could not score the test set %s: %s", entry["path"], entry["error"])
    return entry


def _score(shipped: dict[str, Any]) -> dict[str, Any]:
    """``trainables.score_test`` on the shipped model: its export when it was registered, else an
    export of its checkpoint made here (a checkpoint may live on remote storage)."""
    from trainables import score_test as score

    from ..deploy.export import export_checkpoint

    export = (shipped.get("registered_model") or {}).get("export_dir")
    if export and Path(export).is_dir():
        return score(export)
    with tempfile.TemporaryDirectory(prefix="lora-test-") as tmp:
        return score(export_checkpoint(shipped["checkpoint"], Path(tmp) / "model", force=True))


def refit_and_register(cfg: StudyConfig, paths: Any, tracking_uri: str, parent: str, summary: dict[str, Any],
                       previous: dict[str, Any], n_split: int, log_path: Path) -> OSError | bool | None:
    """The refit of the pick (``summary["refit"]``), its verdict and, when it wins, its
    registration. ``summary.json`` is written before it starts (the pick's registration is then on
    disk, and a crash during the refit cannot register the pick twice) and after its
    registration. Returns ``None`` when the refit finished (or failed), else why the study stops:
    an ``OSError`` (disk full) or ``True`` (interrupted; ``--resume`` continues the refit)."""
    from ..console.logs import stderr_to_log
    from ..storage.studies import write_json
    from .runner import run_refit

    try:
        write_json(paths.summary_json, {**summary, "refit": {"of": summary["best"]["trial_id"], "state": "running"}})
    except OSError as e:
        return e
    try:
        summary["refit"] = run_refit(cfg, paths, tracking_uri, parent, summary["best"], n_split)
    except KeyboardInterrupt:
        return True
    if summary["refit"]["state"] == "unfinished":
        return True
    decide(summary, cfg)
    if summary["refit"].get("verdict", {}).get("replaces"):
        name = cfg.mlflow.registered_model or f"lora-study-{paths.name}"
        with stderr_to_log(log_path):  # MLflow prints "Successfully registered model …" straight to stderr
            summary["refit"]["registered_model"] = register_refit(tracking_uri, parent, summary, name, paths, previous)
        try:
            write_json(paths.summary_json, summary)
        except OSError as e:
            return e
    return None


def ship(cfg: StudyConfig, tracking_uri: str, summary: dict[str, Any], previous: dict[str, Any]) -> None:
    """Which model the study ships (the refit when it won, else the pick), its registration, and
    its one score on the test set, also tagged on its registered version."""
    from ..deploy.registry import tag_version

    shipped = decide(summary, cfg)
    refit = summary.get("refit") or {}
    shipped["registered_model"] = refit.get("registered_model") if shipped["model"] == "refit" else summary.get("registered_model")
    summary["test"] = score_test(cfg, summary, previous) if shipped.get("checkpoint") else None
    test = summary["test"]
    if test and shipped["registered_model"]:
        tags = {"test": test.get("note", "")} if not test.get("path") else \
            {f"test_{k}": test[k] for k in ("accuracy", "f1", "eval_loss", "n", "path") if test.get(k) is not None}
        try:
            tag_version(tracking_uri, shipped["registered_model"], tags)
        except Exception as e:  # bookkeeping only: the score stands in summary.json and on the parent run
            log.warning("could not tag the shipped model version with its test score: %s", e)
