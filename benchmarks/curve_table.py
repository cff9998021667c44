"""A learning-curve table over the study's real search space, for replaying search strategies.

Why a table: comparing search strategies live over 50 seeds would take weeks on 2 CPU cores.
Tabular and surrogate benchmarks (Klein & Hutter 2019, "Tabular Benchmarks for Joint Architecture
and Hyperparameter Optimization"; Eggensperger et al. 2015, "Efficient Benchmarking of
Hyperparameter Optimizers via Surrogates") record configurations once, with their whole learning
curves, and replay any optimizer against the record with simulated time.

What is recorded: ``N`` configurations drawn at random (seeded) from the search space of
``study/configs/sst2-8k.yaml`` (r {4, 8, 16, 32}, alpha multiple {1, 2, 4}, lr log-uniform
[1e-5, 5e-3], LoRA dropout uniform [0, 0.3], targets {qv, qkv, attn, all}, data size {1000, 2000,
4000, 8000}), plus the two seed notebooks' recipes at every data size, each trained once for one
epoch exactly as a study trial of that config trains it (the same YAML's fixed keys: the embedded
MiniLM, max_length 64, batch 32, seed 0). Each is evaluated at 500, 1k, 2k, 4k and 8k samples seen
(geometric, so that any ASHA or Hyperband rung with ratio 2 or 4 can be replayed) and at its end,
on a 4,000-sentence validation split held out of SST-2 train (``data.holdout_size``; what the
search selects on, ±0.55 points standard error at 85% accuracy) and on the 872-sentence dev split
(reported beside it, never selected on).

Time: each row carries ``elapsed_s`` (wall clock since the trial started: data + model load,
training, evaluations, checkpoints) and ``cpu_s`` (this process's CPU time over the same span).
Recording runs with one torch thread, so ``cpu_s`` is the trial's cost on one dedicated core and
does not grow when other work shares the machine; the replay charges ``cpu_s``.

Recording appends each finished configuration to a parquet file (a crash loses at most the one in
progress; rerunning continues) and rewrites a provenance JSON beside it (space, fixed config,
hardware, software, commit, dates).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import ROOT, BenchmarkError, now_iso, run_metadata, write_json

__all__ = [
    "SPACE_CONFIG",
    "space_config",
    "searched_keys",
    "sample_configs",
    "seed_configs",
    "table_configs",
    "config_id",
    "record_config",
    "record_table",
    "load_table",
    "merge_shards",
    "shard_path",
]

SPACE_CONFIG = ROOT / "study" / "configs" / "sst2-8k.yaml"
#: Metrics recorded at every evaluation (validation split unprefixed, dev split as ``dev_*``).
METRICS = ("accuracy", "f1", "eval_loss", "dev_accuracy", "dev_f1", "dev_eval_loss", "train_loss")


def space_config(path: str | Path = SPACE_CONFIG) -> Any:
    from study.config import load_study_config

    return load_study_config(path)


def searched_keys(cfg: Any) -> list[str]:
    """The searched keys in the order ``study.run`` builds its space (the trial config's key order)."""
    from trainables.config import TrialConfig

    return [k for k in TrialConfig().to_flat() if k in cfg.search]


def _draw(dist: Any, rng: np.random.Generator) -> Any:
    kind, v = dist.kind, getattr(dist, dist.kind)
    if kind == "choice":
        return v[int(rng.integers(len(v)))]
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(v[0]), math.log(v[1]))))
    if kind == "randint":
        return int(rng.integers(v[0], v[1]))
    return float(rng.uniform(v[0], v[1]))


