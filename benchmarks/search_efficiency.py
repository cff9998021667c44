"""Does the study find a good LoRA recipe sooner than what users would do instead?

Four strategies, same data (SST-2, 8,000-sentence stratified subset), same trainable, same
search space, same wall-clock budget, same seeds:

``ours``               TPE (Bergstra et al. 2011; multivariate, constant liar) + ASHA (Li et al.
                       2020) with pruned-trial feedback, the seeds' two configs first
                       (``study.run`` defaults);
``stock_optuna_asha``  stock Ray ``OptunaSearch`` (ASHA-stopped trials told COMPLETE with their
                       low-fidelity accuracy) + ASHA, same TPE sampler, no seed configs
                       (``study.run`` with ``optuna.pruned_feedback=false, study.seed_points=false``);
``random_fifo``        random search, every trial trained to the end;
``seed_configs``       the two seed notebooks' hand-picked configs, trained to the end.

Replay only, as ablations: ``ours_unseeded`` (ours without the seed configs: what pruned-trial
feedback alone buys over stock) and ``stock_defaults`` (a bare ``OptunaSearch(seed=…)`` with
Optuna's default univariate TPE, as a plain Ray Tune script would have it).

Measured per run: best dev accuracy vs wall-clock time, the time to reach ``target``, the best
accuracy at the budget and the trials run (completed / stopped by ASHA).

Modes:
* ``record``: train every point of the grid in ``benchmarks/search_grid.py`` once, recording its
  learning curve (accuracy and seconds at every evaluation) into a parquet table with a
  provenance JSON beside it. About an hour on 2 CPU cores; minutes on a GPU.
* ``replay`` (default): simulate each strategy against the table (``benchmarks/replay.py``):
  the real searcher/scheduler objects, simulated time; many seeds in seconds.
* ``live``: run each strategy as a real ``python -m study.run`` on the same grid (hours on 2
  cores; ``--strategies``/``--seeds`` to run a part).
* ``validate --study NAME``: compare one live study with the table: per-evaluation accuracy and
  seconds, and the live best-so-far curve against a replay of the live run's own choices.

Target: by default the accuracy that the best 10 % of the grid's configurations reach
(``--target-quantile 0.9``): high enough that finding it takes search (a random configuration hits
it with probability 0.1, so random search needs ~10 full trials on average), low enough that
every strategy can reach it within the budget. ``--target`` fixes it instead.

Usage::

    python -m benchmarks.search_efficiency record                 # once (resumable)
    python -m benchmarks.search_efficiency --seeds 20 --json benchmarks/results/search_efficiency.json
    python -m benchmarks.search_efficiency live --strategies ours --seeds 1 --budget-s 900
    python -m benchmarks.search_efficiency validate --study NAME --storage DIR

``--json FILE`` writes, per strategy name, the median over seeds of ``time_to_target_s`` (null if
the median run did not reach the target) and ``best_accuracy``, plus ``target``, ``seeds``,
``mode`` (and the spread, per-seed values and provenance under ``details``).
"""

from __future__ import annotations

