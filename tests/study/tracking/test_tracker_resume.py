"""``MLflowTracker`` across a restore: it writes where the driver that runs now says (never where
``tuner.pkl`` says), and each (metric, step) reaches MLflow once however often the driver died."""

from __future__ import annotations

import pickle

import pytest
from mlflow.tracking import MlflowClient

import study.tracking.tracker as tracking
from study.tracking.runs import PARENT_TAG, TRIAL_ID_TAG, start_parent_run
from study.tracking.tracker import MLflowTracker
from tests.study.tracking.test_tracking import fake_trial, report


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("stores")
    return f"sqlite:///{root / 'old.db'}", f"sqlite:///{root / 'new.db'}"


def _parent(uri: str, name: str) -> str:
    return start_parent_run(uri, name, name, {"a": 1}, resume=False)


def _history(uri: str, parent: str, trial_id: str, key: str = "accuracy") -> list[int]:
    client = MlflowClient(uri)
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'")
    if not runs:
        return []
    (run,) = runs
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.timestamp, m.step))]


def test_a_restored_tracker_writes_where_the_resuming_driver_says(stores, request):
    """``--resume --tracking-uri NEW``: the tracker unpickled from ``tuner.pkl`` holds the old store
    and parent run; its trial runs must go to NEW under NEW's parent (before: the old store)."""
    old, new = stores
    name = request.node.name
    first = MLflowTracker(old, _parent(old, name))
    first.setup()
    trial = fake_trial("t", x=1)
    first.on_trial_start(0, [], trial)
    report(first, trial, 10, 20)
    first_parent, pickled = first.parent_run_id, pickle.dumps(first)  # what tuner.pkl holds

    new_parent = _parent(new, name)
    tracking.use_destination(new, new_parent)
    second = pickle.loads(pickled)
    assert second.tracking_uri is None and second.parent_run_id is None, "the destination came out of the pickle"
    second.setup()
    second.on_trial_start(0, [], trial)
    report(second, trial, 30)
    second.on_trial_complete(0, [], trial)
    second.on_experiment_end([])
    assert _history(old, first_parent, "t") == [10, 20], "the resumed trial wrote into the old store"
    assert _history(new, new_parent, "t") == [30]


def test_a_restored_tracker_without_a_destination_refuses(stores):
    old, _ = stores
    restored = pickle.loads(pickle.dumps(MLflowTracker(old, "p")))
    tracking._destination.clear()
    with pytest.raises(RuntimeError, match="use_destination"):
        restored.setup()


def test_each_point_reaches_mlflow_once_across_driver_deaths(stores, request):
    """Two driver deaths: the buffer restored from the callback state holds writes that were
    delivered before the kill, and each resumed trial re-reports the evaluations after its
    checkpoint. MLflow must hold every (metric, step) once, in order (before: 10, 20, 20, 30, 30 ...)."""
    uri, _ = stores
    parent = _parent(uri, request.node.name)
    tracking.use_destination(uri, parent)
    trial = fake_trial("t", x=1)
    first = MLflowTracker(uri, parent)
    pickled = pickle.dumps(first)
    first.setup()
    first.on_trial_start(0, [], trial)
    report(first, trial, 10, 20, 30)
    state = pickle.loads(pickle.dumps({"pending": [("metrics", "t", first._metrics({"accuracy": 0.3, "samples_seen": 30}))]}))
    # killed: the snapshot's callback state still listed the write of step 30 as pending

    for restart_from in (10, 20):  # each driver resumes the trial from an older checkpoint
        again = pickle.loads(pickled)
        again.set_state(state)
        again.setup()
        again.on_trial_start(0, [], trial)
        report(again, trial, *range(restart_from + 10, 50, 10))
    again.on_trial_complete(0, [], trial)
    again.on_experiment_end([])
    for key in ("accuracy", "f1", "samples_seen", "trainable_params"):
        assert _history(uri, parent, "t", key) == [10, 20, 30, 40], key


def test_a_resumed_trial_brings_its_stored_history_to_mlflow(stores, tmp_path, request):
    """Writes a driver died before delivering (its buffer is saved only with a snapshot) and
    evaluations recovered from a checkpoint are in the trial's stored ``result.json``: its run
    gets them when the trial resumes, each once, in order."""
    import json
    import time
    from types import SimpleNamespace

    import pyarrow.fs

    uri, _ = stores
    parent = _parent(uri, request.node.name)
    trial = fake_trial("t", x=1)
    first = MLflowTracker(uri, parent)
    first.setup()
    first.on_trial_start(0, [], trial)
    now = time.time()
    report(first, trial, 10, 20)  # 30 and 40 reached result.json, not MLflow, before the kill

    (tmp_path / "trial_t").mkdir()
    rows = [{"accuracy": s / 100, "samples_seen": s, "time_unix": now + s / 1000, "training_iteration": s // 10} for s in (10, 20, 30, 40)]
    (tmp_path / "trial_t" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    resumed = SimpleNamespace(**vars(trial), path=str(tmp_path / "trial_t"),
                              storage=SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem()))
    tracking.use_destination(uri, parent)
    again = pickle.loads(pickle.dumps(first))
    again.setup()
    again.on_trial_start(0, [], resumed)
    time.sleep(0.1)  # the resumed trial reports after its stored history
    report(again, resumed, 50)
    assert _history(uri, parent, "t") == [10, 20, 30, 40, 50]
    assert _history(uri, parent, "t", "samples_seen") == [10, 20, 30, 40, 50]
