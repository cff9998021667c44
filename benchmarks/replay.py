"""Replay search strategies against a recorded curve table, in simulated time.

A discrete-event simulation of a Tune study on ``workers`` identical slots: a started trial
costs ``startup_s`` (Ray scheduling + trial start-up outside the trainable, measured by
``benchmarks/overhead.py``) and then each of its evaluations arrives at the recorded ``elapsed_s``
of its grid point, plus ``eval_overhead_s`` per report (checkpoint persistence, MLflow). At
every evaluation the strategy's scheduler decides CONTINUE/STOP and its searcher hears about the
result, in the order ``TuneController._process_trial_result`` uses (scheduler first; the
searcher's ``on_trial_result`` only for trials that continue; ``on_trial_complete`` when a
trial stops or finishes). A freed slot immediately starts the next suggestion. Nothing after
``budget_s`` counts.

The searchers and schedulers are the real objects the study uses, not re-implementations:
``study.searcher.make_searcher`` / ``make_scheduler`` (TPE + ASHA with pruned-trial feedback),
stock ``ray.tune.search.optuna.OptunaSearch`` + ``ray.tune.schedulers.ASHAScheduler``; only the
clock and the trainable are simulated. So a replay differs from a live run only where the
recorded time or accuracy of a configuration differs, which ``validate`` measures.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from .search_grid import GRID, KEYS, SEED_POINTS, grid_points, point_id

__all__ = ["Curve", "CurveTable", "Strategy", "STRATEGIES", "make_strategy", "SimRun", "simulate", "replay_trace"]

CONTINUE, STOP = "CONTINUE", "STOP"


@dataclass
class Curve:
    """One grid point's recorded evaluations (in order)."""

    point: dict[str, Any]
    samples_seen: list[int]
    accuracy: list[float]
    elapsed_s: list[float]
    samples_total: int

    @property
    def best(self) -> float:
        return max(self.accuracy)


class CurveTable:
    """Lookup of recorded curves by grid point (a pandas frame from ``search_grid.load_table``)."""

    def __init__(self, frame: Any) -> None:
        self.curves: dict[str, Curve] = {}
        for pid, g in frame.groupby("point", sort=False):
            g = g.sort_values("eval")
            point = {k: _native(g[k].iloc[0]) for k in KEYS}
            total = int(g["samples_total"].iloc[0]) if "samples_total" in g else int(g["samples_seen"].max())
            self.curves[str(pid)] = Curve(point, [int(x) for x in g["samples_seen"]], [float(x) for x in g["accuracy"]],
                                          [float(x) for x in g["elapsed_s"]], total)
        missing = [point_id(p) for p in grid_points() if point_id(p) not in self.curves]
        self.complete = not missing
        self.missing = missing

    def __len__(self) -> int:
        return len(self.curves)

    def get(self, point: dict[str, Any]) -> Curve:
        pid = point_id({k: _snap(k, point[k]) for k in KEYS})
        try:
            return self.curves[pid]
        except KeyError:
            raise KeyError(f"grid point {pid} is not in the curve table (record it first)") from None

    def max_t(self) -> int:
        return max(c.samples_total for c in self.curves.values())

    def quantile_best(self, q: float) -> float:
        """The ``q``-quantile of the points' best accuracies (for choosing a target)."""
        import numpy as np

        return float(np.quantile([c.best for c in self.curves.values()], q))


