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

__all__ = ["Curve", "CurveTable", "Surrogate", "Strategy", "SimRun", "simulate", "ListSearcher", "coordinates", "norm_value"]

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


def norm_value(x: Any) -> Any:
    """One spelling per value, whatever a table or a searcher wrote: ``"all"``/``"none"``/``"full"``/
    ``None`` → ``"all"`` (the whole split), numeric strings and integral floats → ``int``. A parquet
    column cannot mix ints and strings, so a table records a size column holding ``all`` as strings."""
    from trainables.config import ALL_SIZES

    if x is None or (isinstance(x, str) and x.strip().lower() in ALL_SIZES):
        return "all"
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            return x
    if isinstance(x, float) and x.is_integer() and not isinstance(x, bool):
        return int(x)
    return x


def _choice_index(choices: list[Any], x: Any) -> int:
    nx = norm_value(x)
    for i, c in enumerate(choices):
        nc = norm_value(c)
        if nc == nx or (isinstance(nc, (int, float)) and isinstance(nx, (int, float)) and math.isclose(nc, nx)):
            return i
    raise KeyError(f"value {x!r} is not one of the space's choices {list(choices)}")


def coordinates(space: dict[str, Any], point: dict[str, Any]) -> np.ndarray:
    """A configuration as numbers in [0, 1] per searched key: log scale for ``loguniform``, linear
    for ``uniform``/``randint``, the position in the list for ``choice`` (the shipped spaces list
    ranks, multiples, sizes and target presets in increasing order)."""
    out = []
    for key, dist in space.items():
        kind, v, x = dist.kind, getattr(dist, dist.kind), point[key]
        if kind == "choice":
            out.append(_choice_index(v, x) / max(1, len(v) - 1))
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
        missing = [k for k in self.keys if k not in frame.columns]
        if missing:
            raise KeyError(f"the table records no column for the searched keys {missing} (recorded on another space?)")
        self.curves: list[Curve] = []
        self.cut_short: list[str] = []  # configurations whose recording stopped before their end
        for cid, g in frame.groupby("config", sort=True):
            g = g.sort_values("eval")
            setup = float(g["setup_cpu_s"].iloc[0]) if "setup_cpu_s" in g else 0.0
            point = {k: norm_value(_native(g[k].iloc[0])) for k in self.keys}
            curve = Curve(
                str(cid), str(g["kind"].iloc[0]), point, [int(x) for x in g["samples_seen"]],
                [float(x) for x in g["accuracy"]], [float(x) for x in g.get("dev_accuracy", g["accuracy"])],
                [max(0.0, float(x) - setup) for x in g["cpu_s"]], int(g["samples_total"].iloc[0]))
            if curve.samples_seen[-1] < curve.samples_total:  # a finished trial reports at its end
                self.cut_short.append(curve.config)
                continue
            self.curves.append(curve)
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
            d = np.where(self._size == norm_value(point[SIZE_KEY]), d, np.inf)
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


    def mean_full_cost(self) -> float:
        """Mean CPU seconds of a random configuration trained to its end: the budget's unit, so a
        budget stated in trials means the same on tables timed on other hardware."""
        rand = self.random_curves() or self.curves
        return float(np.mean([c.cost_s[-1] for c in rand]))


class Surrogate:
    """A fitted model of the learning curve, for replaying configurations the table never recorded.

    Surrogate benchmarks (Eggensperger et al. 2015, "Efficient Benchmarking of Hyperparameter
    Optimizers via Surrogates"; YAHPO Gym, Pfisterer et al. 2022) replace the nearest recorded
    configuration by a regression model of the metric over the configuration and the fidelity, so
    that a proposal between recorded points scores what its neighbourhood predicts rather than
    exactly what one neighbour measured. Here: scikit-learn gradient boosting of the validation
    (and dev) accuracy, on the logit scale, over the configuration's coordinates and log2 of the
    samples seen. A replayed trial keeps the evaluation points and costs of its nearest recorded
    configuration of the same data size (cost follows the size and the adapted modules, which
    snapping matches exactly) and gets the model's accuracies there, plus the validation split's
    sampling noise added back: binomial on ``noise_n`` examples, drawn per trial and evaluation
    from the replay seed. Its error is measured on held-out configurations (:meth:`cv_error`)."""

    def __init__(self, table: CurveTable, noise_n: int | None = None, folds: int = 10) -> None:
        self.table, self.noise_n, self.folds = table, noise_n, folds
        x, val, dev, self._groups, self._final = self._rows(table.curves)
        self._x, self._val = x, val
        self.val_model = self._fit(x, val)
        self.dev_model = self._fit(x, dev)

    def _features(self, point: dict[str, Any], samples: list[int]) -> np.ndarray:
        c = coordinates(self.table.space, point)
        return np.asarray([[*c, math.log2(max(1, s))] for s in samples], dtype=float)

    def _rows(self, curves: list[Curve]) -> tuple[np.ndarray, ...]:
        x, val, dev, groups, final = [], [], [], [], []
        for i, c in enumerate(curves):
            x.append(self._features(c.point, c.samples_seen))
            val += c.accuracy
            dev += c.dev_accuracy
            groups += [i] * len(c.accuracy)
            final += [k == len(c.accuracy) - 1 for k in range(len(c.accuracy))]
        return np.concatenate(x), _logit(np.asarray(val)), _logit(np.asarray(dev)), np.asarray(groups), np.asarray(final)

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        # small, regularized trees: ~1,000 rows from ~200 configurations
        return HistGradientBoostingRegressor(max_iter=400, learning_rate=0.03, max_leaf_nodes=8, min_samples_leaf=8,
                                             random_state=0).fit(x, y)

    def cv_error(self) -> float:
        """Mean absolute error of the final validation accuracy of configurations held out of the
        fit (grouped ``folds``-fold cross-validation: every evaluation of a configuration is held
        out together), comparable to :meth:`CurveTable.loo_error`."""
        from sklearn.model_selection import GroupKFold

        errs: list[float] = []
        folds = min(self.folds, len(set(self._groups.tolist())))
        for train, test in GroupKFold(folds).split(self._x, self._val, self._groups):
            model = self._fit(self._x[train], self._val[train])
            sel = test[self._final[test]]
            errs += np.abs(_sigmoid(model.predict(self._x[sel])) - _sigmoid(self._val[sel])).tolist()
        return float(np.mean(errs))

    def lookup(self, seed: int) -> Callable[[dict[str, Any]], Curve]:
        """``simulate``'s lookup for one replay seed: a point → its replayed curve."""
        rng = np.random.default_rng(10_007 + seed)

        def curve(point: dict[str, Any]) -> Curve:
            near = self.table.snap(point)
            x = self._features(point, near.samples_seen)
            val = _sigmoid(self.val_model.predict(x))
            if self.noise_n:
                val = np.clip(val + rng.normal(0.0, np.sqrt(val * (1 - val) / self.noise_n)), 0.0, 1.0)
            dev = _sigmoid(self.dev_model.predict(x))
            return Curve(f"{near.config}~", "surrogate", dict(point), list(near.samples_seen), val.tolist(), dev.tolist(),
                         list(near.cost_s), near.samples_total)

        return curve


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


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
