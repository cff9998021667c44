"""Search-efficiency benchmark: the replay simulator on synthetic curve tables (fast), the CLI's
JSON/plot contract, its errors, and one end-to-end record → live → validate on a tiny model."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import search_efficiency as se
from benchmarks.replay import STRATEGIES, CurveTable, make_strategy, simulate
from benchmarks.search_grid import FIXED, GRID, SEED_POINTS, grid_points, point_id

ROOT = Path(__file__).resolve().parents[2]
ASHA = {"grace": 2000, "rf": 2.0, "max_t": 8000}


def synthetic_frame(noise=0.004, seed=0, sec=10.0, drop=()):
    """Every grid point with a 4-evaluation curve: accuracy peaks at lr 2e-3, 'all' adds a point
    and costs 1.5× the time; curves rise linearly with samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in grid_points():
        if point_id(p) in drop:
            continue
        final = 0.86 - 0.06 * abs(math.log10(p["train.lr"] / 2e-3)) + (0.01 if p["lora.target_modules"] == "all" else 0)
        final += rng.normal(0, noise)
        slow = 1.5 if p["lora.target_modules"] == "all" else 1.0
        for k in range(4):
            rows.append({"point": point_id(p), **p, "eval": k + 1, "samples_seen": 2000 * (k + 1), "samples_total": 8000,
                         "accuracy": 0.5 + (final - 0.5) * (k + 1) / 4, "elapsed_s": sec * slow * (k + 1)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table():
    return CurveTable(synthetic_frame())


def test_synthetic_table_covers_the_grid(table):
    assert table.complete and len(table) == math.prod(len(v) for v in GRID.values()) == 60
    assert [point_id(p) for p in grid_points()[:2]] == [point_id(p) for p in SEED_POINTS]
    assert not CurveTable(synthetic_frame(drop={point_id(SEED_POINTS[0])})).complete


def test_clock_startup_overhead_and_budget(table):
    """Seed configs, one slot: trial 2 starts when trial 1's last evaluation arrives; each trial pays
    start-up once and the per-report overhead at every evaluation; nothing after the budget counts."""
    run = simulate(make_strategy("seed_configs", 0, ASHA), table, budget_s=1e6, workers=1, startup_s=3.0, eval_overhead_s=0.5)
    assert [e["t"] for e in run.events[:4]] == pytest.approx([13.5, 24.0, 34.5, 45.0])
    assert run.trials[1]["start"] == pytest.approx(45.0) and run.events[4]["t"] == pytest.approx(45.0 + 13.5)
    assert [t["state"] for t in run.trials] == ["completed", "completed"]
    cut = simulate(make_strategy("seed_configs", 0, ASHA), table, budget_s=30.0, workers=1, startup_s=3.0, eval_overhead_s=0.5)
    assert [e["t"] for e in cut.events] == pytest.approx([13.5, 24.0]) and cut.trials[0]["state"] == "unfinished"
    assert cut.best_at(30.0) == cut.events[-1]["accuracy"] and cut.time_to(0.99) is None


def test_two_workers_run_side_by_side(table):
    run = simulate(make_strategy("seed_configs", 0, ASHA), table, budget_s=1e6, workers=2)
    assert [t["start"] for t in run.trials] == [0.0, 0.0]
    assert len(run.events) == 8 and run.events[0]["t"] == run.events[1]["t"] == pytest.approx(10.0)


@pytest.mark.parametrize("name,optuna_pruned", [("ours", True), ("ours_unseeded", True), ("stock_optuna_asha", False),
                                                ("stock_defaults", False)])
def test_asha_stops_and_what_optuna_is_told(table, name, optuna_pruned):
    """Both TPE strategies get ASHA stops; only ours tells Optuna PRUNED (stock: COMPLETE at low fidelity)."""
    from optuna.trial import TrialState

    from study.searcher import get_optuna_study

    strategy = make_strategy(name, 1, ASHA)
    run = simulate(strategy, table, budget_s=1500, workers=1, startup_s=1.0)
    pruned = sum(t["state"] == "pruned" for t in run.trials)
    completed = sum(t["state"] == "completed" for t in run.trials)
    assert pruned >= 3 and completed >= 1
    states = [t.state for t in get_optuna_study(strategy.searcher).trials]
    if optuna_pruned:
        assert states.count(TrialState.PRUNED) == pruned and states.count(TrialState.COMPLETE) == completed
    else:
        assert states.count(TrialState.PRUNED) == 0 and states.count(TrialState.COMPLETE) == pruned + completed


def test_seeded_strategies_start_with_the_seed_recipes(table):
    run = simulate(make_strategy("ours", 0, ASHA), table, budget_s=600)
    assert [t["point"] for t in run.trials[:2]] == [point_id(p) for p in SEED_POINTS]
    seeds = simulate(make_strategy("seed_configs", 0, ASHA), table, budget_s=1e6)
    assert [t["point"] for t in seeds.trials] == [point_id(p) for p in SEED_POINTS]


def test_random_fifo_trains_everything_to_the_end(table):
    run = simulate(make_strategy("random_fifo", 3, ASHA), table, budget_s=2000)
    assert len(run.trials) >= 20 and all(t["state"] in ("completed", "unfinished") for t in run.trials)
    assert len({t["point"] for t in run.trials}) > 10  # it samples the space, not one point


def test_searchers_are_seeded(table):
    a = simulate(make_strategy("ours", 5, ASHA), table, budget_s=800)
    b = simulate(make_strategy("ours", 5, ASHA), table, budget_s=800)
    c = simulate(make_strategy("ours", 6, ASHA), table, budget_s=800)
    assert [t["point"] for t in a.trials] == [t["point"] for t in b.trials] != [t["point"] for t in c.trials]


def _write_table(tmp_path, frame):
    path = tmp_path / "curves.parquet"
    frame.to_parquet(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"fixed": FIXED, "grid": {k: list(v) for k, v in GRID.items()}}))
    return path


