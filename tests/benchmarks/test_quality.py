"""benchmarks/quality.py: seeds in, every seed's own trial result out (JSON), bad input in one line."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality
from benchmarks.common import BenchmarkError

SEEDS = [("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("0,3,7", [0, 3, 7]), ("1-2,5", [1, 2, 5])]


@pytest.mark.parametrize("text,seeds", SEEDS)
def test_parse_seeds(text, seeds):
    assert quality.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a-b", "0-2,1", "3-1"])
def test_bad_seeds(text):
    with pytest.raises(BenchmarkError, match="--seeds"):
        quality.parse_seeds(text)


def tiny_args(tiny_bert, sst2_small, out):
    return ["--seeds", "0,1", "--data", str(sst2_small), "--json", str(out), "--goal", "0.5",
            "--set", f"model.name={tiny_bert}", "--set", "data.size=64", "--set", "data.dev_size=64",
            "--set", "data.max_length=32", "--set", "train.threads=1", "--set", "train.eval_every_samples=32"]


def test_each_seed_is_its_own_trial(tiny_bert, sst2_small, tmp_path, capsys):
    """The JSON holds what run_trial gives for each seed (not a copy of one run)."""
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides
    from trainables.loop import run_trial

    out = tmp_path / "q.json"
    args = tiny_args(tiny_bert, sst2_small, out)
    assert quality.main(args) == 0
    res = json.loads(out.read_text())
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    for run in res["runs"]:
        cfg = TrialConfig.from_dict(apply_overrides(load_yaml(quality.RECIPE), {
            **parse_overrides(sets), "data.path": str(sst2_small), "train.seed": run["seed"]}))
        history = run_trial(cfg)
        assert run["accuracy"] == history[-1]["accuracy"]
        assert [c["samples_seen"] for c in run["curve"]] == [32, 64]
    accs = [r["accuracy"] for r in res["runs"]]
    assert res["complete"] is True and res["seeds"] == [0, 1] and res["accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert res["accuracy"]["at_goal"] == sum(a >= 0.5 for a in accs)
    assert res["config"]["overrides"] == sets and res["date"] and res["hardware"]["usable_cpus"] >= 1
    assert "mean" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("extra,expected", [
    (["--set", "train.seed=3"], "use --seeds"),
    (["--set", "lora.r=0"], "lora.r"),
    (["--seeds", "x"], "--seeds"),
])
def test_bad_input_is_one_line(extra, expected, tiny_bert, sst2_small, tmp_path, capsys):
    assert quality.main(tiny_args(tiny_bert, sst2_small, tmp_path / "q.json") + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q.json").exists()


def test_an_interrupted_run_keeps_the_seeds_it_finished(tiny_bert, sst2_small, tmp_path, monkeypatch):
    """A crash (or Ctrl-C) in seed 2 of 2 leaves seed 1's result on disk, marked incomplete."""
    import trainables.loop

    real, calls = trainables.loop.run_trial, []

    def crashing(cfg, **kw):
        calls.append(cfg.train.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(trainables.loop, "run_trial", crashing)
    out = tmp_path / "q.json"
    with pytest.raises(KeyboardInterrupt):
        quality.main(tiny_args(tiny_bert, sst2_small, out))
    res = json.loads(out.read_text())
    assert calls == [0, 1] and res["complete"] is False
    assert [r["seed"] for r in res["runs"]] == [0] and res["accuracy"]["mean"] == res["runs"][0]["accuracy"]


# --------------------------------------------------------------------------- compare: recipes vs study → refit

MEANS = [  # (values, mean, standard error)
    ([0.80, 0.90], 0.85, 0.05),
    ([0.86, None, 0.88, 0.87], 0.87, 0.01 / 3 ** 0.5),
    ([0.9], 0.9, None),
    ([None], None, None),
]


@pytest.mark.parametrize("values,mean,se", MEANS)
def test_mean_and_standard_error(values, mean, se):
    got = quality.mean_se(values)
    assert got["n"] == sum(v is not None for v in values)
    assert (got["mean"], got["se"]) == (pytest.approx(mean) if mean is not None else None, pytest.approx(se) if se is not None else None)


def _fake_study(d, shipped: str) -> None:
    """The two files the benchmark reads from a finished study → refit."""
    d.mkdir(parents=True)
    refit = {"accuracy": 0.91, "dev_accuracy": 0.90, "time_total_s": 100.0, "resources": {"cpu": 2.0}, "lr_factor": 0.5,
             "check": {"candidates": [{"time_total_s": 10.0}, {"time_total_s": 10.0}]}, "verdict": {"reason": "why"}}
    summary = {"shipped": {"model": shipped}, "refit": refit, "compute_s": 1000.0, "test": {"accuracy": 0.89},
               "best": {"trial_id": "pick1", "accuracy": 0.88, "dev_accuracy": 0.85}}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "study.json").write_text(json.dumps({"config": {"resources": {"cpus_per_trial": 1.0}}}))


