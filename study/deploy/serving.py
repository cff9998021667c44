"""The best adapter as an MLflow pyfunc model: texts in, labels and confidences out.

``LoraTextClassifier`` loads the base model + adapter from the logged artifacts
(``trainables.load_classifier``, the same code as ``study.predict``). This module travels inside
the registered model (its ``code/``, see ``study.deploy.logged_model``), so it imports nothing
from ``study`` and only ``trainables`` from this project: the model loads wherever its
requirements are installed, without lora-study.

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

from typing import Any, NoReturn

import mlflow.pyfunc

__all__ = ["LoraTextClassifier", "TEXT_COLUMN", "texts_from_input"]

#: The serving column every model accepts, besides the one it was trained on.
TEXT_COLUMN = "text"


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
