"""Search-efficiency benchmark: the curve table's configurations, the nearest-neighbour replay and its
clock on synthetic tables (fast), the strategies it builds through ``study.search.registry``, and the CLI's
JSON/plot contract and errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import search_efficiency as se
from benchmarks.curve_table import SPACE_CONFIG, load_table, merge_shards, seed_configs, shard_path, space_config, table_configs
from benchmarks.replay import CurveTable, ListSearcher, Strategy, coordinates, simulate
from study.search.registry import DEFAULT_SEARCHER

ROOT = Path(__file__).resolve().parents[2]
EVALS = (512, 1024, 2016, 4000, 8000)


@pytest.fixture(scope="module")
def cfg():
    return space_config()


def synthetic_frame(cfg, n=120, seed=0, eval_cost=10.0):
    """``table_configs`` with made-up curves: accuracy peaks at lr 2e-3 and grows with samples
    seen; each evaluation costs ``eval_cost`` CPU seconds plus one per 100 training samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for cid, kind, p in table_configs(cfg, n, seed):
        size = p["data.size"]
        top = 0.9 - 0.08 * abs(math.log10(p["train.lr"] / 2e-3)) + 0.01 * (p["lora.target_modules"] == "all")
        top += rng.normal(0, 0.003)
        points = [s for s in EVALS if s < size] + [size]
        for k, s in enumerate(points):
            acc = 0.5 + (top - 0.5) * (s / 8000) ** 0.3
            rows.append({"config": cid, "kind": kind, **p, "eval": k + 1, "samples_seen": s, "samples_total": size,
                         "accuracy": acc, "dev_accuracy": acc - 0.03, "cpu_s": 5.0 + (k + 1) * eval_cost + s / 100,
                         "setup_cpu_s": 5.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table(cfg):
    t = CurveTable(synthetic_frame(cfg), cfg.search)
    t.fit_weights()
    return t


def test_table_configs_are_seeded_uniform_and_include_the_seed_recipes(cfg):
    a, b = table_configs(cfg, 50, 0), table_configs(cfg, 50, 0)
    assert a == b and len(a) == 50 + 8  # two seed recipes at four data sizes
    assert table_configs(cfg, 60, 0)[:0] == [] and {c for c, _, _ in table_configs(cfg, 50, 0)} <= {c for c, _, _ in table_configs(cfg, 60, 0)}
    lrs = [p["train.lr"] for _, k, p in a if k == "random"]
    assert all(1e-5 <= x <= 5e-3 for x in lrs)
    seeds = seed_configs(cfg)
    assert {p["data.size"] for _, p in seeds} == {1000, 2000, 4000, 8000}
    assert {(p["lora.r"], p["train.lr"]) for _, p in seeds} == {(4, 1e-4), (8, 2e-4)}  # seed 002 states no lr: the trainable default


def test_shards_load_together_and_merge(cfg, tmp_path):
    frame = synthetic_frame(cfg, n=10)
    out = tmp_path / "t.parquet"
    ids = sorted(frame["config"].unique())
    frame[frame["config"].isin(ids[::2])].to_parquet(shard_path(out, (0, 2)))
    frame[frame["config"].isin(ids[1::2])].to_parquet(shard_path(out, (1, 2)))
    assert load_table(out)["config"].nunique() == len(ids)
    merge_shards(out)
    assert out.is_file() and not list(tmp_path.glob("*.shard*")) and load_table(out)["config"].nunique() == len(ids)


def test_snap_keeps_the_data_size_and_finds_the_nearest(table, cfg):
    c = table.random_curves()[3]
    assert table.snap(c.point) is c  # a recorded point answers itself
    near = dict(c.point, **{"train.lr": c.point["train.lr"] * 1.01})
    assert table.snap(near) is c
    other = next(s for s in cfg.search["data.size"].choice if s != c.point["data.size"])
    assert table.snap(dict(c.point, **{"data.size": other})).point["data.size"] == other


def test_fitted_weights_find_what_matters(table):
    """The synthetic accuracy depends on lr and targets only: the fit weights lr most and the LOO
    error drops below the unweighted metric's."""
    w = dict(zip(table.keys, table.weights))
    assert w["train.lr"] == max(w.values()) and w["lora.dropout"] < w["train.lr"]
    assert table.loo_error() < table.loo_error(np.ones(len(table.keys)))


def test_coordinates_are_in_the_unit_cube(cfg):
    for _, _, p in table_configs(cfg, 30, 1):
        x = coordinates(cfg.search, p)
        assert x.shape == (6,) and (x >= 0).all() and (x <= 1).all()


def test_clock_startup_overhead_and_budget(table):
    """One slot, a fixed list: each trial pays start-up once and the report overhead at every
    evaluation; the next starts when the last evaluation arrives; nothing after the budget counts."""
    c1, c2 = table.random_curves()[:2]
    strat = Strategy(ListSearcher([c1.point, c2.point]), None, table.keys)
    run = simulate(strat, table, budget_s=1e6, workers=1, startup_s=3.0, eval_overhead_s=0.5)
    n1 = len(c1.cost_s)
    assert [e["t"] for e in run.events[:n1]] == pytest.approx([3.0 + c + 0.5 * (k + 1) for k, c in enumerate(c1.cost_s)])
    assert run.trials[1]["start"] == pytest.approx(run.events[n1 - 1]["t"])
    assert [t["state"] for t in run.trials] == ["completed", "completed"]
    cut = simulate(Strategy(ListSearcher([c1.point]), None, table.keys), table, budget_s=run.events[0]["t"] + 0.1, workers=1,
                   startup_s=3.0, eval_overhead_s=0.5)
    assert len(cut.events) == 1 and (n1 == 1 or cut.trials[0]["state"] == "unfinished")
    pick = run.pick_at(1e6)
    assert pick["accuracy"] == max(e["accuracy"] for e in run.events) and pick["dev_accuracy"] == pytest.approx(pick["accuracy"] - 0.03)


def test_workers_run_side_by_side(table):
    pts = [c.point for c in table.random_curves()[:3]]
    run = simulate(Strategy(ListSearcher(pts), None, table.keys), table, budget_s=1e6, workers=3)
    assert [t["start"] for t in run.trials] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", list(se.STRATEGIES))
def test_strategies_run_through_the_study_builder(table, cfg, name):
    """Every main strategy is ``study.search.registry.build_search`` of a config variant; ASHA ones stop
    trials early, FIFO ones never."""
    run = simulate(se.make_strategy(name, cfg, 1, 60000), table, budget_s=3000, workers=4)
    states = [t["state"] for t in run.trials]
    assert len(run.trials) >= 4 and run.best_at(3000) is not None
    assert ("pruned" in states) == se.STRATEGIES[name][1](cfg).asha.enabled


def test_replay_is_deterministic_per_seed(table, cfg):
    a = simulate(se.make_strategy("pruned-tpe", cfg, 3, 60000), table, budget_s=2000, workers=2)
    b = simulate(se.make_strategy("pruned-tpe", cfg, 3, 60000), table, budget_s=2000, workers=2)
    assert [t["config"] for t in a.trials] == [t["config"] for t in b.trials]


def test_goals_and_quantiles():
    def strat(t95, reached, dev=None):
        return {"time_to_target_s": {"p95": t95}, "reached": {"p95": reached}, "dev_accuracy_of_pick": dev}

    per = {DEFAULT_SEARCHER: strat(100.0, 48, 0.86), "random-fifo": strat(400.0, 50), "optuna": strat(None, 20),
           "seed-configs": {"dev_accuracy_of_pick": 0.84}}
    g = se.goals(per, dev_p95=0.85)
    assert g["default"] == DEFAULT_SEARCHER and g["target"] == "p95"
    assert g["speedup_vs_random-fifo"] == 4.0 and g["speedup_vs_random-fifo_met"]
    assert g["speedup_vs_optuna"] == math.inf and g["dev_gain_vs_seed_recipes"] == pytest.approx(0.02)
    assert (g["reached"], g["reached_by_random"], g["reached_met"]) == (48, 50, False)
    assert g["dev_of_pick_vs_table_p95_met"] and g["dev_of_pick_vs_table_p95"] == pytest.approx(0.01)
    assert se._quantiles([10, None, 30, 20]) == [10.0, 20.0, 30.0]
    assert se._quantiles([None, None, 5]) == [5.0, None, None]


def test_cli_replay_writes_the_json_contract_and_a_plot(cfg, tmp_path):
    table_path = tmp_path / "curves.parquet"
    synthetic_frame(cfg, n=60).to_parquet(table_path)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.search_efficiency", "--table", str(table_path), "--seeds", "2",
                           "--budget-s", "3000", "--startup-s", "1", "--strategies", "pruned-tpe,random-fifo,seed-configs",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    targets = ["p90", "p95", "p99", "best-0.5"]
    for name in ("pruned-tpe", "random-fifo", "seed-configs"):
        assert set(res[name]) == {"time_to_target_s", "reached", "best_accuracy", "dev_accuracy_of_pick", "anytime_area"}
        assert list(res[name]["time_to_target_s"]) == targets and list(res[name]["reached"]) == targets
    assert res["seeds"] == 2 and res["workers"] == 4 and res["mode"] == "replay" and res["default"] == DEFAULT_SEARCHER
    assert res["table"]["configs"] == 68 and list(res["targets"]) == targets
    assert res["targets"]["best-0.5"] == pytest.approx(res["details"]["table_facts"]["best_accuracy"] - 0.005)
    assert res["replay_error"]["lookup"] in ("snap", "surrogate") and res["replay_error"]["snap_loo_mae"] >= 0
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.search_efficiency", "--table", str(tmp_path / "none.parquet")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: curve table") and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmarks.search_efficiency", "--strategies", "nope",
                           "--table", str(tmp_path / "none.parquet")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_space_config_is_the_shipped_yaml():
    assert SPACE_CONFIG.is_file() and SPACE_CONFIG.parent == ROOT / "study" / "configs"


def tiny_space(path, model, data):
    """The benchmark space's shape on the tiny BERT: two sizes, geometric evaluations, a holdout."""
    import yaml

    cfg = yaml.safe_load(SPACE_CONFIG.read_text())
    cfg["model"] = {"name": str(model)}
    cfg["data"].update(path=str(data), holdout_size=100, max_length=32)
    cfg["train"]["eval_at_samples"] = [100, 200, 400]
    cfg["train"]["eval_batch_size"] = 64
    cfg["search"]["data.size"] = {"choice": [200, 400]}
    cfg["search"]["lora.r"] = {"choice": [2, 4]}
    cfg["asha"]["grace_period"] = 100
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_record_replay_live_end_to_end_on_a_tiny_model(tiny_bert, sst2_small, tmp_path):
    """Record a 6-configuration table on the tiny BERT, replay it, then run two strategies live and
    compare: every live evaluation of a recorded configuration equals the table (same trainable,
    same seed), and the JSON carries the agreement with the replay."""
    space = tiny_space(tmp_path / "space.yaml", tiny_bert, sst2_small)
    table = tmp_path / "curves.parquet"
    base = [sys.executable, "-m", "benchmarks.search_efficiency", "--space", str(space), "--table", str(table),
            "--data", str(sst2_small)]
    rec = subprocess.run([*base, "record", "--n", "6"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rec.returncode == 0, rec.stderr[-3000:]
    frame = load_table(table)
    assert frame["config"].nunique() == 6 + 4
    for cid, rows in frame.groupby("config"):  # evaluations at the first batch past 100, 200, 400 and at the end
        seen = rows["samples_seen"].tolist()
        assert seen == sorted(set(seen)) and 2 <= len(seen) <= 3 and seen[-1] in (200, 400) and 100 <= seen[0] < 200, (cid, seen)
    assert {"dev_accuracy", "cpu_s", "setup_cpu_s"} <= set(frame.columns)
    out = tmp_path / "live.json"
    live = subprocess.run([*base, "live", "--strategies", f"random-fifo,{DEFAULT_SEARCHER}", "--budget-s", "40", "--workers", "1",
                           "--startup-s", "1", "--storage", str(tmp_path / "st"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "live" and set(res["details"]["agreement"]) == {"random-fifo", DEFAULT_SEARCHER}
    for name in ("random-fifo", DEFAULT_SEARCHER):
        runs = res["details"]["strategies"][name]["per_seed"]
        assert runs[0]["trials"] >= 1 and runs[0]["best_accuracy"] is not None
        assert isinstance(res["details"]["agreement"][name]["inside_iqr"], bool)
    # the default starts with the seed recipes, which the table recorded: same trainable, same numbers
    cfg = space_config(space)
    run = se.live_trace(res["details"]["strategies"][DEFAULT_SEARCHER]["per_seed"][0]["study"], str(tmp_path / "st"), list(cfg.search))
    recorded = {tuple(sorted(p.items())): cid for cid, _, p in table_configs(cfg, 6, 0)}
    compared = 0
    for trial in run.trials:
        cid = recorded.get(tuple(sorted(trial["params"].items())))
        if cid is None:
            continue
        rows = frame[frame["config"] == cid].set_index("samples_seen")["accuracy"]
        for e in (e for e in run.events if e["trial"] == trial["trial"]):
            assert e["accuracy"] == pytest.approx(rows[e["samples_seen"]], abs=1e-9)
            compared += 1
    assert compared >= 1


def test_targets_are_percentiles_of_final_accuracy_and_best_minus_gap(table):
    args = se.parse_args(["--target", "0.8"])
    t = se.targets_of(table, args)
    finals = sorted(c.final for c in table.random_curves())
    assert list(t) == ["p90", "p95", "p99", "best-0.5", "abs"] and t["abs"] == 0.8
    assert t["p90"] <= t["p95"] <= t["p99"] <= max(finals)
    assert t["best-0.5"] == pytest.approx(table.best_accuracy() - 0.005)
    share = sum(f >= t["p90"] for f in finals) / len(finals)
    assert 0.08 <= share <= 0.12  # a target one configuration in ten reaches: not a needle


def test_anytime_regret_counts_from_the_floor_until_the_first_evaluation():
    from benchmarks.replay import SimRun

    run = SimRun(events=[{"t": 50.0, "accuracy": 0.8}, {"t": 75.0, "accuracy": 0.9}])
    so_far, regret = se.anytime(run, 100.0, best=0.9, floor=0.5)
    grid = [100.0 * i / (se.GRID_POINTS - 1) for i in range(se.GRID_POINTS)]
    want = [0.5 if g < 50 else 0.8 if g < 75 else 0.9 for g in grid]
    assert so_far == pytest.approx(want) and regret == pytest.approx(sum(0.9 - w for w in want) / len(want))


def test_a_size_column_holding_all_as_text_replays(cfg):
    """A space searching ``data.size: [1000, all]`` is recorded as text ("1000", "all"); the replay
    reads it back whatever the searcher proposes (1000, "all", None)."""
    from benchmarks.curve_table import _as_columns
    from study.config import StudyConfig

    space = StudyConfig.model_validate({**cfg.model_dump(), "search": {**{k: v.model_dump(exclude_none=True) for k, v in cfg.search.items()},
                                                                       "data.size": {"choice": [1000, "all"]}}})
    frame = synthetic_frame(cfg, n=40)
    frame["data.size"] = frame["data.size"].map(lambda s: "all" if s == 8000 else s)
    frame = frame[frame["data.size"].isin([1000, "all"])].copy()
    stored = _as_columns(frame, space)
    assert stored["data.size"].map(type).eq(str).all()
    t = CurveTable(stored, space.search)
    assert {c.point["data.size"] for c in t.curves} == {1000, "all"}
    point = dict(t.curves[0].point)
    for spelling in ("all", None, "ALL"):
        assert t.snap({**point, "data.size": spelling}).point["data.size"] == "all"
    assert t.snap({**point, "data.size": 1000}).point["data.size"] == 1000


def test_curves_cut_short_are_left_out(cfg):
    frame = synthetic_frame(cfg, n=20)
    last = frame.groupby("config")["eval"].transform("max")
    victim = frame["config"].iloc[0]
    cut = frame[~((frame["config"] == victim) & (frame["eval"] == last))]
    t = CurveTable(cut, cfg.search)
    assert t.cut_short == [victim] and victim not in t.by_id


def test_budget_in_trials_scales_with_the_table(table):
    args = se.parse_args(["--budget-trials", "10"])
    budget, trials = se._budget(args, table)
    assert trials == 10 and budget == pytest.approx(10 * table.mean_full_cost())
    assert se._budget(se.parse_args([]), table)[0] == 3600.0


def test_surrogate_is_scored_on_held_out_configurations_and_replays_a_curve(table):
    from benchmarks.replay import Surrogate

    sur = Surrogate(table, noise_n=4000, folds=5)
    err = sur.cv_error()
    assert 0 <= err < 0.05  # the synthetic curves are smooth in lr and size
    point = dict(table.random_curves()[3].point)
    a, b = sur.lookup(0)(point), sur.lookup(0)(point)
    near = table.snap(point)
    assert a.samples_seen == near.samples_seen and a.cost_s == near.cost_s and a.accuracy == b.accuracy
    assert sur.lookup(1)(point).accuracy != a.accuracy  # noise drawn per replay seed