@pytest.mark.parametrize("shipped,dev", [("refit", 0.90), ("pick", 0.85)])
def test_a_study_path_reports_the_model_it_shipped_and_its_core_hours(tmp_path, shipped, dev):
    _fake_study(tmp_path / "s", shipped)
    got = quality._study_result(tmp_path / "s", seed=3, wall=1500.0, cpu=900.0)
    assert got["dev_accuracy"] == dev and got["shipped"] == shipped and got["test_accuracy"] == 0.89 and got["seed"] == 3
    assert got["core_s"] == 1000.0 * 1 + (100.0 + 20.0) * 2 and got["refit_s"] == 120.0 and got["cpu_s"] == 900.0


def compare_args(tiny_bert, sst2_small, out, *extra):
    return ["compare", "--seeds", "0,1", "--data", str(sst2_small), "--json", str(out), "--threads", "1",
            "--set", f"model.name={tiny_bert}", "--set", "data.max_length=32", "--set", "data.dev_size=64",
            "--set", "train.eval_every_samples=200", *extra]


def test_compare_runs_every_path_per_seed(tiny_bert, sst2_small, tmp_path, monkeypatch, capsys):
    """The recipes train for real (tiny); the study path reads a finished study's files (the real
    ``python -m study.run --refit`` is the slow test below)."""
    studies = []

    def fake_study_run(args, seed, work):
        _fake_study(work / f"s{seed}", "refit")
        studies.append((seed, args.study))
        return quality._study_result(work / f"s{seed}", seed, 10.0, 5.0)

    monkeypatch.setattr(quality, "_study_run", fake_study_run)
    out = tmp_path / "q.json"
    assert quality.main(compare_args(tiny_bert, sst2_small, out, "--work", str(tmp_path / "w"))) == 0
    res = json.loads(out.read_text())
    assert list(res["paths"]) == ["seed-000", "seed-002", "seed-002 × 3 epochs", "study → refit (sst2-8k.yaml)"]
    assert res["complete"] is True and res["seeds"] == [0, 1] and [s for s, _ in studies] == [0, 1]
    for name, entry in res["paths"].items():
        assert [r["seed"] for r in entry["runs"]] == [0, 1], name
        accs = [r["dev_accuracy"] for r in entry["runs"]]
        assert entry["dev_accuracy"]["mean"] == pytest.approx(sum(accs) / 2) and entry["dev_accuracy"]["n"] == 2
        assert entry["cpu_hours"]["mean"] > 0
    recipes = res["paths"]["seed-000"]["runs"]
    assert all(r["samples_seen"] == 3 * 600 and r["core_s"] == r["wall_s"] for r in recipes)  # 3 epochs, 1 thread
    assert res["paths"]["seed-002 × 3 epochs"]["runs"][0]["samples_seen"] == 3 * res["paths"]["seed-002"]["runs"][0]["samples_seen"]
    out_lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("study → refit (sst2-8k.yaml)") and "± " in ln for ln in out_lines)
    assert out_lines[-1].startswith("study → refit: dev accuracy 90.00 ± 0.00% over 2 seed(s); ") and "over seed-002" in out_lines[-1]


