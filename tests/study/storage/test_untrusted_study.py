"""A study directory must not run code for read-only commands, nor lead outside the studies root.

Planted payloads are pickles that create a marker file when unpickled. ``study.export`` and
``dashboards.report`` must never load them — neither Ray's ``*.pkl`` files nor the cloudpickle
blobs Ray embeds in ``experiment_state-*.json`` — and no command follows a study name out of
the studies root (``--name ../elsewhere/evil``).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tests.study.drivers import Listener

#: Trial fields Ray stores as hex-encoded pickles (``Trial._nonjson_fields``), beside the
#: ``CLOUDPICKLE_FALLBACK`` blobs of ``TuneFunctionEncoder``.
HEX_PICKLE_FIELDS = ("results", "extra_arg", "placement_group_factory", "_resources", "_default_placement_group_factory")


class Payload:
    """Unpickling this creates ``marker`` (stands for any code a planted pickle could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def _payload_hex(marker: Path) -> str:
    from ray import cloudpickle

    return cloudpickle.dumps(Payload(marker)).hex()


def _poison_experiment_state(path: Path, marker: Path) -> int:
    """Replace every pickle in Ray's experiment state with the payload; returns how many."""
    state = json.loads(path.read_text())
    hexed = _payload_hex(marker)
    count = 0

    def poison(obj):
        nonlocal count
        if isinstance(obj, list):
            return [poison(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if obj.get("_type") == "CLOUDPICKLE_FALLBACK":
            count += 1
            return {"_type": "CLOUDPICKLE_FALLBACK", "value": hexed}
        out = {}
        for k, v in obj.items():
            if k in HEX_PICKLE_FIELDS and isinstance(v, str):
                count += 1
                out[k] = hexed
            else:
                out[k] = poison(v)
        return out

    state["runner_data"] = poison(state["runner_data"])
    state["trial_data"] = [[json.dumps(poison(json.loads(t))), json.dumps(poison(json.loads(m)))] for t, m in state["trial_data"]]
    path.write_text(json.dumps(state))
    return count


def _plant(study_dir: Path, marker: Path) -> list[str]:
    """Payloads in every place a pickle lives in a Ray experiment; returns what was planted."""
    planted = []
    for f in [*study_dir.glob("*.pkl"), *study_dir.glob("trial_*/*.pkl")]:
        f.write_bytes(pickle.dumps(Payload(marker)))
        planted.append(str(f.relative_to(study_dir)))
    for f in study_dir.glob("experiment_state-*.json"):
        planted.append(f"{f.name} ({_poison_experiment_state(f, marker)} blobs)")
    return planted


def test_names_leading_out_of_the_studies_root_are_refused(tmp_path, capsys):
    """``../`` reaches a planted study in the old code (payloads ran in ``--resume`` and in a
    report); every entry point now refuses the name, so nothing there is read."""
    from dashboards.report import main as report_main
    from study.deploy.export import main as export_main
    from study.run import main as run_main

    root, evil, marker = tmp_path / "studies", tmp_path / "elsewhere" / "evil", tmp_path / "PWNED"
    root.mkdir()
    evil.mkdir(parents=True)
    (evil / "study.json").write_text(json.dumps({"name": "evil", "config": {}, "storage": str(evil.parent),
                                                 "tracking_uri": f"sqlite:///{tmp_path / 'evil.db'}"}))
    for f in ("tuner.pkl", "searcher-state-2026-01-01_00-00-00.pkl", "callback-states-2026-01-01_00-00-00.pkl"):
        (evil / f).write_bytes(pickle.dumps(Payload(marker)))
    (evil / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(
        {"trial_data": [], "runner_data": {"_stopper": {"_type": "CLOUDPICKLE_FALLBACK", "value": _payload_hex(marker)}}}))
    name = "../elsewhere/evil"
    for main, argv in ((run_main, ["--name", name, "--resume", "--storage", str(root)]),
                       (export_main, ["--study", name, "--storage", str(root), "--out", str(tmp_path / "out")]),
                       (report_main, ["--study", name, "--storage", str(root), "--no-mlflow"])):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: study name '../elsewhere/evil'") and "\n" not in err, err
    assert not marker.exists(), "a planted pickle ran"
    assert not (tmp_path / "evil.db").exists()


def test_report_and_export_never_unpickle(tiny_study, tmp_path, monkeypatch, capsys):
    """A finished study with a payload in every pickle (``tuner.pkl``, searcher, callback and
    trial ``*.pkl``, every cloudpickle blob of the experiment state): the report and an export
    of a chosen trial read it all and run none of it (the old code ran them through
    ``load_optuna_study`` and Ray's ``ExperimentAnalysis``). The report reads the Optuna study
    from the journal, and does not send the user's MLflow credentials to the URI the study's
    ``study.json`` names."""
    from dashboards.report import main as report_main
    from study.deploy.export import main as export_main

    name, home = tiny_study
    root, marker = tmp_path / "copy", tmp_path / "PWNED"
    shutil.copytree(home / name, root / name, ignore=shutil.ignore_patterns("report", "best_adapter"))
    planted = _plant(root / name, marker)
    assert any(p.endswith(".pkl") for p in planted) and any("blobs" in p for p in planted), planted
    listener = Listener(200)
    record = json.loads((root / name / "study.json").read_text())
    (root / name / "study.json").write_text(json.dumps({**record, "tracking_uri": listener.uri}))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "report"
    trial = json.loads((root / name / "summary.json").read_text())["table"][0]["trial_id"]
    try:
        rcs = [report_main(["--study", name, "--storage", str(root), "--out", str(out)]),
               export_main(["--study", name, "--storage", str(root), "--trial", trial, "--out", str(tmp_path / "exp")])]
    finally:
        listener.close()
    capsys.readouterr()
    assert not marker.exists(), f"a planted pickle ran (planted: {planted})"
    assert listener.requests == [], "the report sent the user's credentials to the study's tracking URI"
    assert rcs == [0, 0]
    html = (out / "report.html").read_text()
    assert "Optuna journal" in html and "--tracking-uri" in html
    assert (tmp_path / "exp" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("stored,given,env,creds,ok", [
    ("http://10.0.0.1:5000", None, None, True, False),            # credentials would go to the study's choice
    ("http://10.0.0.1:5000", None, "http://10.0.0.1:5000", True, True),  # the user named it
    ("http://10.0.0.1:5000", None, "http://mine:5000", True, False),
    ("http://10.0.0.1:5000", "http://mine:5000", None, True, True),  # --tracking-uri wins
    ("http://10.0.0.1:5000", None, None, False, True),            # nothing to leak
    ("sqlite:////tmp/x/mlflow.db", None, None, True, True),       # a local store gets no credentials
])
def test_stored_tracking_uri_gets_no_credentials_it_was_not_given(stored, given, env, creds, ok, monkeypatch):
    from study.tracking.trust import trusted_tracking_uri
    from trainables.config import ConfigError

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials
    if env:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    if creds:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken")
    if ok:
        assert trusted_tracking_uri("s", stored, given) == (given or stored)
    else:
        with pytest.raises(ConfigError, match="pass --tracking-uri"):
            trusted_tracking_uri("s", stored, given)
