"""Where a study lives and what it left behind: the study's stored results.

Layout (local default): ``./studies/<name>/`` holds Ray's experiment (trial dirs, checkpoints,
``tuner.pkl``) plus our own files: ``study.json`` (the validated config, storage, tracking URI,
MLflow parent run id), ``optuna-journal.log`` (the searcher's Optuna study as an Optuna journal)
and ``summary.json`` (written at the end). With ``--storage s3://…`` or a shared mount Ray's part
goes there and ours stays in ``./studies/<name>/``. Beside the study dirs, ``.<name>.lock`` is the
lock a running driver holds (:func:`lock_study`).

Export, the dashboards and ``--resume`` all start from ``study.json``; nothing else reaches into
the runner's memory.

Trust: a study name is validated wherever one is taken (:func:`check_name`), so no name leads
outside the studies root. Read-only commands read a study through :func:`read_trials`, which
parses Ray's files as plain JSON: Ray's own readers (``ExperimentAnalysis``) ``cloudpickle.loads``
the blobs embedded in ``experiment_state-*.json``, i.e. run code planted in a study directory.
Only ``--resume`` unpickles (Ray's ``tuner.pkl`` and searcher/callback state: there is no other
way to restore a Tuner); see the README's "Resume and trust".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trainables.config import ConfigError

__all__ = [
    "StudyPaths", "StoredTrial", "study_paths", "check_name", "write_json", "read_study", "list_studies",
    "read_trials", "trial_fs", "newest_experiment_state", "lock_study", "file_lock", "disk_full_message", "LOCAL_ROOT", "is_remote", "MAX_NAME_LEN",
    "is_local_tracking_uri", "tracking_credentials_set", "trusted_tracking_uri",
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


# --------------------------------------------------------------------------- where credentials may go


def is_local_tracking_uri(uri: str | None) -> bool:
    """A tracking store on this machine (sqlite file, file store, bare path): nothing is sent anywhere."""
    return not uri or uri.startswith(("sqlite:", "file:")) or "://" not in uri


def tracking_credentials_set() -> bool:
    """Whether MLflow would attach credentials to its requests: a user/password (environment or
    ``~/.mlflow/credentials``), a token, an auth plugin, AWS SigV4 signing or a client certificate."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds("http://localhost")  # the host is not used, only required
    return any([creds.username, creds.password, creds.token, creds.auth, creds.aws_sigv4, creds.client_cert_path])


def trusted_tracking_uri(name: str, stored: str | None, given: str | None) -> str:
    """The MLflow URI to use for an existing study: ``given`` (``--tracking-uri``) when the user
    names one; else the one ``study.json`` records — unless MLflow credentials are set and that
    URI is a remote server the user did not name (``MLFLOW_TRACKING_URI``): a study directory must
    not be able to send the user's credentials to a server of its choosing. Raises ``ConfigError``
    (one line) asking for ``--tracking-uri`` then."""
    if given:
        return given
    if not stored:
        raise ConfigError(f"study {name!r} records no MLflow tracking URI; pass --tracking-uri")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env == stored or is_local_tracking_uri(stored) or not tracking_credentials_set():
        return stored
    said = f"MLFLOW_TRACKING_URI is {env}" if env else "you did not name it"
    raise ConfigError(f"study {name!r} records MLflow at {stored} but {said}; your MLflow credentials are only sent "
                      f"to a server you name: pass --tracking-uri {stored} (or the server you mean)")


# --------------------------------------------------------------------------- locks


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
        try:
            holder = paths.lock_file.read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        where = "" if paths.storage == str(LOCAL_ROOT.resolve()) else f" --storage {paths.storage}"
        raise ConfigError(f"study {paths.name!r} is already running ({holder}); wait for it to end, "
                          f"or stop it and continue with `python -m study.run --name {paths.name} --resume{where}`")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}")
    f.flush()
    return f


# --------------------------------------------------------------------------- Ray's results, read safely


@dataclass
class StoredTrial:
    """One trial of a stored Ray experiment, from plain JSON only."""

    trial_id: str
    status: str
    config: dict[str, Any]
    path: str  # the trial dir (local path or URI)
    last_result: dict[str, Any]
    num_failures: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    """Every row of the trial's ``result.json`` (a torn last line is skipped)."""

    def checkpoints(self, fs: Any, fs_path: str) -> list[tuple[str, dict[str, Any]]]:
        """(checkpoint path, the result it was reported with) for each checkpoint still on disk."""
        out = []
        for r in self.results:
            name = r.get("checkpoint_dir_name")
            if name and fs.get_file_info(f"{fs_path}/{name}").type.name == "Directory":
                out.append((f"{self.path.rstrip('/')}/{name}", r))
        return out


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if is_remote(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def _read_text(fs: Any, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.readall().decode("utf-8", "replace")
    except (OSError, FileNotFoundError):
        return None


def _json_lines(text: str | None) -> list[dict[str, Any]]:
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def newest_experiment_state(fs: Any, experiment: str) -> str | None:
    """Path of the newest ``experiment_state-<timestamp>.json`` (Ray's own choice: by name)."""
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    return f"{experiment}/{names[-1]}" if names else None


def read_trials(experiment: str, with_results: bool = True) -> list[StoredTrial]:
    """Every trial of Ray experiment ``experiment`` (local dir or URI) with its results, read as
    plain JSON: the cloudpickle blobs Ray embeds in ``experiment_state-*.json`` (storage context,
    checkpoint manager, …) stay inert strings, so a planted payload never runs. A trial's
    checkpoints are the ``checkpoint_dir_name`` of its results that still exist. Raises
    ``ConfigError`` when there is no readable experiment state."""
    fs, root = _fs(experiment)
    state_path = newest_experiment_state(fs, root)
    if state_path is None:
        raise ConfigError(f"no Ray experiment state (experiment_state-*.json) at {experiment}")
    try:
        state = json.loads(_read_text(fs, state_path) or "")
        trial_data = state["trial_data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{state_path}: unreadable Ray experiment state ({type(e).__name__})") from None
    trials = []
    for trial_json, meta_json in trial_data:
        t, meta = json.loads(trial_json), json.loads(meta_json)
        dirname = t.get("relative_logdir") or t.get("custom_dirname") or f"trial_{t['trial_id']}"
        if "/" in dirname or dirname in ("", ".", ".."):
            raise ConfigError(f"{state_path}: trial {t.get('trial_id')!r} names directory {dirname!r} outside the experiment")
        last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
        config = t.get("config") if isinstance(t.get("config"), dict) else {}
        path = f"{experiment.rstrip('/')}/{dirname}"
        trial = StoredTrial(str(t["trial_id"]), str(t.get("status")), config, path, last, int(meta.get("num_failures") or 0))
        if with_results:
            trial.results = _json_lines(_read_text(fs, f"{root}/{dirname}/result.json"))
        trials.append(trial)
    return trials


def trial_fs(trial: StoredTrial) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a stored trial's directory."""
    return _fs(trial.path)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
