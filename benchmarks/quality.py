"""Dev accuracy of recipes over several training seeds: ``python -m benchmarks.quality``.

    python -m benchmarks.quality [--config trainables/configs/seed-002.yaml] [--seeds 0-4]
        [--set KEY=VALUE …] [--goal 0.88] [--json FILE] [--data DIR]
    python -m benchmarks.quality compare [--seeds 0-2] [--study study/configs/sst2-8k.yaml]
        [--test FILE] [--set KEY=VALUE …] [--study-set KEY=VALUE …] [--json FILE] [--data DIR]

Why seeds: one fine-tuning run says little. Fine-tuning seeds (head init, LoRA init, data order,
dropout) move SST-2 dev accuracy by about a point (Dodge et al. 2020, arXiv:2002.06305), and 872
dev sentences alone put a ±1.1-point binomial standard error on each run; a recipe change is only
worth something if it moves the mean over seeds, paired by seed. Each seed is a full standalone
trial (``trainables.loop.run_trial``, no Ray) with the recipe's own evaluation schedule; the
result file holds every seed's curve, the final accuracies and their mean/sd, the machine and
the commit; it is rewritten after each seed (``"complete": false`` until the last), so an
interrupted benchmark keeps the seeds it finished.

``compare`` asks what a user gets from a study: the two seed recipes as their notebooks ran them
(all of SST-2 train, their own epochs), the seed-002 recipe at the refit's epochs (equal
training length), and a whole ``python -m study.run --refit`` on ``--study`` (search, then the
pick refitted on all the data) per seed (``study.seed`` and ``train.seed``); within a seed the
study and the equal-epochs recipe run first, since the goals compare those two. Each path's shipped
model is scored on SST-2 dev (and on ``--test`` once, if given); the table gives each path's mean
over seeds with its standard error (sd/√n) and its cost in CPU-hours: cores held × seconds (a
recipe's threads × its wall time; a study's trials' ``time_total_s`` × their CPUs, its refit's ×
the refit's CPUs), beside the measured process CPU time. The JSON is rewritten after every run.

The whole comparison is CPU-hours, more than one sitting: ``--resume`` (with the same ``--json``)
keeps every (seed, path) run the file holds and does only the rest, in the same ``--work``; a study
the work directory holds already (interrupted, or finished) continues with ``study.run --resume``
instead of starting over, so an interrupted search loses at most its running trials.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, BenchmarkError, run_benchmark, run_metadata, sst2_dir, usable_cpus, write_json  # noqa: E402

__all__ = ["parse_seeds", "run", "main", "compare", "mean_se"]

RECIPE = ROOT / "trainables" / "configs" / "seed-002.yaml"


def parse_seeds(text: str) -> list[int]:
    """``0-4`` → [0, 1, 2, 3, 4]; ``0,3,7`` → [0, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise BenchmarkError(f"--seeds {text!r}: expected a range like 0-4 or a list like 0,3,7") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"--seeds {text!r}: expected distinct seeds")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(RECIPE), help="trial YAML (default: the seed-002 recipe, full SST-2, 1 epoch)")
    ap.add_argument("--seeds", default="0-4", help="train.seed values: a range (0-4) or a list (0,3,7)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (recorded in the JSON)")
    ap.add_argument("--goal", type=float, default=0.88, help="accuracy to count seeds against (default 0.88)")
    ap.add_argument("--data", help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--json", help="write the result here")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides
    from trainables.loop import run_trial

    seeds = parse_seeds(args.seeds)
    base = load_yaml(args.config)
    over = parse_overrides(args.set)
    if "train.seed" in over:
        raise BenchmarkError("--set train.seed: use --seeds")
    if args.data or "data.path" not in over:
        over["data.path"] = str(sst2_dir(args.data))
    cfgs = {s: TrialConfig.from_dict(apply_overrides(base, {**over, "train.seed": s})) for s in seeds}  # all validated first
    meta = run_metadata()
    runs = []
    for i, (seed, cfg) in enumerate(cfgs.items()):
        print(f"[{i + 1}/{len(seeds)}] train.seed={seed}", flush=True)
        t0 = time.perf_counter()
        history = run_trial(cfg, log=lambda m: print(f"  {m}", flush=True))
        final = history[-1]
        runs.append({"seed": seed, "accuracy": final["accuracy"], "f1": final["f1"], "eval_loss": final["eval_loss"],
                     "wall_s": round(time.perf_counter() - t0, 1),
                     "curve": [{"samples_seen": h["samples_seen"], "accuracy": h["accuracy"]} for h in history]})
        print(f"  seed {seed}: accuracy {final['accuracy']:.4f} ({runs[-1]['wall_s']:.0f} s)", flush=True)
        if args.json and len(runs) < len(seeds):  # a run is minutes: a crash or Ctrl-C keeps the seeds done
            write_json(args.json, _result(args, seeds, cfgs, meta, runs))
    return _result(args, seeds, cfgs, meta, runs)


def _result(args: argparse.Namespace, seeds: list[int], cfgs: dict[int, Any], meta: dict[str, Any],
            runs: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["accuracy"] for r in runs]
    first = next(iter(cfgs.values()))
    return {
        "benchmark": "quality",
        **meta,
        "config": {"file": str(args.config), "overrides": args.set, "trial": first.model_dump(exclude={"train": {"seed"}})},
        "goal": args.goal,
        "seeds": seeds,
        "complete": len(runs) == len(seeds),
        "accuracy": {"mean": statistics.fmean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else None,
                     "min": min(accs), "max": max(accs), "at_goal": sum(a >= args.goal for a in accs)},
        "runs": runs,
    }


def summary_line(res: dict[str, Any]) -> str:
    a = res["accuracy"]
    sd = f", sd {a['sd'] * 100:.2f}" if a["sd"] is not None else ""
    per = " / ".join(f"{r['accuracy'] * 100:.2f}" for r in res["runs"])
    return (f"dev accuracy over seeds {res['seeds']}: {per}% — mean {a['mean'] * 100:.2f}%{sd}; "
            f"{a['at_goal']}/{len(res['runs'])} seeds ≥ {res['goal'] * 100:g}%")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return run_benchmark(parse_compare_args(argv[1:]), compare, compare_summary, compare_table)
    return run_benchmark(parse_args(argv), run, summary_line)


# --------------------------------------------------------------------------- compare: recipes vs study → refit

STUDY = ROOT / "study" / "configs" / "sst2-8k.yaml"
RECIPES = {"seed-000": ROOT / "trainables" / "configs" / "seed-000.yaml", "seed-002": RECIPE}


def parse_compare_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality compare",
                                 description="The seed recipes against a study → refit, over training seeds: dev (and test) accuracy "
                                             "with standard errors, and CPU-hours per path.")
    ap.add_argument("--seeds", default="0-2", help="training seeds, each a run of every path (default 0-2)")
    ap.add_argument("--study", default=str(STUDY), help="study YAML for the study → refit path (default sst2-8k.yaml; refit forced on)")
    ap.add_argument("--test", help="a labelled test file (SST-2 columns) to score every path's final model on, once")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a trial key for every path (recipes and study)")
    ap.add_argument("--study-set", action="append", default=[], metavar="KEY=VALUE", help="a key for the study path only")
    ap.add_argument("--no-equal-epochs", action="store_true", help="skip seed-002 trained for the refit's epochs")
    ap.add_argument("--threads", type=int, help="torch threads of a recipe run (default: the usable CPUs)")
    ap.add_argument("--work", help="where the studies and checkpoints go (default: a temporary directory)")
    ap.add_argument("--data", help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--resume", action="store_true", help="keep the runs --json holds already and do the rest (same --work)")
    return ap.parse_args(argv)


def _paths(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, config overrides) of each compared path, validated before anything trains."""
    from study.config import load_study_config
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides

    over = parse_overrides(args.set)
    for key in ("train.seed", "study.seed"):
        if key in over or key in parse_overrides(args.study_set):
            raise BenchmarkError(f"--set {key}: use --seeds")
    over["data.path"] = str(sst2_dir(args.data)) if args.data or "data.path" not in over else over["data.path"]
    if args.test:
        over["data.test_path"] = str(Path(args.test).resolve())
    study = load_study_config(args.study, [*args.set, *args.study_set, f"data.path={over['data.path']}", "refit.enabled=true"])
    epochs = study.refit.epochs or study.train.epochs
    out = [(name, "recipe", {}) for name in RECIPES]
    if not args.no_equal_epochs:
        out.append((f"seed-002 × {epochs:g} epochs", "recipe", {"train.epochs": epochs, "recipe": "seed-002"}))
    out.append((f"study → refit ({Path(args.study).name})", "study", {}))
    for name, kind, extra in out:  # every recipe config validates now, not after hours of the others
        if kind == "recipe":
            TrialConfig.from_dict(apply_overrides(load_yaml(RECIPES[extra.get("recipe", name)]), {**over, **{k: v for k, v in extra.items() if k != "recipe"}}))
    return out


def _recipe_run(args: argparse.Namespace, recipe: str, extra: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    """One seed of a recipe, standalone: its final dev scores, its test score, its cost."""
    import shutil

    from trainables import score_test
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides
    from trainables.loop import run_trial

    threads = args.threads or usable_cpus()
    over = {**parse_overrides(args.set), **extra, "train.seed": seed, "train.threads": threads}
    over["data.path"] = str(sst2_dir(args.data)) if args.data or "data.path" not in over else over["data.path"]
    if args.test:
        over["data.test_path"] = str(Path(args.test).resolve())
    cfg = TrialConfig.from_dict(apply_overrides(load_yaml(RECIPES[recipe]), over))
    last = work / f"{recipe}-{cfg.train.epochs:g}ep-s{seed}"

    def keep(metrics: dict[str, Any], ckpt: str) -> None:
        shutil.copytree(ckpt, last, dirs_exist_ok=True)

    t0, c0 = time.perf_counter(), time.process_time()
    final = run_trial(cfg, report=keep, log=lambda m: print(f"    {m}", flush=True))[-1]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = score_test(last) if args.test else None
    return {"seed": seed, "dev_accuracy": final["accuracy"], "dev_f1": final["f1"], "test_accuracy": (test or {}).get("accuracy"),
            "wall_s": round(wall, 1), "core_s": round(wall * threads, 1), "cpu_s": round(cpu, 1), "samples_seen": final["samples_seen"]}


def _study_run(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """One seed of the study path: ``python -m study.run --refit`` in its own process and store;
    the shipped model's dev (and test) scores from its ``summary.json``, and the study's cost."""
    import resource
    import subprocess

    name = f"quality-refit-s{seed}"
    sets = [*args.set, *args.study_set, f"study.seed={seed}", f"train.seed={seed}"]
    if args.data or not any(s.startswith("data.path=") for s in sets):
        sets.append(f"data.path={sst2_dir(args.data)}")
    if args.test:
        sets.append(f"data.test_path={Path(args.test).resolve()}")
    resumed = (work / name / "study.json").is_file()  # an earlier sitting started it: continue, with its stored config
    cmd = [sys.executable, "-m", "study.run", "--name", name, "--storage", str(work), "--refit"]
    cmd += ["--resume"] if resumed else ["--config", str(args.study), *(a for s in sets for a in ("--set", s))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "a") as log:  # a sitting adds to the log of the ones before
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd[1:])}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "LORA_STUDY_HOME": str(work)}, stdout=log, stderr=subprocess.STDOUT).returncode
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise BenchmarkError(f"the study for seed {seed} exited with {rc}; see {work / (name + '.log')}")
    got = _study_result(work / name, seed, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    return {**got, "resumed": True} if resumed else got  # wall_s/cpu_s then cover this sitting only; core_s the whole study


def _study_result(study_dir: Path, seed: int, wall: float, cpu: float) -> dict[str, Any]:
    """What one study → refit run shipped, and what it cost, from its ``summary.json`` and ``study.json``."""
    summary = json.loads((study_dir / "summary.json").read_text())
    config = json.loads((study_dir / "study.json").read_text())["config"]
    shipped = summary["shipped"]["model"]
    entry = summary["refit"] if shipped == "refit" else summary["best"]
    refit = summary.get("refit") or {}
    refit_s = (refit.get("time_total_s") or 0) + sum(c.get("time_total_s") or 0 for c in (refit.get("check") or {}).get("candidates", []))
    core_s = summary["compute_s"] * config["resources"]["cpus_per_trial"] + refit_s * (refit.get("resources") or {}).get("cpu", 1)
    return {"seed": seed, "dev_accuracy": entry.get("dev_accuracy", entry.get("accuracy")), "dev_f1": entry.get("dev_f1", entry.get("f1")),
            "test_accuracy": (summary.get("test") or {}).get("accuracy"), "shipped": shipped, "pick": summary["best"]["trial_id"],
            "refit_lr_factor": refit.get("lr_factor"), "verdict": (refit.get("verdict") or {}).get("reason"),
            "wall_s": round(wall, 1), "core_s": round(core_s, 1), "cpu_s": round(cpu, 1), "search_compute_s": summary["compute_s"],
            "refit_s": round(refit_s, 1)}


def mean_se(values: list[float | None]) -> dict[str, Any]:
    """Mean, standard error of the mean (sd/√n; ``None`` below two values) and n of the values given."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None
    return {"mean": statistics.fmean(xs), "se": se, "n": len(xs)}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    seeds, paths = parse_seeds(args.seeds), _paths(args)
    earlier = _earlier(args, paths)
    work = Path(args.work or earlier.get("work") or tempfile.mkdtemp(prefix="lora-study-quality-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    res = {"benchmark": "quality-compare", **run_metadata(), "seeds": seeds, "study_config": str(args.study), "test": args.test,
           "overrides": args.set, "study_overrides": args.study_set, "work": str(work), "complete": False,
           "paths": {name: {"kind": kind, "runs": []} for name, kind, _ in paths}}
    if earlier:
        res["sittings"] = [*earlier.get("sittings", [{"date": earlier.get("date"), "git": earlier.get("git")}]),
                           {"date": res.get("date"), "git": res.get("git")}]
    goals_first = sorted(paths, key=lambda p: (p[1] != "study", "train.epochs" not in p[2]))  # the study, then seed-002 at its epochs
    for seed in seeds:
        for name, kind, extra in goals_first:
            done = next((r for r in earlier.get("paths", {}).get(name, {}).get("runs", []) if r["seed"] == seed), None)
            if done is not None:
                print(f"[seed {seed}] {name}: kept from {args.json} (dev accuracy {done['dev_accuracy']:.4f})", flush=True)
                res["paths"][name]["runs"].append(done)
                continue
            print(f"[seed {seed}] {name}", flush=True)
            run_ = _study_run(args, seed, work) if kind == "study" else \
                _recipe_run(args, extra.get("recipe", name), {k: v for k, v in extra.items() if k != "recipe"}, seed, work)
            res["paths"][name]["runs"].append(run_)
            print(f"  dev accuracy {run_['dev_accuracy']:.4f}, {run_['core_s'] / 3600:.2f} CPU-hours", flush=True)
            _aggregate(res)
            if args.json:
                write_json(args.json, res)
    res["complete"] = True
    return _aggregate(res)


def _earlier(args: argparse.Namespace, paths: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """With ``--resume``: the result ``--json`` holds, refused in one line when it measured something
    else (another study config, overrides or test file); ``{}`` without ``--resume``."""
    if not args.resume:
        return {}
    if not args.json:
        raise BenchmarkError("--resume needs --json FILE (the result to continue)")
    try:
        earlier = json.loads(Path(args.json).read_text())
    except FileNotFoundError:
        return {}  # nothing measured yet: a first sitting
    except (OSError, ValueError) as e:
        raise BenchmarkError(f"--resume: cannot read {args.json}: {e}") from None
    if earlier.get("benchmark") != "quality-compare":
        raise BenchmarkError(f"--resume: {args.json} is not a quality compare result")
    mine = {"study_config": str(args.study), "test": args.test, "overrides": args.set, "study_overrides": args.study_set}
    for key, value in mine.items():
        if earlier.get(key) != value:
            raise BenchmarkError(f"--resume: {args.json} measured {key}={earlier.get(key)!r}, this run {value!r}; "
                                 f"use another --json, or the same options")
    if args.work and earlier.get("work") and Path(args.work).resolve() != Path(earlier["work"]):
        raise BenchmarkError(f"--resume: {args.json} has its studies in {earlier['work']}, not {args.work}")
    unknown = set(earlier.get("paths", {})) - {name for name, _, _ in paths}
    if unknown:
        raise BenchmarkError(f"--resume: {args.json} holds paths this run does not compare: {sorted(unknown)}")
    return earlier


def _aggregate(res: dict[str, Any]) -> dict[str, Any]:
    for entry in res["paths"].values():
        runs = entry["runs"]
        entry["dev_accuracy"] = mean_se([r["dev_accuracy"] for r in runs])
        entry["test_accuracy"] = mean_se([r["test_accuracy"] for r in runs])
        entry["cpu_hours"] = mean_se([r["core_s"] / 3600 for r in runs])
    return res


def _pm(s: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    if s["mean"] is None:
        return "–"
    return f"{s['mean'] * scale:.{digits}f}" + (f" ± {s['se'] * scale:.{digits}f}" if s["se"] is not None else "")


def compare_table(res: dict[str, Any]) -> None:
    rows = [("path", "dev accuracy % (mean ± se)", "test accuracy %", "CPU-hours per run", "seeds")]
    rows += [(name, _pm(e["dev_accuracy"]), _pm(e["test_accuracy"]), _pm(e["cpu_hours"], 1.0), str(e["dev_accuracy"]["n"]))
             for name, e in res["paths"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def compare_summary(res: dict[str, Any]) -> str:
    study = next(e for e in res["paths"].values() if e["kind"] == "study")["dev_accuracy"]
    seed2 = res["paths"].get("seed-002", {}).get("dev_accuracy", {"mean": None})
    gap = f"{(study['mean'] - seed2['mean']) * 100:+.2f} points over seed-002" if study["mean"] is not None and seed2["mean"] is not None else ""
    return f"study → refit: dev accuracy {_pm(study)}% over {study['n']} seed(s); {gap}".rstrip("; ")


if __name__ == "__main__":
    sys.exit(main())
