"""Where a study's output goes: the project's own warnings and errors on stderr, one line each;
every library's log records, warnings and stray stderr text in ``<study dir>/study.log``.

Why: left alone, a 3-trial study prints MLflow's database migrations, its model-logging warnings,
Ray's start-up messages, "Checkpoint successfully created" once per evaluation, a tqdm download
bar and Optuna's "A new study created in memory" on stderr — 43 lines in which a real problem
would not be seen. They are kept, in the log file, for when something does go wrong. The progress
itself is ``study.console.progress``. Imports nothing heavy: ``main()`` sets the console up before it
parses arguments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["console_logging", "log_to_file", "quiet_libraries", "quiet_worker_exit", "worker_setup", "stderr_to_log", "LOG_NAME",
           "OWN_LOGGERS"]

#: The study's log file, beside ``study.json``.
LOG_NAME = "study.log"
#: Loggers whose warnings and errors the user sees on stderr (everything else: the log file only).
OWN_LOGGERS = ("study", "trainables", "dashboards", "benchmarks")
#: Libraries that install their own stderr handlers; their records are sent to the log file instead.
_LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "urllib3", "py.warnings", "transformers", "peft", "filelock")


class _OwnWarnings(logging.Filter):
    """Only the project's own loggers reach the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


class _NotAfterDiskFull(logging.Filter):
    """Once storage is full, the study's own one-line stop says so: MLflow's failures on the same
    disk (its sqlite store lives there), retries and the undelivered count are consequences, kept
    in the study log but not repeated on the terminal."""

    CONSEQUENCES = ("database or disk is full", "No space left on device", "still unreachable at experiment end",
                    "Could not finish MLflow parent run", "Could not write the Optuna journal")

    def filter(self, record: logging.LogRecord) -> bool:
        from ..storage.atomic_fs import disk_full_events

        if not disk_full_events():
            return True
        msg = record.getMessage()
        return not any(c in msg for c in self.CONSEQUENCES)


class _OneLine(logging.Formatter):
    """``warning: message`` — first line only (the traceback, if any, is in the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().strip().splitlines()
        return f"{record.levelname.lower()}: {msg[0] if msg else ''}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests capture it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _StudyLog(logging.FileHandler):
    """The study's log file (told apart from handlers others installed)."""

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be written (the disk holding the study is full) is dropped:
        logging's default prints a traceback per record on stderr, thousands of lines while a
        study stops on a full disk, whose one line the runner prints itself."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


def console_logging() -> None:
    """Before anything is known about the study: the project's warnings/errors on stderr, one
    line each; library records go nowhere until :func:`log_to_file` names a file. Replaces only
    its own handler: handlers others put on the root logger (pytest's) stay."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(h)
    handler = _Stderr()
    handler.setLevel(logging.WARNING)
    handler.addFilter(_OwnWarnings())
    handler.addFilter(_NotAfterDiskFull())
    handler.setFormatter(_OneLine())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def log_to_file(path: str | os.PathLike[str]) -> Path:
    """Send every log record (libraries' included, Python warnings too) to ``path`` (appended:
    a resumed study continues its log); keep the :func:`console_logging` handler for the
    project's own warnings. Libraries that print through their own handlers are re-plumbed to
    propagate here instead. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        console_logging()
    for h in [h for h in root.handlers if isinstance(h, _StudyLog)]:
        root.removeHandler(h)
        h.close()
    fh = _StudyLog(path, encoding="utf-8")
    fh.setLevel(logging.INFO)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(fh)
    logging.captureWarnings(True)
    quiet_libraries()
    return path


def quiet_libraries() -> None:
    """Route Ray's, MLflow's, Optuna's … loggers through the root logger (no own stderr
    handlers), and turn off progress bars that would draw on stderr."""
    try:
        import optuna

        optuna.logging.disable_default_handler()  # configures optuna's root logger first, then removes its handler
        optuna.logging.enable_propagation()
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass
    for name in _LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm "Downloading artifacts"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


@contextlib.contextmanager
def stderr_to_log(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Text that libraries write straight to ``sys.stderr`` (MLflow's "Successfully registered
    model …") goes to the log file for the duration of the block."""
    if path is None:
        yield
        return
    with open(path, "a", encoding="utf-8") as f, contextlib.redirect_stderr(f):
        yield


def quiet_worker_exit() -> None:
    """Ray worker setup hook (``runtime_env["worker_process_setup_hook"]``): a trial worker that
    Ray stops with SIGTERM while the garbage collector runs prints "Exception ignored in:
    <function WeakSet…_remove>" and an eight-line ``SystemExit: 1`` traceback, forwarded to the
    driver's stderr after the study had finished (Ray's SIGTERM handler raises SystemExit, and
    Python reports exceptions raised inside GC callbacks through ``sys.unraisablehook``). A worker
    being told to exit is not an error: drop exactly that; every other unraisable exception is
    still printed."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:  # type: ignore[no-untyped-def]
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
            return
        previous(unraisable)

    sys.unraisablehook = hook


class _NotWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def worker_setup() -> None:
    """Ray worker setup hook (``runtime_env["worker_process_setup_hook"]``): :func:`quiet_worker_exit`,
    and no warnings about the data from trial workers. The driver's preflight loads the same data
    and has said them once, on the terminal; every trial repeating them, forwarded by Ray with its
    ``(train pid=…)`` prefix, showed each warning again."""
    quiet_worker_exit()
    logging.getLogger("trainables.data").addFilter(_NotWarnings())
