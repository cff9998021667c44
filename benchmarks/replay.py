"""Replay search strategies against a recorded learning-curve table, in simulated time.

A discrete-event simulation of a Tune study on ``workers`` identical one-core slots: a started
trial costs ``startup_s`` (Ray scheduling and trial start-up outside the trainable, measured by
``benchmarks/overhead.py``) and then each of its evaluations arrives when the recorded CPU seconds
of its configuration say (``cpu_s`` minus the recording's own data/model set-up), plus
``eval_overhead_s`` per report (checkpoint persistence, MLflow). At every evaluation the
strategy's scheduler decides CONTINUE/STOP and its searcher hears about the result in the order
``TuneController._process_trial_result`` uses (scheduler first; the searcher's ``on_trial_result``
only for trials that continue; ``on_trial_complete`` when a trial stops or finishes). A freed slot
immediately starts the next suggestion. Nothing after ``budget_s`` counts.

The searchers and schedulers are the real objects: ``study.search.registry.build_search`` (what
``study.run`` uses), stock ``ray.tune.search.optuna.OptunaSearch`` and
``ray.tune.schedulers.ASHAScheduler``. Only the clock and the trainable are simulated.

Continuous spaces meet a finite table here: a suggested configuration is answered with the
recorded curve of its nearest recorded configuration of the same data size (a nearest-neighbour
surrogate; cf. Eggensperger et al. 2015, "Efficient Benchmarking of Hyperparameter Optimizers via
Surrogates"). The distance weights each searched key by how much it matters: they are fitted so
that a configuration's nearest *other* recorded configuration predicts its final accuracy best
(leave-one-out), which makes a suggestion near a good configuration behave like one. Because the
recorded configurations are themselves uniform draws from the space, random search through the
surrogate samples the table (nearly) uniformly, as it would sample the space.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

__all__ = ["Curve", "CurveTable", "Strategy", "SimRun", "simulate", "ListSearcher", "coordinates"]

CONTINUE, STOP, FINISHED = "CONTINUE", "STOP", "FINISHED"
SIZE_KEY = "data.size"


@dataclass
class Curve:
    """One recorded configuration's evaluations (in order)."""

    config: str
    kind: str  # random | seed000 | seed002
    point: dict[str, Any]
    samples_seen: list[int]
    accuracy: list[float]  # validation split (what a study selects on)
    dev_accuracy: list[float]  # SST-2 dev, reported beside it
    cost_s: list[float]  # CPU seconds from the first training step to the end of each evaluation
    samples_total: int

    @property
    def best(self) -> float:
        return max(self.accuracy)

    @property
    def final(self) -> float:
        return self.accuracy[-1]


def coordinates(space: dict[str, Any], point: dict[str, Any]) -> np.ndarray:
    """A configuration as numbers in [0, 1] per searched key: log scale for ``loguniform``, linear
    for ``uniform``/``randint``, the position in the list for ``choice`` (the shipped spaces list
    ranks, multiples, sizes and target presets in increasing order)."""
    out = []
    for key, dist in space.items():
        kind, v, x = dist.kind, getattr(dist, dist.kind), point[key]
        if kind == "choice":
            idx = next(i for i, c in enumerate(v) if c == x or (isinstance(c, float) and isinstance(x, (int, float)) and math.isclose(c, x)))
            out.append(idx / max(1, len(v) - 1))
        elif kind == "loguniform":
            out.append((math.log(x) - math.log(v[0])) / (math.log(v[1]) - math.log(v[0])))
        else:
            out.append((x - v[0]) / (v[1] - v[0]))
    return np.asarray(out, dtype=float)


