"""Whether a stored study can be resumed, and whether ``--resume`` may unpickle what it holds.

``Tuner.restore`` unpickles Ray's state, and unpickling runs code: before anything else is touched
(the MLflow parent run, Ray) the state must be readable and signed by this user's key
(:mod:`study.storage.signing`), unless the user vouches for it with ``--trust``. A local study is
resumed where its ``study.json`` was found, never where the file says it lives.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from trainables.config import ConfigError

from .signing import adopt, load_key, start_signing, unreadable_state, untrusted_state
from .studies import StudyPaths, is_remote

__all__ = ["resume_storage", "check_key", "check_state", "state_dirs", "sign_state"]

log = logging.getLogger(__name__)


def resume_storage(paths: StudyPaths, record: dict[str, Any], given: str | None) -> StudyPaths:
    """Where ``--resume`` restores Ray's experiment from (and so unpickles ``tuner.pkl`` from).

    A local study is resumed where its ``study.json`` was found — never where the file says it
    lives — so a study directory cannot send ``--resume`` to unpickle files elsewhere (and a moved
    study resumes in its new place). A study on remote storage is resumed only from the storage
    the user names with ``--storage``."""
    stored = str(record.get("storage") or "")
    if not is_remote(stored):
        here = str(paths.local.parent)
        if stored and Path(stored) != Path(here):
            log.info("study %s was recorded under %s; resuming it where it is now, %s", paths.name, stored, here)
        record["storage"] = here
        return StudyPaths(paths.name, paths.local, here)
    if given != stored:
        raise ConfigError(f"study {paths.name!r} keeps its Ray experiment at {stored}: resume it with "
                          f"`python -m study.run --name {paths.name} --resume --storage {stored}`")
    return paths


def check_key(paths: StudyPaths) -> None:
    """The key the driver signs Ray's state with exists (made on first use) and is the user's
    alone; a problem is one line here, not a traceback once the study runs."""
    if not is_remote(paths.storage):
        load_key(create=True)


def state_dirs(experiment: Path, stages: Sequence[str] = ()) -> list[Path]:
    """Where Ray keeps state a resume unpickles: the study's experiment and the ``stages`` inside
    it that exist (experiments of their own, e.g. a refit's)."""
    return [experiment, *(experiment / stage for stage in stages if (experiment / stage).is_dir())]


def check_state(paths: StudyPaths, trust: bool, stages: Sequence[str] = ()) -> bool:
    """Ray's saved state can be resumed, and (unless ``trust``) this user's driver wrote it, in the
    experiment and in its ``stages``. False: Ray saved nothing yet (the study was stopped before
    its trials started). Every problem is one ``ConfigError`` line saying what to do."""
    name, exp = paths.name, Path(paths.experiment)
    if is_remote(paths.storage):
        if not trust:
            raise ConfigError(f"study {name!r} keeps its Ray state on {paths.storage}, where lora-study does not sign it: "
                              f"resume it with --trust if that storage and everything in it is yours (see docs/trust.md)")
        return True
    if not (exp / "tuner.pkl").is_file():
        if not any(exp.glob("experiment_state-*.json")) and not any(exp.glob("trial_*")):
            return False  # stopped before Ray saved anything: the study starts from its stored config
        raise ConfigError(f"study {name!r} has trials in {exp} but no {exp / 'tuner.pkl'}: Ray cannot resume it; put back an "
                          f"intact copy, or start the study again under a new --name (its results so far stay readable: "
                          f"`python -m dashboards.report --study {name}`)")
    for where in state_dirs(exp, stages):
        bad = unreadable_state(str(where))
        if bad:
            raise ConfigError(f"{where / bad[0]} is unreadable ({bad[1]}): Ray cannot resume study {name!r} from it; put back an "
                              f"intact copy, or start the study again under a new --name (its results so far stay readable: "
                              f"`python -m dashboards.report --study {name}`)")
        untrusted = [] if trust else untrusted_state(str(where))
        if untrusted:
            file, why = min(untrusted, key=lambda u: u[0] != "tuner.pkl")  # the file Ray unpickles first
            what = ("has changed since your lora-study wrote it (edited, truncated or replaced)" if why == "changed"
                    else "was not written by your lora-study on this machine (no signature with your key)")
            more = f" (and {len(untrusted) - 1} more state files)" if len(untrusted) > 1 else ""
            raise ConfigError(f"study {name!r}: {where / file} {what}{more}; --resume would unpickle it, which runs code. "
                              f"If you made this study or trust who did, resume it with --trust (see docs/trust.md)")
    return True


def sign_state(paths: StudyPaths, resume: bool, stages: Sequence[str] = ()) -> None:
    """From here on the driver signs the Ray state it writes; a resumed study's state as it is now
    (checked, or vouched for with ``--trust``) is signed too, so its next resume needs no flag."""
    if is_remote(paths.storage):
        return
    start_signing(paths.experiment, tuple(stages))
    if resume:
        for where in state_dirs(Path(paths.experiment), stages):
            adopt(str(where))
