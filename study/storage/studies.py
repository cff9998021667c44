"""Where a study lives: its name, its directory, its ``study.json`` and the lock a running driver holds.

Layout (local default): ``./studies/<name>/`` holds Ray's experiment (trial dirs, checkpoints,
``tuner.pkl``) plus the study's own files: ``study.json`` (the validated config, storage, tracking
URI, MLflow parent run id), ``optuna-journal.log`` and ``summary.json``. With ``--storage s3://…``
or a shared mount Ray's part goes there and ours stays in ``./studies/<name>/``. Beside the study
dirs, ``.<name>.lock`` is the lock a running driver holds. Export, the dashboards and ``--resume``
all start from ``study.json``. A study name is validated wherever one is taken, so no name leads
outside the studies root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainables.config import ConfigError

__all__ = [
    "StudyPaths", "study_paths", "check_name", "write_json", "read_study", "list_studies", "lock_study", "file_lock", "check_not_running",
    "disk_full_message", "now_iso", "LOCAL_ROOT", "is_remote", "MAX_NAME_LEN",
]

LOCAL_ROOT = Path(os.environ.get("LORA_STUDY_HOME", "./studies"))

#: Longest study name: it becomes a directory, an MLflow experiment and ``lora-study-<name>`` in
#: the registry, and Ray nests it in session paths that must stay under PATH_MAX.
MAX_NAME_LEN = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_remote(path: str) -> bool:
    return "://" in path


def check_name(name: str) -> str:
    """A study name is one path component: letters, digits, ``-``, ``_``, ``.``, starting with a
    letter or digit (so never ``..`` or a hidden file), at most ``MAX_NAME_LEN`` characters.
    Raises ``ConfigError`` (one line) otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"study name {str(name)[:MAX_NAME_LEN]!r}: use letters, digits, '-', '_' and '.' only, "
                          f"starting with a letter or digit")
    if len(name) > MAX_NAME_LEN:
        raise ConfigError(f"study name {name[:40]!r}… is {len(name)} characters long; the limit is {MAX_NAME_LEN}")
    return name


@dataclass(frozen=True)
class StudyPaths:
    name: str
    local: Path  # study.json, summary.json, exports
    storage: str  # Ray storage root (local dir or URI)

    @property
    def experiment(self) -> str:
        """Ray's experiment directory (what ``Tuner.restore`` takes)."""
        return f"{self.storage.rstrip('/')}/{self.name}" if is_remote(self.storage) else str(Path(self.storage) / self.name)

    @property
    def study_json(self) -> Path:
        return self.local / "study.json"

    @property
    def summary_json(self) -> Path:
        return self.local / "summary.json"

    @property
    def journal(self) -> Path:
        """The searcher's Optuna study as an Optuna journal file (``optuna-dashboard`` opens it)."""
        return self.local / "optuna-journal.log"

    @property
    def lock_file(self) -> Path:
        return self.local.parent / f".{self.name}.lock"


def _inside(child: Path, root: Path) -> bool:
    child, root = Path(os.path.normpath(child)), Path(os.path.normpath(root))
    return child == root or root in child.parents


def study_paths(name: str, storage: str | None = None) -> StudyPaths:
    """Paths of study ``name`` (validated); local storage holds both parts in one directory."""
    check_name(name)
    storage = storage or str(LOCAL_ROOT)
    if not is_remote(storage):
        storage = str(Path(storage).expanduser().resolve())
        paths = StudyPaths(name, Path(storage) / name, storage)
        root = Path(storage)
    else:
        root = LOCAL_ROOT.resolve()
        paths = StudyPaths(name, root / name, storage)
    if not _inside(paths.local, root) or paths.local == root:  # unreachable with a checked name; kept as the rule
        raise ConfigError(f"study name {name!r} leads outside the studies root {root}")
    return paths


def disk_full_message(path: str | os.PathLike, what: str = "writing") -> str:
    """``disk full writing PATH (N MiB free of M MiB on MOUNT)``: the start of every disk-full line."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        room = f"{free / 2**20:.1f} MiB free of {total / 2**20:.1f} MiB"
    except OSError:
        room = "free space unknown"
    return f"disk full {what} {path} ({room})"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a crash or a full disk never leaves half a study.json behind (the temp file is
    removed and the old version stays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, disk_full_message(path)) from None
        raise


def list_studies(storage: str | None = None) -> list[str]:
    root = Path(storage or LOCAL_ROOT)
    if is_remote(str(root)) or not root.is_dir():
        root = LOCAL_ROOT
    return sorted(p.parent.name for p in root.glob("*/study.json")) if root.is_dir() else []


def read_study(name: str, storage: str | None = None) -> tuple[StudyPaths, dict[str, Any]]:
    """``study.json`` of an existing study, or a one-line error listing the known ones."""
    paths = study_paths(name, storage)
    if not paths.study_json.is_file():
        # a study started with --storage elsewhere keeps its study.json under ./studies/<name>
        alt = (LOCAL_ROOT / name / "study.json").resolve()
        if storage and alt.is_file():
            paths = StudyPaths(name, alt.parent, storage)
        else:
            known = list_studies(storage)
            raise ConfigError(
                f"no study named {name!r} under {paths.local.parent}"
                + (f" (known: {', '.join(known)})" if known else " (no studies there yet)")
            )
    try:
        record = json.loads(paths.study_json.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{paths.study_json}: corrupt ({e})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{paths.study_json}: not a lora-study record")
    return StudyPaths(name, paths.local, record.get("storage", paths.storage)), record


def file_lock(path: Path, blocking: bool = True) -> IO[str] | None:
    """An exclusive ``fcntl`` lock on ``path`` (created if missing), held until the returned file
    is closed or the process dies — a SIGKILLed driver never leaves a stale lock. ``None`` when
    ``blocking=False`` and another process holds it. The file is opened close-on-exec, so Ray's
    processes started by the driver do not inherit (and keep) the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return f


def lock_study(paths: StudyPaths) -> IO[str]:
    """Take study ``paths.name``'s lock for this driver's life: one study per name at a time.
    A second driver gets a one-line ``ConfigError`` naming the holder."""
    f = file_lock(paths.lock_file, blocking=False)
    if f is None:
        raise _already_running(paths)
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}")
        f.flush()
    except OSError as e:
        with contextlib.suppress(OSError):  # closing flushes the same text again
            f.close()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(errno.ENOSPC, disk_full_message(paths.lock_file)) from None
        raise
    return f


def _already_running(paths: StudyPaths) -> ConfigError:
    try:
        holder = paths.lock_file.read_text().strip() or "another process"
    except OSError:
        holder = "another process"
    where = "" if paths.storage == str(LOCAL_ROOT.resolve()) else f" --storage {paths.storage}"
    return ConfigError(f"study {paths.name!r} is already running ({holder}); wait for it to end, "
                       f"or stop it and continue with `python -m study.run --name {paths.name} --resume{where}`")


def check_not_running(paths: StudyPaths) -> None:
    """One line if a driver holds study ``paths.name``'s lock: a study that is starting holds it
    seconds before its ``study.json`` exists. Creates nothing (no lock file for a mistyped name)."""
    try:
        f = open(paths.lock_file)
    except OSError:
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(paths) from None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
