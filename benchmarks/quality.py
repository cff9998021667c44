"""Dev accuracy of one recipe over several training seeds: ``python -m benchmarks.quality``.

    python -m benchmarks.quality [--config trainables/configs/seed-002.yaml] [--seeds 0-4]
        [--set KEY=VALUE …] [--goal 0.88] [--json FILE] [--data DIR]

Why seeds: one fine-tuning run says little. Fine-tuning seeds (head init, LoRA init, data order,
dropout) move SST-2 dev accuracy by about a point (Dodge et al. 2020, arXiv:2002.06305), and 872
dev sentences alone put a ±1.1-point binomial standard error on each run; a recipe change is only
worth something if it moves the mean over seeds, paired by seed. Each seed is a full standalone
trial (``trainables.loop.run_trial``, no Ray) with the recipe's own evaluation schedule; the
result file holds every seed's curve, the final accuracies and their mean/sd, the machine and
the commit; it is rewritten after each seed (``"complete": false`` until the last), so an
interrupted benchmark keeps the seeds it finished.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, BenchmarkError, run_benchmark, run_metadata, sst2_dir, write_json  # noqa: E402

__all__ = ["parse_seeds", "run", "main"]

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
    return run_benchmark(parse_args(argv), run, summary_line)


if __name__ == "__main__":
    sys.exit(main())
