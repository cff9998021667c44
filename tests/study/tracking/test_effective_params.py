"""Every number MLflow and the summary show is what the trial used: trial runs, the parent run
(fixed values and ``best.*``) and the summary carry the effective ``lora.alpha`` (multiple × r),
``data.size`` as a count, the module names and the steps (``TrialConfig.effective``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from study.config import load_study_config
from study.tracking.runs import PARENT_TAG, TRIAL_ID_TAG, describe_best, study_params
from study.tracking.summary import print_summary
from study.tracking.tracker import MLflowTracker
from tests.study.tracking.conftest import trial_run
from trainables.config import TrialConfig

BASE = TrialConfig().to_flat()

#: (a trial's searched values, n_train, the params its run must show)
TRIALS = [
    ({"lora.r": 4, "lora.alpha_multiple": 4.0}, 2000,
     {"lora.alpha": "16.0", "lora.alpha_multiple": "4.0", "lora.r": "4"}),
    ({"lora.r": 16, "lora.alpha_multiple": 0.5, "lora.target_modules": "qkv"}, 2000,
     {"lora.alpha": "8.0", "lora.target_modules": "['query', 'key', 'value']", "lora.target_modules_preset": "qkv"}),
    ({"data.size": None, "train.batch_size": 32, "train.epochs": 2.0, "train.warmup_ratio": 0.1}, 1000,
     {"data.size": "1000", "train.steps_per_epoch": "32", "train.total_steps": "64", "train.warmup_steps": "6"}),
    ({"data.size": 0.5}, 1000, {"data.size": "500", "data.size_fraction": "0.5"}),
    ({"lora.alpha_multiple": 2.0}, None, {"lora.alpha": "16.0"}),  # n_train unknown: no counts
]


@pytest.mark.parametrize("values,n_train,expected", TRIALS, ids=[str(t[0]) for t in TRIALS])
def test_trial_runs_show_the_effective_values(mlflow_uri, parent, values, n_train, expected):
    tracker = MLflowTracker(mlflow_uri, parent, searched=sorted(values), n_train=n_train)
    tracker.setup()
    trial = SimpleNamespace(trial_id="t1", config={**BASE, **values}, path=None)
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"accuracy": 0.5, "samples_seen": 100, "samples_total": 1234})
    params = trial_run(mlflow_uri, parent, "t1").data.params
    assert {k: params.get(k) for k in expected} == expected
    assert params["train.total_samples"] == "1234"  # what the trial reported it will see
    if n_train is None:
        assert "train.total_steps" not in params and "data.size" not in params


def test_a_run_logged_before_keeps_its_params_on_resume(mlflow_uri, parent):
    """A trial run written by an earlier version holds ``lora.alpha=16.0`` and the preset: the
    resumed study adds what is missing instead of failing on MLflow's write-once params."""
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.get_run(parent).info.experiment_id,
                            tags={PARENT_TAG: parent, TRIAL_ID_TAG: "t1", "lora_study.role": "trial"})
    client.log_batch(run.info.run_id, params=[Param("lora.alpha", "16.0"), Param("lora.target_modules", "qv")])
    tracker = MLflowTracker(mlflow_uri, parent, n_train=500)
    tracker.setup()
    tracker.on_trial_start(0, [], SimpleNamespace(trial_id="t1", config={**BASE, "lora.r": 4, "lora.alpha_multiple": 1.0}, path=None))
    assert tracker.pending == 0
    params = client.get_run(run.info.run_id).data.params
    assert params["lora.alpha"] == "16.0" and params["lora.target_modules"] == "qv"
    assert params["data.size"] == "500" and params["lora.alpha_multiple"] == "1.0"


#: (a study's --set overrides, params its parent run must show, params it must not show)
PARENTS = [
    (["search.lora.r.choice=[4,8]", "search.lora.alpha_multiple.choice=[1,2,4]", "search.data.size.choice=[300,600]",
      "search.lora.target_modules.choice=[qv,all]"],
     {"search.lora.alpha_multiple": "choice [1, 2, 4]", "train.batch_size": "32"},
     ["lora.alpha", "data.size", "train.total_steps", "train.warmup_steps", "lora.target_modules", "lora.target_modules_preset"]),
    (["search.train.lr.loguniform=[1.0e-4,5.0e-3]", "lora.alpha_multiple=2", "data.size=all"],
     {"lora.alpha": "16.0", "lora.alpha_multiple": "2.0", "data.size": "1000", "train.total_steps": "32", "train.warmup_steps": "2",
      "lora.target_modules": "['query', 'value']", "lora.target_modules_preset": "qv"}, []),
    (["search.lora.r.choice=[4,8]", "lora.alpha_multiple=2"], {"lora.alpha_multiple": "2.0", "data.size": "1000"}, ["lora.alpha"]),
    (["search.lora.r.choice=[4,8]"], {"lora.alpha": "16.0"}, []),
    (["search.train.batch_size.choice=[16,32]"], {"data.size": "1000"}, ["train.total_steps", "train.steps_per_epoch"]),
    (["search.data.holdout_size.choice=[100,200]"], {"lora.alpha": "16.0"}, ["data.size", "train.total_steps"]),
]


