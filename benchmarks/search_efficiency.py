"""Does the study find a good LoRA recipe sooner than what users would do instead?

Strategies (each is a ``study.run`` setting, built by ``study.search.registry.build_search``, so
the replay measures exactly what users run): every searcher of the registry by its name
(``pruned-tpe``, ``rung-tpe`` with the study's defaults: seed recipes first, ASHA; the baselines
``optuna`` — stock Ray ``OptunaSearch`` + ASHA, what a bare Ray Tune + Optuna script does — and
``random`` + ASHA without the seed recipes), ``random-fifo`` (random search, every trial trained to
its end), ``seed-configs`` (the two seed notebooks' recipes at every data size, trained to the end),
and ablations of the default (``--strategies`` lists them).

The space is ``study/configs/sst2-8k.yaml``'s (r, alpha multiple, lr, LoRA dropout, targets and
data size up to 8,000 SST-2 sentences, one epoch; selection on 4,000 sentences held out of train).

Modes:
* ``record``: train ``--n`` random configurations of the space (+ the seed recipes) once each,
  with learning curves, into a parquet table (``benchmarks/curve_table.py``; resumable, shardable
  over cores with ``--shard I/K``).
* ``replay`` (default): simulate each strategy against the table for ``--seeds`` search seeds
  (``benchmarks/replay.py``: the real searcher/scheduler objects, simulated time).
* ``live``: run strategies as real ``python -m study.run`` studies on the same space (one CPU per
  trial, ``--workers`` at once, ``--budget-s`` of wall clock), then replay the same strategies at
  the same settings: is each live time to target inside the replay's interquartile range?

Targets (validation accuracy): the table's 90th, 95th and 99th percentiles of its random
configurations' final accuracy (``p90``/``p95``/``p99``: reached by one configuration in ten, twenty,
a hundred — targets, not needles), the table's best minus ``--target-gap`` (``best-0.5``) and, with
``--target``, an absolute one (``abs``). The goals are measured at ``p95``.

``--json FILE`` writes, per strategy, ``time_to_target_s`` and ``reached`` as objects keyed by
target (medians over seeds; null when the median run misses), ``best_accuracy`` (validation),
``dev_accuracy_of_pick`` (dev accuracy of the evaluation the study would pick at the budget) and
``anytime_area`` (the mean regret against the table's best over the budget: the area under the
anytime curve, lower is better); top level ``default`` (the searcher ``study.run`` uses by
default), ``targets``, ``seeds``, ``workers``, ``mode``, ``budget_s``, ``table`` (path, configs) and
``replay_error`` (how well the replay predicts a held-out configuration: no difference smaller than
that is a claim); quartiles, anytime curves, per-seed runs, goals and provenance under
``details``. The file is rewritten after each strategy. ``--budget-trials N`` states the budget in
mean full-trial costs of the table, so one setting means the same on tables timed on other
hardware. ``--plot FILE`` (default: beside the JSON) draws the anytime curves.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks`, `study`, `trainables` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BenchmarkError, run_metadata, sst2_dir, write_json  # noqa: E402
from study.search.registry import DEFAULT_SEARCHER, SEARCHERS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TABLE = RESULTS / "curves-sst2-space.parquet"
MAIN = (DEFAULT_SEARCHER, "optuna", "random", "random-fifo")
#: Random configurations a table needs before replay: fewer leave the snapping weights unfit.
MIN_CONFIGS = 5


# --------------------------------------------------------------------------- strategies


def _variant(**updates: Any) -> Callable[[Any], Any]:
    """A study config with some sections changed (``{"study": {"seed_points": False}}``)."""

    def apply(cfg: Any) -> Any:
        from study.config import StudyConfig

        data = cfg.model_dump()
        for section, values in updates.items():
            data[section] = {**data[section], **values}
        return StudyConfig.model_validate(data)

    return apply


def _strategies() -> dict[str, tuple[str, Callable[[Any], Any]]]:
    """name → (description, how the study config differs from the benchmark space's defaults):
    one per registered searcher as the space runs it, the baselines as users run them (with ASHA,
    without the seed recipes), then ablations of the default."""
    baselines = {"optuna", "random"}
    asha = {"enabled": True}  # the baselines' early stopping, at the space's rungs
    out = {name: (entry.summary + ("" if name not in baselines else " + ASHA; no seed recipes"),
                  _variant(study={"searcher": name, **({"seed_points": False} if name in baselines else {})},
                           **({"asha": asha} if name in baselines else {})))
           for name, entry in SEARCHERS.items()}
    out["random-fifo"] = ("random search, every trial trained to its end",
                          _variant(study={"searcher": "random", "seed_points": False}, asha={"enabled": False}))
    d = DEFAULT_SEARCHER
    out[f"{d}-no-seeds"] = ("the default without the seed recipes first", _variant(study={"searcher": d, "seed_points": False}))
    out[f"{d}-asha"] = ("the default with ASHA (first rung 2,000 samples, factor 2)", _variant(study={"searcher": d}, asha=asha))
    out[f"{d}-asha-500"] = ("the default with ASHA's first rung at 500 samples",
                            _variant(study={"searcher": d}, asha={**asha, "grace_period": 500}))
    out[f"{d}-stock-feedback"] = ("the default with ASHA, its stopped trials told COMPLETE at low fidelity (stock Ray)",
                                  _variant(study={"searcher": d}, asha=asha, optuna={"pruned_feedback": False}))
    return out


STRATEGIES = _strategies()


def strategy_names(requested: str | None, default: tuple[str, ...]) -> list[str]:
    names = [s.strip() for s in requested.split(",")] if requested else list(default)
    unknown = [n for n in names if n not in STRATEGIES and n != "seed-configs"]
    if unknown:
        raise BenchmarkError(f"unknown strategies {unknown} (known: {', '.join([*STRATEGIES, 'seed-configs'])})")
    return names


def make_strategy(name: str, cfg: Any, seed: int, n_train: int, workers: int = 4) -> Any:
    """The replay's ``Strategy`` for ``name``: ``study.search.registry.build_search`` of the variant config."""
    from benchmarks.replay import ListSearcher, Strategy
    from study.search.registry import build_search

    keys = list(cfg.search)
    if name == "seed-configs":
        from benchmarks.curve_table import seed_configs

        return Strategy(ListSearcher([p for _, p in seed_configs(cfg)]), None, keys)
    variant = STRATEGIES[name][1](cfg)
    variant = variant.model_copy(update={"study": variant.study.model_copy(update={"seed": seed, "max_concurrent": workers})})
    built = build_search(variant, n_train)
    searcher = built.searcher
    if hasattr(searcher, "set_search_properties"):
        from study.search.registry import searched_space

        searcher.set_search_properties(variant.study.metric, variant.study.mode, searched_space(variant))
    return Strategy(searcher, built.scheduler, keys)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="replay", choices=("replay", "live", "record"))
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="recorded curve table (parquet)")
    ap.add_argument("--space", default=None, help="study YAML whose space and fixed keys the table records "
                                                  "(default study/configs/sst2-8k.yaml)")
    ap.add_argument("--data", default=None, help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--seeds", type=int, default=None, help="search seeds per strategy (default: 50 replay, 1 live)")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--budget-s", type=float, default=None, help="simulated/wall budget per study (default 3600 s)")
    budget.add_argument("--budget-trials", type=float, default=None,
                        help="budget in mean full-trial costs of the table (scales to any table's hardware)")
    ap.add_argument("--workers", type=int, default=4, help="trials at once (default 4)")
    ap.add_argument("--startup-s", type=float, default=None,
                    help="per-trial start-up seconds in replay (default: the latest benchmarks/results/overhead-*.json)")
    ap.add_argument("--eval-overhead-s", type=float, default=None,
                    help="per-report overhead seconds in replay (default: the same file's)")
    ap.add_argument("--target-gap", type=float, default=0.005, help="the 'best-…' target: best validation accuracy in the table minus this")
    ap.add_argument("--target", type=float, default=None, help="also an absolute target validation accuracy (row 'abs')")
    ap.add_argument("--lookup", choices=("auto", "snap", "surrogate"), default="auto",
                    help="how a suggested configuration meets the table: its nearest recorded curve, a fitted "
                         "surrogate of the curve, or whichever predicts held-out configurations better (default)")
    ap.add_argument("--strategies", default=None, help="comma-separated (default: the main ones + seed-configs)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON (rewritten after each strategy)")
    ap.add_argument("--plot", default=None, metavar="FILE", help="anytime-curve PNG (default: beside --json)")
    ap.add_argument("--n", type=int, default=200, help="record: random configurations (default 200)")
    ap.add_argument("--shard", default="0/1", help="record: I/K records every K-th configuration from the I-th")
    ap.add_argument("--limit", type=int, default=None, help="record: at most this many new configurations")
    ap.add_argument("--reverse", action="store_true", help="record: take the shard's configurations from its end "
                                                           "(a second process on the same shard)")
    ap.add_argument("--storage", default=None, help="live: where the live studies are kept")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        ap.error("--seeds must be ≥ 1")
    if (args.budget_s is not None and args.budget_s <= 0) or (args.budget_trials is not None and args.budget_trials <= 0) or args.workers < 1:
        ap.error("--budget-s / --budget-trials must be > 0 and --workers ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    try:
        if args.mode == "record":
            from benchmarks.curve_table import record_table

            i, k = (int(x) for x in args.shard.split("/"))
            record_table(args.table, sst2_dir(args.data), n=args.n, shard=(i, k), limit=args.limit, space=_space_path(args),
                         reverse=args.reverse)
            return 0
        result = (run_replay if args.mode == "replay" else run_live)(args)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        plot_curves(result, plot)
        print(f"wrote {plot}")
    return 0


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------- table, targets, summaries


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(space config, fitted ``CurveTable``); configurations whose recording stopped before their
    end are left out with a line saying so (they would replay as trials that finished early)."""
    from benchmarks.curve_table import load_table
    from benchmarks.replay import CurveTable

    cfg = _space_cfg(args)
    try:
        table = CurveTable(load_table(args.table), cfg.search)
    except KeyError as e:
        raise BenchmarkError(f"{args.table}: {e.args[0]}") from None
    if table.cut_short:
        print(f"note: {len(table.cut_short)} configurations recorded only in part, left out: {', '.join(table.cut_short[:8])}"
              + (" …" if len(table.cut_short) > 8 else ""), flush=True)
    if len(table.random_curves()) < MIN_CONFIGS:
        raise BenchmarkError(f"{args.table}: only {len(table.random_curves())} configurations recorded; record more first")
    table.fit_weights()
    return cfg, table


def targets_of(table: Any, args: argparse.Namespace) -> dict[str, float]:
    """The validation accuracies a strategy races to: the table's 90th/95th/99th percentiles of
    final validation accuracy over its random configurations (targets that many configurations
    reach, not needles), the table's best minus ``--target-gap`` (``best-0.5`` for 0.005), and
    ``abs`` (``--target``) when given."""
    import numpy as np

    finals = [c.final for c in table.random_curves()]
    out = {f"p{q}": round(float(np.percentile(finals, q)), 6) for q in (90, 95, 99)}
    out[f"best-{args.target_gap * 100:g}"] = round(table.best_accuracy() - args.target_gap, 6)
    if args.target is not None:
        out["abs"] = float(args.target)
    return out


def _quantiles(xs: list[float | None]) -> list[float | None]:
    """Quartiles (25/50/75 %) where None means 'never' (slower than every run that got there)."""
    vals = sorted(math.inf if x is None else x for x in xs)
    if not vals:
        return [None, None, None]
    import numpy as np

    q = np.quantile(np.asarray(vals), [0.25, 0.5, 0.75], method="lower")
    return [None if math.isinf(v) else float(v) for v in q]


#: Points of the anytime curve over the budget (the plot and the regret area use the same grid).
GRID_POINTS = 121


def anytime(run: Any, budget_s: float, best: float, floor: float) -> tuple[list[float], float]:
    """(best validation accuracy so far at each grid time, mean regret over the budget). Regret is
    the table's best minus the best so far; before a strategy's first evaluation it counts from
    ``floor`` (the table's worst final accuracy), so a slow start costs what it should."""
    curve = run.best_curve()
    grid = [budget_s * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
    so_far, k, cur = [], 0, floor
    for g in grid:
        while k < len(curve) and curve[k][0] <= g:
            cur = max(cur, curve[k][1])
            k += 1
        so_far.append(cur)
    return so_far, float(sum(best - v for v in so_far) / len(so_far))


def run_record(run: Any, budget_s: float, targets: dict[str, float], best: float, floor: float) -> dict[str, Any]:
    """A simulated or live run → the per-seed figures."""
    states = [t["state"] for t in run.trials]
    pick = run.pick_at(budget_s)
    so_far, regret = anytime(run, budget_s, best, floor)
    return {
        "time_to_target_s": {name: run.time_to(v) for name, v in targets.items()},
        "best_accuracy": run.best_at(budget_s),
        "dev_accuracy_of_pick": pick["dev_accuracy"] if pick else None,
        "pick": pick,
        "trials": len(run.trials),
        "completed": states.count("completed"),
        "pruned": states.count("pruned"),
        "anytime_regret": round(regret, 6),
        "anytime": [round(v, 5) for v in so_far],
        "best_curve": [[round(t, 1), a] for t, a in run.best_curve()],
    }


def summarize_runs(runs: list[dict[str, Any]], best: float) -> dict[str, Any]:
    """Medians and quartiles over seeds for one strategy (``runs``: one dict per seed)."""
    import numpy as np

    names = list(runs[0]["time_to_target_s"])
    ttt = {n: _quantiles([r["time_to_target_s"][n] for r in runs]) for n in names}
    bests = [r["best_accuracy"] for r in runs if r["best_accuracy"] is not None]
    dev = [r["dev_accuracy_of_pick"] for r in runs if r["dev_accuracy_of_pick"] is not None]
    curves = np.asarray([r["anytime"] for r in runs], dtype=float)
    q25, med, q75 = (np.quantile(curves, q, axis=0) for q in (0.25, 0.5, 0.75))
    regret = [r["anytime_regret"] for r in runs]
    return {
        "time_to_target_s": {n: q[1] for n, q in ttt.items()},
        "time_to_target_iqr_s": {n: [q[0], q[2]] for n, q in ttt.items()},
        "reached": {n: sum(r["time_to_target_s"][n] is not None for r in runs) for n in names},
        "best_accuracy": statistics.median(bests) if bests else None,
        "dev_accuracy_of_pick": statistics.median(dev) if dev else None,
        "anytime_area": round(statistics.median(regret), 6),
        "anytime_area_iqr": [round(float(np.quantile(regret, 0.25)), 6), round(float(np.quantile(regret, 0.75)), 6)],
        "anytime_curve": {"best_median": [round(v, 5) for v in med], "best_q25": [round(v, 5) for v in q25],
                          "best_q75": [round(v, 5) for v in q75], "regret_median": [round(best - v, 5) for v in med]},
        "trials_median": statistics.median(r["trials"] for r in runs),
        "pruned_median": statistics.median(r["pruned"] for r in runs),
        "per_seed": [{k: v for k, v in r.items() if k != "anytime"} for r in runs],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if b is None:
        return None
    return math.inf if a is None else round(a / b, 2)


#: The target the speed goals are measured at (a target many configurations reach).
GOAL_TARGET = "p95"


def goals(per: dict[str, dict[str, Any]], dev_p95: float | None = None) -> dict[str, Any]:
    """The goals for the default searcher at the ``p95`` target: ≥3× sooner than ``random-fifo`` and
    ≥1.5× sooner than stock ``optuna`` (medians), in at least as many seeds as random search; the
    pick's dev accuracy ≥ the table's 95th percentile of final dev accuracy and ≥ the better seed
    recipe's + 1 point."""
    from study.search.registry import DEFAULT_SEARCHER

    ours = per.get(DEFAULT_SEARCHER, {})
    out: dict[str, Any] = {"default": DEFAULT_SEARCHER, "target": GOAL_TARGET}
    if not ours:
        return out
    for other, need in (("random-fifo", 3.0), ("optuna", 1.5)):
        if other in per:
            r = _ratio(per[other]["time_to_target_s"].get(GOAL_TARGET), ours["time_to_target_s"].get(GOAL_TARGET))
            out[f"speedup_vs_{other}"] = r
            out[f"speedup_vs_{other}_goal"] = need
            out[f"speedup_vs_{other}_met"] = r is not None and r >= need
    randoms = [per[n]["reached"][GOAL_TARGET] for n in ("random-fifo", "random") if n in per]
    if randoms:
        out["reached"] = ours["reached"][GOAL_TARGET]
        out["reached_by_random"] = max(randoms)
        out["reached_met"] = ours["reached"][GOAL_TARGET] >= max(randoms)
    if dev_p95 is not None and ours.get("dev_accuracy_of_pick") is not None:
        out["dev_of_pick_vs_table_p95"] = round(ours["dev_accuracy_of_pick"] - dev_p95, 4)
        out["dev_of_pick_vs_table_p95_met"] = ours["dev_accuracy_of_pick"] >= dev_p95
    if "seed-configs" in per and ours.get("dev_accuracy_of_pick") is not None:
        gain = ours["dev_accuracy_of_pick"] - per["seed-configs"]["dev_accuracy_of_pick"]
        out["dev_gain_vs_seed_recipes"] = round(gain, 4)
        out["dev_gain_vs_seed_recipes_met"] = gain >= 0.01
    return out


def _overheads(args: argparse.Namespace) -> dict[str, Any]:
    """Per-trial start-up and per-report overhead for the replay clock, and where they come from:
    measured on this project's CPU machine by ``benchmarks/overhead.py`` unless given. They are
    seconds of a real study outside the trainable; a table timed on other hardware should pass its
    own (``--startup-s``, ``--eval-overhead-s``)."""
    files = sorted(RESULTS.glob("overhead-*.json"))
    data = json.loads(files[-1].read_text()) if files else None
    startup, per_eval = args.startup_s, args.eval_overhead_s
    if (startup is None or per_eval is None) and data is None:
        raise BenchmarkError("no per-trial start-up time: run `python -m benchmarks.overhead --json "
                             "benchmarks/results/overhead-DATE.json` first, or pass --startup-s and --eval-overhead-s")
    src = []
    if startup is None:
        startup = float(data["replay_startup_s"])
        src.append(f"start-up: median measured by {files[-1].name}")
    else:
        src.append("start-up: given (--startup-s)")
    if per_eval is None:
        per_eval = float(data["replay_eval_overhead_s"])
        src.append(f"per report: measured by {files[-1].name}")
    else:
        src.append("per report: given (--eval-overhead-s)")
    hardware = (data or {}).get("hardware", {}).get("cpu") if data else None
    return {"startup_s": startup, "eval_overhead_s": per_eval, "source": "; ".join(src), "measured_on": hardware}


def _budget(args: argparse.Namespace, table: Any) -> tuple[float, float]:
    """(budget in seconds, the same in mean full-trial costs of this table)."""
    mean_cost = table.mean_full_cost()
    if args.budget_trials is not None:
        return args.budget_trials * mean_cost, args.budget_trials
    budget = args.budget_s if args.budget_s is not None else 3600.0
    return budget, round(budget / mean_cost, 2)


def table_facts(table: Any, targets: dict[str, float]) -> dict[str, Any]:
    """What the table says about the space: best accuracies, how many configurations reach each
    target, the replay's own error."""
    import numpy as np

    rand = table.random_curves()
    return {
        "configs": len(table),
        "random_configs": len(rand),
        "cut_short": list(table.cut_short),
        "best_accuracy": table.best_accuracy(),
        "best_config": max(table.curves, key=lambda c: c.best).point,
        "median_final_accuracy": float(np.median([c.final for c in rand])),
        "dev_p95": round(float(np.percentile([c.dev_accuracy[-1] for c in rand], 95)), 6),
        "random_configs_reaching": {n: sum(c.best >= v - 1e-12 for c in rand) for n, v in targets.items()},
        "snap_weights": dict(zip(table.keys, table.weights.tolist())),
        "mean_full_cost_s": round(table.mean_full_cost(), 1),
    }


def _lookup(args: argparse.Namespace, table: Any) -> tuple[str, dict[str, Any], Any]:
    """(lookup name, the replay's errors, surrogate or None): the snapping's leave-one-out error and
    the surrogate's cross-validated error on held-out configurations' final validation accuracy;
    ``auto`` replays against whichever is smaller."""
    from benchmarks.replay import Surrogate

    errors: dict[str, Any] = {"snap_loo_mae": round(table.loo_error(), 4)}
    surrogate = None
    if args.lookup in ("auto", "surrogate"):
        surrogate = Surrogate(table, noise_n=_validation_size(args.table))
        errors["surrogate_cv_mae"] = round(surrogate.cv_error(), 4)
    name = args.lookup
    if name == "auto":
        name = "surrogate" if errors["surrogate_cv_mae"] < errors["snap_loo_mae"] else "snap"
    errors["lookup"] = name
    errors["what"] = ("mean absolute error of the replay's prediction of a held-out configuration's final validation "
                      "accuracy: differences between strategies smaller than this are not claims")
    return name, errors, (surrogate if name == "surrogate" else None)


def _validation_size(table_path: str) -> int | None:
    """Examples in the validation split the table selected on (its provenance), for the noise a
    surrogate adds back: a binomial proportion's standard error on that many examples."""
    prov = _provenance(table_path) or {}
    return (prov.get("fixed") or {}).get("data.holdout_size")


def run_replay(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.replay import simulate

    cfg, table = load(args)
    n_train = max(c.samples_total for c in table.curves)  # ASHA's max_t: the most any recorded trial saw
    names = strategy_names(args.strategies, (*MAIN, "seed-configs"))
    seeds = args.seeds or 50
    targets = targets_of(table, args)
    budget, budget_trials = _budget(args, table)
    over = _overheads(args)
    lookup_name, errors, surrogate = _lookup(args, table)
    best, floor = table.best_accuracy(), min(c.final for c in table.curves)
    facts = table_facts(table, targets)
    print(f"replay: {len(table)} configurations, targets {targets}, budget {budget:.0f} s (= {budget_trials:g} mean full trials), "
          f"{args.workers} workers, lookup {lookup_name} (held-out error: snap {errors['snap_loo_mae']}"
          + (f", surrogate {errors['surrogate_cv_mae']}" if "surrogate_cv_mae" in errors else "") + ")", flush=True)
    t0 = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    extra = {"table_facts": facts, "table_provenance": _provenance(args.table), "overheads": over, "replay_error": errors,
             "budget_trials": budget_trials,
             "strategies_described": {n: (STRATEGIES[n][0] if n in STRATEGIES else "the two seed recipes at every data size, FIFO")
                                      for n in names}}
    for name in names:
        runs = []
        t_name = time.perf_counter()
        for seed in range(1 if name == "seed-configs" else seeds):
            lookup = surrogate.lookup(seed) if surrogate is not None else None
            run = simulate(make_strategy(name, cfg, seed, n_train, args.workers), table, budget, args.workers,
                           over["startup_s"], over["eval_overhead_s"], lookup=lookup)
            runs.append({"seed": seed, **run_record(run, budget, targets, best, floor)})
        per[name] = summarize_runs(runs, best)
        s = per[name]
        print(f"{name}: time to {GOAL_TARGET} {_fmt_s(s['time_to_target_s'][GOAL_TARGET])} s, reached {s['reached'][GOAL_TARGET]}/{len(runs)}, "
              f"anytime regret {s['anytime_area']:.4f} ({time.perf_counter() - t_name:.0f} s)", flush=True)
        if args.json:  # nothing is lost if a later strategy fails or the run is stopped
            write_json(args.json, _result("replay", per, targets, seeds, args, budget,
                                          {**extra, "simulated_in_s": round(time.perf_counter() - t0, 1), "partial": True}))
    return _result("replay", per, targets, seeds, args, budget, {**extra, "simulated_in_s": round(time.perf_counter() - t0, 1)})


def _provenance(table_path: str) -> Any:
    meta = Path(table_path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else None


def _result(mode: str, per: dict[str, dict[str, Any]], targets: dict[str, float], seeds: int, args: argparse.Namespace,
            budget_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.curve_table import load_table
    from study.search.registry import DEFAULT_SEARCHER

    keys = ("time_to_target_s", "reached", "best_accuracy", "dev_accuracy_of_pick", "anytime_area")
    out: dict[str, Any] = {name: {k: s[k] for k in keys} for name, s in per.items()}
    try:
        n_configs = int(load_table(args.table)["config"].nunique())
    except BenchmarkError:
        n_configs = None
    rel = Path(args.table).resolve()
    facts = extra.get("table_facts", {})
    out.update(default=DEFAULT_SEARCHER, targets=targets, seeds=seeds, workers=args.workers, mode=mode, budget_s=budget_s,
               table={"path": str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else str(rel), "configs": n_configs,
                      "replayed_configs": facts.get("configs")},
               replay_error=extra.get("replay_error"))
    out["goals"] = goals(per, facts.get("dev_p95"))
    out["details"] = {"strategies": per, **extra, **run_metadata()}
    return out


# --------------------------------------------------------------------------- live and validate


def live_config(name: str, seed: int, args: argparse.Namespace, data: Path, budget_s: float) -> list[str]:
    """``study.run`` arguments of one strategy on the benchmark space: the space YAML with the
    strategy's differences, a wall-clock budget, ``--workers`` one-CPU trials at once."""
    if name not in STRATEGIES:
        raise BenchmarkError(f"live mode runs {', '.join(STRATEGIES)}; {name} is replay-only")

    cfg = STRATEGIES[name][1](_space_cfg(args))
    sets = {f"study.{k}": v for k, v in cfg.study.model_dump().items() if k in ("searcher", "seed_points")}
    sets.update({"asha.enabled": cfg.asha.enabled, "study.seed": seed, "study.time_budget_s": budget_s,
                 "study.num_samples": 10_000, "study.max_concurrent": args.workers, "resources.cpus_per_trial": 1,
                 "data.path": str(data)})
    return ["--config", str(_space_path(args)), *(x for k, v in sets.items() for x in ("--set", f"{k}={json.dumps(v)}"))]


def _space_path(args: argparse.Namespace) -> Path:
    from benchmarks.curve_table import SPACE_CONFIG

    return Path(args.space) if getattr(args, "space", None) else SPACE_CONFIG


def _space_cfg(args: argparse.Namespace) -> Any:
    from benchmarks.curve_table import space_config
    from trainables.config import ConfigError

    try:
        return space_config(_space_path(args))
    except ConfigError as e:
        raise BenchmarkError(str(e)) from None


def live_trace(name: str, storage: str | None, keys: list[str]) -> Any:
    """A finished live study as a ``SimRun``: its evaluations on the study's clock (seconds since
    ``tuner.fit`` started, from each report's ``time_unix``) and its trials, from stored results."""
    from ray.tune import ExperimentAnalysis

    from benchmarks.replay import SimRun
    from study.storage.studies import read_study
    from study.tracking.summary import trial_state

    paths, record = read_study(name, storage)
    t0 = record.get("fit_started_unix")
    if t0 is None:
        raise BenchmarkError(f"study {name} has no fit_started_unix in study.json (run by an older study.run)")
    run = SimRun()
    for trial in ExperimentAnalysis(paths.experiment).trials:
        rows = _rows(paths.experiment, trial)
        if not rows:
            continue
        run.trials.append({"trial": trial.trial_id, "config": trial.trial_id, "params": {k: trial.config.get(k) for k in keys},
                           "start": rows[0]["time_unix"] - t0 - rows[0]["eval_s"] - rows[0]["train_s"] - rows[0]["setup_s"],
                           "end": rows[-1]["time_unix"] - t0, "state": trial_state(trial.status, trial.last_result or {})})
        run.events += [{"t": r["time_unix"] - t0, "trial": trial.trial_id, "config": trial.trial_id, "samples_seen": int(r["samples_seen"]),
                        "accuracy": float(r["accuracy"]), "dev_accuracy": float(r.get("dev_accuracy", float("nan")))} for r in rows]
    run.events.sort(key=lambda e: e["t"])
    run.trials.sort(key=lambda t: t["start"])
    return run


def _rows(experiment: str, trial: Any) -> list[dict[str, Any]]:
    """A trial's reported results in time order, read from its ``result.json``."""
    from study.storage.trials import read_json_lines

    path = Path(experiment) / Path(trial.path).name / "result.json" if getattr(trial, "path", None) else None
    if path is None or not path.is_file():
        return []
    return sorted((r for r in read_json_lines(path.read_text()) if "time_unix" in r), key=lambda r: r["time_unix"])


def run_live(args: argparse.Namespace) -> dict[str, Any]:
    """Each strategy as a real study (``--seeds`` of them), then the replay of the same strategies
    at the same workers and budget: does each live time to target fall inside the replay's
    interquartile range?"""
    names = strategy_names(args.strategies, MAIN)
    seeds = args.seeds or 1
    data = sst2_dir(args.data)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="lora-study-bench-")).resolve()
    cfg, table = load(args)
    targets = targets_of(table, args)
    budget, _ = _budget(args, table)
    best, floor = table.best_accuracy(), min(c.final for c in table.curves)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            study = f"se-{name}-s{seed}-{stamp}"
            _run_study(live_config(name, seed, args, data, budget), study, storage)
            run = live_trace(study, str(storage), list(cfg.search))
            runs.append({"seed": seed, "study": study, **run_record(run, budget, targets, best, floor)})
            print(f"{name} seed {seed}: best {runs[-1]['best_accuracy']}, time to {GOAL_TARGET} "
                  f"{_fmt_s(runs[-1]['time_to_target_s'][GOAL_TARGET])} s", flush=True)
        per[name] = summarize_runs(runs, best)
    replay = run_replay(argparse.Namespace(**{**vars(args), "strategies": ",".join(names), "seeds": 50, "json": None,
                                              "budget_s": budget, "budget_trials": None}))
    agreement = {}
    for name in names:
        lo, hi = replay["details"]["strategies"][name]["time_to_target_iqr_s"][GOAL_TARGET]
        live = per[name]["time_to_target_s"][GOAL_TARGET]
        inside = (live is None and hi is None) or (live is not None and (lo is None or live >= lo) and (hi is None or live <= hi))
        agreement[name] = {"target": GOAL_TARGET, "live_time_to_target_s": live,
                           "replay_median_s": replay[name]["time_to_target_s"][GOAL_TARGET], "replay_iqr_s": [lo, hi],
                           "inside_iqr": inside}
    return _result("live", per, targets, seeds, args, budget, {"storage": str(storage), "agreement": agreement,
                                                               "replay": {k: v for k, v in replay.items() if k != "details"}})


def _run_study(study_args: list[str], name: str, storage: Path) -> None:
    storage.mkdir(parents=True, exist_ok=True)
    log = storage / f"{name}.log"
    print(f"live: {name} (log {log})", flush=True)
    env = {**os.environ, "LORA_STUDY_HOME": str(storage)}
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "study.run", *study_args, "--name", name, "--storage", str(storage)],
                            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise BenchmarkError(f"study {name} exited with {rc}; see {log}")


# --------------------------------------------------------------------------- output


def _fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


def print_table(result: dict[str, Any]) -> None:
    d = result["details"]
    err = result.get("replay_error") or {}
    print(f"\nsearch efficiency ({result['mode']}, {result['seeds']} seeds, budget {result['budget_s']:.0f} s, "
          f"{result['workers']} workers); targets (validation accuracy): "
          + ", ".join(f"{k} {v:.4f}" for k, v in result["targets"].items())
          + (f"; replay error {err.get(err.get('lookup', '') + ('_loo_mae' if err.get('lookup') == 'snap' else '_cv_mae'))}" if err else ""))
    names = list(result["targets"])
    head = f"{'strategy':<28}" + "".join(f"{'time to ' + n + ' [IQR]':>26}{'reached':>8}" for n in names) + f"{'regret':>8}{'dev pick':>9}"
    print(head)
    print("-" * len(head))
    for name, s in d["strategies"].items():
        row = f"{name:<28}"
        for n in names:
            iqr = s["time_to_target_iqr_s"][n]
            cell = f"{_fmt_s(s['time_to_target_s'][n])} [{_fmt_s(iqr[0])}-{_fmt_s(iqr[1])}]"
            row += f"{cell:>26}{s['reached'][n]:>5}/{len(s['per_seed']):<2}"
        print(row + f"{s['anytime_area']:>8.4f}{(s['dev_accuracy_of_pick'] or 0):>9.4f}")
    for k, v in result.get("goals", {}).items():
        print(f"{k}: {v}")


def plot_curves(result: dict[str, Any], path: str) -> None:
    """Median and interquartile band over seeds of the best validation accuracy so far against time."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    import numpy as np

    from study.search.registry import DEFAULT_SEARCHER as default

    warnings.filterwarnings("ignore", category=RuntimeWarning)
    budget = result["budget_s"]
    grid = np.linspace(0, budget, GRID_POINTS)
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, s in result["details"]["strategies"].items():
        c = s["anytime_curve"]
        q25, med, q75 = (np.asarray(c[k]) for k in ("best_q25", "best_median", "best_q75"))
        style = {"lw": 2.4} if name == default else {"lw": 1.3, "ls": "--" if name.startswith(f"{default}-") else "-"}
        line, = ax.plot(grid, med, label=name, **style)
        if len(s["per_seed"]) > 1:
            ax.fill_between(grid, q25, q75, color=line.get_color(), alpha=0.15)
    for (tname, tval), shade in zip(result["targets"].items(), ("0.65", "0.35", "0.0", "tab:red", "tab:purple")):
        ax.axhline(tval, color=shade, ls=":", lw=1.0, label=f"{tname} {tval:.4f}")
    ax.set_xlabel("seconds (simulated, CPU-seconds per worker)" if result["mode"] == "replay" else "wall-clock seconds")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"Search efficiency on the study's space ({result['mode']}, {result['seeds']} seeds, {result['workers']} workers; "
                 "median and interquartile band)", fontsize=9)
    ax.set_ylim(min(result["targets"].values()) - 0.05, None)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # outside the axes: never on the data
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
