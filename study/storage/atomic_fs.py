"""Local storage for Ray whose writes are atomic, and a study that stops cleanly on a full disk.

Ray 2.60 persists an experiment by copying its staging dir (in the Ray session dir) over the
storage dir, rewriting ``experiment_state-*.json``, the searcher/callback state and every
trial's ``result.json``/``progress.csv`` in place. A driver killed during such a copy leaves
truncated files: an empty ``experiment_state`` makes ``Tuner.restore`` log "Failed to restore
the run state" and start over with no trials (the study then "finishes" with only the trials
suggested after the crash, every fixed config key back at its default), a truncated
``result.json`` loses the trial's earlier results. With :class:`AtomicLocalFS` every file is
either its old or its new version.

The driver's writes of Ray's pickled state are signed on the way (:mod:`study.storage.signing`):
``--resume`` unpickles only what this user's driver wrote.

A full disk is the same hazard: a write that runs out of space must never put a truncated file
in place of a good one. Ray's background sync only *logs* a failed snapshot and carries on, so
on its own the study would keep running on a disk that can no longer record it.
:class:`AtomicLocalFS` therefore fails the write at once (``ENOSPC`` as :class:`DiskFullError`,
naming the file and the free space), removes its temp file, keeps the old version, and records
the failure; :class:`DiskFullWatch` (a Tune callback) stops ``Tuner.fit`` at the next step or as
soon as a trial fails on a full disk. What is on storage then is a consistent earlier snapshot,
so after space is freed ``--resume`` continues the same study with its stored config.

This module is imported (not run as ``__main__``), so cloudpickle stores the handler by
reference in ``tuner.pkl`` and the experiment state: a resumed study writes with the current code.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray.tune import Callback

from . import signing

__all__ = ["AtomicLocalFS", "DiskFullError", "DiskFullWatch", "disk_full_events", "is_enospc"]

log = logging.getLogger(__name__)

_events: list[str] = []
_events_lock = threading.Lock()


class DiskFullError(OSError):
    """A write to study storage ran out of space; ``str()`` is one line saying where and how much."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> tuple:  # Ray copies and pickles a trial's exception
        return (DiskFullError, (self.strerror,))


def _disk_full(path: str) -> DiskFullError:
    from .studies import disk_full_message

    err = DiskFullError(disk_full_message(path))
    with _events_lock:
        _events.append(str(err))
    return err


def disk_full_events() -> list[str]:
    """Disk-full failures this process's storage writes met (the driver's background sync runs
    in the driver, so its failures land here even though Ray only logs them)."""
    with _events_lock:
        return list(_events)


class AtomicLocalFS(pyarrow.fs.FileSystemHandler):
    """Local storage for Ray whose file writes are atomic: a temp file renamed into place on close.

    Use it as ``pyarrow.fs.PyFileSystem(AtomicLocalFS())``; it is pickled to the workers with the
    storage context, so they write checkpoint files the same way. A crash can leave hidden
    ``.NAME.tmp-*`` files or dirs behind; nothing reads them. A write that fails (``ENOSPC``
    above all) raises at once, removes its temp file and leaves the previous version in place.
    """

    def __init__(self) -> None:
        self.fs = pyarrow.fs.LocalFileSystem()

    def get_type_name(self) -> str:
        return "atomic-local"

    def equals(self, other: Any) -> bool:
        return isinstance(other, AtomicLocalFS)

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> list:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        # rename first: a checkpoint Ray deletes is gone at once, never left half-deleted
        tmp = _tmp_name(path)
        os.rename(path, tmp)
        self.fs.delete_dir(tmp)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("AtomicLocalFS: refusing to delete the contents of /")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        if os.path.isfile(src):
            _sign_file(src, dest)
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        tmp = _tmp_name(dest)
        try:
            self.fs.copy_file(src, tmp)
            _sign_file(tmp, dest)
            os.replace(tmp, dest)
        except OSError as e:
            _unlink(tmp)
            if is_enospc(e):
                raise _disk_full(dest) from None
            raise

    def open_input_stream(self, path: str) -> Any:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow

        return pyarrow.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.fs.open_append_stream(path, metadata=metadata)