def test_cli_replay_writes_the_agreed_json_and_a_plot(tmp_path, capsys):
    table = _write_table(tmp_path, synthetic_frame())
    out = tmp_path / "se.json"
    rc = se.main(["--table", str(table), "--seeds", "3", "--budget-s", "900", "--startup-s", "2", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "replay" and res["seeds"] == 3 and 0.5 < res["target"] < 1
    for name in ("ours", "stock_optuna_asha", "random_fifo", "seed_configs"):
        assert set(res[name]) == {"time_to_target_s", "best_accuracy"}
        assert 0.5 < res[name]["best_accuracy"] <= 1
        assert len(res["details"]["strategies"][name]["per_seed"]) == 3
    # the target is the 90% quantile of the points' best accuracies: 6 of 60 points reach it
    assert "reached by 6 of 60" in res["details"]["target_reason"]
    # seed configs never search, so both their best accuracies are the same for every seed
    assert len({r["best_accuracy"] for r in res["details"]["strategies"]["seed_configs"]["per_seed"]}) == 1
    assert res["details"]["startup_s"] == 2 and res["details"]["table_provenance"]["fixed"] == FIXED
    assert set(res["goals"]) == {"speedup_vs_random_fifo", "speedup_vs_stock_optuna_asha", "accuracy_gain_vs_seed_configs"}
    sens = res["details"]["sensitivity"]
    assert set(sens["targets"]) == {"q0.75", "q0.9", "q0.95"} and sens["budgets_s"] == [450.0, 900.0, 1800.0]
    assert sens["targets"]["q0.9"] == res["target"]
    assert sens["time_to_target_s"]["ours"]["q0.9"] == res["ours"]["time_to_target_s"]
    # synthetic curves rise linearly to their final value: the first rung ranks points as the end does
    assert res["details"]["first_rung_rank_correlation"] > 0.95
    png = out.with_suffix(".png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "time to target" in text and "ours" in text and "random_fifo" in text


@pytest.mark.parametrize("args,message", [
    (["--table", "{missing}"], "record it with"),
    (["--table", "{partial}"], "not recorded yet"),
    (["--table", "{full}", "--strategies", "ours,nope"], "unknown strategies"),
    (["record", "--set", "lora.r=4"], "searched keys come from the grid"),
    (["record", "--set", "train.epochs=-1"], "train.epochs"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "nope.parquet",
             "partial": _write_table(tmp_path, synthetic_frame(drop={point_id(SEED_POINTS[1])})),
             "full": tmp_path / "full.parquet"}
    synthetic_frame().to_parquet(paths["full"])
    args = [a.format(**paths) for a in args]
    assert se.main([*args, "--startup-s", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_median_treats_a_missed_target_as_slowest():
    assert se._median([10.0, None, 30.0]) == 30.0
    assert se._median([10.0, None, None]) is None
    s = se.summarize_runs([{"time_to_target_s": t, "best_accuracy": a, "trials": 3, "completed": 1, "pruned": 2}
                           for t, a in ((5.0, 0.8), (None, 0.7), (9.0, 0.9))])
    assert s["time_to_target_s"] == 9.0 and s["reached"] == "2/3" and s["best_accuracy"] == 0.8
    assert s["time_to_target_range_s"] == [5.0, 9.0]
    goals = se.comparisons({"ours": {"time_to_target_s": 10.0, "best_accuracy": 0.86},
                            "random_fifo": {"time_to_target_s": 35.0, "best_accuracy": 0.85},
                            "seed_configs": {"time_to_target_s": None, "best_accuracy": 0.82}})
    assert goals == {"speedup_vs_random_fifo": 3.5, "accuracy_gain_vs_seed_configs": 0.04}


TINY = ["--set", "data.size=96", "--set", "data.max_length=32", "--set", "train.eval_every_samples=32",
        "--set", "train.batch_size=16", "--threads", "1"]


def test_record_live_validate_on_a_tiny_model(tiny_bert, sst2_small, tmp_path):
    """The recorder's curves are what live trials of the same configs report (same accuracies,
    same ASHA decisions), and validate says so."""
    env = {**os.environ, "LORA_STUDY_DATA": str(sst2_small), "LORA_STUDY_HOME": str(tmp_path / "home")}
    table = tmp_path / "t.parquet"
    tiny = [*TINY, "--set", f"model.name={tiny_bert}", "--table", str(table)]

    def run(*args, timeout=400):
        p = subprocess.run([sys.executable, "-m", "benchmarks.search_efficiency", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p

    run("record", "--limit", "2", *tiny)
    frame = pd.read_parquet(table)
    assert set(frame["point"]) == {point_id(p) for p in SEED_POINTS}
    assert frame.groupby("point")["samples_seen"].apply(list).tolist() == [[32, 64, 96]] * 2
    meta = json.loads(table.with_suffix(".json").read_text())
    assert meta["fixed"]["data.size"] == 96 and meta["points"] == 2 and meta["recordings"][0]["hardware"]
    run("record", "--limit", "1", *tiny)  # continues: the first non-seed point, the two kept
    assert pd.read_parquet(table)["point"].nunique() == 3
    storage = tmp_path / "live"
    out = tmp_path / "live.json"
    run("live", "--strategies", "seed_configs", "--seeds", "1", "--budget-s", "300", "--target", "0.5",
        "--storage", str(storage), "--json", str(out), *tiny)
    res = json.loads(out.read_text())
    assert res["mode"] == "live" and res["seeds"] == 1 and res["seed_configs"]["best_accuracy"] > 0
    study = res["details"]["studies"]["seed_configs"][0]
    report = tmp_path / "validate.json"
    p = run("validate", "--study", study, "--storage", str(storage), "--strategy", "seed_configs", "--table", str(table),
            "--budget-s", "300", "--target", "0.5", "--json", str(report))
    v = json.loads(report.read_text())
    assert v["trials_live"] == 2 and v["evaluations_compared"] == 6
    assert v["accuracy_abs_diff_max"] < 1e-6  # deterministic on CPU: the table is what live trials see
    assert v["same_state"] == "2/2" and v["startup_outside_trial_s_median"] > 0
    assert "accuracy_abs_diff_max" in p.stdout