import argparse
import glob
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks`, `study`, `trainables` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BenchmarkError, run_metadata, sst2_dir, usable_cpus, write_json  # noqa: E402
from benchmarks.search_grid import FIXED, GRID, KEYS, load_table, point_id, record_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TABLE = RESULTS / "curves-sst2-8k.parquet"
MAIN = ("ours", "stock_optuna_asha", "random_fifo", "seed_configs")
ASHA_RF = 2.0  # rungs at 1, 2, 4 × the evaluation interval: every rung is an evaluation point


def asha_settings(fixed: dict[str, Any], max_t: int) -> dict[str, Any]:
    """ASHA for the benchmark: first rung at the first evaluation, halving at each rung."""
    return {"grace": int(fixed["train.eval_every_samples"]), "rf": ASHA_RF, "max_t": int(max_t)}


def _table_fixed(table_path: str) -> dict[str, Any]:
    """The fixed trial settings a table was recorded with (its provenance), else the defaults."""
    meta = Path(table_path).with_suffix(".json")
    return json.loads(meta.read_text()).get("fixed", FIXED) if meta.exists() else dict(FIXED)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="replay", choices=("replay", "live", "record", "validate"))
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="recorded curve table (parquet)")
    ap.add_argument("--data", default=None, help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--seeds", type=int, default=None, help="search seeds per strategy (default: 20 replay, 3 live)")
    ap.add_argument("--budget-s", type=float, default=1800.0, help="wall-clock budget per study (default 1800 s)")
    ap.add_argument("--workers", type=int, default=1, help="trials at once (replay slots / live max_concurrent)")
    ap.add_argument("--startup-s", type=float, default=None,
                    help="per-trial start-up seconds in replay (default: median measured by the latest "
                         "benchmarks/results/overhead-*.json)")
    ap.add_argument("--target", type=float, default=None, help="target dev accuracy (default: see --target-quantile)")
    ap.add_argument("--target-quantile", type=float, default=0.9,
                    help="target = this quantile of the grid points' best accuracies (default 0.9: the top 10%%)")
    ap.add_argument("--strategies", default=None, help="comma-separated (default: all in replay, the four main ones live)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the medians (and details) as JSON")
    ap.add_argument("--plot", default=None, metavar="FILE", help="best-so-far plot (default: next to --json)")
    ap.add_argument("--limit", type=int, default=None, help="record: at most this many new grid points")
    ap.add_argument("--threads", type=int, default=None, help="record/live: torch threads (default: all usable cores)")
    ap.add_argument("--study", default=None, help="validate: the live study's name")
    ap.add_argument("--storage", default=None, help="live/validate: where the live studies are kept")
    ap.add_argument("--strategy", default="ours", help="validate: the strategy the live study ran")
    ap.add_argument("--seed", type=int, default=0, help="validate: the live study's search seed (study.seed)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="record/live: change a fixed trial setting (e.g. model.name=DIR, data.size=4000); "
                         "a table recorded so keeps it in its provenance")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        ap.error("--seeds must be ≥ 1")
    if args.budget_s <= 0 or args.workers < 1:
        ap.error("--budget-s must be > 0 and --workers ≥ 1")
    if not 0 < args.target_quantile < 1:
        ap.error("--target-quantile must be in (0, 1)")
    if args.mode == "validate" and not args.study:
        ap.error("validate needs --study NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    try:
        args.fixed = _fixed_overrides(args.set)
        if args.mode == "record":
            record_table(args.table, sst2_dir(args.data), args.threads or usable_cpus(), args.limit, fixed=args.fixed,
                         provenance=run_metadata())
            return 0
        if args.mode == "validate":
            report = validate(args)
            if args.json:
                write_json(args.json, report)
            return 0
        result = run_replay(args) if args.mode == "replay" else run_live(args)
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


def _fixed_overrides(items: list[str]) -> dict[str, Any]:
    from trainables.config import ConfigError, TrialConfig, parse_overrides

    try:
        fixed = parse_overrides(items)
        searched = sorted(set(fixed) & set(GRID))
        if searched:
            raise BenchmarkError(f"--set {', '.join(searched)}: searched keys come from the grid, not --set")
        TrialConfig.from_dict({**FIXED, **fixed})
    except ConfigError as e:
        raise BenchmarkError(str(e)) from None
    return fixed


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover
        pass


def _strategies(args: argparse.Namespace, default: tuple[str, ...]) -> list[str]:
    from benchmarks.replay import STRATEGIES

    names = [s.strip() for s in args.strategies.split(",")] if args.strategies else list(default)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise BenchmarkError(f"unknown strategies {unknown} (known: {', '.join(STRATEGIES)})")
    return names


# --------------------------------------------------------------------------- target and summaries


def choose_target(table: Any, args: argparse.Namespace) -> tuple[float, str]:
    """The target accuracy and one line saying why."""
    best = sorted((c.best for c in table.curves.values()), reverse=True)
    if args.target is not None:
        hit = sum(b >= args.target for b in best)
        return args.target, f"given (--target); reached by {hit} of {len(best)} grid configs"
    target = round(table.quantile_best(args.target_quantile), 4)
    hit = sum(b >= target - 1e-12 for b in best)
    return target, (f"the {args.target_quantile:.0%} quantile of the grid configs' best accuracies: reached by {hit} of "
                    f"{len(best)} configs (best {best[0]:.4f}, median {statistics.median(best):.4f})")


def _median(xs: list[float | None]) -> float | None:
    """Median where None means 'never' (a run that missed the target counts as slower than all)."""
    vals = sorted(math.inf if x is None else x for x in xs)
    if not vals:
        return None
    m = statistics.median(vals)
    return None if math.isinf(m) else m


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and spread over seeds for one strategy (``runs``: one dict per seed)."""
    ttt = [r["time_to_target_s"] for r in runs]
    best = [r["best_accuracy"] for r in runs if r["best_accuracy"] is not None]
    reached = [t for t in ttt if t is not None]
    return {
        "time_to_target_s": _median(ttt),
        "best_accuracy": statistics.median(best) if best else None,
        "reached": f"{len(reached)}/{len(runs)}",
        "time_to_target_range_s": [min(reached), max(reached)] if reached else None,
        "best_accuracy_range": [min(best), max(best)] if best else None,
        "trials_median": statistics.median(r["trials"] for r in runs),
        "pruned_median": statistics.median(r["pruned"] for r in runs),
        "completed_median": statistics.median(r["completed"] for r in runs),
        "per_seed": runs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def comparisons(strategies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals: ours ≥3× sooner than random+FIFO and sooner than stock; best accuracy at
    budget ≥ the seed configs' + 1 point."""
    def get(name: str, key: str) -> Any:
        return strategies.get(name, {}).get(key)

    out: dict[str, Any] = {}
    ours_t = get("ours", "time_to_target_s")
    if "random_fifo" in strategies:
        out["speedup_vs_random_fifo"] = _ratio(get("random_fifo", "time_to_target_s"), ours_t)
    if "stock_optuna_asha" in strategies:
        out["speedup_vs_stock_optuna_asha"] = _ratio(get("stock_optuna_asha", "time_to_target_s"), ours_t)
    if "seed_configs" in strategies and get("ours", "best_accuracy") is not None:
        out["accuracy_gain_vs_seed_configs"] = round(get("ours", "best_accuracy") - get("seed_configs", "best_accuracy"), 4)
    return out


def run_record(run: Any, budget_s: float, target: float) -> dict[str, Any]:
    """A simulated or live run → the per-seed figures."""
    states = [t["state"] for t in run.trials]
    return {
        "time_to_target_s": run.time_to(target),
        "best_accuracy": run.best_at(budget_s),
        "trials": len(run.trials),
        "completed": states.count("completed"),
        "pruned": states.count("pruned"),
        "best_curve": [[round(t, 1), a] for t, a in run.best_curve()],
    }


# --------------------------------------------------------------------------- replay


def _overheads(args: argparse.Namespace) -> tuple[float, float, str]:
    """(per-trial start-up s, per-report overhead s, where they come from) for the replay clock."""
    files = sorted(glob.glob(str(RESULTS / "overhead-*.json")))
    data = json.loads(Path(files[-1]).read_text()) if files else None
    if args.startup_s is not None:
        return args.startup_s, float(data["replay_eval_overhead_s"]) if data else 0.0, "given (--startup-s)"
    if data is None:
        raise BenchmarkError("no per-trial start-up time: run `python -m benchmarks.overhead --json "
                             "benchmarks/results/overhead-DATE.json` first, or pass --startup-s SECONDS")
    return (float(data["replay_startup_s"]), float(data["replay_eval_overhead_s"]),
            f"medians measured by {Path(files[-1]).name}")


