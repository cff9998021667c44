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

Target: the table's best validation accuracy minus ``--target-gap`` (0.005: within half a point).

``--json FILE`` writes, per strategy, the medians over seeds of ``time_to_target_s`` (null when the
median run misses the target), ``best_accuracy`` (validation) and ``dev_accuracy_of_pick`` (dev
accuracy of the evaluation the study would pick at the budget), plus ``target``, ``seeds``,
``workers``, ``mode`` and ``table`` (path and number of configurations); details (quartiles,
per-seed runs, goals, provenance) under ``details``. ``--plot FILE`` (default: beside the JSON)
draws the anytime curves: best validation accuracy so far against simulated time, median and
quartiles over seeds.
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

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TABLE = RESULTS / "curves-sst2-space.parquet"
MAIN = ("pruned-tpe", "optuna", "random", "random-fifo")
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
    one per registered searcher (baselines without the seed recipes), then variants."""
    from study.search.registry import DEFAULT_SEARCHER, SEARCHERS

    baselines = {"optuna", "random"}
    out = {name: (entry.summary + ("" if name not in baselines else "; no seed recipes"),
                  _variant(study={"searcher": name, **({"seed_points": False} if name in baselines else {})}))
           for name, entry in SEARCHERS.items()}
    out["random-fifo"] = ("random search, every trial trained to its end",
                          _variant(study={"searcher": "random", "seed_points": False}, asha={"enabled": False}))
    out[f"{DEFAULT_SEARCHER}-no-seeds"] = ("the default without the seed recipes first",
                                           _variant(study={"searcher": DEFAULT_SEARCHER, "seed_points": False}))
    out[f"{DEFAULT_SEARCHER}-stock-feedback"] = ("the default, but ASHA-stopped trials told COMPLETE at low fidelity (stock Ray)",
                                                 _variant(study={"searcher": DEFAULT_SEARCHER}, optuna={"pruned_feedback": False}))
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
    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="replay", choices=("replay", "live", "record"))
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="recorded curve table (parquet)")
    ap.add_argument("--space", default=None, help="study YAML whose space and fixed keys the table records "
                                                  "(default study/configs/sst2-8k.yaml)")
    ap.add_argument("--data", default=None, help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--seeds", type=int, default=None, help="search seeds per strategy (default: 50 replay, 1 live)")
    ap.add_argument("--budget-s", type=float, default=3600.0, help="simulated/wall budget per study (default 3600 s)")
    ap.add_argument("--workers", type=int, default=4, help="trials at once (default 4)")
    ap.add_argument("--startup-s", type=float, default=None,
                    help="per-trial start-up seconds in replay (default: the latest benchmarks/results/overhead-*.json)")
    ap.add_argument("--target-gap", type=float, default=0.005, help="target = best validation accuracy in the table minus this")
    ap.add_argument("--strategies", default=None, help="comma-separated (default: the four main ones + seed_configs)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the medians (and details) as JSON")
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
    if args.budget_s <= 0 or args.workers < 1:
        ap.error("--budget-s must be > 0 and --workers ≥ 1")
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


# --------------------------------------------------------------------------- table, target, summaries


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(space config, fitted ``CurveTable``)."""
    from benchmarks.curve_table import load_table
    from benchmarks.replay import CurveTable

    cfg = _space_cfg(args)
    table = CurveTable(load_table(args.table), cfg.search)
    if len(table.random_curves()) < MIN_CONFIGS:
        raise BenchmarkError(f"{args.table}: only {len(table.random_curves())} configurations recorded; record more first")
    table.fit_weights()
    return cfg, table


def _quantiles(xs: list[float | None]) -> list[float | None]:
    """Quartiles (25/50/75 %) where None means 'never' (slower than every run that got there)."""
    vals = sorted(math.inf if x is None else x for x in xs)
    if not vals:
        return [None, None, None]
    import numpy as np

    q = np.quantile(np.asarray(vals), [0.25, 0.5, 0.75], method="lower")
    return [None if math.isinf(v) else float(v) for v in q]