def _native(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _snap(key: str, value: Any) -> Any:
    """The grid value a suggestion means (Optuna returns the choice itself; floats compare by value)."""
    for v in GRID[key]:
        if v == value or (isinstance(v, float) and isinstance(value, (int, float)) and math.isclose(v, value, rel_tol=1e-9)):
            return v
    raise KeyError(f"{key}={value!r} is not a grid value ({GRID[key]})")


# --------------------------------------------------------------------------- strategies


class Strategy:
    """A searcher + scheduler pair behind three calls; ``suggest`` returns None when exhausted."""

    def __init__(self, searcher: Any, scheduler: Any | None) -> None:
        self.searcher, self.scheduler = searcher, scheduler
        self._controller = SimpleNamespace(search_alg=searcher)  # what RecordingASHAScheduler follows

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = self.searcher.suggest(trial_id)
        if config is None:
            return None
        if self.scheduler is not None:
            self.scheduler.on_trial_add(self._controller, SimpleNamespace(trial_id=trial_id))
        return {k: config[k] for k in KEYS}

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


class _ListSearcher:
    """Suggests a fixed list of points once each (the seeds' hand-picked configs)."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self._left = [dict(p) for p in points]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self._left.pop(0) if self._left else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


class _RandomGridSearcher(_ListSearcher):
    """Uniform random grid points: what ``tune.choice`` + ``BasicVariantGenerator`` sample."""

    def __init__(self, seed: int) -> None:
        super().__init__([])
        self._rng = random.Random(seed)

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return {k: self._rng.choice(GRID[k]) for k in KEYS}


def _space() -> dict[str, Any]:
    """The grid as Tune distributions, keys in the order ``study.run`` builds its space (the trial
    config's own key order): TPE draws its random start-up points key by key, so the same seed
    gives the same points only if the keys come in the same order."""
    from ray import tune

    from trainables.config import TrialConfig

    order = [k for k in TrialConfig().to_flat() if k in GRID]
    return {k: tune.choice(list(GRID[k])) for k in order}


def _asha(kind: str, grace: int, rf: float, max_t: int):
    from ray.tune.schedulers import ASHAScheduler

    from study.searcher import make_scheduler

    if kind == "stock":
        return ASHAScheduler(time_attr="samples_seen", metric="accuracy", mode="max", grace_period=grace,
                             reduction_factor=rf, max_t=max_t)
    return make_scheduler(grace_period=grace, reduction_factor=rf, max_t=max_t)


def _ours(seed: int, asha: dict[str, Any], seeded: bool = True) -> Strategy:
    from study.searcher import make_searcher

    searcher = make_searcher(_space(), seed=seed, points_to_evaluate=SEED_POINTS if seeded else None, pruned_feedback=True)
    return Strategy(searcher, _asha("ours", **asha))


def _stock(seed: int, asha: dict[str, Any]) -> Strategy:
    """What ``study.run`` does with ``optuna.pruned_feedback=false, study.seed_points=false``: the
    stock ``OptunaSearch`` class (pruned trials told COMPLETE) with the study's TPE sampler."""
    from study.searcher import make_searcher

    return Strategy(make_searcher(_space(), seed=seed, pruned_feedback=False), _asha("stock", **asha))


def _stock_defaults(seed: int, asha: dict[str, Any]) -> Strategy:
    """A bare Ray Tune script: ``OptunaSearch(seed=…)`` with Optuna's default (univariate) TPE."""
    from ray.tune.search.optuna import OptunaSearch

    space = OptunaSearch.convert_search_space(_space())
    return Strategy(OptunaSearch(space, metric="accuracy", mode="max", seed=seed), _asha("stock", **asha))


#: name → (description, factory(seed, asha_kwargs)). The first four are the issue's comparison;
#: ``ours_unseeded`` separates what the seed points buy from what pruned feedback buys;
#: ``stock_defaults`` is a plain Ray Tune script's searcher.
STRATEGIES: dict[str, tuple[str, Callable[[int, dict[str, Any]], Strategy]]] = {
    "ours": ("TPE (multivariate, pruned-trial feedback) + ASHA, seed configs first", _ours),
    "stock_optuna_asha": ("stock Ray OptunaSearch (ASHA-stopped trials told COMPLETE; the study's TPE sampler) + "
                          "ASHAScheduler, no seed configs", _stock),
    "random_fifo": ("random grid points, every trial trained to the end (FIFO)",
                    lambda seed, asha: Strategy(_RandomGridSearcher(seed), None)),
    "seed_configs": ("the seeds' two hand-picked configs, trained to the end",
                     lambda seed, asha: Strategy(_ListSearcher(SEED_POINTS), None)),
    "ours_unseeded": ("ours without the seed configs (ablation)", lambda seed, asha: _ours(seed, asha, seeded=False)),
    "stock_defaults": ("bare OptunaSearch(seed) with Optuna's default univariate TPE + ASHAScheduler (ablation)",
                       _stock_defaults),
}


def make_strategy(name: str, seed: int, asha: dict[str, Any]) -> Strategy:
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[name][1](seed, asha)


# --------------------------------------------------------------------------- simulation


@dataclass
class SimRun:
    """What one simulated study did: every evaluation in time order and per-trial outcomes."""

    events: list[dict[str, Any]] = field(default_factory=list)  # t, trial, point, samples_seen, accuracy
    trials: list[dict[str, Any]] = field(default_factory=list)  # trial, point, start, end, state

    def best_curve(self) -> list[tuple[float, float]]:
        """(time, best accuracy so far) at every improvement."""
        out, best = [], -1.0
        for e in self.events:
            if e["accuracy"] > best:
                best = e["accuracy"]
                out.append((e["t"], best))
        return out

    def best_at(self, t: float) -> float | None:
        vals = [a for (s, a) in self.best_curve() if s <= t]
        return vals[-1] if vals else None

    def time_to(self, target: float) -> float | None:
        return next((t for t, a in self.best_curve() if a >= target - 1e-12), None)


def simulate(strategy: Strategy, table: CurveTable, budget_s: float, workers: int = 1, startup_s: float = 0.0,
             eval_overhead_s: float = 0.0) -> SimRun:
    """Run ``strategy`` against ``table`` for ``budget_s`` simulated seconds on ``workers`` slots;
    each trial costs ``startup_s`` before its recorded curve and ``eval_overhead_s`` per report."""
    run = SimRun()
    heap: list[tuple[float, int, str, int]] = []
    trials: dict[str, tuple[Curve, dict[str, Any]]] = {}  # trial id → (curve, its record in run.trials)
    counter = itertools.count()
    exhausted = False

    def start(now: float) -> None:
        nonlocal exhausted
        if exhausted or now >= budget_s:
            return
        tid = f"sim{len(run.trials):05d}"
        point = strategy.suggest(tid)
        if point is None:
            exhausted = True
            return
        curve = table.get(point)
        rec = {"trial": tid, "point": point_id(curve.point), "start": now, "end": None, "state": "running"}
        run.trials.append(rec)
        trials[tid] = (curve, rec)
        heapq.heappush(heap, (now + startup_s + curve.elapsed_s[0] + eval_overhead_s, next(counter), tid, 0))

    for _ in range(workers):
        start(0.0)
    while heap:
        t, _, tid, k = heapq.heappop(heap)
        if t > budget_s:
            break
        curve, rec = trials[tid]
        result = {"accuracy": curve.accuracy[k], "samples_seen": curve.samples_seen[k], "training_iteration": k + 1,
                  "samples_total": curve.samples_total, **{f"config/{key}": v for key, v in curve.point.items()}}
        run.events.append({"t": t, "trial": tid, "point": rec["point"], "samples_seen": curve.samples_seen[k],
                           "accuracy": curve.accuracy[k]})
        last = k == len(curve.accuracy) - 1
        if strategy.result(tid, result, last) == STOP:
            rec.update(end=t, state="completed" if last else "pruned")
            start(t)
        else:
            step = curve.elapsed_s[k + 1] - curve.elapsed_s[k] + eval_overhead_s
            heapq.heappush(heap, (t + step, next(counter), tid, k + 1))
    for rec in run.trials:
        if rec["end"] is None:
            rec["state"] = "unfinished"
    return run


def replay_trace(strategy_name: str, table: CurveTable, points: list[dict[str, Any]], budget_s: float,
                 workers: int, startup_s: float, asha: dict[str, Any], eval_overhead_s: float = 0.0) -> SimRun:
    """Simulate a live run's own sequence of configurations (``points``, in start order) under the
    strategy's scheduler: isolates the simulator (clock, curves, stopping) from the searcher."""
    scheduler = make_strategy(strategy_name, 0, asha).scheduler
    return simulate(Strategy(_ListSearcher(points), scheduler), table, budget_s, workers, startup_s, eval_overhead_s)
