"""The registered model run the way a deployer runs it: a plain venv outside the repository (no
system site-packages, no lora-study), torch 2.13.0 installed first as ``.ci/setup.sh`` does, then
the model's own ``requirements.txt``; the model loaded there with ``mlflow.pyfunc.load_model`` and
served with ``mlflow models serve --env-manager local`` from that venv's ``bin``. Both answer
exactly like the study (``trainables.load_classifier`` on the same export), and malformed requests
get the 400s ``docs/serving.md`` describes.

The adapter is a real one on the embedded MiniLM (200 SST-2 sentences, one epoch), registered as a
study registers its best trial. Slow: the venv installs MLflow, transformers and PEFT from the
package index (minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.study.drivers import wait_for_ping
from trainables import load_classifier

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
NAME = "lora-study-deployed"
TEXTS = ["a gorgeous, witty, seductive movie", "the story is bland and far too long", "an utterly forgettable sequel",
         "one of the year's most moving films", "it never quite comes together", "funny, sharp and beautifully acted"]

LOAD = r"""
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(json.loads(sys.argv[2]))
mods = {m: getattr(sys.modules[m], "__file__", None) for m in sorted(sys.modules) if m.split(".")[0] in ("study", "trainables")}
json.dump({"labels": out["label"].tolist(), "confidences": out["confidence"].tolist(), "modules": mods}, open(sys.argv[3], "w"))
"""


def _clean_env(home: Path, tracking_uri: str, venv: Path | None = None) -> dict[str, str]:
    """What a deployer's shell has: no PYTHONPATH, no lora-study variables, its own HOME, the hub
    offline (the embedded MiniLM package is the base model), the venv's ``bin`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("LORA_STUDY_")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MLFLOW_TRACKING_URI=tracking_uri)
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return time.monotonic() - t0


def _register(root: Path, checkpoint: Path, history: list[dict]) -> SimpleNamespace:
    """A parent run, the trial's run, ``log_best_adapter``: what a finished study does."""
    from mlflow import MlflowClient

    from study.deploy import registry
    from study.tracking.runs import PARENT_TAG, TRIAL_ID_TAG

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("deployed", (root / "mlartifacts").resolve().as_uri())
    parent = client.create_run(experiment, run_name="deployed").info.run_id
    child = client.create_run(experiment, run_name="t0001", tags={PARENT_TAG: parent, TRIAL_ID_TAG: "t0001"}).info.run_id
    client.set_terminated(child)
    best = {"trial_id": "t0001", "checkpoint": str(checkpoint), "params": {"train.lr": 0.002},
            **{k: history[-1][k] for k in ("accuracy", "f1", "eval_loss", "samples_seen", "trainable_params")}}
    summary = {"name": "deployed", "metric": "accuracy", "mode": "max", "best": best}
    reg = registry.log_best_adapter(uri, parent, summary, NAME, SimpleNamespace(local=root / "study"))
    return SimpleNamespace(tracking_uri=uri, **reg)


