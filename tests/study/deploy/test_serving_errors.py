"""Which layer refuses a malformed request, as ``mlflow models serve`` parses it: a rectangular
nested list reaches the model (its one-line ``INVALID_PARAMETER_VALUE``), a ragged one never does
(MLflow's own ``BAD_REQUEST``, "inhomogeneous shape"). ``docs/serving.md`` states both; both are
HTTP 400."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# (id, request body, the error code, the start of the message, who answers)
CASES = [
    ("nested", {"inputs": [["a fine film"]]}, "INVALID_PARAMETER_VALUE", "the input must be a list of texts, not a nested list", "model"),
    ("nested-two-rows", {"inputs": [["a"], ["b"]]}, "INVALID_PARAMETER_VALUE", "the input must be a list of texts, not a nested list", "model"),
    ("ragged", {"inputs": [["a"], ["b", "c"]]}, "BAD_REQUEST", "Invalid input. setting an array element with a sequence. The requested array has an inhomogeneous shape", "mlflow"),
    ("text-and-list", {"inputs": ["a", ["b"]]}, "BAD_REQUEST", "Invalid input. setting an array element with a sequence. The requested array has an inhomogeneous shape", "mlflow"),
    ("ragged-column", {"inputs": {"text": [["a"], ["b", "c"]]}}, "BAD_REQUEST", "Invalid input. setting an array element with a sequence", "mlflow"),
    ("ragged-split", {"dataframe_split": {"columns": ["text"], "data": [["a"], ["b", "c"]]}}, "BAD_REQUEST",
     "Invalid input. Provided dataframe_split field is not a valid dataframe representation", "mlflow"),
]


def refusal(body: dict) -> tuple[str, str, str, int]:
    """(who refused, error code, message, HTTP status) for ``body``, through the scoring server's own parsing."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import _split_data_and_params, infer_and_parse_data

    from study.deploy.serving import texts_from_input

    try:
        data, _ = _split_data_and_params(json.dumps(body))
        data = infer_and_parse_data(data, None)
    except MlflowException as e:
        return "mlflow", e.error_code, e.message, e.get_http_status_code()
    try:
        texts_from_input(data, ("sentence", "text"))
    except MlflowException as e:
        return "model", e.error_code, e.message, e.get_http_status_code()
    return "nobody", "", "", 200


@pytest.mark.parametrize("body,code,message,who", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_nested_reaches_the_model_ragged_does_not(body, code, message, who):
    got_who, got_code, got_message, status = refusal(body)
    assert (got_who, got_code, status) == (who, code, 400) and got_message.startswith(message), got_message


def test_docs_state_who_answers_each():
    text = " ".join((ROOT / "docs" / "serving.md").read_text().split())
    for needle in ("not a nested list", "inhomogeneous shape", "BAD_REQUEST", "INVALID_PARAMETER_VALUE", "not a valid dataframe representation"):
        assert needle in text, needle
