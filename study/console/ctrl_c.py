"""The first Ctrl-C at any moment stops the study with its one line and the resume command.

Why our own handler: Ray Tune installs one only once ``fit`` is under way, logs its message to
the study log, and leaves it installed after ``fit``; a Ctrl-C before (imports, the preflight, Ray
starting) was a traceback, and one in Tune's start-up or after it went unseen. Outside ``fit`` a
Ctrl-C raises ``KeyboardInterrupt`` (the runner turns it into the line); inside, it asks Tune for
its own graceful stop (SIGUSR1, the same handler: a last snapshot, then ``fit`` returns) and a
second Ctrl-C stops at once.

Why it sometimes waits a moment: Python runs a signal handler between any two bytecodes, and an
exception raised there can land where it does harm. Measured, with a Ctrl-C right as Ray started
its processes: the handler ran in ``logging._releaseLock`` as an after-fork hook, where Python
ignores exceptions ("Exception ignored in"), so the Ctrl-C was lost *and* the logging lock stayed
held; the study ran its trials to the end, then hung for good joining MLflow's metrics thread,
which waited on that lock. So a Ctrl-C that arrives inside :mod:`logging` (whose lock is taken
outside ``try``) is acted on a few milliseconds later (a one-shot ``SIGALRM``), and one swallowed
anyway (another at-fork hook, measured: filelock's; a finaliser) is raised again at the runner's
next :meth:`CtrlC.checkpoint`, without the "Exception ignored" traceback on the terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

__all__ = ["CtrlC"]

#: Code where an exception between two bytecodes can leave a lock held (see the module docstring).
_UNSAFE_FILES = frozenset({os.path.normcase(logging.__file__)})
_RETRY_S = 0.02
_MAX_DEFERRALS = 50  # 1 s: then act wherever the main thread is (a Ctrl-C must never be lost)


class CtrlC:
    """Install once, at the start of the command; ``in_fit`` is True while a Tuner runs."""

    def __init__(self) -> None:
        self.caught = False  # a Ctrl-C arrived (the study stops, resumable)
        self.in_fit = False
        self._acted = False  # the first Ctrl-C raised or asked Tune to stop
        self._raised = False  # ... by raising KeyboardInterrupt
        self._pending = 0  # deferrals of the Ctrl-C not yet acted on
        self._alarm_before: Any = None  # SIGALRM's handler before a deferral

    def install(self) -> CtrlC:
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Tune's would replace this one
        signal.signal(signal.SIGINT, self._on_sigint)
        self._unraisable_before = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def _unraisable(self, unraisable: Any) -> None:
        """A Ctrl-C Python ignored where it landed: quiet here, :meth:`checkpoint` raises it again."""
        if not (isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self._unraisable_before(unraisable)

    def checkpoint(self) -> None:
        """Raise the Ctrl-C again if one was raised and yet the study goes on (an exception
        ignored where it landed); call it between steps of the runner."""
        if self._raised:
            raise KeyboardInterrupt

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._pending:
            return  # the same Ctrl-C, still waiting for a safe moment
        second, self.caught = self._acted, True
        self._act(frame, second)

    def _on_retry(self, signum: int, frame: FrameType | None) -> None:
        if self._pending:
            self._act(frame, self._acted)

    def _retry_soon(self) -> None:
        """A one-shot SIGALRM; its handler is set here, not at install: MLflow's timeouts set their
        own and leave it behind (``mlflow.utils.timeout``)."""
        if signal.getsignal(signal.SIGALRM) != self._on_retry:
            self._alarm_before = signal.signal(signal.SIGALRM, self._on_retry)
        signal.setitimer(signal.ITIMER_REAL, _RETRY_S)

    def _act(self, frame: FrameType | None, second: bool) -> None:
        if frame is not None and os.path.normcase(frame.f_code.co_filename) in _UNSAFE_FILES and self._pending < _MAX_DEFERRALS:
            self._pending += 1
            self._retry_soon()
            return
        if self._pending and self._alarm_before is not None:
            signal.signal(signal.SIGALRM, self._alarm_before)
        self._pending, self._acted = 0, True
        tune_stop: Any = signal.getsignal(signal.SIGUSR1)
        if not second and self.in_fit and getattr(tune_stop, "__name__", "") == "signal_interrupt_tune_run":
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        self._raised = True
        raise KeyboardInterrupt