class CurveTable:
    """The recorded curves (``benchmarks.curve_table.load_table``) and the nearest-neighbour lookup."""

    def __init__(self, frame: Any, space: dict[str, Any]) -> None:
        self.space = dict(space)
        self.keys = list(space)
        self.curves: list[Curve] = []
        for cid, g in frame.groupby("config", sort=True):
            g = g.sort_values("eval")
            setup = float(g["setup_cpu_s"].iloc[0]) if "setup_cpu_s" in g else 0.0
            point = {k: _native(g[k].iloc[0]) for k in self.keys}
            self.curves.append(Curve(
                str(cid), str(g["kind"].iloc[0]), point, [int(x) for x in g["samples_seen"]],
                [float(x) for x in g["accuracy"]], [float(x) for x in g.get("dev_accuracy", g["accuracy"])],
                [max(0.0, float(x) - setup) for x in g["cpu_s"]], int(g["samples_total"].iloc[0])))
        self.by_id = {c.config: c for c in self.curves}
        self._x = np.stack([coordinates(self.space, c.point) for c in self.curves]) if self.curves else np.zeros((0, len(self.keys)))
        self._size = np.asarray([c.point.get(SIZE_KEY) for c in self.curves], dtype=object)
        self.weights = np.ones(len(self.keys))

    def __len__(self) -> int:
        return len(self.curves)

    def random_curves(self) -> list[Curve]:
        """The configurations drawn from the space (not the seed recipes added beside them)."""
        return [c for c in self.curves if c.kind == "random"]

    def best_accuracy(self) -> float:
        return max(c.best for c in self.curves)

    def snap(self, point: dict[str, Any], exclude: int | None = None) -> Curve:
        """The recorded curve nearest to ``point`` (same data size when the size is searched)."""
        x = coordinates(self.space, point)
        d = ((self._x - x) ** 2 * self.weights).sum(1)
        if SIZE_KEY in self.space:
            d = np.where(self._size == point[SIZE_KEY], d, np.inf)
        if exclude is not None:
            d[exclude] = np.inf
        if not np.isfinite(d).any():
            raise KeyError(f"no recorded configuration with {SIZE_KEY}={point.get(SIZE_KEY)!r}")
        return self.curves[int(np.argmin(d))]

    def loo_error(self, weights: np.ndarray | None = None) -> float:
        """Mean absolute error of predicting each configuration's final accuracy by its nearest
        other configuration (same size) under ``weights``."""
        w = self.weights if weights is None else weights
        final = np.asarray([c.final for c in self.curves])
        diff = ((self._x[:, None, :] - self._x[None, :, :]) ** 2 * w).sum(-1)
        if SIZE_KEY in self.space:
            diff = np.where(self._size[:, None] == self._size[None, :], diff, np.inf)
        np.fill_diagonal(diff, np.inf)
        nearest = diff.argmin(1)
        return float(np.mean(np.abs(final - final[nearest])))

    def fit_weights(self, grid: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0), rounds: int = 3) -> dict[str, float]:
        """Coordinate descent on the per-key weights of the snapping distance, minimizing the
        leave-one-out error; returns the weights by key (the size key only gates, weight 0)."""
        w = np.ones(len(self.keys))
        free = [i for i, k in enumerate(self.keys) if k != SIZE_KEY]
        for i, k in enumerate(self.keys):
            if k == SIZE_KEY:
                w[i] = 0.0
        for _ in range(rounds):
            for i in free:
                best = min(grid, key=lambda g: (self.loo_error(np.where(np.arange(len(w)) == i, g, w)), -g))
                w[i] = best
        if not w[free].any():
            w[free] = 1.0
        self.weights = w
        return dict(zip(self.keys, w.tolist()))


