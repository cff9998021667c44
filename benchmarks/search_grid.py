"""A tabular benchmark for the search strategies: every configuration of a small grid over the
study's search space, trained once with its full learning curve recorded.

Why a table: a live comparison of four search strategies over ≥3 seeds costs hours on 2 CPU
cores. Tabular benchmarks (Klein & Hutter 2019, "Tabular Benchmarks for Joint Architecture and
Hyperparameter Optimization"; Ying et al. 2019, NAS-Bench-101) record every configuration of a
discretised space once, so that any optimizer can be replayed against the table with simulated
time (each evaluation costs the seconds it took when recorded), for many seeds, in seconds. The
price is a discretised space: here the searched keys are categorical over the grid values below,
and live runs that are compared with the replay search the same grid.

The grid (60 configurations) covers the keys the seeds chose by hand, around both seeds' values;
both seed recipes (notebook 000: r=4, alpha=16, dropout 0, lr 1e-4, q,v; notebook 002: r=8,
alpha=16, dropout 0.1, q,v, lr 2e-3 as in ``trainables/configs/seed-002.yaml``) are grid points.
lora.alpha stays at the seeds' 16.

Fixed trial settings: the embedded MiniLM, a stratified 8,000-sentence SST-2 train subset (the
issue's "8k subset"), max_length 64 (SST-2 sentences: 99.9 % are shorter), one epoch, batch 32,
warmup 6 %, evaluation on the full 872-sentence dev split every 2,000 samples (ASHA's rungs sit
at 2k/4k of the 8k maximum; on 2 CPU cores one dev evaluation costs ~3.5 s, as much as ~700
training samples, so evaluating more often would make the table mostly evaluation), seed 0.

Recording (``python -m benchmarks.search_efficiency record``) trains the configurations one after
another in one process with all usable cores, appending each finished curve to a parquet table
(a crash loses at most the configuration in progress; rerunning continues where it stopped) and
writing the provenance (grid, fixed config, hardware, software, commit, dates) to a JSON file
beside it.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "GRID",
    "FIXED",
    "SEED_POINTS",
    "KEYS",
    "grid_points",
    "point_id",
    "trial_config",
    "record_point",
    "record_table",
    "load_table",
]

#: Searched keys and their grid values (60 points).
GRID: dict[str, list[Any]] = {
    "train.lr": [1e-4, 5e-4, 1e-3, 2e-3, 4e-3],
    "lora.r": [4, 8, 16],
    "lora.dropout": [0.0, 0.1],
    "lora.target_modules": ["qv", "all"],
}
KEYS = list(GRID)

#: Fixed trial config (flat dotted keys) shared by every point; ``data.path`` is added at run time.
FIXED: dict[str, Any] = {
    "model.name": "embedded-minilm",
    "data.label_names": ["negative", "positive"],
    "data.size": 8000,
    "data.max_length": 64,
    "lora.alpha": 16,
    "train.epochs": 1,
    "train.batch_size": 32,
    "train.warmup_ratio": 0.06,
    "train.eval_every_samples": 2000,
    "train.seed": 0,
    # The table was recorded with these three; pinned so that live runs reproduce its curves exactly.
    "train.bucket_chunk": 64,
    "train.fast_dropout": False,
    "model.pooling": "cls",
}

#: The seeds' two recipes as grid points (see ``study.space.SEED_RECIPES``).
SEED_POINTS: list[dict[str, Any]] = [
    {"train.lr": 1e-4, "lora.r": 4, "lora.dropout": 0.0, "lora.target_modules": "qv"},
    {"train.lr": 2e-3, "lora.r": 8, "lora.dropout": 0.1, "lora.target_modules": "qv"},
]


def point_id(point: dict[str, Any]) -> str:
    """A stable readable key for a grid point, e.g. ``lr=0.002,r=8,dropout=0.1,targets=qv``."""
    short = {"train.lr": "lr", "lora.r": "r", "lora.dropout": "dropout", "lora.target_modules": "targets"}
    return ",".join(f"{short[k]}={point[k]:g}" if isinstance(point[k], float) else f"{short[k]}={point[k]}" for k in KEYS)


def grid_points(order_seed: int = 0) -> list[dict[str, Any]]:
    """All grid points: the two seed recipes first, then the rest in a seeded random order, so a
    table cut short is still a uniform sample of the space rather than one corner of it."""
    points = [dict(zip(KEYS, values)) for values in itertools.product(*GRID.values())]
    seeds = [point_id(p) for p in SEED_POINTS]
    rest = [p for p in points if point_id(p) not in seeds]
    random.Random(order_seed).shuffle(rest)
    return [dict(p) for p in SEED_POINTS] + rest


def trial_config(point: dict[str, Any], data_path: str | Path, threads: int | None = None,
                 fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat trial config of a grid point (what ``trainables.lora.train`` receives)."""
    cfg = {**FIXED, **(fixed or {}), "data.path": str(data_path), **point}
    if threads:
        cfg["train.threads"] = threads
    return cfg


