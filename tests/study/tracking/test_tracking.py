"""study.tracking (runs, tracker, queue): one MLflow child run per trial, right end states, restore- and outage-safe;
runs a person can read (named after the searched values, only the project's metrics, a parent run
with the study's config and search space, no ``None`` params, pruned trials not looking failed).

Most tests drive ``MLflowTracker`` hooks directly with stand-in trials (fast, deterministic);
one test runs the whole stack (searcher + ASHA + tracker) through an interrupt and two
``Tuner.restore`` calls.  All tests share one sqlite MLflow database (creating its schema
takes seconds) and use one MLflow experiment each.
"""

from __future__ import annotations

import logging
import pickle
import socket
import time
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import study.tracking.tracker as tracking
from study.config import load_study_config
from study.search.asha import make_scheduler
from study.search.tpe import make_searcher
from study.tracking.runs import (
    PARENT_TAG,
    STATE_TAG,
    TRIAL_ID_TAG,
    describe_best,
    finish_parent_run,
    flatten_params,
    start_parent_run,
    study_params,
)
from study.tracking.tracker import MLflowTracker
from tests.conftest import ROOT
from tests.study.harness import MAX_T, POINTS, SPACE, InterruptOnce, make_tuner, resume, was_pruned


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def parent(mlflow_uri, request) -> str:
    """A fresh experiment + parent run per test."""
    return start_parent_run(
        mlflow_uri,
        experiment_name=f"exp-{request.node.name}",
        study_name=f"study-{request.node.name}",
        params={"search": {"num_samples": 4}, "train": {"lr": 1e-3}},
        tags={"owner": "tests"},
        resume=False,
    )


class PrunedSet:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def was_pruned(self, trial_id: str) -> bool:
        return trial_id in self.ids


def fake_trial(trial_id: str, **config) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config, experiment_tag=f"1_{trial_id}")


#: What Ray adds to every result (ray.tune.result): none of it may become an MLflow metric.
RAY_KEYS = {"training_iteration": 3, "time_this_iter_s": 0.5, "time_total_s": 1.5, "time_since_restore": 1.5,
            "iterations_since_restore": 3, "timestamp": 1700000000, "pid": 1, "done": False, "should_checkpoint": True,
            "checkpoint_dir_name": "checkpoint_000002", "node_ip": "127.0.0.1", "date": "2026-11-29"}


def report(tracker: MLflowTracker, trial, *steps: int) -> None:
    for s in steps:
        result = {"accuracy": s / 100, "f1": s / 200, "samples_seen": s, "samples_total": 40, "step": s // 10,
                  "time_unix": 1700000000.5, "trainable_params": 1234, **RAY_KEYS, "config": trial.config}
        tracker.on_trial_result(0, [], trial, result)


def children(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{parent_id}'")


def child(uri: str, parent_id: str, trial_id: str):
    runs = [r for r in children(uri, parent_id) if r.data.tags[TRIAL_ID_TAG] == trial_id]
    assert len(runs) == 1, f"{trial_id}: {len(runs)} runs"
    return runs[0]


def steps(uri: str, run, key: str = "accuracy") -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, key)]