def run_replay(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.replay import STRATEGIES, CurveTable, make_strategy, simulate

    table = CurveTable(load_table(args.table))
    if not table.complete:
        raise BenchmarkError(f"{args.table}: {len(table.missing)} of {len(table) + len(table.missing)} grid points not "
                             f"recorded yet; finish with `python -m benchmarks.search_efficiency record`")
    names = _strategies(args, tuple(STRATEGIES))
    seeds = args.seeds or 20
    target, why = choose_target(table, args)
    startup, per_eval, startup_why = _overheads(args)
    asha = asha_settings(_table_fixed(args.table), table.max_t())
    t0 = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            run = simulate(make_strategy(name, seed, asha), table, args.budget_s, args.workers, startup, per_eval)
            runs.append({"seed": seed, **run_record(run, args.budget_s, target)})
        per[name] = summarize_runs(runs)
    sensitivity = _sensitivity(table, names, seeds, args, asha, startup, per_eval)
    meta_path = Path(args.table).with_suffix(".json")
    return _result("replay", per, target, why, seeds, args, {
        "sensitivity": sensitivity,
        "first_rung_rank_correlation": _rung_correlation(table, asha["grace"]),
        "table": str(Path(args.table).resolve().relative_to(ROOT)) if Path(args.table).resolve().is_relative_to(ROOT) else args.table,
        "table_provenance": json.loads(meta_path.read_text()) if meta_path.exists() else None,
        "startup_s": startup, "eval_overhead_s": per_eval, "overheads_source": startup_why, "asha": asha,
        "strategies_described": {n: STRATEGIES[n][0] for n in names},
        "simulated_in_s": round(time.perf_counter() - t0, 1),
    })


def _sensitivity(table: Any, names: list[str], seeds: int, args: argparse.Namespace, asha: dict[str, Any],
                 startup: float, per_eval: float) -> dict[str, Any]:
    """Median time to other targets (quantiles of the grid's best accuracies) and the best accuracy
    at other budgets, from the same simulated runs: how much the verdict depends on the choice."""
    from benchmarks.replay import make_strategy, simulate

    quantiles = (0.75, 0.9, 0.95)
    budgets = sorted({args.budget_s / 2, args.budget_s, args.budget_s * 2})
    out: dict[str, Any] = {"targets": {f"q{q:g}": round(table.quantile_best(q), 4) for q in quantiles},
                           "budgets_s": budgets, "time_to_target_s": {}, "best_accuracy": {}}
    for name in names:
        runs = [simulate(make_strategy(name, seed, asha), table, max(budgets), args.workers, startup, per_eval)
                for seed in range(seeds)]
        out["time_to_target_s"][name] = {k: _median([r.time_to(t) for r in runs]) for k, t in out["targets"].items()}
        out["best_accuracy"][name] = {f"{b:g}": statistics.median(r.best_at(b) or 0.0 for r in runs) for b in budgets}
    return out


def _rung_correlation(table: Any, rung: int) -> float:
    """Spearman correlation, over grid points, of the accuracy at ASHA's first rung with the best
    accuracy: how well the early look ASHA stops trials on predicts where they end up."""
    from scipy.stats import spearmanr

    early, best = [], []
    for c in table.curves.values():
        k = next(i for i, s in enumerate(c.samples_seen) if s >= rung)
        early.append(c.accuracy[k])
        best.append(c.best)
    return round(float(spearmanr(early, best).statistic), 3)


def _result(mode: str, per: dict[str, dict[str, Any]], target: float, why: str, seeds: int, args: argparse.Namespace,
            extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: {"time_to_target_s": s["time_to_target_s"], "best_accuracy": s["best_accuracy"]}
                           for name, s in per.items()}
    out.update(target=target, seeds=seeds, mode=mode, budget_s=args.budget_s, workers=args.workers)
    out["goals"] = comparisons(per)
    out["details"] = {"target_reason": why, "strategies": per, **extra, **run_metadata()}
    return out


# --------------------------------------------------------------------------- live


def study_yaml(strategy: str, seed: int, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """The ``study.run`` config of one strategy on the benchmark grid."""
    from trainables.config import unflatten

    trial = unflatten({**FIXED, **getattr(args, "fixed", {}), "data.path": str(data), "lora.r": 8, "lora.dropout": 0.1,
                       "lora.target_modules": "qv", "train.lr": 2e-3})
    cpus = max(1, (args.threads or usable_cpus()) // args.workers)
    cfg: dict[str, Any] = {
        **trial,
        "search": {k: {"choice": list(v)} for k, v in GRID.items()},
        "study": {"num_samples": 2 if strategy == "seed_configs" else 10_000, "max_concurrent": args.workers,
                  "time_budget_s": args.budget_s, "seed": seed,
                  "seed_points": strategy in ("ours", "seed_configs")},
        "asha": {"enabled": strategy in ("ours", "stock_optuna_asha"),
                 "grace_period": asha_settings({**FIXED, **getattr(args, "fixed", {})}, 1)["grace"],
                 "reduction_factor": ASHA_RF},
        "optuna": {"enabled": strategy in ("ours", "stock_optuna_asha"), "pruned_feedback": strategy == "ours"},
        "resources": {"cpus_per_trial": cpus},
    }
    if strategy not in MAIN:
        raise BenchmarkError(f"live mode runs {', '.join(MAIN)}; {strategy} is replay-only")
    return cfg


def live_trace(name: str, storage: str | None) -> dict[str, Any]:
    """A finished live study → its evaluations on the study's clock (seconds since ``tuner.fit``
    started, from each report's ``time_unix``) and its trials in start order, read from the
    study's stored results."""
    from ray.tune import ExperimentAnalysis

    from study.report import trial_state
    from study.store import read_study

    paths, record = read_study(name, storage)
    t0 = record.get("fit_started_unix")
    if t0 is None:
        raise BenchmarkError(f"study {name} has no fit_started_unix in study.json (run by an older study.run)")
    analysis = ExperimentAnalysis(paths.experiment)
    events, trials = [], []
    for trial in analysis.trials:
        df = analysis.trial_dataframes.get(trial.trial_id)
        if df is None or "time_unix" not in getattr(df, "columns", []):
            continue
        rows = df.sort_values("time_unix").to_dict("records")
        point = {k: trial.config[k] for k in KEYS}
        first_step = rows[0]["time_unix"] - rows[0]["eval_s"] - rows[0]["train_s"] - t0
        trials.append({"trial": trial.trial_id, "point": point_id(point), "params": point,
                       "first_step": first_step, "setup_s": float(rows[0]["setup_s"]),
                       "end": rows[-1]["time_unix"] - t0, "state": trial_state(trial.status, trial.last_result or {})})
        for r in rows:
            events.append({"t": r["time_unix"] - t0, "trial": trial.trial_id, "point": point_id(point),
                           "samples_seen": int(r["samples_seen"]), "accuracy": float(r["accuracy"]),
                           "train_s": float(r["train_s"]), "eval_s": float(r["eval_s"])})
    events.sort(key=lambda e: e["t"])
    trials.sort(key=lambda t: t["first_step"])
    return {"events": events, "trials": trials, "wall_s": record.get("wall_s")}


def _live_run(trace: dict[str, Any], budget_s: float) -> Any:
    """A live trace as a ``SimRun`` (same questions: best-so-far curve, time to target)."""
    from benchmarks.replay import SimRun

    return SimRun(events=[e for e in trace["events"] if e["t"] <= budget_s], trials=trace["trials"])


def run_live(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.replay import CurveTable

    names = _strategies(args, MAIN)
    seeds = args.seeds or 3
    data = sst2_dir(args.data)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="lora-study-bench-")).resolve()
    table = CurveTable(load_table(args.table)) if Path(args.table).exists() else None
    if args.target is None and table is None:
        raise BenchmarkError("live mode needs --target, or a recorded table to choose it from (--table)")
    target, why = choose_target(table, args) if table is not None else (args.target, "given (--target)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    per: dict[str, dict[str, Any]] = {}
    studies: dict[str, list[str]] = {}
    for name in names:
        runs = []
        for seed in range(seeds):
            study = f"se-{name.replace('_', '-')}-s{seed}-{stamp}"
            _run_study(study_yaml(name, seed, args, data), study, storage)
            run = _live_run(live_trace(study, str(storage)), args.budget_s)
            runs.append({"seed": seed, "study": study, **run_record(run, args.budget_s, target)})
            studies.setdefault(name, []).append(study)
            print(f"{name} seed {seed}: best {runs[-1]['best_accuracy']}, time to target {runs[-1]['time_to_target_s']}", flush=True)
        per[name] = summarize_runs(runs)
    return _result("live", per, target, why, seeds, args, {"storage": str(storage), "studies": studies})


def _run_study(cfg: dict[str, Any], name: str, storage: Path) -> None:
    import yaml

    storage.mkdir(parents=True, exist_ok=True)
    cfg_file = storage / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = storage / f"{name}.log"
    print(f"live: {name} (log {log})", flush=True)
    env = {**os.environ, "LORA_STUDY_HOME": str(storage)}
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "study.run", "--config", str(cfg_file), "--name", name,
                             "--storage", str(storage)], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise BenchmarkError(f"study {name} exited with {rc}; see {log}")


# --------------------------------------------------------------------------- validate


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """One live study (run with one trial at a time) against the table: are the recorded
    accuracies and seconds what the live run saw, and does a replay of the live run's own
    configurations (same order, same scheduler) predict its best-so-far curve?"""
    from benchmarks.replay import CurveTable, make_strategy, replay_trace, simulate

    table = CurveTable(load_table(args.table))
    trace = live_trace(args.study, args.storage)
    acc_diff, time_ratio, outside, per_report = [], [], [], []
    prev_end = 0.0
    for tr in trace["trials"]:
        curve = table.get(tr["params"])
        live = [e for e in trace["events"] if e["trial"] == tr["trial"]]
        outside.append(tr["first_step"] - prev_end - tr["setup_s"])
        prev_end = tr["end"]
        for i, e in enumerate(live):
            if e["samples_seen"] not in curve.samples_seen:
                continue
            k = curve.samples_seen.index(e["samples_seen"])
            acc_diff.append(abs(e["accuracy"] - curve.accuracy[k]))
            if k > 0 and i > 0:
                time_ratio.append((e["train_s"] + e["eval_s"]) / (curve.elapsed_s[k] - curve.elapsed_s[k - 1]))
                per_report.append(e["t"] - live[i - 1]["t"] - e["train_s"] - e["eval_s"])
    startup = statistics.median(outside)
    per_eval = statistics.median(per_report) if per_report else 0.0
    budget = args.budget_s
    asha = asha_settings(_table_fixed(args.table), table.max_t())
    sim = replay_trace(args.strategy, table, [t["params"] for t in trace["trials"]], budget, 1, startup, asha, per_eval)
    # With one trial at a time the searcher's choices depend only on the results it has seen, so
    # a free replay with the live study's seed should choose the very same configurations.
    free = simulate(make_strategy(args.strategy, args.seed, asha), table, budget, 1, startup, per_eval)
    live_points = [t["point"] for t in trace["trials"]]
    free_points = [t["point"] for t in free.trials]
    same_prefix = next((i for i, (a, b) in enumerate(zip(live_points, free_points)) if a != b), min(len(live_points), len(free_points)))
    live_run = _live_run(trace, budget)
    live_states = [t["state"] for t in trace["trials"]]
    sim_states = [t["state"] for t in sim.trials]
    n = min(len(live_states), len(sim_states))
    target, why = choose_target(table, args)
    report = {
        "study": args.study,
        "trials_live": len(live_states),
        "trials_replayed": len(sim_states),
        "evaluations_compared": len(acc_diff),
        "accuracy_abs_diff_max": max(acc_diff) if acc_diff else None,
        "accuracy_abs_diff_median": statistics.median(acc_diff) if acc_diff else None,
        "eval_interval_time_ratio_median": statistics.median(time_ratio) if time_ratio else None,
        "eval_interval_time_ratio_range": [min(time_ratio), max(time_ratio)] if time_ratio else None,
        "startup_outside_trial_s_median": startup,
        "report_overhead_s_median": per_eval,
        "same_state": f"{sum(a == b for a, b in zip(live_states[:n], sim_states[:n]))}/{n}",
        "target": target, "target_reason": why,
        "time_to_target_live_s": live_run.time_to(target),
        "time_to_target_replay_s": sim.time_to(target),
        "best_accuracy_live": live_run.best_at(budget),
        "best_accuracy_replay": sim.best_at(budget),
        "free_replay_same_configs": f"{same_prefix}/{len(live_points)}",
        "free_replay_trials": len(free_points),
        "time_to_target_free_replay_s": free.time_to(target),
        "best_accuracy_free_replay": free.best_at(budget),
        "best_curve_live": [[round(t, 1), a] for t, a in live_run.best_curve()],
        "best_curve_replay": [[round(t, 1), a] for t, a in sim.best_curve()],
    }
    for k, v in report.items():
        if not k.startswith("best_curve"):
            print(f"{k:34} {v}")
    return {**report, **run_metadata()}


# --------------------------------------------------------------------------- output


def _fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


def print_table(result: dict[str, Any]) -> None:
    d = result["details"]
    print(f"\nsearch efficiency ({result['mode']}, {result['seeds']} seeds, budget {result['budget_s']:.0f} s, "
          f"{result['workers']} worker(s)); target accuracy {result['target']:.4f}: {d['target_reason']}")
    head = f"{'strategy':<20}{'time to target s':>17} {'[range]':<13}{'reached':>8}{'best acc':>10} {'[range]':<15}{'trials':>7}{'pruned':>7}"
    print(head)
    print("-" * len(head))
    for name, s in d["strategies"].items():
        rng = s["time_to_target_range_s"]
        brng = s["best_accuracy_range"]
        print(f"{name:<20}{_fmt_s(s['time_to_target_s']):>17} "
              f"{('[' + '-'.join(f'{v:.0f}' for v in rng) + ']') if rng else '':<13}{s['reached']:>8}"
              f"{(s['best_accuracy'] or 0):>10.4f} {('[' + '-'.join(f'{v:.4f}' for v in brng) + ']') if brng else '':<15}"
              f"{s['trials_median']:>7.0f}{s['pruned_median']:>7.0f}")
    for k, v in result["goals"].items():
        print(f"{k}: {v}")
    sens = d.get("sensitivity")
    if sens:
        print("\nmedian time to other targets (s; 'never' = not reached by the median seed), and best accuracy at other budgets:")
        tg = sens["targets"]
        print(f"{'strategy':<20}" + "".join(f"{k + ' ' + format(v, '.4f'):>15}" for k, v in tg.items())
              + "".join(f"{'best@' + format(b, 'g') + 's':>14}" for b in sens["budgets_s"]))
        for name in sens["time_to_target_s"]:
            print(f"{name:<20}" + "".join(f"{_fmt_s(sens['time_to_target_s'][name][k]):>15}" for k in tg)
                  + "".join(f"{sens['best_accuracy'][name][format(b, 'g')]:>14.4f}" for b in sens["budgets_s"]))
    if "first_rung_rank_correlation" in d:
        print(f"rank correlation of accuracy at ASHA's first rung with the best accuracy, over grid points: "
              f"{d['first_rung_rank_correlation']}")


def plot_curves(result: dict[str, Any], path: str) -> None:
    """Median (and min–max band over seeds) of the best accuracy so far against wall-clock time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # all-NaN columns before a seed's first result
    budget = result["budget_s"]
    grid = np.linspace(0, budget, 301)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, s in result["details"]["strategies"].items():
        curves = []
        for run in s["per_seed"]:
            pts = run["best_curve"]
            curves.append([max([a for t, a in pts if t <= g], default=np.nan) for g in grid])
        arr = np.array(curves, dtype=float)
        with np.errstate(all="ignore"):
            med = np.nanmedian(arr, axis=0) if np.isfinite(arr).any() else arr[0]
        style = {"lw": 2.4} if name == "ours" else {"lw": 1.3, "ls": "--" if name.startswith(("ours_", "stock_d")) else "-"}
        line, = ax.plot(grid, med, label=name, **style)
        ax.fill_between(grid, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=line.get_color(), alpha=0.12)
    ax.axhline(result["target"], color="k", ls=":", lw=1, label=f"target {result['target']:.3f}")
    ax.set_xlabel("wall-clock seconds (simulated)" if result["mode"] == "replay" else "wall-clock seconds")
    ax.set_ylabel("best dev accuracy so far")
    ax.set_title(f"Search efficiency, SST-2 8k subset, MiniLM LoRA ({result['mode']}, {result['seeds']} seeds; "
                 "median, min–max band)", fontsize=9)
    ax.set_ylim(result["target"] - 0.06, None)  # the race is near the target; early lows would flatten it
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
