"""Where a study's wall time goes: training steps, evaluation, and everything the system adds.

Runs a real study (``python -m study.run``: Ray Tune, the TPE searcher, checkpoints, MLflow
tracking) of ``--trials`` trials of at least a minute each, one at a time on all usable cores,
ASHA off so every trial runs its full length, then splits the study's wall time (``tuner.fit``,
from ``study.json``) using what each trial reported (``setup_s``, ``train_s``, ``eval_s``,
``time_unix`` at each evaluation):

* ``train``: training steps (forward, backward, optimizer);
* ``eval``: dev evaluations — work the user asked for (``train.eval_every_samples``), not
  system overhead, but reported separately;
* ``startup``: per trial, from the end of the previous trial (or the start of ``tuner.fit``) to
  its first training step: Ray scheduling, actor start or reuse, imports, then data + model load
  inside the trial (``setup_s``), split into *outside* and *inside* the trainable;
* ``report``: between two evaluations of a trial, what is neither training nor evaluation:
  writing the checkpoint, ``tune.report``, Ray persisting it, MLflow logging in the driver;
* ``tail``: after the last evaluation until ``tuner.fit`` returns.

``overhead_fraction`` = (wall − train − eval) / wall: the system's share (goal ≤ 5 % for trials of
≥ 1 minute). ``outside_train_fraction`` = (wall − train) / wall counts evaluation as overhead too.
``replay_startup_s`` / ``replay_eval_overhead_s`` (medians of the start-up outside the trainable
and of the per-report overhead) are what ``benchmarks/search_efficiency.py`` charges in replay.

Usage::

    python -m benchmarks.overhead --json benchmarks/results/overhead-$(date +%F).json
    python -m benchmarks.overhead --trials 2 --size 3000      # quicker, shorter trials
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BenchmarkError, busy_note, load_average, run_metadata, sst2_dir, usable_cpus, write_json  # noqa: E402

__all__ = ["study_config", "breakdown", "main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="trials in the study (default 3)")
    ap.add_argument("--size", type=int, default=12000,
                    help="training samples per trial (default 12000: ~70 s per trial on 2 CPU cores)")
    ap.add_argument("--evals", type=int, default=3, help="dev evaluations (and checkpoints) per trial (default 3)")
    ap.add_argument("--model", default="embedded-minilm", help="model name or dir (default the embedded MiniLM)")
    ap.add_argument("--threads", type=int, default=None, help="CPUs per trial (default: all usable)")
    ap.add_argument("--data", default=None, help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--storage", default=None, help="where the study is kept (default: a temporary dir)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the breakdown as JSON")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.size < 32 or args.evals < 1:
        ap.error("--trials ≥ 1, --size ≥ 32 and --evals ≥ 1 please")
    return args


def study_config(args: argparse.Namespace, data: Path, cpus: int) -> dict[str, Any]:
    return {
        "model": {"name": args.model},
        "data": {"path": str(data), "label_names": ["negative", "positive"], "size": args.size, "max_length": 64},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "qv"},
        "train": {"lr": 2e-3, "epochs": 1, "batch_size": 32, "warmup_ratio": 0.06,
                  "eval_every_samples": -(-args.size // args.evals)},
        "search": {"train.lr": {"choice": [1e-3, 2e-3, 3e-3]}},
        "study": {"num_samples": args.trials, "max_concurrent": 1, "seed_points": False},
        "asha": {"enabled": False},
        "resources": {"cpus_per_trial": cpus},
    }


def _trials(experiment: str) -> list[list[dict[str, Any]]]:
    """Each trial's reported rows (in report order), trials in start order."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment)
    out = []
    for trial in analysis.trials:
        df = analysis.trial_dataframes.get(trial.trial_id)
        if df is None or "time_unix" not in getattr(df, "columns", []):
            continue
        out.append(df.sort_values("time_unix").to_dict("records"))
    return out


