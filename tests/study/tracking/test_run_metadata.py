"""What MLflow and Optuna users look for on a study's runs: each trial run's datasets (with
digests and counts), the git commit, its directory and newest checkpoint; the Optuna study named
after the study with a named objective, each Optuna trial naming its MLflow run; the node's system
metrics on the parent run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from study.search.journal import read_optuna_journal, save_optuna_study
from study.search.tpe import MLFLOW_RUN_ID_ATTR, RAY_TRIAL_ID_ATTR, make_searcher
from study.tracking.datasets import CONTEXT_TAG
from study.tracking.runs import CHECKPOINT_TAG, GIT_TAG, PARENT_TAG, TRIAL_DIR_TAG, TRIAL_ID_TAG, system_metrics
from study.tracking.tracker import MLflowTracker
from tests.study.tracking.conftest import trial_run
from trainables.config import TrialConfig


def datasets(run) -> dict[str, tuple]:
    """name -> (context, rows, digest, source) of a run's dataset inputs."""
    out = {}
    for d in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in d.tags}
        out[d.dataset.name] = (tags[CONTEXT_TAG], json.loads(d.dataset.profile)["num_rows"], d.dataset.digest,
                               json.loads(d.dataset.source)["uri"])
    return out


#: (data config, n_train, expected (context, rows) per dataset)
DATA = [
    ({"data.size": 300, "data.dev_size": 100}, 600,
     {"train": ("training", 300), "dev": ("validation", 100)}),
    ({"data.size": None, "data.holdout_size": 100}, 500,
     {"train": ("training", 500), "validation": ("validation", 100), "dev": ("testing", 200)}),
]


@pytest.mark.parametrize("data,n_train,expected", DATA, ids=["subset and dev", "holdout"])
def test_trial_runs_log_their_datasets(mlflow_uri, parent, sst2_small, data, n_train, expected):
    tracker = MLflowTracker(mlflow_uri, parent, n_train=n_train, log_datasets=True)
    tracker.setup()
    config = {**TrialConfig().to_flat(), "data.path": str(sst2_small), **data}
    for tid in ("t1", "t2"):
        tracker.on_trial_start(0, [], SimpleNamespace(trial_id=tid, config=config, path=None))
    got = {tid: datasets(trial_run(mlflow_uri, parent, tid)) for tid in ("t1", "t2")}
    name = Path(sst2_small).name
    assert {k.removeprefix(f"{name}-"): v[:2] for k, v in got["t1"].items()} == expected
    assert got["t1"] == got["t2"]  # the same rows: the same digests
    assert all(v[3] == str(Path(sst2_small).resolve()) and len(v[2]) == 8 for v in got["t1"].values())


def test_trial_run_datasets_differ_with_the_subset(mlflow_uri, parent, sst2_small):
    tracker = MLflowTracker(mlflow_uri, parent, n_train=600, log_datasets=True)
    tracker.setup()
    for tid, size in (("small", 300), ("large", 600)):
        config = {**TrialConfig().to_flat(), "data.path": str(sst2_small), "data.size": size}
        tracker.on_trial_start(0, [], SimpleNamespace(trial_id=tid, config=config, path=None))
    small, large = (datasets(trial_run(mlflow_uri, parent, t)) for t in ("small", "large"))
    train = f"{Path(sst2_small).name}-train"
    assert small[train][1:3] != large[train][1:3] and small[train][1] == 300


def test_trial_runs_carry_the_commit_and_their_checkpoint(mlflow_uri, parent, tmp_path):
    client = MlflowClient(mlflow_uri)
    commit = client.get_run(parent).data.tags.get(GIT_TAG)
    assert commit, "the tests run in a git checkout: the parent run has the commit"
    tracker = MLflowTracker(mlflow_uri, parent, experiment_path="s3://bucket/studies/s1")
    tracker.setup()
    trial = SimpleNamespace(trial_id="t1", config={"lora.r": 4}, path="bucket/studies/s1/trial_t1")
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"accuracy": 0.5, "samples_seen": 100, "checkpoint_dir_name": "checkpoint_000000"})
    tracker.on_trial_result(0, [], trial, {"accuracy": 0.6, "samples_seen": 200, "checkpoint_dir_name": "checkpoint_000001"})
    tags = trial_run(mlflow_uri, parent, "t1").data.tags
    assert tags[GIT_TAG] == commit
    assert tags[TRIAL_DIR_TAG] == "s3://bucket/studies/s1/trial_t1"
    assert tags[CHECKPOINT_TAG] == "s3://bucket/studies/s1/trial_t1/checkpoint_000001"


def test_optuna_trials_name_their_mlflow_runs_and_the_journal_names_study_and_objective(mlflow_uri, parent, tmp_path):
    from ray import tune

    searcher = make_searcher({"lora.r": tune.choice([4, 8])}, "accuracy", "max", seed=0, max_concurrent=2)
    config = searcher.suggest("t1")
    tracker = MLflowTracker(mlflow_uri, parent, searcher=searcher)
    tracker.setup()
    tracker.on_trial_start(0, [], SimpleNamespace(trial_id="t1", config=config, path=None))
    searcher.on_trial_complete("t1", {"accuracy": 0.8, "samples_seen": 100})
    run_id = trial_run(mlflow_uri, parent, "t1").info.run_id
    path = save_optuna_study(searcher, tmp_path / "journal.log", "my-study", ["accuracy"])
    study = read_optuna_journal(path)
    assert study.study_name == "my-study" and study.metric_names == ["accuracy"]
    (trial,) = study.trials
    assert trial.user_attrs == {RAY_TRIAL_ID_ATTR: "t1", MLFLOW_RUN_ID_ATTR: run_id}


def test_system_metrics_on_the_parent_run(mlflow_uri, parent):
    import time

    with system_metrics(mlflow_uri, parent, interval_s=0.2):
        time.sleep(1.5)
    keys = set(MlflowClient(mlflow_uri).get_run(parent).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, keys


def test_a_block_shorter_than_the_interval_still_leaves_a_sample(mlflow_uri, parent):
    with system_metrics(mlflow_uri, parent, interval_s=60):
        pass
    keys = set(MlflowClient(mlflow_uri).get_run(parent).data.metrics)
    assert "system/system_memory_usage_megabytes" in keys, keys


def test_a_real_study_has_the_metadata(tiny_study):
    """The tiny study: datasets, commit and checkpoint on every trial run; the journal named after
    the study, each of its trials linked to a run; system metrics on the parent."""
    name, home = tiny_study
    record = json.loads((home / name / "study.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    parent = client.get_run(record["parent_run_id"])
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{record['parent_run_id']}'")
    assert len(runs) == 6
    for run in runs:
        names = {d.dataset.name.rsplit("-", 1)[-1] for d in run.inputs.dataset_inputs}
        assert names == {"train", "dev"}, names
        assert run.data.tags[GIT_TAG] == parent.data.tags[GIT_TAG]
        assert Path(run.data.tags[CHECKPOINT_TAG]).is_dir() and run.data.tags[CHECKPOINT_TAG].startswith(run.data.tags[TRIAL_DIR_TAG])
    study = read_optuna_journal(home / name / "optuna-journal.log")
    assert study.study_name == name and study.metric_names == ["accuracy"]
    by_run = {r.info.run_id: r.data.tags[TRIAL_ID_TAG] for r in runs}
    assert {t.user_attrs[MLFLOW_RUN_ID_ATTR]: t.user_attrs[RAY_TRIAL_ID_ATTR] for t in study.trials} == by_run
    assert any(k.startswith("system/cpu") for k in parent.data.metrics)