def test_child_runs_params_metrics_and_end_states(mlflow_uri, parent):
    tracker = MLflowTracker(mlflow_uri, parent, pruned_signal=PrunedSet("pruned"), searched=["lora.r", "train.lr"])
    tracker.setup()
    config = {"lora.r": 8, "lora.alpha": 16, "train.lr": 0.004, "data.cache_dir": None, "note": "n" * 7000}
    trials = {t: fake_trial(t, **config) for t in ("done", "pruned", "err")}
    for t in trials.values():
        tracker.on_trial_start(0, [], t)
        report(tracker, t, 10, 20)
    report(tracker, trials["done"], 40)
    tracker.on_trial_complete(0, [], trials["done"])
    trials["pruned"].last_result = {"samples_seen": 20}
    tracker.on_trial_complete(0, [], trials["pruned"])
    tracker.on_trial_error(0, [], trials["err"])
    tracker.on_trial_complete(0, [], fake_trial("never-started"))  # Tune may stop PENDING trials
    tracker.on_experiment_end([])
    assert tracker.pending == 0

    runs = children(mlflow_uri, parent)
    assert sorted(r.data.tags[TRIAL_ID_TAG] for r in runs) == ["done", "err", "pruned"]
    expected = {  # a pruned trial ended as planned: FINISHED like a completed one, told apart by tag and name
        "done": ("FINISHED", "completed", "done r=8 lr=4.0e-3"),
        "pruned": ("FINISHED", "pruned", "pruned at 20 samples · pruned r=8 lr=4.0e-3"),
        "err": ("FAILED", "failed", "failed · err r=8 lr=4.0e-3"),
    }
    for run in runs:
        tid = run.data.tags[TRIAL_ID_TAG]
        assert (run.info.status, run.data.tags[STATE_TAG], run.info.run_name) == expected[tid]
        assert run.data.params["lora.r"] == "8" and run.data.params["lora.alpha"] == "16"
        assert "data.cache_dir" not in run.data.params  # unset keys are not logged as "None"
        assert len(run.data.params["note"]) == 6000
        assert steps(mlflow_uri, run) == ([10, 20, 40] if tid == "done" else [10, 20])
        assert set(run.data.metrics) == {"accuracy", "f1", "samples_seen", "trainable_params"}, sorted(run.data.metrics)
        assert run.data.metrics["samples_seen"] == (40 if tid == "done" else 20)

    parent_run = MlflowClient(mlflow_uri).get_run(parent)
    assert parent_run.info.status == "RUNNING"  # the tracker never closes the parent
    assert parent_run.data.params["search.num_samples"] == "4"
    assert parent_run.data.tags["lora_study.role"] == "parent"


def test_restart_reuses_the_trials_run_and_parent(mlflow_uri, parent, request):
    first = MLflowTracker(mlflow_uri, parent)
    pickled = pickle.dumps(first)  # what tuner.pkl holds
    first.setup()
    a, b = fake_trial("a", x=1), fake_trial("b", x=2)
    for t in (a, b):
        first.on_trial_start(0, [], t)
        report(first, t, 10, 20)
    run_a = child(mlflow_uri, parent, "a").info.run_id
    # Driver dies here: nothing is closed, both runs stay RUNNING.

    second = pickle.loads(pickled)  # Tuner.restore unpickles the callback from tuner.pkl
    tracking.use_destination(mlflow_uri, parent)  # what the resuming driver says (tuner.pkl holds no destination)
    second.setup()  # experiment start: leftovers are interrupted
    for tid in ("a", "b"):
        run = child(mlflow_uri, parent, tid)
        assert (run.info.status, run.data.tags[STATE_TAG]) == ("KILLED", "interrupted")

    second.on_trial_start(0, [], a)  # resumed trial continues its own run
    assert child(mlflow_uri, parent, "a").info.status == "RUNNING"
    report(second, a, 30)
    second.on_trial_complete(0, [], a)
    second.on_experiment_end([])

    run = child(mlflow_uri, parent, "a")
    assert run.info.run_id == run_a and run.info.status == "FINISHED"
    assert steps(mlflow_uri, run) == [10, 20, 30]
    assert child(mlflow_uri, parent, "b").info.status == "KILLED"
    assert not [r for r in children(mlflow_uri, parent) if r.info.status == "RUNNING"]

    # Parent: resume finds the same run; finishing records status and summary.
    name = f"study-{request.node.name}"
    again = start_parent_run(mlflow_uri, f"exp-{request.node.name}", name, {}, {}, resume=True)
    assert again == parent and MlflowClient(mlflow_uri).get_run(parent).info.status == "RUNNING"
    assert finish_parent_run(mlflow_uri, parent, "FINISHED", {"best": {"accuracy": 0.9}, "best_trial": "a"})
    done = MlflowClient(mlflow_uri).get_run(parent)
    assert done.info.status == "FINISHED"
    assert done.data.metrics["summary.best.accuracy"] == 0.9
    assert done.data.tags["lora_study.summary.best_trial"] == "a"


