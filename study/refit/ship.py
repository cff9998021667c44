"""Which model a study ships, its registration, and the one score on the test set.

- :func:`decide`: the refit's verdict (``plan.verdict``: better than the pick on the validation
  split, or not) written into the summary's ``refit`` entry, and the summary's ``shipped`` entry;
- :func:`register_refit`: a refit that replaces the pick becomes the next registered version,
  with the ``best`` alias and tags saying which trial it refits and how; one that does not is not
  registered at all (the pick's version keeps the alias);
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

__all__ = ["decide", "register_refit", "score_test", "NO_TEST_SET", "validation_split"]

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
