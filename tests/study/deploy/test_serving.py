"""A real export of the embedded MiniLM, loaded every way a user loads it.

The fixture trains a small real adapter (``python -m trainables.loop --out``, 600 SST-2
sentences, mean pooling as the embedded MiniLM's default), exports it with ``--merge``, registers
it the way a study does (``log_best_adapter``: the best trial's own run, alias ``best``), then
copies the export to a fresh directory and deletes the original, so no absolute path can hide.
Every loader must give lora-study's own predictions on the same 50 SST-2 dev sentences, or fail
with an error the model card names: stock PEFT and ``AutoPeftModelForSequenceClassification``
(which cannot apply mean pooling), the card's recipe, the merged model through transformers
remote code, ``study.predict``, the MLflow pyfunc and ``mlflow models serve`` over HTTP — the
README's own serve and ``curl`` commands, every documented request format, and malformed ones
(HTTP 400, one line, no stack trace).

Stock loaders run in a fresh interpreter whose Hugging Face cache holds the hub id
``sentence-transformers/all-MiniLM-L6-v2`` (the embedded package's files) with the hub offline:
what a user on another machine, who downloaded the base model, has.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from study.deploy import export, registry
from tests.conftest import ROOT
from tests.study.drivers import free_port, wait_for_ping
from trainables import META_FILE, load_classifier
from trainables.data import read_table

NAME = "lora-study-real"  # the registered model, as study.run names it: lora-study-<study>


@pytest.fixture(scope="module")
def fifty(sst2) -> list[str]:
    """50 SST-2 dev sentences the adapter never saw (``sst2_small`` holds the first 200)."""
    return read_table(sst2 / "dev.tsv")["sentence"].astype(str).tolist()[200:250]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """A Hugging Face cache holding ``sentence-transformers/all-MiniLM-L6-v2`` (links to the
    embedded package's files, which are that model)."""
    from trainables.model import EMBEDDED_HUB_ID, resolve_model_name

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / ("models--" + EMBEDDED_HUB_ID.replace("/", "--"))
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in Path(resolve_model_name("embedded-minilm")).iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return home


def _registry(root: Path, checkpoint: Path, history: list[dict]) -> SimpleNamespace:
    """Register ``checkpoint`` as a study would: a parent run, the trial's child run (tagged as
    ``study.tracking.runs`` tags it), ``log_best_adapter``."""
    from mlflow import MlflowClient

    from study.tracking.runs import PARENT_TAG, TRIAL_ID_TAG

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("real", (root / "mlartifacts").resolve().as_uri())
    parent = client.create_run(experiment, run_name="real").info.run_id
    child = client.create_run(experiment, run_name="t0001", tags={PARENT_TAG: parent, TRIAL_ID_TAG: "t0001"}).info.run_id
    client.log_param(child, "lora.r", 8)
    client.set_terminated(child)
    best = {"trial_id": "t0001", "checkpoint": str(checkpoint), "params": {"lora.r": 8, "train.lr": 0.002},
            **{k: history[-1][k] for k in ("accuracy", "f1", "eval_loss", "samples_seen", "trainable_params")}}
    summary = {"name": "real", "metric": "accuracy", "mode": "max", "best": best}
    reg = registry.log_best_adapter(uri, parent, summary, NAME, SimpleNamespace(local=root / "study"))
    return SimpleNamespace(tracking_uri=uri, parent=parent, child=child, summary=summary, **reg)


@pytest.fixture(scope="module")
def real(sst2_small, tmp_path_factory, fifty) -> SimpleNamespace:
    from trainables import loop

    root = tmp_path_factory.mktemp("real")
    out = root / "train-out"
    assert loop.main(["--set", f"data.path={sst2_small}", "--set", "data.label_names=[negative,positive]", "--set", "data.max_length=64",
                      "--set", "train.lr=0.002", "--set", "train.threads=1", "--set", "train.eval_every_samples=600",
                      "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert export.main(["--checkpoint", str(out), "--out", str(root / "export"), "--merge"]) == 0
    reg = _registry(root, out / "last", history)
    moved = tmp_path_factory.mktemp("elsewhere") / "copied" / "best"
    shutil.copytree(root / "export", moved)
    shutil.rmtree(root / "export")
    shutil.rmtree(root / "study" / "best_adapter")  # what the registered model was logged from
    clf = load_classifier(moved)
    logits = clf.logits(fifty)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return SimpleNamespace(root=root, checkpoint=out, export=moved, history=history, registry=reg, logits=logits, probs=probs,
                           labels=[clf.label_names[i] for i in logits.argmax(-1)], meta=json.loads((moved / META_FILE).read_text()))


def assert_same_predictions(real, labels: list[str], confidences: list[float]) -> None:
    assert labels == real.labels
    np.testing.assert_allclose(confidences, real.probs.max(-1), atol=1e-4)


@pytest.mark.slow
def test_the_export_is_portable_and_marks_its_pooling(real):
    """Hub id everywhere, no path into this machine in any file a loader reads, and the
    stock-refusal marks (``pooler`` in ``modules_to_save``, empty pooler tensors)."""
    from safetensors.torch import load_file

    from trainables.model import EMBEDDED_HUB_ID

    adapter_cfg = json.loads((real.export / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == EMBEDDED_HUB_ID == real.meta["base_model"]
    assert real.meta["pooling"] == "mean" and "pooler" in adapter_cfg["modules_to_save"]
    tensors = load_file(str(real.export / "adapter_model.safetensors"))
    pooler = {k: tuple(v.shape) for k, v in tensors.items() if ".pooler." in k}
    assert pooler == {"base_model.model.bert.pooler.dense.weight": (0,), "base_model.model.bert.pooler.dense.bias": (0,)}
    for f in ("adapter_config.json", "tokenizer_config.json", "merged/config.json", "merged/tokenizer_config.json"):
        text = (real.export / f).read_text()
        assert "site-packages" not in text and str(ROOT) not in text and "/tmp" not in text, f
    assert f"`{EMBEDDED_HUB_ID}`" in (real.export / "README.md").read_text()
    assert real.history[-1]["accuracy"] > 0.7  # a real adapter: chance-level loading would show


STOCK = r"""
import json, sys
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

export, texts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
base_id = json.load(open(export + "/adapter_config.json"))["base_model_name_or_path"]
meta = json.load(open(export + "/lora_study.json"))
enc = AutoTokenizer.from_pretrained(export)(texts, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt")

def run(build):
    try:
        model = build().eval()
        with torch.inference_mode():
            return {"probs": model(**enc).logits.softmax(-1).tolist(), "labels": [model.config.id2label[i] for i in range(2)]}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}

def base():
    return AutoModelForSequenceClassification.from_pretrained(base_id, num_labels=2)

def card_recipe():  # as the export's README.md writes it
    sys.path.insert(0, export)
    from lora_study_pooling import use_mean_pooling
    labelled = AutoModelForSequenceClassification.from_pretrained(base_id, id2label=dict(enumerate(meta["label_names"])))
    return PeftModel.from_pretrained(use_mean_pooling(labelled), export)

results = {
    "stock-peft": run(lambda: PeftModel.from_pretrained(base(), export)),  # plain PEFT: what a user tries first
    "auto-peft": run(lambda: AutoPeftModelForSequenceClassification.from_pretrained(export)),
    "card-recipe": run(card_recipe),
    "merged-remote-code": run(lambda: AutoModelForSequenceClassification.from_pretrained(export + "/merged", trust_remote_code=True)),
    "merged-stock": run(lambda: AutoModelForSequenceClassification.from_pretrained(export + "/merged")),
    "lora-study-modules": sorted(m for m in sys.modules if m.split(".")[0] in ("study", "trainables")),
}
json.dump(results, open(out, "w"))
"""


@pytest.fixture(scope="module")
def stock(real, fifty, hf_home, tmp_path_factory) -> dict:
    """Every stock loader's answer, from one fresh interpreter without lora-study's code."""
    tmp = tmp_path_factory.mktemp("stock")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", STOCK, str(real.export), json.dumps(fifty), str(tmp / "out.json")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp / "out.json").read_text())
    assert results.pop("lora-study-modules") == []  # the stock loaders ran without any lora-study code
    return results


# (loader, error it must raise — None: it must predict like lora-study)
STOCK_LOADERS = [
    ("stock-peft", "RuntimeError: Error(s) in loading state_dict for PeftModelForSequenceClassification"),
    ("auto-peft", "RuntimeError: Error(s) in loading state_dict for PeftModelForSequenceClassification"),
    ("card-recipe", None),
    ("merged-remote-code", None),
    ("merged-stock", "trust_remote_code=True"),
]


@pytest.mark.slow
@pytest.mark.parametrize("loader,error", STOCK_LOADERS, ids=[s[0] for s in STOCK_LOADERS])
def test_stock_loaders_predict_like_lora_study_or_refuse_loudly(loader, error, stock, real):
    got = stock[loader]
    if error is None:
        assert "error" not in got, got.get("error")
        probs = np.asarray(got["probs"])
        assert_same_predictions(real, [got["labels"][i] for i in probs.argmax(-1)], probs.max(-1).tolist())
        return
    assert "probs" not in got, f"{loader} loaded a mean-pooling adapter without it: silent [CLS] pooling"
    assert error in got["error"]
    card, readme = (real.export / "README.md").read_text(), (ROOT / "README.md").read_text()
    if "pooler" in got["error"]:  # the refusal names the pooler; the card and the README name the refusal and the fix
        first = re.search(r"size mismatch for (\S+): copying a param with shape torch.Size\(\[0\]\)", got["error"])
        assert first, got["error"]
        assert f"size mismatch for {first.group(1)}: copying a param with shape torch.Size([0])" in card
        assert "use_mean_pooling(base)" in card and "size mismatch for" in readme and "use_mean_pooling" in readme
    else:
        assert "trust_remote_code=True" in card


@pytest.mark.slow
def test_study_predict_cli_on_the_copied_export_and_on_the_training_checkpoint(real, fifty, tmp_path):
    """``python -m study.predict`` on the copied export, its merged model (remote code: no
    prompt on stdin, nothing but the JSON on stdout), and the ``trainables.loop --out``
    directory it was exported from (no tokenizer there: the base model's)."""
    texts = tmp_path / "fifty.txt"
    texts.write_text("\n".join(fifty) + "\n")
    for model in (real.export, real.export / "merged", real.checkpoint):
        proc = subprocess.run([sys.executable, "-m", "study.predict", "--model", str(model), "--file", str(texts), "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr.strip() == "", proc.stderr[-3000:]
        got = json.loads(proc.stdout)
        assert [g["text"] for g in got] == fifty
        assert_same_predictions(real, [g["label"] for g in got], [g["confidence"] for g in got])


@pytest.mark.slow
def test_registered_version_is_the_best_trials_run_with_its_metadata(real):
    """The version's source run is the best trial's own run; description, hyperparameters,
    metrics, the study and the alias ``best`` travel with it."""
    from mlflow import MlflowClient

    reg = real.registry
    client = MlflowClient(reg.tracking_uri)
    version = client.get_model_version_by_alias(NAME, "best")
    assert str(version.version) == reg.version == "1" and reg.alias == "best"
    assert version.run_id == reg.child == reg.run_id != reg.parent
    assert "t0001" in version.description and reg.child in version.description and "models:/lora-study-real@best" in version.description
    acc = real.history[-1]["accuracy"]
    assert float(version.tags["accuracy"]) == acc and version.tags["param.lora.r"] == "8" and version.tags["trial_id"] == "t0001"
    assert version.tags["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and version.tags["pooling"] == "mean"
    logged = client.get_logged_model(version.source.removeprefix("models:/"))  # MLflow 3: the version's source is its logged model
    assert logged.source_run_id == reg.child and logged.params["lora.r"] == "8"


@pytest.mark.slow
def test_pyfunc_is_models_from_code_with_signature_and_example(real, fifty, tmp_path):
    """Loading the registered model unpickles nothing; it has an output signature and an input
    example, and predicts like lora-study on the 50 sentences."""
    import mlflow

    mlflow.set_tracking_uri(real.registry.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@best", dst_path=str(tmp_path)))
    assert not list(local.rglob("*.pkl")) and (local / "pyfunc_model.py").is_file()
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "python_model.pkl" not in mlmodel
    assert json.loads((local / "serving_input_example.json").read_text()) == {"inputs": json.loads((local / "input_example.json").read_text())}
    model = mlflow.pyfunc.load_model(str(local))
    assert [c.name for c in model.metadata.get_output_schema().inputs] == ["label", "confidence"]
    out = model.predict(fifty)
    assert_same_predictions(real, out["label"].tolist(), out["confidence"].tolist())


# ----------------------------------------------------------------------------- the pyfunc's input contract


# (id, pyfunc input, the model's text columns in order, texts)
ACCEPTED = [
    ("list", ["a fine film", "dull"], ("text",), ["a fine film", "dull"]),
    ("array", np.array(["a fine film", "dull"]), ("text",), ["a fine film", "dull"]),
    ("table-text", pd.DataFrame({"id": [1, 2], "text": ["a fine film", "dull"]}), ("sentence", "text"), ["a fine film", "dull"]),
    ("table-trained-column-first", pd.DataFrame({"text": ["x"], "sentence": ["a fine film"]}), ("sentence", "text"), ["a fine film"]),
    ("columns-dict", {"text": np.array(["a fine film"])}, ("sentence", "text"), ["a fine film"]),
]
# (id, pyfunc input, what the one-line message says)
REFUSED = [
    ("nested-array", np.array([["a fine film"]]), "the input must be a list of texts, not a nested list"),
    ("nested-list", [["a fine film"]], "the input must be a list of texts, not a nested list"),
    ("empty", [], "no texts to classify: the input is empty"),
    ("single-value", np.array("a fine film"), "the input must be a list of texts, not a single value"),
    ("null", ["a fine film", None], "item 1 of the input is None (NoneType), not a text"),
    ("number", [3], "item 0 of the input is 3 (int), not a text"),
    ("blank", ["a fine film", "  "], "item 1 of the input is an empty text"),
    ("no-text-column", pd.DataFrame({"review": ["a fine film"]}), "the table has no 'sentence' or 'text' column (its columns: review)"),
    ("empty-column", {"text": []}, "no texts to classify: column 'text' is empty"),
    ("plain-string", "a fine film", "the input must be a list of texts, not str"),
]


@pytest.mark.parametrize("data,columns,texts", [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_pyfunc_input_accepted(data, columns, texts):
    from study.deploy.serving import texts_from_input

    assert texts_from_input(data, columns) == texts


@pytest.mark.parametrize("data,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_pyfunc_input_refused_in_one_line(data, message):
    """MLflow's INVALID_PARAMETER_VALUE (HTTP 400 when served) with a one-line reason."""
    from mlflow.exceptions import MlflowException

    from study.deploy.serving import texts_from_input

    with pytest.raises(MlflowException) as e:
        texts_from_input(data, ("sentence", "text"))
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and e.value.get_http_status_code() == 400
    assert e.value.message.startswith(message) and "\n" not in e.value.message


# ----------------------------------------------------------------------------- mlflow models serve


def readme_serving_commands() -> tuple[str, str]:
    """The README's ``mlflow models serve`` and ``curl`` commands (backslash-continued lines joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    serve = next(ln for ln in text.splitlines() if "mlflow models serve" in ln and "curl" not in ln and ln.lstrip().startswith("MLFLOW"))
    curl = next(ln for ln in text.splitlines() if ln.lstrip().startswith("curl ") and "/invocations" in ln)
    return " ".join(serve.split()), " ".join(curl.split())


def _substitute(cmd: str, real, port: int) -> str:
    return (cmd.replace("sqlite:///studies/mlflow.db", real.registry.tracking_uri).replace("lora-study-NAME", NAME)
            .replace(".venv/bin", str(Path(sys.executable).parent)).replace("5001", str(port)))


@pytest.fixture(scope="module")
def server(real, tmp_path_factory):
    """The README's serve command on a free 127.0.0.1 port; waits (bounded) for /ping, always killed."""
    serve, _ = readme_serving_commands()
    port = free_port()
    cmd = _substitute(serve, real, port)
    assert "--env-manager local" in cmd and "@best" in cmd
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(proc, url, log)
        yield SimpleNamespace(url=url, port=port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the session started above: bash, mlflow and its uvicorn
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def post(url: str, body: str | bytes, content_type: str = "application/json") -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _csv(column: str, texts: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([column])
    w.writerows([t] for t in texts)
    return buf.getvalue()


# (id, content type, body from the 50 texts) — the formats the README documents
FORMATS = [
    ("inputs-list", "application/json", lambda t: json.dumps({"inputs": t})),
    ("inputs-columns-text", "application/json", lambda t: json.dumps({"inputs": {"text": t}})),
    ("split-trained-column", "application/json",
     lambda t: json.dumps({"dataframe_split": {"columns": ["id", "sentence"], "data": [[i, x] for i, x in enumerate(t)]}})),
    ("records-text", "application/json", lambda t: json.dumps({"dataframe_records": [{"text": x} for x in t]})),
    ("csv-text", "text/csv", lambda t: _csv("text", t)),
]


@pytest.mark.slow
@pytest.mark.parametrize("content_type,body", [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS])
def test_served_model_answers_every_documented_format(content_type, body, server, real, fifty):
    status, got = post(server.url, body(fifty), content_type)
    assert status == 200, got
    preds = got["predictions"]
    assert_same_predictions(real, [p["label"] for p in preds], [p["confidence"] for p in preds])


# (id, body, what the one-line message says)
MALFORMED = [
    ("nested-list", {"inputs": [["an utterly forgettable sequel"]]}, "the input must be a list of texts, not a nested list"),
    ("empty", {"inputs": []}, "no texts to classify: the input is empty"),
    ("unknown-column", {"inputs": {"review": ["an utterly forgettable sequel"]}}, "the table has no 'sentence' or 'text' column (its columns: review)"),
    ("null-item", {"inputs": ["a gorgeous film", None]}, "item 1 of the input is None (NoneType), not a text"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_served_model_refuses_malformed_input_with_400(body, message, server):
    """HTTP 400, MLflow's INVALID_PARAMETER_VALUE, no stack trace; after MLflow's own
    ``Failed to predict data '…'.`` line, the model's one-line reason."""
    status, got = post(server.url, json.dumps(body))
    assert status == 400, got
    assert got["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in got
    ours = got["message"].split("\nError: ", 1)[1]
    assert ours == message or ours.startswith(message), ours
    assert "\n" not in ours


@pytest.mark.slow
def test_the_readme_curl_example(server, real):
    _, curl = readme_serving_commands()
    proc = subprocess.run(["bash", "-c", _substitute(curl, real, server.port)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)["predictions"]
    assert len(preds) == 2 and {p["label"] for p in preds} <= {"negative", "positive"}
    assert all(0.5 <= p["confidence"] <= 1.0 for p in preds)


@pytest.mark.slow
def test_export_from_the_registry_keeps_the_refusal(real, fifty, tmp_path, capsys):
    """``study.export --from-registry`` of the registered version: the same adapter, still
    refused by stock PEFT (marked once, not twice), same predictions."""
    rc = export.main(["--from-registry", f"models:/{NAME}@best", "--tracking-uri", real.registry.tracking_uri, "--out", str(tmp_path / "reg")])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "reg" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"].count("pooler") == 1 and cfg["base_model_name_or_path"] == real.meta["base_model"]
    assert (tmp_path / "reg" / "adapter_model.safetensors").read_bytes() == (real.export / "adapter_model.safetensors").read_bytes()
    assert "size mismatch for base_model.model.bert.pooler.modules_to_save.default.dense.weight" in (tmp_path / "reg" / "README.md").read_text()
    got = load_classifier(tmp_path / "reg").predict(fifty)
    assert_same_predictions(real, [g[0] for g in got], [g[1] for g in got])
