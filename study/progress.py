"""The study's progress view on stdout (``study.console`` sends everything else to a log file).

Why not Ray's reporter: its status table names trials by Ray's ids only (never the searched
values), calls ASHA-stopped trials TERMINATED like finished ones, and prints every trial's whole
config (34 keys, 28 of them the same in every trial) when it starts; a 3-trial study printed 351
lines. Here a study prints one line per event instead — a trial starting (with its searched
values), each evaluation (samples seen, the study metric, its state: running, completed or
pruned), a failure — with the best result so far on every evaluation line. The runner turns
Ray's reporter off (``RunConfig(verbose=0)``).

:func:`short_values` is also what the MLflow trial runs are named after (``study.tracking``), so
the console and the runs table call a trial the same thing: ``abe404f9 r=4 a=4 lr=4.0e-3 qv n=2000``.
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

__all__ = ["ProgressView", "short_values", "trial_label", "legend"]

#: Short names of searched keys, in the order a label shows them ("" = the value alone, e.g. ``qv``).
_SHORT: dict[str, str] = {
    "lora.r": "r",
    "lora.alpha": "alpha",
    "lora.alpha_multiple": "a",
    "train.lr": "lr",
    "lora.dropout": "do",
    "lora.target_modules": "",
    "data.size": "n",
    "train.epochs": "ep",
    "train.batch_size": "bs",
    "train.weight_decay": "wd",
    "train.warmup_ratio": "warmup",
    "model.dropout": "model_do",
    "model.pooling": "",
}


def _fmt_value(key: str, v: Any) -> str:
    if v is None:
        return "all" if key == "data.size" else "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            mantissa, exp = f"{v:.1e}".split("e")
            return f"{mantissa}e{int(exp)}"
        return f"{v:.2g}"
    return str(v)


def _order(keys: Iterable[str]) -> list[str]:
    known = [k for k in _SHORT if k in keys]
    return known + sorted(k for k in keys if k not in _SHORT)


def short_values(config: dict[str, Any], searched: Iterable[str]) -> str:
    """The searched values of a (flat) trial config, short: ``r=4 a=4 lr=4.0e-3 do=0.05 qv n=2000``."""
    parts = []
    for key in _order(list(searched)):
        name = _SHORT.get(key, key.rsplit(".", 1)[-1])
        value = _fmt_value(key, config.get(key))
        parts.append(f"{name}={value}" if name else value)
    return " ".join(parts)


def trial_label(trial_id: str, config: dict[str, Any], searched: Iterable[str]) -> str:
    """``<trial id> <searched values>``: how the console and MLflow name a trial."""
    values = short_values(config, searched)
    return f"{trial_id} {values}" if values else trial_id


def legend(searched: Iterable[str]) -> str:
    """What the short names stand for: ``r=lora.r a=lora.alpha_multiple … qv=lora.target_modules``."""
    out = []
    for key in _order(list(searched)):
        name = _SHORT.get(key, key.rsplit(".", 1)[-1])
        out.append(f"{name or '(value)'}={key}" if name else key)
    return " ".join(out)


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

    Pickled into ``tuner.pkl`` with the other callbacks (the output stream is looked up when
    printing, never stored); its best-so-far is part of the callback state Tune checkpoints, so
    a resumed study keeps counting from it.
    """

    def __init__(self, searched: Iterable[str], metric: str = "accuracy", mode: str = "max",
                 pruned_signal: PrunedSignal | None = None) -> None:
        self.searched = list(searched)
        self.metric, self.mode = metric, mode
        self.pruned_signal = pruned_signal
        self.best: tuple[float, str] | None = None
        self._t0 = time.monotonic()
        self._final: set[str] = set()  # trials whose last line already said how they ended

    # -- Tune callback hooks ------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        self._t0 = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._final.discard(trial.trial_id)
        self._line(trial.trial_id, "started", short_values(trial.config or {}, self.searched))

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
        self._line(trial.trial_id, state, f"{samples:>11} samples  {self.metric} {self._fmt(value)}"
                                          f"   best {self._fmt(best_value)} ({best_id})")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id not in self._final:  # e.g. stopped by the study's time budget
            last = getattr(trial, "last_result", None) or {}
            state = "pruned" if self.pruned_signal is not None and self.pruned_signal.was_pruned(trial.trial_id) else "stopped"
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
            return "pruned"
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
