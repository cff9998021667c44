"""The study's progress view on stdout (``study.console`` sends everything else to a log file).

Why not Ray's reporter: its status table names trials by Ray's ids only (never the searched
values), calls ASHA-stopped trials TERMINATED like finished ones, and prints every trial's whole
config (34 keys, 28 of them the same in every trial) when it starts; a 3-trial study printed 351
lines. Here a study prints one line per event instead — a trial starting (with its searched
values, and which seed recipe it is), each evaluation (samples seen, the study metric, its state:
running, completed or pruned), a failure — with the best result so far on every evaluation line.
The runner turns Ray's reporter off (``RunConfig(verbose=0)``).

Between events a status line says where the study stands (:class:`Status`): trials finished,
running and pending of the planned number, the best so far, the samples seen and the measured
rate, and an ETA. On a terminal it is one line redrawn in place every second below the events
(tqdm); without one (CI logs, ``> file``) it is a plain line every ``plain_every_s`` (two
minutes: a CI log stays readable, and the README's quick study within its 80-line budget).

Trials are called by ``study.console.labels`` names, as in MLflow and the report:
``abe404f9 r=4 a=4 lr=4.0e-3 qv n=2000``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from numbers import Number
from pathlib import Path
from typing import Any, Iterable, Protocol

from ray.tune import Callback

from ..search.space import SeedPoints
from .labels import short_values

__all__ = ["ProgressView", "Status", "measure"]

class PrunedSignal(Protocol):
    def was_pruned(self, trial_id: str) -> bool: ...


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


#: Ray trial states of a trial that will run no more.
_DONE_STATES = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class Status:
    """Where a study stands: counts of its planned trials, samples, rate and what is left."""

    total: int  # trials planned (study.num_samples)
    finished: int
    running: int
    samples: int  # samples seen by all trials so far
    samples_left: float | None  # estimated: see :func:`measure`; None before anything is known
    rate: float | None = None  # samples/s measured while this driver runs
    budget_left_s: float | None = None  # what is left of study.time_budget_s

    @property
    def pending(self) -> int:
        return max(0, self.total - self.finished - self.running)

    def eta_s(self) -> tuple[float | None, bool]:
        """Seconds left and whether the time budget (not the samples) decides it."""
        by_samples = self.samples_left / self.rate if self.samples_left is not None and self.rate else None
        if self.budget_left_s is not None and (by_samples is None or self.budget_left_s < by_samples):
            return max(0.0, self.budget_left_s), True
        return by_samples, False

    def text(self, best: str | None) -> str:
        """``3/8 trials finished, 2 running, 3 pending · best 84.20% (abe404f9) · 5,400 samples at 38/s · ETA ~3:10``"""
        eta, budget = self.eta_s()
        parts = [f"{self.finished}/{self.total} trials finished, {self.running} running, {self.pending} pending"]
        if best:
            parts.append(f"best {best}")
        parts.append(f"{self.samples:,} samples" + (f" at {self.rate:.0f}/s" if self.rate else ""))
        parts.append("ETA –" if eta is None else f"ETA {'≤' if budget else '~'}{_clock(eta)}" + (" (time budget)" if budget else ""))
        return " · ".join(parts)


def measure(trials: Iterable[Any], total: int) -> tuple[int, int, int, float | None]:
    """(finished, running, samples seen, samples left) of a study's trials (Ray ``Trial`` objects:
    ``status``, ``last_result``). Samples left is an estimate: a trial still to start sees what the
    finished ones saw on average (ASHA stops most of them early), and a running trial sees that
    too (at most its plan, ``samples_total``), or its whole plan once it got further; before any
    trial finished, every trial counts with the largest plan."""
    trials = list(trials)
    seen = {id(t): _samples(t, "samples_seen") or 0 for t in trials}
    finished = [t for t in trials if t.status in _DONE_STATES]
    running = [t for t in trials if t.status == "RUNNING"]
    plans = [p for p in (_samples(t, "samples_total") for t in trials) if p]
    ended = [seen[id(t)] for t in finished if t.status == "TERMINATED"]
    expected = sum(ended) / len(ended) if ended else (max(plans) if plans else None)
    if expected is None:
        return len(finished), len(running), sum(seen.values()), None
    left = 0.0
    for t in running:
        plan = _samples(t, "samples_total") or expected
        left += max(0.0, (plan if seen[id(t)] >= expected else min(plan, expected)) - seen[id(t)])
    pending = max(0, total - len(finished) - len(running))
    return len(finished), len(running), sum(seen.values()), left + pending * expected


def _samples(trial: Any, key: str) -> int | None:
    value = (getattr(trial, "last_result", None) or {}).get(key)
    return int(value) if _is_number(value) else None


class ProgressView(Callback):
    """One line per trial event on stdout and a status line between them (a ``ray.tune.Callback``;
    Ray's reporter stays off).

    Args:
        searched: the searched (dotted) keys, shown as :func:`short_values`.
        metric, mode: the study metric and whether higher is better.
        pruned_signal: the ``RecordingASHAScheduler`` (``was_pruned``); its STOP decision is
            made before callbacks see the result, so the evaluation that ends a pruned trial
            already says ``pruned``.
        num_samples: the trials the study plans (the status line's N).
        time_budget_s: the study's time budget, if any (bounds the ETA).
        seeds: the seed recipes by name (``study.search.space.seed_names``): their trials say so.
        tty_every_s, plain_every_s: the status line's rhythm on a terminal and in a log.
        clock: seconds, monotonic (tests pass a fake one).
        prefix: put before a starting trial's values (``refit of abe404f9: ``).
        pruned_word: what a trial ``pruned_signal`` stopped is called (a refit's learning-rate
            check: ``checked``).
        show_best: end evaluation lines with the best so far (a refit's trials compare with
            the search's pick at the end instead).

    Pickled into ``tuner.pkl`` with the other callbacks (the output stream and the terminal's
    status bar are looked up when printing, never stored); its best-so-far is part of the callback
    state Tune checkpoints, so a resumed study keeps counting from it.
    """

    def __init__(self, searched: Iterable[str], metric: str = "accuracy", mode: str = "max",
                 pruned_signal: PrunedSignal | None = None, *, num_samples: int | None = None,
                 time_budget_s: float | None = None, seeds: SeedPoints | None = None,
                 tty_every_s: float = 1.0, plain_every_s: float = 120.0, clock: Any = time.monotonic,
                 prefix: str = "", pruned_word: str = "pruned", show_best: bool = True) -> None:
        self.searched = list(searched)
        self.metric, self.mode = metric, mode
        self.pruned_signal = pruned_signal
        self.num_samples, self.time_budget_s, self.seeds = num_samples, time_budget_s, seeds
        self.tty_every_s, self.plain_every_s, self.clock = tty_every_s, plain_every_s, clock
        self.prefix, self.pruned_word, self.show_best = prefix, pruned_word, show_best
        self.best: tuple[float, str] | None = None
        self._final: set[str] = set()  # trials whose last line already said how they ended
        self._reset()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_bar"] = None  # a terminal's status bar: never pickled
        return state

    def _reset(self) -> None:
        self._t0 = self._now()
        self._bar: Any = None
        self._status_at = self._t0  # when the last status line was shown
        self._rate_base: tuple[float, int] | None = None  # (time, samples) the rate is measured from

    def _now(self) -> float:
        return getattr(self, "clock", time.monotonic)()

    # -- Tune callback hooks ------------------------------------------------------------
    #: The driver's clock zero (``time.monotonic()``), when it sets one: the refit's experiments
    #: then go on with the search's clock instead of starting again at 0:00. Not pickled with
    #: the view, so a resumed driver's own start counts.
    clock_zero: float | None = None

    def setup(self, **info: Any) -> None:
        self._reset()
        if ProgressView.clock_zero is not None and getattr(self, "clock", time.monotonic) is time.monotonic:
            self._t0 = ProgressView.clock_zero

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.show_status(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
            self._bar = None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._final.discard(trial.trial_id)
        seeds = getattr(self, "seeds", None)
        seed = seeds.of(trial.config or {}) if seeds is not None else None
        self._line(trial.trial_id, "started", getattr(self, "prefix", "") + (f"{seed} recipe: " if seed else "")
                   + short_values(trial.config or {}, self.searched))

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
        line = f"{_clock(self._now() - self._t0):>7}  {trial_id:<10} {event:<9} {text}"
        if getattr(self, "_bar", None) is not None:
            self._bar.write(line, file=sys.stdout)  # above the status line, which is redrawn below it
        else:
            print(line, file=sys.stdout, flush=True)

    # -- the status line ----------------------------------------------------------------------
    def status(self, trials: Iterable[Any]) -> Status:
        """Where the study stands now (the rate is measured from the first call on)."""
        trials = list(trials)
        total = getattr(self, "num_samples", None) or len(trials)
        finished, running, samples, left = measure(trials, total)
        now = self._now()
        if getattr(self, "_rate_base", None) is None:
            self._rate_base = (now, samples)
        since, base = self._rate_base
        rate = (samples - base) / (now - since) if now > since and samples > base else None
        budget = getattr(self, "time_budget_s", None)
        return Status(total, finished, running, samples, left, rate, None if budget is None else budget - (now - self._t0))

    def show_status(self, trials: Iterable[Any], force: bool = False) -> None:
        """Redraw the terminal's status line (every ``tty_every_s``) or print a plain one (every
        ``plain_every_s``)."""
        tty = sys.stdout.isatty()
        now = self._now()
        if getattr(self, "_rate_base", None) is None:  # the rate counts from the first step on
            self._rate_base = (now, measure(trials, 0)[2])
        every = getattr(self, "tty_every_s", 1.0) if tty else getattr(self, "plain_every_s", 120.0)  # a view pickled before the status line
        if not force and now - self._status_at < every:
            return
        self._status_at = now
        text = f"{_clock(now - self._t0):>7}  {'study':<10} {'status':<9} " + self.status(trials).text(self._best_text())
        if not tty:
            print(text, file=sys.stdout, flush=True)
            return
        if self._bar is None:
            from tqdm import tqdm

            # disable=False: the study turns library progress bars off through $TQDM_DISABLE
            self._bar = tqdm(file=sys.stdout, bar_format="{desc}", leave=False, dynamic_ncols=True, disable=False)
        self._bar.set_description_str(text)

    def _best_text(self) -> str | None:
        return f"{self._fmt(self.best[0])} ({self.best[1]})" if self.best else None


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