@pytest.mark.parametrize("extra,expected", [
    (["--set", "train.seed=3"], "use --seeds"),
    (["--study-set", "study.seed=3"], "use --seeds"),
    (["--set", "lora.r=0"], "lora.r"),
    (["--study", "missing.yaml"], "config file not found"),
])
def test_compare_bad_input_is_one_line(extra, expected, tiny_bert, sst2_small, tmp_path, capsys):
    assert quality.main(compare_args(tiny_bert, sst2_small, tmp_path / "q.json", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q.json").exists()


@pytest.mark.slow
def test_compare_with_a_real_study_and_refit(tiny_bert, sst2_small, sst2, tmp_path):
    """One seed of every path for real, the study path a tiny ``python -m study.run --refit``
    with a test file: minutes."""
    from tests.conftest import ROOT

    test = tmp_path / "test.tsv"
    lines = (sst2 / "dev.tsv").read_text().splitlines()
    test.write_text("\n".join([lines[0], *lines[201:261]]) + "\n")
    out = tmp_path / "q.json"
    args = compare_args(tiny_bert, sst2_small, out, "--seeds", "0", "--no-equal-epochs", "--test", str(test),
                        "--study", str(ROOT / "study" / "configs" / "sst2-quick.yaml"), "--work", str(tmp_path / "w"),
                        "--study-set", "search.data.size.choice=[300,600]", "--study-set", "study.num_samples=2",
                        "--study-set", "asha.grace_period=100", "--study-set", "refit.lr_factors=[1,0.5]")
    assert quality.main(args) == 0
    res = json.loads(out.read_text())
    study = res["paths"]["study → refit (sst2-quick.yaml)"]["runs"][0]
    summary = json.loads((tmp_path / "w" / "quality-refit-s0" / "summary.json").read_text())
    assert summary["refit"]["state"] == "completed" and study["shipped"] == summary["shipped"]["model"]
    assert study["test_accuracy"] == summary["test"]["accuracy"] and summary["test"]["n"] == 60
    assert all(e["runs"][0]["test_accuracy"] is not None for e in res["paths"].values())
    assert study["core_s"] > 0 and study["cpu_s"] > 0


def _fake_paths(monkeypatch, calls):
    """Recipes and studies that only record that they ran (the resume logic is what is tested)."""
    def recipe(args, recipe, extra, seed, work):
        calls.append((recipe, extra.get("train.epochs"), seed))
        return {"seed": seed, "dev_accuracy": 0.8 + seed / 100, "test_accuracy": None, "core_s": 60.0}

    def study(args, seed, work):
        calls.append(("study", None, seed))
        _fake_study(work / f"s{seed}", "refit")
        return quality._study_result(work / f"s{seed}", seed, 10.0, 5.0)

    monkeypatch.setattr(quality, "_recipe_run", recipe)
    monkeypatch.setattr(quality, "_study_run", study)


def test_compare_runs_what_the_goals_compare_first(tiny_bert, sst2_small, tmp_path, monkeypatch):
    calls = []
    _fake_paths(monkeypatch, calls)
    assert quality.main(compare_args(tiny_bert, sst2_small, tmp_path / "q.json", "--seeds", "0", "--work", str(tmp_path / "w"))) == 0
    assert calls == [("study", None, 0), ("seed-002", 3, 0), ("seed-000", None, 0), ("seed-002", None, 0)]


def test_compare_resume_keeps_the_runs_done_and_does_the_rest(tiny_bert, sst2_small, tmp_path, monkeypatch, capsys):
    calls, out, work = [], tmp_path / "q.json", tmp_path / "w"
    _fake_paths(monkeypatch, calls)

    real_write = quality.write_json
    writes = []

    def write_then_stop(path, res):  # the benchmark is interrupted after its second run
        real_write(path, res)
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(quality, "write_json", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        quality.compare(quality.parse_compare_args(compare_args(tiny_bert, sst2_small, out, "--seeds", "0", "--work", str(work))[1:]))
    monkeypatch.setattr(quality, "write_json", real_write)
    assert len(calls) == 2
    calls.clear()
    assert quality.main(compare_args(tiny_bert, sst2_small, out, "--seeds", "0,1", "--resume")) == 0  # --work from the file
    assert calls == [("seed-000", None, 0), ("seed-002", None, 0), ("study", None, 1), ("seed-002", 3, 1),
                     ("seed-000", None, 1), ("seed-002", None, 1)]
    res = json.loads(out.read_text())
    assert res["complete"] is True and res["work"] == str(work.resolve()) and len(res["sittings"]) == 2
    assert all([r["seed"] for r in e["runs"]] == [0, 1] for e in res["paths"].values())
    assert "kept from" in capsys.readouterr().out


@pytest.mark.parametrize("change,expected", [
    (["--set", "train.batch_size=16"], "measured overrides="),
    (["--test", "t.tsv"], "measured test="),
    (["--no-equal-epochs"], None),  # fewer paths than the file holds
])
def test_compare_resume_refuses_a_result_of_other_options(change, expected, tiny_bert, sst2_small, tmp_path, monkeypatch, capsys):
    calls, out = [], tmp_path / "q.json"
    _fake_paths(monkeypatch, calls)
    assert quality.main(compare_args(tiny_bert, sst2_small, out, "--seeds", "0", "--work", str(tmp_path / "w"))) == 0
    before = out.read_text()
    if "--test" in change:
        (tmp_path / "t.tsv").write_text("sentence\tlabel\nfine\t1\n")
        change = ["--test", str(tmp_path / "t.tsv")]
    capsys.readouterr()
    assert quality.main(compare_args(tiny_bert, sst2_small, out, "--seeds", "0", "--resume", *change)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume") and len(err.splitlines()) == 1 and (expected is None or expected in err)
    assert out.read_text() == before


def test_compare_resume_needs_its_json(tiny_bert, sst2_small, tmp_path, capsys):
    args = [a for a in compare_args(tiny_bert, sst2_small, tmp_path / "q.json", "--resume") if a not in ("--json", str(tmp_path / "q.json"))]
    assert quality.main(args) == 2
    assert "--resume needs --json" in capsys.readouterr().err


def test_a_study_the_work_directory_holds_continues_with_study_run_resume(tmp_path, monkeypatch):
    import subprocess
    import types

    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        if not (tmp_path / "quality-refit-s4").exists():
            _fake_study(tmp_path / "quality-refit-s4", "refit")
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = quality.parse_compare_args([])
    monkeypatch.setattr(quality, "sst2_dir", lambda d=None: tmp_path)
    first = quality._study_run(args, 4, tmp_path)
    assert "--config" in seen[0] and "--resume" not in seen[0] and "resumed" not in first
    again = quality._study_run(args, 4, tmp_path)
    assert seen[1][seen[1].index("--name") + 1] == "quality-refit-s4" and "--resume" in seen[1] and "--refit" in seen[1]
    assert "--config" not in seen[1] and "--set" not in seen[1] and again["resumed"] is True
    headers = [ln for ln in (tmp_path / "quality-refit-s4.log").read_text().splitlines() if ln.startswith("=== ")]
    assert len(headers) == 2 and headers[1].endswith("--refit --resume")  # both sittings' output is kept