class FlakyClient:
    """Wraps a real MlflowClient; every call raises while ``down`` is set."""

    down = False
    calls = 0

    def __init__(self, real: MlflowClient) -> None:
        self._real = real

    def __getattr__(self, name):
        attr = getattr(self._real, name)

        def call(*args, **kwargs):
            FlakyClient.calls += 1
            if FlakyClient.down:
                raise ConnectionError("mlflow server down")
            return attr(*args, **kwargs)

        return call


def test_outage_is_buffered_and_delivered_later(mlflow_uri, parent, monkeypatch, caplog):
    real_client = tracking._client
    monkeypatch.setattr(tracking, "_client", lambda uri: FlakyClient(real_client(uri)))
    monkeypatch.setattr(FlakyClient, "down", False)
    tracker = MLflowTracker(mlflow_uri, parent, retry_interval_s=0.5, final_flush_timeout_s=0.3)
    t = fake_trial("t", x=1)
    tracker.setup()
    tracker.on_trial_start(0, [], t)
    report(tracker, t, 10)

    FlakyClient.down = True  # server goes away mid-study
    with caplog.at_level(logging.WARNING, logger="study.tracking"):
        report(tracker, t, 20, 30, 40)  # must not raise
    assert tracker.pending == 3  # one failed attempt, then retries wait for retry_interval_s
    assert "MLflow call failed" in caplog.text and "1 operation(s) buffered" in caplog.text
    calls = FlakyClient.calls
    report(tracker, t, 50)  # inside retry_interval_s: not even tried
    assert FlakyClient.calls == calls and tracker.pending == 4

    FlakyClient.down = False  # back up
    time.sleep(0.55)
    report(tracker, t, 60)
    assert tracker.pending == 0
    assert steps(mlflow_uri, child(mlflow_uri, parent, "t")) == [10, 20, 30, 40, 50, 60]

    # Still down at experiment end: no exception, an error, and the buffer is in the
    # callback state Tune checkpoints, so a restored experiment delivers it.
    FlakyClient.down = True
    tracker.on_trial_complete(0, [], t)
    with caplog.at_level(logging.ERROR, logger="study.tracking"):
        tracker.on_experiment_end([])
    assert "NOT delivered" in caplog.text and tracker.pending == 2
    state = pickle.loads(pickle.dumps(tracker.get_state()))

    FlakyClient.down = False
    restored = MLflowTracker(mlflow_uri, parent)
    restored.set_state(state)
    assert restored.flush() and restored.pending == 0
    run = child(mlflow_uri, parent, "t")
    assert (run.info.status, run.data.tags[STATE_TAG]) == ("FINISHED", "completed")


def test_unreachable_server_does_not_block_the_driver():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = MLflowTracker(
        f"http://127.0.0.1:{port}", "no-parent", retry_interval_s=60, final_flush_timeout_s=0.5
    )
    t0 = time.monotonic()
    tracker.setup()
    t = fake_trial("t", x=1)
    tracker.on_trial_start(0, [], t)
    report(tracker, t, *range(10, 210, 10))
    tracker.on_trial_complete(0, [], t)
    tracker.on_experiment_end([])
    assert time.monotonic() - t0 < 15
    assert tracker.pending == 24  # sweep + start + 20 results + end + final sweep, all kept
    assert flatten_params({"a": {"b": [1, 2]}, "c": None}) == {"a.b": "[1, 2]"}


