"""Registering the best adapter is idempotent by what is registered — study, trial, checkpoint
name — not by where the study's files or its tracking store lie: a moved study resumed with a new
``--storage`` and ``--tracking-uri`` keeps version 1 and ``@best``, and its wall time, since
nothing ran."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from study import run
from study.deploy.registry import find_registered, identity_tags
from tests.conftest import run_study

NAME = "lora-study-x"


def _tags(study: str, trial: str, checkpoint: str | None) -> dict[str, str]:
    return {"study": study, "trial_id": trial, **({"checkpoint": checkpoint} if checkpoint else {})}


# (id, versions already registered (their tags), the checkpoint to register, the version found or None)
CASES = [
    ("same-checkpoint", [_tags("s", "t1", "checkpoint_000003")], "/a/s/trial_t1/checkpoint_000003", "1"),
    ("moved-study", [_tags("s", "t1", "checkpoint_000003")], "/elsewhere/s/trial_t1/checkpoint_000003/", "1"),
    ("other-checkpoint", [_tags("s", "t1", "checkpoint_000002")], "/a/s/trial_t1/checkpoint_000003", None),
    ("other-trial", [_tags("s", "t2", "checkpoint_000003")], "/a/s/trial_t1/checkpoint_000003", None),
    ("other-study", [_tags("s2", "t1", "checkpoint_000003")], "/a/s/trial_t1/checkpoint_000003", None),
    ("untagged-checkpoint", [_tags("s", "t1", None)], "/a/s/trial_t1/checkpoint_000003", "1"),
    ("second-of-two", [_tags("s", "t1", "checkpoint_000002"), _tags("s", "t1", "checkpoint_000003")], "/a/t1/checkpoint_000003", "2"),
    ("nothing-registered", [], "/a/s/trial_t1/checkpoint_000003", None),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One sqlite registry for every case (its schema migrations take seconds); a model name per case."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}")


@pytest.mark.parametrize("case,registered,checkpoint,found", CASES, ids=[c[0] for c in CASES])
def test_find_registered(case, registered, checkpoint, found, client, tmp_path):
    name = f"{NAME}-{case}"
    if registered:
        client.create_registered_model(name)
    for tags in registered:
        client.create_model_version(name, str(tmp_path), tags=tags)
    version = find_registered(client, name, identity_tags("s", {"trial_id": "t1", "checkpoint": checkpoint}))
    assert (version and str(version.version)) == (found or None)


# (id, each trial's progress before the run, after it, whether the run's time counts)
PROGRESS = [
    ("new-study", {}, {"t1": ("TERMINATED", 6)}, True),
    ("finished-study-resumed", {"t1": ("TERMINATED", 6)}, {"t1": ("TERMINATED", 6)}, False),
    ("interrupted-trial-continued", {"t1": ("PENDING", 3)}, {"t1": ("TERMINATED", 6)}, True),
    ("errored-trial-restarted", {"t1": ("ERROR", 2)}, {"t1": ("ERROR", 2), "t2": ("TERMINATED", 1)}, True),
    ("nothing-stored", {}, {}, False),
]


@pytest.mark.parametrize("before,after,counts", [p[1:] for p in PROGRESS], ids=[p[0] for p in PROGRESS])
def test_wall_time_counts_only_runs_where_trials_ran(before, after, counts, monkeypatch, tmp_path):
    from types import SimpleNamespace

    prep = SimpleNamespace(record={"wall_s": 100.0}, paths=SimpleNamespace(experiment=str(tmp_path)),
                           t0=run.time.time() - 5.0, progress_before=before)
    monkeypatch.setattr(run, "_trial_progress", lambda experiment: after)
    run._count_wall_time(prep)
    assert (prep.record["wall_s"] >= 105.0) == counts and (prep.record["wall_s"] == 100.0) == (not counts)


def test_moved_study_resumed_keeps_version_and_wall_time(tiny_study, tmp_path):
    """The finished tiny study, its directory and its sqlite store moved elsewhere, resumed with
    the new ``--storage`` and ``--tracking-uri`` (twice): one version, ``@best`` on it, the same wall time."""
    from mlflow import MlflowClient

    name, home = tiny_study
    moved = tmp_path / "moved"
    shutil.copytree(home / name, moved / name)
    shutil.copy2(home / "mlflow.db", moved / "mlflow.db")
    shutil.copytree(home / "mlartifacts", moved / "mlartifacts")
    before = json.loads((moved / name / "summary.json").read_text())
    uri = f"sqlite:///{moved / 'mlflow.db'}"
    for _ in range(2):
        run_study(["--name", name, "--resume", "--storage", str(moved), "--tracking-uri", uri], moved)
    after = json.loads((moved / name / "summary.json").read_text())
    versions = MlflowClient(uri).search_model_versions("name = 'lora-study-tiny'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(MlflowClient(uri).get_model_version_by_alias("lora-study-tiny", "best").version) == "1"
    assert after["registered_model"]["version"] == "1" and after["registered_model"]["alias"] == "best"
    assert after["best"]["checkpoint"].startswith(str(moved)) and Path(after["best"]["checkpoint"]).name == Path(before["best"]["checkpoint"]).name
    assert after["wall_s"] == before["wall_s"]