def sample_configs(cfg: Any, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations drawn independently and uniformly (log-uniform for ``loguniform``)
    from the study's space; the same ``seed`` gives the same list, and a longer list starts with
    the shorter one."""
    rng = np.random.default_rng(seed)
    keys = searched_keys(cfg)
    return [{k: _draw(cfg.search[k], rng) for k in keys} for _ in range(n)]


def seed_configs(cfg: Any) -> list[tuple[str, dict[str, Any]]]:
    """The seed notebooks' two recipes (``study.search.space.seed_points``) at every data size of the
    space: what "the seed recipes trained on the same budget" means in the benchmark."""
    from study.search.space import seed_points

    sizes = list(cfg.search["data.size"].choice) if "data.size" in cfg.search else [None]
    out = []
    for name, point in zip(("seed000", "seed002"), seed_points(cfg)):
        for size in sizes:
            out.append((name, {**point, **({"data.size": size} if size is not None else {})}))
    return out


def config_id(kind: str, index: int, point: dict[str, Any]) -> str:
    """``r017`` for the 18th random configuration, ``seed002-8000`` for a seed recipe at 8k."""
    return f"r{index:03d}" if kind == "random" else f"{kind}-{point.get('data.size', 'all')}"


def table_configs(cfg: Any, n: int, seed: int = 0) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, kind, point) for every configuration of the table, in recording order: a seeded
    shuffle, so that a table cut short is still a uniform sample of the space."""
    rows = [(config_id("random", i, p), "random", p) for i, p in enumerate(sample_configs(cfg, n, seed))]
    rows += [(config_id(kind, 0, p), kind, p) for kind, p in seed_configs(cfg)]
    order = np.random.default_rng(seed + 1).permutation(len(rows))
    return [rows[i] for i in order]


def record_config(cfg: Any, point: dict[str, Any], data_path: str | Path, threads: int = 1) -> list[dict[str, Any]]:
    """Train one configuration as a study trial would; one row per evaluation."""
    import torch

    from trainables.config import TrialConfig
    from trainables.loop import run_trial

    flat = {**cfg.trial.to_flat(), "data.path": str(data_path), "train.threads": threads, **point}
    trial = TrialConfig.from_dict(flat)
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    setup_cpu: list[float] = []  # run_trial logs once when setup (tokenizer, data, model) is done

    def report(metrics: dict[str, Any], _ckpt: str) -> None:  # the checkpoint is written, as under Tune
        rows.append({
            "eval": len(rows) + 1,
            "samples_seen": int(metrics["samples_seen"]),
            "samples_total": int(metrics["samples_total"]),
            **{k: float(metrics[k]) for k in METRICS if k in metrics},
            "elapsed_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "setup_s": float(metrics["setup_s"]),
            "setup_cpu_s": setup_cpu[0],
        })

    run_trial(trial, report=report, log=lambda _msg: setup_cpu.append(time.process_time() - c0) if not setup_cpu else None)
    return rows


def shard_path(out: str | Path, shard: tuple[int, int]) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.shard{shard[0]}of{shard[1]}{out.suffix}")


def record_table(out: str | Path, data_path: str | Path, n: int = 200, seed: int = 0, threads: int = 1,
                 limit: int | None = None, shard: tuple[int, int] = (0, 1), space: str | Path = SPACE_CONFIG,
                 reverse: bool = False, log: Callable[[str], None] = print) -> Path:
    """Record the table into ``out`` (parquet), continuing a partial one; returns the path.

    ``shard=(i, k)`` records every k-th configuration starting at i into its own file
    (``out``'s stem + ``.shardIofK``), so that k processes, one per core, can record one table;
    ``load_table(out)`` reads ``out`` and its shards together, ``merge_shards`` folds them into ``out``.
    Before each configuration the table on disk is read again and recorded configurations are
    skipped, so a second process on the same shard with ``reverse=True`` works from the other end.
    Provenance goes to ``out`` with a ``.json`` suffix (per shard: ``.shardIofK.json``) and is
    rewritten after every configuration."""
    import pandas as pd

    cfg = space_config(space)
    out = Path(out)
    target = out if shard == (0, 1) else shard_path(out, shard)
    meta_path = target.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    have = _recorded(out)
    todo = [c for c in table_configs(cfg, n, seed)[shard[0]::shard[1]] if c[0] not in have][:limit]
    if reverse:
        todo.reverse()
        target = target.with_name(f"{target.stem}.reverse{target.suffix}")
        meta_path = target.with_suffix(".json")
    frame = pd.read_parquet(target) if target.exists() else None
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({
        "what": "learning curves of configurations drawn from the study's search space (one row per evaluation)",
        "space_config": str(Path(space).resolve().relative_to(ROOT)) if Path(space).resolve().is_relative_to(ROOT) else str(space),
        "search": {k: v.model_dump(exclude_none=True) for k, v in cfg.search.items()},
        "fixed": {k: v for k, v in cfg.trial.to_flat().items() if k not in cfg.search and k != "data.path"},
        "random_configs": n,
        "sample_seed": seed,
        "threads": threads,
        "shard": list(shard),
        "data_path": str(data_path),
        "columns": {
            "accuracy/f1/eval_loss": "on the validation split held out of SST-2 train (data.holdout_size)",
            "dev_*": "on the SST-2 dev split (872 sentences)",
            "elapsed_s": "wall seconds since the trial started (data + model load, training, evaluations, checkpoints)",
            "cpu_s": "process CPU seconds over the same span (one torch thread): what the replay charges",
        },
    })
    meta.setdefault("recordings", []).append({**run_metadata(), "configs_before": len(have), "configs_planned": len(todo)})
    log(f"recording {len(todo)} configurations into {target} ({len(have)} already in the table)")
    started = time.perf_counter()
    for i, (cid, kind, point) in enumerate(todo, 1):
        if cid in _recorded(out):  # another process got there first
            continue
        t = time.perf_counter()
        rows = [{"config": cid, "kind": kind, **point, **r} for r in record_config(cfg, point, data_path, threads)]
        new = _as_columns(pd.DataFrame(rows), cfg)
        frame = new if frame is None else pd.concat([frame, new], ignore_index=True)
        tmp = target.with_name(f".{target.name}.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)
        meta["recordings"][-1].update(configs_done=i, seconds=round(time.perf_counter() - started, 1), finished=None)
        meta["configs"] = int(frame["config"].nunique())
        write_json(meta_path, meta)
        eta = (time.perf_counter() - started) / i * (len(todo) - i)
        last = rows[-1]
        log(f"[{i}/{len(todo)}] {cid} {_short(point)}: val {last['accuracy']:.4f} dev {last.get('dev_accuracy', float('nan')):.4f} "
            f"in {time.perf_counter() - t:.0f} s ({last['cpu_s']:.0f} CPU s); ~{eta / 60:.0f} min left")
    meta["recordings"][-1]["finished"] = now_iso()
    write_json(meta_path, meta)
    return target


def _as_columns(frame: Any, cfg: Any) -> Any:
    """A searched key whose choices mix numbers and words (``data.size: [1000, 8000, all]``) is
    stored as text: a parquet column holds one type. The replay reads ``"8000"`` back as 8000."""
    for key, dist in cfg.search.items():
        if key in frame and dist.kind == "choice" and len({type(c) for c in dist.choice}) > 1:
            frame[key] = frame[key].astype(str)
    return frame


def _shards(out: Path):
    return sorted(out.parent.glob(f"{out.stem}.shard*of*{out.suffix}"))


def _recorded(out: Path) -> set[str]:
    """Configurations already in the table or any of its shards."""
    return set(load_table(out)["config"]) if out.exists() or _shards(out) else set()


def merge_shards(out: str | Path) -> Path:
    """Fold the shard files (and their provenance) into ``out`` and its ``.json``; removes the shards."""
    out = Path(out)
    frame = load_table(out)
    meta_path = out.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    recordings = meta.get("recordings", [])
    for shard in _shards(out):
        sm = shard.with_suffix(".json")
        if sm.exists():
            smeta = json.loads(sm.read_text())
            meta = {**smeta, **{k: v for k, v in meta.items() if k != "recordings"}}
            recordings += smeta.get("recordings", [])
    meta.pop("shard", None)
    meta.update(recordings=recordings, configs=int(frame["config"].nunique()))
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    write_json(meta_path, meta)
    for shard in _shards(out):
        shard.unlink()
        shard.with_suffix(".json").unlink(missing_ok=True)
    return out


def _short(point: dict[str, Any]) -> str:
    names = {"lora.r": "r", "lora.alpha_multiple": "a", "lora.dropout": "d", "lora.target_modules": "t",
             "train.lr": "lr", "data.size": "n"}
    return " ".join(f"{names.get(k, k)}={v:.3g}" if isinstance(v, float) else f"{names.get(k, k)}={v}" for k, v in point.items())


def load_table(path: str | Path):
    """The recorded table (pandas) sorted by (config, eval); a missing or column-less file is a
    one-line ``BenchmarkError``."""
    import pandas as pd

    p = Path(path)
    parts = ([p] if p.is_file() else []) + list(_shards(p))
    if not parts:
        raise BenchmarkError(f"curve table {p} not found: record it with `python -m benchmarks.search_efficiency record --table {p}`")
    frame = pd.concat([pd.read_parquet(x) for x in parts], ignore_index=True).drop_duplicates(["config", "eval"])
    missing = {"config", "kind", "eval", "samples_seen", "accuracy", "cpu_s"} - set(frame.columns)
    if missing:
        raise BenchmarkError(f"curve table {p} lacks columns {sorted(missing)} (recorded by an older version?)")
    return frame.sort_values(["config", "eval"]).reset_index(drop=True)
