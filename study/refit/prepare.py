"""Before a refit starts: is there a trial to refit, and will its refit fit in memory?

Both are checked before Ray starts (a new study with ``refit.enabled``, or ``--resume --refit``
on a finished one), so a refit that cannot run is one line, not a crash after the search.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError, TrialConfig

if TYPE_CHECKING:
    from ..config import StudyConfig
    from ..storage.studies import StudyPaths

__all__ = ["check_fits", "widest_trial", "add_refit", "finished_pick"]


def widest_trial(cfg: StudyConfig) -> TrialConfig:
    """The study's base trial config with the largest batch size and text length its search can
    take: what a refit needs most memory for, before the search has picked anything."""
    flat = cfg.trial.to_flat()
    for key in ("train.batch_size", "data.max_length"):
        if key in cfg.search:
            flat[key] = max(v for v in cfg.search[key].values_to_check())
    return TrialConfig.from_dict(flat)


def check_fits(cfg: StudyConfig, trial: TrialConfig, address: str | None) -> None:
    """The refit of ``trial`` fits in this machine's memory (checked where trials run here)."""
    from .runner import check_refit_fits

    check_refit_fits(cfg, trial, local=not address)


def add_refit(paths: StudyPaths, record: dict[str, Any], cfg: StudyConfig, address: str | None) -> StudyConfig:
    """``--resume --refit``: the study's config with ``refit.enabled`` (recorded in ``study.json``,
    so a crash during the refit resumes it), after checking there is a finished trial to refit and
    that its refit fits in memory."""
    pick = finished_pick(paths, record)
    cfg = cfg.model_copy(update={"refit": cfg.refit.model_copy(update={"enabled": True})})
    check_fits(cfg, TrialConfig.from_dict(pick["config"]), address)
    record["config"] = cfg.model_dump(mode="json")
    return cfg


def finished_pick(paths: StudyPaths, record: dict[str, Any]) -> dict[str, Any]:
    """The trial a refit would train again: ``summary.json``'s best, else the best finished trial
    on disk; a one-line ``ConfigError`` when the study has none."""
    from ..tracking.summary import summarize

    try:
        best = json.loads(paths.summary_json.read_text()).get("best") if paths.summary_json.is_file() else None
    except (OSError, json.JSONDecodeError):
        best = None
    if not best:
        try:
            summary = summarize(paths, record)
            best = summary["best"] if summary["trials"]["completed"] + summary["trials"]["pruned"] else None
        except ConfigError:  # no Ray experiment state yet
            best = None
    if not best or not best.get("config"):
        raise ConfigError(f"--refit: study {paths.name!r} has no finished trial to refit; finish its search first with "
                          f"`python -m study.run --name {paths.name} --resume`")
    return best