@pytest.mark.parametrize("overrides,shown,hidden", PARENTS, ids=[" ".join(p[0]) for p in PARENTS])
def test_parent_params_show_values_every_trial_shares(overrides, shown, hidden):
    cfg = load_study_config(None, overrides)
    params = study_params(cfg, n_train=1000)
    assert {k: params.get(k) for k in shown} == shown
    assert not set(hidden) & set(params), sorted(set(hidden) & set(params))


def test_best_on_the_parent_run_is_what_it_trained_with(mlflow_uri, parent):
    config = {**BASE, "lora.r": 8, "lora.alpha_multiple": 4.0, "data.size": 300, "train.batch_size": 32}
    best = {"trial_id": "b1", "accuracy": 0.9, "params": {"lora.r": 8, "lora.alpha_multiple": 4.0, "data.size": 300}, "config": config}
    describe_best(mlflow_uri, parent, best, ["lora.alpha_multiple", "lora.r", "data.size"], n_train=600)
    params = MlflowClient(mlflow_uri).get_run(parent).data.params
    assert params["best.lora.alpha"] == "32.0" and params["best.lora.alpha_multiple"] == "4.0"
    assert params["best.data.size"] == "300" and params["best.train.total_steps"] == "10"


def test_summary_prints_the_effective_values(capsys):
    table = [{"trial_id": t, "state": "completed", "seed": seed, "params": {"lora.r": r, "lora.alpha_multiple": m},
              "effective": TrialConfig.from_dict({"lora.r": r, "lora.alpha_multiple": m}).effective(600),
              "best": {"accuracy": acc}, "last": {"samples_seen": 600}} for t, r, m, acc, seed in
             (("aaaa", 4, 4.0, 0.8, "seed-000"), ("bbbb", 16, 0.5, 0.7, None))]
    summary = {"name": "s", "metric": "accuracy", "mode": "max", "wall_s": 1, "compute_s": 1,
               "trials": {"total": 2, "completed": 2, "pruned": 0, "failed": 0},
               "best": {"trial_id": "aaaa", "accuracy": 0.8, "state": "completed", **table[0]}, "table": table}
    print_summary(json.loads(json.dumps(summary)))  # as summary.json holds it
    out = capsys.readouterr().out
    assert "best trial aaaa (completed, the seed-000 recipe)" in out and "  trained with lora.alpha = 16" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("trial "))
    assert header.split()[-2:] == ["lora.alpha", "recipe"]
    row = next(ln for ln in out.splitlines() if ln.startswith("bbbb"))
    assert row.split()[-1] == "8"  # 0.5 × 16


def test_a_real_study_logs_what_each_trial_trained_with(tiny_study):
    """The tiny study (ASHA + TPE + MLflow): every trial run's alpha is its multiple × r, its data
    size and steps are counts of the split the preflight measured; the parent's best.* and the
    summary agree."""
    name, home = tiny_study
    record = json.loads((home / name / "study.json").read_text())
    summary = json.loads((home / name / "summary.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    runs = client.search_runs([client.get_run(record["parent_run_id"]).info.experiment_id],
                              f"tags.`{PARENT_TAG}` = '{record['parent_run_id']}'")
    assert len(runs) == summary["trials"]["total"] == 6
    for run in runs:
        p = run.data.params
        assert float(p["lora.alpha"]) == float(p["lora.alpha_multiple"]) * int(p["lora.r"]), p
        cfg = TrialConfig.from_dict({k: v for k, v in summary_row(summary, run)["params"].items()})
        assert int(p["data.size"]) == cfg.data.count(record["n_train"]) and p["data.size"] in ("300", "600")
        steps = TrialConfig.from_dict({"data.size": int(p["data.size"]), "train.batch_size": int(p["train.batch_size"])}).train.steps(int(p["data.size"]))
        assert int(p["train.total_steps"]) == steps.total_steps and int(p["train.warmup_steps"]) == steps.warmup_steps
        assert p["lora.target_modules"].startswith("['query'") and p["lora.target_modules_preset"] in ("qv", "qkv", "all")
        assert int(p["train.total_samples"]) == int(p["data.size"])  # one epoch
    best = summary["best"]
    parent = client.get_run(record["parent_run_id"]).data.params
    assert float(parent["best.lora.alpha"]) == best["effective"]["lora.alpha"] == best["params"]["lora.alpha_multiple"] * best["params"]["lora.r"]
    assert "lora.alpha" not in parent  # searched through the multiple: no one value for all trials


def summary_row(summary: dict, run) -> dict:
    return next(r for r in summary["table"] if r["trial_id"] == run.data.tags[TRIAL_ID_TAG])