@pytest.fixture(scope="module")
def deployed(sst2, tmp_path_factory) -> SimpleNamespace:
    """The registered adapter, the study's own predictions for ``TEXTS``, and the deployer's venv
    (timings of each step in ``timings``)."""
    from trainables import loop

    root = tmp_path_factory.mktemp("deployed")
    out, timings = root / "train-out", {}
    t0 = time.monotonic()
    assert loop.main(["--set", f"data.path={sst2}", "--set", "data.size=200", "--set", "data.dev_size=100",
                      "--set", "data.label_names=[negative,positive]", "--set", "data.max_length=64", "--set", "train.lr=0.002",
                      "--set", "train.threads=1", "--out", str(out)]) == 0
    reg = _register(root, out / "last", json.loads((out / "metrics.json").read_text()))
    timings["train + register"] = time.monotonic() - t0
    study_preds = load_classifier(reg.export_dir).predict(TEXTS)

    deployer = tmp_path_factory.mktemp("deployer")  # outside the repository, nothing of it on any path
    assert not str(deployer).startswith(str(ROOT))
    venv, home = deployer / "venv", deployer / "home"
    home.mkdir()
    env = _clean_env(home, reg.tracking_uri)
    timings["venv"] = _run([sys._base_executable, "-m", "venv", str(venv)], env, deployer, 300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    timings["pip install torch==2.13.0"] = _run([*pip, "torch==2.13.0"], env, deployer, 900)
    import mlflow

    mlflow.set_tracking_uri(reg.tracking_uri)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@best", dst_path=str(deployer / "model")))
    timings["pip install -r requirements.txt"] = _run([*pip, "-r", str(model_dir / "requirements.txt")], env, deployer, 1800)
    return SimpleNamespace(reg=reg, study=study_preds, venv=venv, home=home, dir=deployer, model_dir=model_dir, timings=timings)


def assert_like_the_study(deployed, labels: list[str], confidences: list[float]) -> None:
    assert labels == [p[0] for p in deployed.study]
    np.testing.assert_allclose(confidences, [p[1] for p in deployed.study], atol=1e-5)


def test_the_venv_has_no_lora_study(deployed):
    code = "import importlib.util as u, sys; print(u.find_spec('study'), u.find_spec('trainables'), sys.flags.no_site, sys.prefix)"
    proc = subprocess.run([str(deployed.venv / "bin" / "python"), "-c", code], env=_clean_env(deployed.home, deployed.reg.tracking_uri),
                          cwd=deployed.dir, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split()[:2] == ["None", "None"], proc.stdout + proc.stderr
    cfg = (deployed.venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg


def test_load_model_in_the_venv_predicts_like_the_study(deployed, tmp_path):
    t0 = time.monotonic()
    _run([str(deployed.venv / "bin" / "python"), "-c", LOAD, f"models:/{NAME}@best", json.dumps(TEXTS), str(tmp_path / "out.json")],
         _clean_env(deployed.home, deployed.reg.tracking_uri), deployed.dir, 600)
    deployed.timings["load_model + predict"] = time.monotonic() - t0
    got = json.loads((tmp_path / "out.json").read_text())
    assert_like_the_study(deployed, got["labels"], got["confidences"])
    assert got["modules"] and all("/code/study/" in f or "/code/trainables/" in f for f in got["modules"].values()), got["modules"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def served(deployed):
    """``mlflow models serve --env-manager local`` from the venv's bin on a free 127.0.0.1 port;
    waits (bounded) for /ping; always stopped."""
    port = _free_port()
    log = deployed.dir / "serve.log"
    cmd = ["mlflow", "models", "serve", "-m", f"models:/{NAME}@best", "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    env = _clean_env(deployed.home, deployed.reg.tracking_uri, deployed.venv)
    assert shutil.which("mlflow", path=env["PATH"]) == str(deployed.venv / "bin" / "mlflow")
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=deployed.dir, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(proc, url, log)
        deployed.timings["serve: up"] = time.monotonic() - t0
        yield SimpleNamespace(url=url, log=log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_served_from_the_venv_predicts_like_the_study(deployed, served):
    status, got = _post(served.url, {"inputs": TEXTS})
    assert status == 200, got
    preds = got["predictions"]
    assert_like_the_study(deployed, [p["label"] for p in preds], [p["confidence"] for p in preds])
    print("\n[deployer venv] " + ", ".join(f"{k} {v:.0f} s" for k, v in deployed.timings.items()))


# (id, body, error code, the start of the model's or MLflow's message) — docs/serving.md's table
REFUSED = [
    ("nested", {"inputs": [["a fine film"]]}, "INVALID_PARAMETER_VALUE", "the input must be a list of texts, not a nested list"),
    ("ragged", {"inputs": [["a"], ["b", "c"]]}, "BAD_REQUEST", "Invalid input. setting an array element with a sequence"),
]


@pytest.mark.parametrize("body,code,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_served_refusals_are_the_documented_400s(served, body, code, message):
    status, got = _post(served.url, body)
    assert status == 400 and got["error_code"] == code, got
    assert message in got["message"], got["message"]