def _tmp_name(path: str) -> str:
    """A hidden sibling (never matches Ray's ``experiment_state-*.json`` & co.)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def _sign_file(tmp: str, dest: str) -> None:
    """Sign ``tmp``'s content as ``dest`` when ``dest`` is study state this driver signs
    (:mod:`study.storage.signing`), before it is renamed into place."""
    mac = signing.mac_for(dest)
    if mac is not None:
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                mac.update(chunk)
        signing.record(dest, mac)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


#: The raw write (``os.write``: may write less than asked). Tests replace it to fail like a full disk.
_write = os.write


def is_enospc(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


class _RenameOnClose(io.FileIO):
    """A temp file renamed over ``path`` on a clean close.

    Raw ``FileIO.write`` may write only part of its buffer (a nearly full disk does exactly that)
    and Arrow ignores the count, so every write loops until all bytes are down. The first failed
    write poisons the file: it is removed, the error is raised, and ``close()`` (which Arrow
    still calls) renames nothing."""

    def __init__(self, path: str) -> None:
        self._final, self._tmp, self._failed = path, _tmp_name(path), False
        self._mac = signing.mac_for(path)  # study state is signed as it is written
        try:
            super().__init__(self._tmp, "wb")
        except OSError as e:
            if is_enospc(e):
                raise _disk_full(path) from None
            raise

    def write(self, data: Any) -> int:
        if self._failed:
            raise OSError(errno.EIO, f"write to {self._final} after a failed write")
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = _write(self.fileno(), view[done:])
                if not n:  # nothing written and no error: treat as a full device
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as e:
            self._abort()
            if is_enospc(e):
                raise _disk_full(self._final) from None
            raise
        if self._mac is not None:
            self._mac.update(view)
        return done

    def _abort(self) -> None:
        self._failed = True
        try:
            super().close()
        finally:
            _unlink(self._tmp)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._failed:
            return
        try:
            if self._mac is not None:
                signing.record(self._final, self._mac)
            os.replace(self._tmp, self._final)
        except OSError as e:
            _unlink(self._tmp)
            if is_enospc(e):
                raise _disk_full(self._final) from None
            raise


def _trial_error_text(trial: Any) -> str:
    """The latest failure in the trial's ``error.txt`` (Ray appends one block per failure)."""
    try:
        text = Path(trial.error_file).read_text(errors="replace")
    except (OSError, TypeError):
        return ""
    return text.rsplit("Failure # ", 1)[-1]


def _disk_full_line(text: str) -> str | None:
    """The one-line disk-full message in a trial's error text (ours, or a plain ENOSPC)."""
    for line in text.splitlines()[::-1]:
        if "disk full writing" in line:
            return line[line.index("disk full writing"):].strip()
    if "No space left on device" in text or "[Errno 28]" in text:
        return "disk full (No space left on device)"
    return None


class DiskFullWatch(Callback):
    """Stops ``Tuner.fit`` with :class:`DiskFullError` as soon as storage is full.

    Two ways a full disk shows up: the driver's own writes (Ray's background snapshot sync, which
    only logs its failures; recorded by :class:`AtomicLocalFS` in this process) and a trial that
    fails while persisting a checkpoint or result (its error names ENOSPC; recorded here when Ray
    reports the failure). Either stops the study at the end of that step (``on_step_end``: Ray
    wraps exceptions from failure callbacks into a ``TuneError`` holding a traceback, not from
    step callbacks); a trial Ray meant to retry on the same full disk is not started again.
    Raising from a callback ends ``tune.run`` without a final snapshot, so storage keeps its last
    complete state."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self._seen = 0

    def setup(self, **info: Any) -> None:
        self._seen = len(disk_full_events())  # a previous fit in this process is not news
        for name in ("ray.tune.execution.experiment_state", "ray.tune.execution.tune_controller", "mlflow.store.db.utils"):
            logging.getLogger(name).addFilter(_drop_disk_full_tracebacks)

    def _stop_if_full(self) -> None:
        events = disk_full_events()
        if len(events) > self._seen:
            first, self._seen = events[self._seen], len(events)
            raise DiskFullError(first)

    def _note_trial(self, trial: Any) -> None:
        line = _disk_full_line(_trial_error_text(trial))
        if line is not None:
            with _events_lock:
                _events.append(line if line.startswith("disk full writing") else f"{line} under {self.storage}")

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._stop_if_full()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._stop_if_full()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note_trial(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._note_trial(trial)


def _drop_disk_full_tracebacks(record: logging.LogRecord) -> bool:
    """Ray logs a failed snapshot sync (and MLflow's sqlite store a failed write) with a full
    traceback each time; for a full disk the study prints one line of its own instead (the
    tracker's one-line "MLflow call failed … buffered" warnings stay)."""
    if "database or disk is full" in record.getMessage():
        return False
    exc = record.exc_info[1] if record.exc_info else None
    while exc is not None:
        if isinstance(exc, DiskFullError) or is_enospc(exc) or _disk_full_line(str(exc)):
            return False
        exc = exc.__cause__ or exc.__context__
    return True