def breakdown(trials: list[list[dict[str, Any]]], fit_start: float, wall_s: float) -> dict[str, Any]:
    """Split ``wall_s`` (one trial at a time) into train / eval / startup / report / tail seconds.
    With one trial at a time these tile the study's timeline, so they add up to ``wall_s``."""
    if not trials:
        raise BenchmarkError("the study reported no results")
    trials = sorted(trials, key=lambda rows: rows[0]["time_unix"])
    train = sum(r["train_s"] for rows in trials for r in rows)
    evals = sum(r["eval_s"] for rows in trials for r in rows)
    startup, inside, report = [], [], []
    prev_end = fit_start
    for rows in trials:
        first = rows[0]
        first_step = first["time_unix"] - first["eval_s"] - first["train_s"]
        startup.append(first_step - prev_end)
        inside.append(first["setup_s"])
        for a, b in zip(rows, rows[1:]):
            report.append(b["time_unix"] - a["time_unix"] - b["train_s"] - b["eval_s"])
        prev_end = rows[-1]["time_unix"]
    tail = fit_start + wall_s - prev_end
    trial_s = [r[-1]["time_unix"] - (r[0]["time_unix"] - r[0]["eval_s"] - r[0]["train_s"]) + r[0]["setup_s"] for r in trials]
    outside = [s - i for s, i in zip(startup, inside)]
    return {
        "wall_s": wall_s,
        "overhead_fraction": (wall_s - train - evals) / wall_s,
        "outside_train_fraction": (wall_s - train) / wall_s,
        "breakdown_s": {"train": train, "eval": evals, "startup": sum(startup), "report": sum(report), "tail": tail},
        "startup_s_per_trial": startup,
        "startup_inside_trial_s": inside,
        "startup_outside_trial_s": outside,
        "startup_s_median": statistics.median(startup),
        "report_overhead_s_per_eval": report,
        "trial_s": trial_s,
        "trials": len(trials),
        "replay_startup_s": statistics.median(outside),
        "replay_eval_overhead_s": statistics.median(report) if report else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    import yaml

    args = parse_args(argv)
    try:
        data = sst2_dir(args.data)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cpus = args.threads or usable_cpus()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="lora-study-overhead-")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    name = f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg_file = storage / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(study_config(args, data, cpus), sort_keys=False))
    print(f"study {name}: {args.trials} trials × {args.size} samples, one at a time on {cpus} CPU(s); storage {storage}", flush=True)
    loads = [load_average()]
    env = {**os.environ, "LORA_STUDY_HOME": str(storage)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "study.run", "--config", str(cfg_file), "--name", name, "--storage", str(storage)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.time() - t0
    loads.append(load_average())
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        print(f"error: the study exited with {proc.returncode}", file=sys.stderr)
        return 1
    from study.storage.studies import read_study

    paths, record = read_study(name, str(storage))
    result = breakdown(_trials(paths.experiment), record["fit_started_unix"], record["wall_s"])
    result.update(process_s=total, study=name, storage=str(storage), config=study_config(args, data, cpus), **run_metadata())
    note = busy_note(loads, usable_cpus(), own_threads=cpus)
    if note:
        result["note"] = note
    b = result["breakdown_s"]
    print(f"\nwall {result['wall_s']:.1f} s (tuner.fit; whole command {total:.1f} s incl. Ray start-up and the summary)")
    for k, v in b.items():
        print(f"  {k:<12}{v:8.1f} s  {v / result['wall_s']:6.1%}")
    print(f"trials: {', '.join(f'{s:.0f}' for s in result['trial_s'])} s each")
    print("start-up per trial: " + ", ".join(f"{s:.1f} s ({o:.1f} outside + {i:.1f} data/model load)" for s, o, i in
                                               zip(result["startup_s_per_trial"], result["startup_outside_trial_s"], result["startup_inside_trial_s"])))
    print(f"per-report overhead (checkpoint, report, MLflow): median {result['replay_eval_overhead_s']:.2f} s")
    print(f"overhead outside training+evaluation: {result['overhead_fraction']:.1%} (goal ≤ 5%); "
          f"outside training steps: {result['outside_train_fraction']:.1%}")
    if note:
        print(note)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