def _native(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


# --------------------------------------------------------------------------- strategies


class Strategy:
    """A searcher + scheduler pair behind three calls; ``suggest`` returns None when exhausted."""

    def __init__(self, searcher: Any, scheduler: Any | None, keys: list[str]) -> None:
        self.searcher, self.scheduler, self.keys = searcher, scheduler, keys
        self._controller = SimpleNamespace(search_alg=searcher)  # what RecordingASHAScheduler follows

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A configuration, ``None`` (nothing now: e.g. a concurrency limit) or ``"FINISHED"``."""
        config = self.searcher.suggest(trial_id)
        if config is None or config == FINISHED:
            return config
        if self.scheduler is not None:
            self.scheduler.on_trial_add(self._controller, SimpleNamespace(trial_id=trial_id))
        return {k: config[k] for k in self.keys}

    def result(self, trial_id: str, result: dict[str, Any], last: bool) -> str:
        decision = CONTINUE
        if self.scheduler is not None:
            decision = self.scheduler.on_trial_result(self._controller, SimpleNamespace(trial_id=trial_id), result)
        if decision == STOP or last:
            self.searcher.on_trial_complete(trial_id, result=result)
            if self.scheduler is not None:
                self.scheduler.on_trial_remove(self._controller, SimpleNamespace(trial_id=trial_id))
            return STOP
        self.searcher.on_trial_result(trial_id, result)
        return CONTINUE


class ListSearcher:
    """Suggests a fixed list of configurations once each (the seed recipes; a live run's order)."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self._left = [dict(p) for p in points]

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        return self._left.pop(0) if self._left else FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


# --------------------------------------------------------------------------- simulation


@dataclass
class SimRun:
    """What one simulated study did: every evaluation in time order and per-trial outcomes."""

    events: list[dict[str, Any]] = field(default_factory=list)  # t, trial, config, samples_seen, accuracy, dev_accuracy
    trials: list[dict[str, Any]] = field(default_factory=list)  # trial, config, params, start, end, state

    def best_curve(self) -> list[tuple[float, float]]:
        """(time, best validation accuracy so far) at every improvement."""
        out, best = [], -1.0
        for e in self.events:
            if e["accuracy"] > best:
                best = e["accuracy"]
                out.append((e["t"], best))
        return out

    def best_at(self, t: float) -> float | None:
        vals = [a for (s, a) in self.best_curve() if s <= t]
        return vals[-1] if vals else None

    def pick_at(self, t: float) -> dict[str, Any] | None:
        """The evaluation a study would pick at time ``t``: the best validation accuracy so far
        (the first to reach it), i.e. the best trial's best checkpoint."""
        seen = [e for e in self.events if e["t"] <= t]
        return max(seen, key=lambda e: (e["accuracy"], -e["t"])) if seen else None

    def time_to(self, target: float) -> float | None:
        return next((t for t, a in self.best_curve() if a >= target - 1e-12), None)


def simulate(strategy: Strategy, table: CurveTable, budget_s: float, workers: int = 1, startup_s: float = 0.0,
             eval_overhead_s: float = 0.0, lookup: Callable[[dict[str, Any]], Curve] | None = None) -> SimRun:
    """Run ``strategy`` against ``table`` for ``budget_s`` simulated seconds on ``workers`` slots."""
    lookup = lookup or table.snap
    run = SimRun()
    heap: list[tuple[float, int, str, int]] = []
    trials: dict[str, tuple[Curve, dict[str, Any], dict[str, Any], float]] = {}
    counter = itertools.count()
    exhausted = False
    running: set[str] = set()

    def fill(now: float) -> None:
        """Start trials on every free slot, as Tune asks the searcher whenever resources free up."""
        while len(running) < workers and start(now):
            pass

    def start(now: float) -> bool:
        nonlocal exhausted
        if exhausted or now >= budget_s:
            return False
        tid = f"sim{len(run.trials):05d}"
        point = strategy.suggest(tid)
        if point is None or point == FINISHED:
            exhausted = point == FINISHED
            return False
        running.add(tid)
        curve = lookup(point)
        rec = {"trial": tid, "config": curve.config, "params": point, "start": now, "end": None, "state": "running"}
        run.trials.append(rec)
        t0 = now + startup_s
        trials[tid] = (curve, rec, point, t0)
        heapq.heappush(heap, (t0 + curve.cost_s[0] + eval_overhead_s, next(counter), tid, 0))
        return True

    fill(0.0)
    while heap:
        t, _, tid, k = heapq.heappop(heap)
        if t > budget_s:
            break
        curve, rec, point, t0 = trials[tid]
        result = {"accuracy": curve.accuracy[k], "samples_seen": curve.samples_seen[k], "training_iteration": k + 1,
                  "samples_total": curve.samples_total, **{f"config/{key}": v for key, v in point.items()}}
        run.events.append({"t": t, "trial": tid, "config": curve.config, "samples_seen": curve.samples_seen[k],
                           "accuracy": curve.accuracy[k], "dev_accuracy": curve.dev_accuracy[k]})
        last = k == len(curve.accuracy) - 1
        if strategy.result(tid, result, last) == STOP:
            rec.update(end=t, state="completed" if last else "pruned")
            running.discard(tid)
            fill(t)
        else:
            heapq.heappush(heap, (t0 + curve.cost_s[k + 1] + (k + 2) * eval_overhead_s, next(counter), tid, k + 1))
    for rec in run.trials:
        if rec["end"] is None:
            rec["state"] = "unfinished"
    return run
