"""The study's progress view on stdout (``study.console`` sends everything else to a log file).

Why not Ray's reporter: its status table names trials by Ray's ids only (never the searched
values), calls ASHA-stopped trials TERMINATED like finished ones, and prints every trial's whole
config (34 keys, 28 of them the same in every trial) when it starts; a 3-trial study printed 351
lines. Here a study prints one line per event instead — a trial starting (with its searched
values), each evaluation (samples seen, the study metric, its state: running, completed or
pruned), a failure — with the best result so far on every evaluation line. The runner turns
Ray's reporter off (``RunConfig(verbose=0)``).

Trials are called by ``study.console.labels`` names, as in MLflow and the report:
``abe404f9 r=4 a=4 lr=4.0e-3 qv n=2000``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from numbers import Number
from pathlib import Path
from typing import Any, Iterable, Protocol

from ray.tune import Callback

from .labels import short_values

__all__ = ["ProgressView"]

class PrunedSignal(Protocol):
    def was_pruned(self, trial_id: str) -> bool: ...


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class ProgressView(Callback):
    """One line per trial event on stdout (a ``ray.tune.Callback``; Ray's reporter stays off).

    Args:
        searched: the searched (dotted) keys, shown as :func:`short_values`.
        metric, mode: the study metric and whether higher is better.
        pruned_signal: the ``RecordingASHAScheduler`` (``was_pruned``); its STOP decision is
            made before callbacks see the result, so the evaluation that ends a pruned trial
            already says ``pruned``.
        prefix: put before a starting trial's values (``refit of abe404f9: ``).
        pruned_word: what a trial ``pruned_signal`` stopped is called (a refit's learning-rate
            check: ``checked``).
        show_best: end evaluation lines with the best so far (a refit's trials compare with
            the search's pick at the end instead).

    Pickled into ``tuner.pkl`` with the other callbacks (the output stream is looked up when
    printing, never stored); its best-so-far is part of the callback state Tune checkpoints, so
    a resumed study keeps counting from it.
    """

    def __init__(self, searched: Iterable[str], metric: str = "accuracy", mode: str = "max",
                 pruned_signal: PrunedSignal | None = None, prefix: str = "", pruned_word: str = "pruned",
                 show_best: bool = True) -> None:
        self.searched = list(searched)
        self.metric, self.mode = metric, mode
        self.pruned_signal = pruned_signal
        self.prefix, self.pruned_word, self.show_best = prefix, pruned_word, show_best
        self.best: tuple[float, str] | None = None
        self._t0 = time.monotonic()
        self._final: set[str] = set()  # trials whose last line already said how they ended

    # -- Tune callback hooks ------------------------------------------------------------
    #: The driver's clock zero (``time.monotonic()``), when it sets one: the refit's experiments
    #: then go on with the search's clock instead of starting again at 0:00. Not pickled with
    #: the view, so a resumed driver's own start counts.
    clock_zero: float | None = None

    def setup(self, **info: Any) -> None:
        self._t0 = ProgressView.clock_zero if ProgressView.clock_zero is not None else time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._final.discard(trial.trial_id)
        self._line(trial.trial_id, "started", getattr(self, "prefix", "") + short_values(trial.config or {}, self.searched))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial.trial_id, "retrying", f"its process failed; restarting from its last checkpoint ({_error_hint(trial)})")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if not _is_number(value):
            return
        if self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0]):
            self.best = (float(value), trial.trial_id)
        state = self._state(trial.trial_id, result)
        if state != "running":
            self._final.add(trial.trial_id)
        seen, total = result.get("samples_seen"), result.get("samples_total")
        samples = f"{seen}/{total}" if _is_number(seen) and _is_number(total) else str(seen if seen is not None else "?")
        best_value, best_id = self.best
        best = f"   best {self._fmt(best_value)} ({best_id})" if getattr(self, "show_best", True) else ""
        self._line(trial.trial_id, state, f"{samples:>11} samples  {self.metric} {self._fmt(value)}{best}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id not in self._final:  # e.g. stopped by the study's time budget
            last = getattr(trial, "last_result", None) or {}
            pruned = self.pruned_signal is not None and self.pruned_signal.was_pruned(trial.trial_id)
            state = getattr(self, "pruned_word", "pruned") if pruned else "stopped"
            self._line(trial.trial_id, state, f"at {last.get('samples_seen', 0)} samples")
            self._final.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._final.add(trial.trial_id)
        self._line(trial.trial_id, "failed", _error_hint(trial))

    def get_state(self) -> dict | None:
        return {"best": self.best}

    def set_state(self, state: dict) -> None:
        self.best = state.get("best")

    # -- helpers ----------------------------------------------------------------------------
    def _state(self, trial_id: str, result: dict) -> str:
        seen, total = result.get("samples_seen"), result.get("samples_total")
        if result.get("done") and self.pruned_signal is not None and self.pruned_signal.was_pruned(trial_id):
            return getattr(self, "pruned_word", "pruned")
        if result.get("done") or (_is_number(seen) and _is_number(total) and seen >= total):
            return "completed"
        return "running"

    def _fmt(self, v: float) -> str:
        return f"{v * 100:.2f}%" if self.metric in ("accuracy", "f1") else f"{v:.4f}"

    def _line(self, trial_id: str, event: str, text: str) -> None:
        print(f"{_clock(time.monotonic() - self._t0):>7}  {trial_id:<10} {event:<9} {text}", file=sys.stdout, flush=True)


def _is_number(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))


def _error_hint(trial: Any) -> str:
    """The error's last line (the exception) from Ray's ``error.txt`` and where that file is."""
    path = getattr(trial, "error_file", None)
    last = ""
    if path and os.path.isfile(path):
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1][:200] if lines else ""
    return "; ".join(x for x in (last, f"see {path}" if path else "") if x) or "see the study log"