def test_tuner_interrupt_and_restore_gives_one_run_per_trial(ray_local, mlflow_uri, parent, tmp_path):  # noqa: F811 (a fixture)
    sched = make_scheduler(grace_period=10, reduction_factor=2, max_t=MAX_T)
    searcher = make_searcher(SPACE, seed=3, points_to_evaluate=POINTS, max_concurrent=1)
    tracker = MLflowTracker(mlflow_uri, parent, pruned_signal=sched)
    interrupt = InterruptOnce(tmp_path / "interrupted", after=4)
    callbacks = [tracker, interrupt]
    make_tuner(tmp_path, searcher, sched, num_samples=5, callbacks=callbacks, fail_once_x=0.95).fit()
    # Interrupted inside the first trial: its run is closed as interrupted, not left RUNNING.
    (only,) = children(mlflow_uri, parent)
    assert (only.info.status, only.data.tags[STATE_TAG]) == ("KILLED", "interrupted")

    path = str(tmp_path / "ray" / "exp")
    tracking.use_destination(mlflow_uri, parent)  # what the resuming driver says (tuner.pkl holds no destination)
    second, third = resume(path), resume(path)
    (errored,) = set(second) - set(third)

    runs = children(mlflow_uri, parent)
    ids = [r.data.tags[TRIAL_ID_TAG] for r in runs]
    assert sorted(ids) == sorted(set(third) | {errored}), "exactly one MLflow run per trial id"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert only.info.run_id in {r.info.run_id for r in runs}  # the interrupted run was continued
    for run in runs:
        tid = run.data.tags[TRIAL_ID_TAG]
        if tid == errored:
            assert (run.info.status, run.data.tags[STATE_TAG]) == ("FAILED", "failed")
            continue
        info = third[tid]
        want = ("FINISHED", "pruned") if was_pruned(info) else ("FINISHED", "completed")
        assert (run.info.status, run.data.tags[STATE_TAG]) == want, (tid, info["samples"])
        # A resumed trial may re-report the steps after its last checkpoint; the set is exact.
        assert sorted(set(steps(mlflow_uri, run))) == sorted(set(info["samples"]))
        assert run.data.params["x"] == str(info["config"]["x"])
    assert any(r.data.tags[STATE_TAG] == "pruned" for r in runs)


def test_parent_params_are_the_study_not_the_base_values_of_searched_keys():
    cfg = load_study_config(ROOT / "study" / "configs" / "sst2-quick.yaml")
    params = study_params(cfg)
    searched = set(cfg.search)
    assert searched and not searched & set(params), "base values of searched keys would contradict the trials"
    assert "lora.alpha" not in params  # replaced by the searched lora.alpha_multiple
    assert params["search.lora.r"] == "choice [4, 8, 16]"
    assert params["search.train.lr"] == "loguniform [0.0001, 0.005]"
    assert params["train.batch_size"] == "32" and params["asha.grace_period"] == "500"
    assert "None" not in params.values() and not any(k.startswith("search.") and "None" in v for k, v in params.items())


def test_best_trial_on_the_parent_run(mlflow_uri, parent):
    tracker = MLflowTracker(mlflow_uri, parent, searched=["lora.r", "train.lr"])
    tracker.setup()
    trial = fake_trial("abe404f9", **{"lora.r": 4, "train.lr": 0.004})
    tracker.on_trial_start(0, [], trial)
    report(tracker, trial, 10)
    tracker.on_trial_complete(0, [], trial)
    tracker.on_experiment_end([])
    best = {"trial_id": "abe404f9", "accuracy": 0.875, "samples_seen": 10, "state": "completed",
            "params": {"lora.r": 4, "train.lr": 0.004}}
    run_id = describe_best(mlflow_uri, parent, best, ["lora.r", "train.lr"])
    assert run_id == child(mlflow_uri, parent, "abe404f9").info.run_id
    run = MlflowClient(mlflow_uri).get_run(parent)
    assert run.data.params["best.lora.r"] == "4" and run.data.params["best.train.lr"] == "0.004"
    assert run.data.tags["lora_study.best_run_id"] == run_id
    note = run.data.tags["mlflow.note.content"]
    assert f"(#/experiments/{run.info.experiment_id}/runs/{run_id})" in note
    assert "abe404f9 r=4 lr=4.0e-3" in note and "0.8750" in note