def run_record(run: Any, budget_s: float, target: float) -> dict[str, Any]:
    """A simulated or live run → the per-seed figures."""
    states = [t["state"] for t in run.trials]
    pick = run.pick_at(budget_s)
    return {
        "time_to_target_s": run.time_to(target),
        "best_accuracy": run.best_at(budget_s),
        "dev_accuracy_of_pick": pick["dev_accuracy"] if pick else None,
        "pick": pick,
        "trials": len(run.trials),
        "completed": states.count("completed"),
        "pruned": states.count("pruned"),
        "best_curve": [[round(t, 1), a] for t, a in run.best_curve()],
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and quartiles over seeds for one strategy (``runs``: one dict per seed)."""
    ttt = _quantiles([r["time_to_target_s"] for r in runs])
    best = [r["best_accuracy"] for r in runs if r["best_accuracy"] is not None]
    dev = [r["dev_accuracy_of_pick"] for r in runs if r["dev_accuracy_of_pick"] is not None]
    return {
        "time_to_target_s": ttt[1],
        "time_to_target_iqr_s": [ttt[0], ttt[2]],
        "reached": sum(r["time_to_target_s"] is not None for r in runs),
        "best_accuracy": statistics.median(best) if best else None,
        "dev_accuracy_of_pick": statistics.median(dev) if dev else None,
        "trials_median": statistics.median(r["trials"] for r in runs),
        "pruned_median": statistics.median(r["pruned"] for r in runs),
        "per_seed": runs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if b is None:
        return None
    return math.inf if a is None else round(a / b, 2)


def goals(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The goals: the default searcher ≥3× sooner than ``random-fifo`` and ≥1.5× sooner than stock
    ``optuna``; the pick's dev accuracy ≥ the better seed recipe's + 1 point."""
    from study.search.registry import DEFAULT_SEARCHER

    ours = per.get(DEFAULT_SEARCHER, {})
    out: dict[str, Any] = {}
    for other, need in (("random-fifo", 3.0), ("optuna", 1.5)):
        if other in per and ours:
            r = _ratio(per[other]["time_to_target_s"], ours["time_to_target_s"])
            out[f"speedup_vs_{other}"] = r
            out[f"speedup_vs_{other}_goal"] = need
            out[f"speedup_vs_{other}_met"] = r is not None and r >= need
    if "seed-configs" in per and ours.get("dev_accuracy_of_pick") is not None:
        gain = ours["dev_accuracy_of_pick"] - per["seed-configs"]["dev_accuracy_of_pick"]
        out["dev_gain_vs_seed_recipes"] = round(gain, 4)
        out["dev_gain_vs_seed_recipes_met"] = gain >= 0.01
    return out


def _overheads(startup_s: float | None) -> tuple[float, float, str]:
    """(per-trial start-up s, per-report overhead s, where they come from) for the replay clock."""
    files = sorted(RESULTS.glob("overhead-*.json"))
    data = json.loads(files[-1].read_text()) if files else None
    per_eval = float(data["replay_eval_overhead_s"]) if data else 0.0
    if startup_s is not None:
        return startup_s, per_eval, "given (--startup-s)"
    if data is None:
        raise BenchmarkError("no per-trial start-up time: run `python -m benchmarks.overhead --json "
                             "benchmarks/results/overhead-DATE.json` first, or pass --startup-s SECONDS")
    return float(data["replay_startup_s"]), per_eval, f"medians measured by {files[-1].name}"


def table_facts(table: Any, target: float, cfg: Any, n_train: int) -> dict[str, Any]:
    """What the table says about the space: best accuracies, how rare the target is, surrogate error."""
    import numpy as np

    rand = table.random_curves()
    best_rand = [c.best for c in rand]
    hits = [c for c in table.curves if c.best >= target - 1e-12]
    return {
        "configs": len(table),
        "random_configs": len(rand),
        "best_accuracy": table.best_accuracy(),
        "best_config": max(table.curves, key=lambda c: c.best).point,
        "median_accuracy": float(np.median(best_rand)),
        "configs_reaching_target": len(hits),
        "random_configs_reaching_target": sum(c.kind == "random" for c in hits),
        "snap_weights": dict(zip(table.keys, table.weights.tolist())),
        "snap_loo_error": round(table.loo_error(), 4),
        "mean_cost_s": float(np.mean([c.cost_s[-1] for c in rand])),
    }


def run_replay(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.replay import simulate

    cfg, table = load(args)
    n_train = max(c.samples_total for c in table.curves)  # ASHA's max_t: the most any recorded trial saw
    names = strategy_names(args.strategies, (*MAIN, "seed-configs"))
    seeds = args.seeds or 50
    target = round(table.best_accuracy() - args.target_gap, 6)
    startup, per_eval, why = _overheads(args.startup_s)
    t0 = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = []
        for seed in range(1 if name == "seed-configs" else seeds):
            run = simulate(make_strategy(name, cfg, seed, n_train, args.workers), table, args.budget_s, args.workers, startup, per_eval)
            runs.append({"seed": seed, **run_record(run, args.budget_s, target)})
        per[name] = summarize_runs(runs)
        s = per[name]
        print(f"{name}: median time to target {s['time_to_target_s']} s, best {s['best_accuracy']}", flush=True)
    return _result("replay", per, target, seeds, args, {
        "table_facts": table_facts(table, target, cfg, n_train),
        "table_provenance": _provenance(args.table),
        "startup_s": startup, "eval_overhead_s": per_eval, "overheads_source": why,
        "strategies_described": {n: (STRATEGIES[n][0] if n in STRATEGIES else "the two seed recipes at every data size, FIFO")
                                 for n in names},
        "simulated_in_s": round(time.perf_counter() - t0, 1),
    })


def _provenance(table_path: str) -> Any:
    meta = Path(table_path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.exists() else None


def _result(mode: str, per: dict[str, dict[str, Any]], target: float, seeds: int, args: argparse.Namespace,
            extra: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.curve_table import load_table

    keys = ("time_to_target_s", "best_accuracy", "dev_accuracy_of_pick")
    out: dict[str, Any] = {name: {k: s[k] for k in keys} for name, s in per.items()}
    try:
        n_configs = int(load_table(args.table)["config"].nunique())
    except BenchmarkError:
        n_configs = None
    rel = Path(args.table).resolve()
    out.update(target=target, seeds=seeds, workers=args.workers, mode=mode, budget_s=args.budget_s,
               table={"path": str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else str(rel), "configs": n_configs})
    out["goals"] = goals(per)
    out["details"] = {"strategies": per, **extra, **run_metadata()}
    return out


# --------------------------------------------------------------------------- live and validate


def live_config(name: str, seed: int, args: argparse.Namespace, data: Path) -> list[str]:
    """``study.run`` arguments of one strategy on the benchmark space: the space YAML with the
    strategy's differences, a wall-clock budget, ``--workers`` one-CPU trials at once."""
    if name not in STRATEGIES:
        raise BenchmarkError(f"live mode runs {', '.join(STRATEGIES)}; {name} is replay-only")

    cfg = STRATEGIES[name][1](_space_cfg(args))
    sets = {f"study.{k}": v for k, v in cfg.study.model_dump().items() if k in ("searcher", "seed_points")}
    sets.update({"asha.enabled": cfg.asha.enabled, "study.seed": seed, "study.time_budget_s": args.budget_s,
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
    path = Path(experiment) / Path(trial.path).name / "result.json" if getattr(trial, "path", None) else None
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return sorted((r for r in rows if "time_unix" in r), key=lambda r: r["time_unix"])


def run_live(args: argparse.Namespace) -> dict[str, Any]:
    """Each strategy as a real study (``--seeds`` of them), then the replay of the same strategies
    at the same workers and budget: does each live time to target fall inside the replay's
    interquartile range?"""
    names = strategy_names(args.strategies, MAIN)
    seeds = args.seeds or 1
    data = sst2_dir(args.data)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="lora-study-bench-")).resolve()
    cfg, table = load(args)
    target = round(table.best_accuracy() - args.target_gap, 6)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            study = f"se-{name.replace('_', '-')}-s{seed}-{stamp}"
            _run_study(live_config(name, seed, args, data), study, storage)
            run = live_trace(study, str(storage), list(cfg.search))
            runs.append({"seed": seed, "study": study, **run_record(run, args.budget_s, target)})
            print(f"{name} seed {seed}: best {runs[-1]['best_accuracy']}, time to target {runs[-1]['time_to_target_s']}", flush=True)
        per[name] = summarize_runs(runs)
    replay = run_replay(argparse.Namespace(**{**vars(args), "strategies": ",".join(names), "seeds": 50}))
    agreement = {}
    for name in names:
        lo, hi = replay["details"]["strategies"][name]["time_to_target_iqr_s"]
        live = per[name]["time_to_target_s"]
        inside = (live is None and hi is None) or (live is not None and (lo is None or live >= lo) and (hi is None or live <= hi))
        agreement[name] = {"live_time_to_target_s": live, "replay_median_s": replay[name]["time_to_target_s"],
                           "replay_iqr_s": [lo, hi], "inside_iqr": inside}
    return _result("live", per, target, seeds, args, {"storage": str(storage), "agreement": agreement,
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
    print(f"\nsearch efficiency ({result['mode']}, {result['seeds']} seeds, budget {result['budget_s']:.0f} s, "
          f"{result['workers']} workers); target validation accuracy {result['target']:.4f}")
    head = f"{'strategy':<20}{'time to target s':>17} {'[IQR]':<14}{'reached':>8}{'best val':>10}{'dev of pick':>12}{'trials':>7}{'pruned':>7}"
    print(head)
    print("-" * len(head))
    for name, s in d["strategies"].items():
        iqr = s["time_to_target_iqr_s"]
        print(f"{name:<20}{_fmt_s(s['time_to_target_s']):>17} {'[' + _fmt_s(iqr[0]) + '-' + _fmt_s(iqr[1]) + ']':<14}"
              f"{s['reached']:>5}/{len(s['per_seed']):<2}{(s['best_accuracy'] or 0):>10.4f}{(s['dev_accuracy_of_pick'] or 0):>12.4f}"
              f"{s['trials_median']:>7.0f}{s['pruned_median']:>7.0f}")
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
    grid = np.linspace(0, budget, 301)
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, s in result["details"]["strategies"].items():
        curves = []
        for run in s["per_seed"]:
            pts = run["best_curve"]
            curves.append([max([a for t, a in pts if t <= g], default=np.nan) for g in grid])
        arr = np.array(curves, dtype=float)
        q25, med, q75 = (np.nanquantile(arr, q, axis=0) for q in (0.25, 0.5, 0.75))
        style = {"lw": 2.4} if name == default else {"lw": 1.3, "ls": "--" if name.startswith(f"{default}-") else "-"}
        line, = ax.plot(grid, med, label=name, **style)
        if len(curves) > 1:
            ax.fill_between(grid, q25, q75, color=line.get_color(), alpha=0.15)
    ax.axhline(result["target"], color="k", ls=":", lw=1, label=f"target {result['target']:.4f}")
    ax.set_xlabel("seconds (simulated, CPU-seconds per worker)" if result["mode"] == "replay" else "wall-clock seconds")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"Search efficiency on the study's space ({result['mode']}, {result['seeds']} seeds, {result['workers']} workers; "
                 "median and interquartile band)", fontsize=9)
    ax.set_ylim(result["target"] - 0.05, None)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # outside the axes: never on the data
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