def record_point(point: dict[str, Any], data_path: str | Path, threads: int | None,
                 fixed: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train one grid point; one row per evaluation with the seconds since the trial started
    (tokenizer/data/model load included, imports not: those are a per-trial start-up cost that
    ``benchmarks/overhead.py`` measures under Ray)."""
    from trainables.config import TrialConfig
    from trainables.lora import run_trial

    cfg = TrialConfig.from_dict(trial_config(point, data_path, threads, fixed))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def report(metrics: dict[str, Any], _ckpt: str) -> None:  # the checkpoint is written, as under Tune
        rows.append({
            "point": point_id(point), **point,
            "eval": len(rows) + 1,
            "samples_seen": int(metrics["samples_seen"]),
            "samples_total": int(metrics["samples_total"]),
            "accuracy": float(metrics["accuracy"]),
            "f1": float(metrics["f1"]),
            "eval_loss": float(metrics["eval_loss"]),
            "train_loss": float(metrics["train_loss"]),
            "samples_per_s": float(metrics["samples_per_s"]),
            "elapsed_s": time.perf_counter() - t0,
        })

    run_trial(cfg, report=report)
    return rows


def record_table(out: str | Path, data_path: str | Path, threads: int | None, limit: int | None = None,
                 fixed: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Record the grid into ``out`` (parquet), continuing a partial table; returns the path.
    Provenance goes to ``out`` with a ``.json`` suffix and is rewritten after every point."""
    import pandas as pd

    out = Path(out)
    meta_path = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = load_table(out) if out.exists() else None
    have = set(done["point"]) if done is not None else set()
    points = grid_points()
    todo = [p for p in points if point_id(p) not in have][: limit if limit is not None else None]
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({
        "what": "full learning curves of every grid point (one row per dev evaluation)",
        "grid": {k: list(vs) for k, vs in GRID.items()},
        "fixed": {**FIXED, **(fixed or {})},
        "seed_points": [dict(p) for p in SEED_POINTS],
        "data_path": str(data_path),
        "threads": threads,
        "columns": {"elapsed_s": "seconds from trial start (data+model load included, imports and Ray start-up not) "
                                 "to the end of this evaluation and its checkpoint"},
    })
    meta.setdefault("recordings", []).append({**(provenance or {}), "points_before": len(have), "points_planned": len(todo)})
    log(f"recording {len(todo)} of {len(points)} grid points into {out} ({len(have)} already there)")
    frame = done
    started = time.perf_counter()
    for i, point in enumerate(todo, 1):
        t = time.perf_counter()
        rows = record_point(point, data_path, threads, fixed)
        new = pd.DataFrame(rows)
        frame = new if frame is None else pd.concat([frame, new], ignore_index=True)
        tmp = out.with_name(f".{out.name}.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(out)
        meta["recordings"][-1].update(points_done=i, finished=None, seconds=round(time.perf_counter() - started, 1))
        meta["points"] = int(frame["point"].nunique())
        _write_meta(meta_path, meta)
        eta = (time.perf_counter() - started) / i * (len(todo) - i)
        log(f"[{i}/{len(todo)}] {point_id(point)}: acc {rows[-1]['accuracy']:.4f} (best {max(r['accuracy'] for r in rows):.4f}) "
            f"in {time.perf_counter() - t:.0f} s; ~{eta / 60:.0f} min left")
    from .common import now_iso

    meta["recordings"][-1]["finished"] = now_iso()
    _write_meta(meta_path, meta)
    return out


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    from .common import write_json

    write_json(path, meta)


def load_table(path: str | Path):
    """The recorded table as a pandas DataFrame sorted by (point, eval); a missing or column-less
    file is a one-line error."""
    import pandas as pd

    from .common import BenchmarkError

    p = Path(path)
    if not p.is_file():
        raise BenchmarkError(f"curve table {p} not found: record it with "
                             f"`python -m benchmarks.search_efficiency record --table {p}`")
    frame = pd.read_parquet(p)
    missing = {"point", "eval", "samples_seen", "accuracy", "elapsed_s", *KEYS} - set(frame.columns)
    if missing:
        raise BenchmarkError(f"curve table {p} lacks columns {sorted(missing)}")
    return frame.sort_values(["point", "eval"]).reset_index(drop=True)
