"""The searcher's Optuna study as an Optuna journal file (JSON lines), written while a study runs.

Why: the study TPE uses lives only in Ray's pickled searcher state, which nothing read-only may
unpickle. A journal file opens in ``optuna-dashboard PATH`` with no code, and the report reads it
as JSON lines without executing anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from .asha import unwrap_searcher

__all__ = ["OptunaJournalCallback", "get_optuna_study", "load_optuna_study", "read_optuna_journal", "save_optuna_study",
           "link_trial"]

logger = logging.getLogger(__name__)


class OptunaJournalCallback(Callback):
    """Keep the searcher's Optuna study in an Optuna journal file while the study runs.

    The study TPE uses lives only in Ray's pickled searcher state, which nothing read-only should
    unpickle.  After every finished trial (and at the end) this writes it to ``path`` with
    :func:`save_optuna_study` (atomic replace): ``optuna-dashboard PATH`` opens it with no code,
    and the report reads it as JSON lines.  Pickled in ``tuner.pkl`` together with the searcher,
    so after a restore it still sees the searcher the Tuner uses.  A failed write is a warning:
    the journal is a view, never a reason to stop a study. The journal's study is named
    ``study_name`` (the lora-study study's name) and its objective ``metric``, so optuna-dashboard
    shows them rather than ``optuna`` and "Objective 0".
    """

    def __init__(self, searcher: Any, path: str | os.PathLike, study_name: str | None = None, metric: str | None = None) -> None:
        self.searcher = searcher
        self.path = Path(path)
        self.study_name = study_name
        self.metric = metric

    def _save(self) -> None:
        try:
            save_optuna_study(self.searcher, self.path, getattr(self, "study_name", None),
                              [self.metric] if getattr(self, "metric", None) else None)
        except Exception as e:
            logger.warning("Could not write the Optuna journal %s: %s", self.path, (str(e).splitlines() or [""])[0][:200])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._save()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._save()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._save()


def get_optuna_study(searcher: Any) -> optuna.Study:
    """The ``optuna.Study`` behind a searcher (also through ConcurrencyLimiter/SearchGenerator)."""
    base = unwrap_searcher(searcher)
    study = getattr(base, "_ot_study", None)
    if study is None:
        raise ValueError(f"{type(base).__name__} has no Optuna study (space not set yet?)")
    return study


def load_optuna_study(experiment_path: str | os.PathLike) -> optuna.Study:
    """The Optuna study from a (local) Tune experiment dir's ``searcher-state-*.pkl``.

    This *unpickles*: only for an experiment this process trusts (its own, e.g. in tests or right
    after ``Tuner.restore``). Read-only tools use :func:`read_optuna_journal` instead.
    """
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(experiment_path))
    return get_optuna_study(searcher)


def read_optuna_journal(path: str | os.PathLike) -> optuna.Study:
    """The study in an Optuna journal file written by :func:`save_optuna_study`, copied into
    memory: the journal is JSON lines, so reading it runs no code and leaves the file as it was."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    summaries = storage.get_all_studies()
    if len(summaries) != 1:
        raise ValueError(f"{path}: expected one study, found {len(summaries)}")
    name = summaries[0].study_name
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=name, storage=memory)


def save_optuna_study(
    searcher_or_study: Any, path: str | os.PathLike, study_name: str | None = None, metric_names: list[str] | None = None
) -> Path:
    """Write the study's trials to an Optuna journal file (``JournalStorage``), as ``study_name``
    with its objectives named ``metric_names`` when given.

    The in-memory study only lives in Ray's pickled searcher state; a journal
    file can be opened by plain Optuna (``optuna.load_study(study_name=...,
    storage=JournalStorage(JournalFileBackend(path)))``) for ``optuna.importance``
    and dashboards.  The file is replaced atomically, so calling this again
    after a resumed run just refreshes it.
    """
    study = (
        searcher_or_study
        if isinstance(searcher_or_study, optuna.Study)
        else get_optuna_study(searcher_or_study)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # the journal backend creates the file itself
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(tmp))
        with _quiet("optuna.storages.journal"):  # every rewrite "creates" the study: not news for study.log
            saved = optuna.create_study(study_name=study_name or study.study_name, storage=storage, directions=study.directions)
        for key, value in study.user_attrs.items():
            saved.set_user_attr(key, value)
        # The trials that ran or run; not the WAITING ones a searcher queued and never asked for (the
        # learning-rate prior queues its start-up draws): a dashboard would show them as trials.
        saved.add_trials([t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING])
        if metric_names:
            optuna.load_study(study_name=study_name or study.study_name, storage=storage).set_metric_names(metric_names)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def _quiet(name: str):
    """Optuna's INFO lines from logger ``name`` held back for the block (its warnings still pass)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def link_trial(searcher: Any, ray_trial_id: str, attrs: dict[str, str]) -> bool:
    """Set user attributes (e.g. the trial's MLflow run id) on the Optuna trial the searcher asked
    for Ray trial ``ray_trial_id``; False when there is none or it is already finished (Optuna
    freezes finished trials). Works for every Optuna-backed searcher (Ray's ``OptunaSearch``
    keeps Ray trial id → Optuna trial)."""
    trial = getattr(unwrap_searcher(searcher), "_ot_trials", {}).get(ray_trial_id)
    if trial is None:
        return False
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except Exception as e:  # a finished trial, or a searcher of another kind
        logger.info("Optuna trial of %s not linked: %s", ray_trial_id, e)
        return False
    return True
