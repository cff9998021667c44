"""Fixtures of the tracking tests: a module's own sqlite MLflow store, a parent run per test, and
the trial run the tracker made for a trial."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from study.tracking.runs import PARENT_TAG, TRIAL_ID_TAG, start_parent_run


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def parent(mlflow_uri, request) -> str:
    return start_parent_run(mlflow_uri, f"exp-{request.node.name}", f"study-{request.node.name}", {"x": 1})


def trial_run(uri: str, parent_id: str, trial_id: str):
    client = MlflowClient(uri)
    exp = client.get_run(parent_id).info.experiment_id
    (run,) = client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'")
    return run
