"""The user's MLflow credentials go only to a server the user names.

A study directory chooses more URIs than ``study.json``'s tracking URI: the tracking store it
names (a sqlite file inside it) chooses its experiments' and runs' artifact locations, and those
can be an HTTP server. A header-logging listener stands for that server: nothing may reach it
with (or without) the user's ``Authorization`` header.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.study.drivers import Listener

CREDS = {"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "secret"}


@pytest.fixture
def creds(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def listener():
    srv = Listener(200)
    handler = srv.server.RequestHandlerClass
    handler.do_PUT = handler.do_GET  # artifact uploads are PUTs
    yield srv
    srv.close()


def _store_with_remote_artifacts(study_dir: Path, experiment: str, artifacts: str) -> tuple[str, str]:
    """A sqlite store inside ``study_dir`` whose experiment keeps artifacts at ``artifacts``;
    returns (tracking URI, parent run id)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{study_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(experiment, artifact_location=artifacts)
    run = client.create_run(exp, tags={"lora_study.study": experiment, "lora_study.role": "parent"})
    return uri, run.info.run_id


def test_report_sends_nothing_to_an_artifact_location_the_store_chose(tiny_study, tmp_path, creds, listener, capsys):
    """``dashboards.report`` on a copied study whose study.json names a sqlite store inside the
    directory, whose experiment keeps artifacts at the listener: the report is written, not
    uploaded, and one warning line says why (before: every report file PUT with Basic auth)."""
    from dashboards.report import main as report_main

    name, home = tiny_study
    root = tmp_path / "planted"
    shutil.copytree(home / name, root / name, ignore=shutil.ignore_patterns("report", "best_adapter"))
    uri, parent = _store_with_remote_artifacts(root / name, name, f"{listener.uri}/art")
    record = json.loads((root / name / "study.json").read_text())
    (root / name / "study.json").write_text(json.dumps({**record, "tracking_uri": uri, "parent_run_id": parent}))

    rc = report_main(["--study", name, "--storage", str(root), "--out", str(tmp_path / "report"), "--no-predict"])
    err = capsys.readouterr().err
    assert listener.requests == [], f"{len(listener.requests)} requests reached the artifact location: {listener.requests[:2]}"
    assert rc == 0 and (tmp_path / "report" / "report.html").is_file()
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: report not logged to MLflow")]
    assert len(warnings) == 1 and f"{listener.uri}/art" in warnings[0] and "a server you did not name" in warnings[0], err


def test_best_adapter_is_not_uploaded_to_an_artifact_location_the_store_chose(tiny_study, tmp_path, creds, listener):
    """Registering the best adapter (end of a study or of a ``--resume``) checks the runs'
    artifact locations before exporting or uploading anything."""
    from study.deploy.registry import log_best_adapter
    from trainables.config import ConfigError

    name, home = tiny_study
    summary = json.loads((home / name / "summary.json").read_text())
    uri, parent = _store_with_remote_artifacts(tmp_path, name, f"{listener.uri}/art")
    with pytest.raises(ConfigError, match="a server you did not name"):
        log_best_adapter(uri, parent, summary, "planted-model", type("P", (), {"local": tmp_path / "study"})())
    assert listener.requests == []
    assert not (tmp_path / "study" / "best_adapter").exists()


def test_resume_refuses_an_experiment_whose_artifacts_go_elsewhere(tmp_path, creds, listener, monkeypatch):
    """``--resume`` of a study whose store (inside the study dir) keeps the experiment's
    artifacts on another server: one line before Ray starts (the best adapter would go there)."""
    import ray

    from study.run import build_parser, prepare
    from trainables.config import ConfigError

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    d = tmp_path / "foreign"
    d.mkdir()
    uri, _ = _store_with_remote_artifacts(d, "foreign", f"{listener.uri}/art")
    (d / "study.json").write_text(json.dumps({"name": "foreign", "config": {}, "storage": str(tmp_path), "tracking_uri": uri}))
    args = build_parser().parse_args(["--name", "foreign", "--resume", "--storage", str(tmp_path)])
    args.trust = True  # the study state is trusted here; the artifact location is the question
    with pytest.raises(ConfigError) as err:
        prepare(args).lock.close()
    assert "\n" not in str(err.value) and f"MLflow experiment 'foreign' keeps its MLflow artifacts at {listener.uri}/art" in str(err.value)
    assert listener.requests == [] and not ray.is_initialized()


def test_evaluate_logs_only_to_a_tracking_server_the_user_named(tmp_path, creds, listener, monkeypatch):
    """``study.evaluate --study NAME`` logs to the study's parent run: at the URI study.json
    records only when the user names it (before: straight to it, with credentials)."""
    from study.deploy.evaluate import log_to_study
    from trainables.config import ConfigError

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(json.dumps({"name": "s", "config": {}, "storage": str(tmp_path),
                                                           "tracking_uri": listener.uri, "parent_run_id": "r1"}))
    result = {"accuracy": 1.0, "f1": 1.0, "eval_loss": 0.1, "n": 2, "per_class": {}, "data": "d", "model": "m"}
    with pytest.raises(ConfigError, match="pass --tracking-uri"):
        log_to_study("s", str(tmp_path), None, result)
    assert listener.requests == []


@pytest.mark.parametrize("artifacts,tracking,creds_set,ok", [
    ("http://10.0.0.9/art", "sqlite:////tmp/x.db", True, False),           # a local store chose a server
    ("http://10.0.0.9/art", "http://10.0.0.1:5000", True, False),          # not the server the user named
    ("mlflow-artifacts://10.0.0.9:80/a", "http://10.0.0.1:5000", True, False),
    ("https://10.0.0.1/art", "http://10.0.0.1:5000", True, False),         # another port
    ("http://10.0.0.1:5000/art", "http://10.0.0.1:5000", True, True),      # the named server itself
    ("mlflow-artifacts:/1/abc", "http://10.0.0.1:5000", True, True),       # proxied by the named server
    ("file:///tmp/mlartifacts", "sqlite:////tmp/x.db", True, True),        # local: nothing is sent
    ("s3://bucket/art", "http://10.0.0.1:5000", True, True),               # cloud credentials, not MLflow's
    ("http://10.0.0.9/art", "sqlite:////tmp/x.db", False, True),           # no credentials to send
])
def test_artifact_locations_get_credentials_only_on_the_named_server(artifacts, tracking, creds_set, ok, monkeypatch):
    from study.tracking.trust import check_artifact_uri
    from trainables.config import ConfigError

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials
    if creds_set:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken")
    if ok:
        check_artifact_uri(artifacts, tracking, "run r")
    else:
        with pytest.raises(ConfigError, match="a server you did not name"):
            check_artifact_uri(artifacts, tracking, "run r")
