"""study.export: the best adapter out as a stock PEFT directory (+ merged model), and its errors.

Everything runs on the finished ``tiny_study`` (a random 2-layer BERT): the mechanics are the
same as for MiniLM and take seconds. The adapter is loaded with plain PEFT in a fresh process
and must reproduce the study's own dev evaluation exactly (same batches, same logits).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from study.deploy import export
from tests.conftest import ROOT
from tests.study.drivers import assert_one_line_error, run_cli, summary
from trainables import META_FILE, load_classifier, portable_base_model
from trainables.data import read_table


def dev_data(sst2_small: Path) -> tuple[list[str], np.ndarray]:
    df = read_table(sst2_small / "dev.tsv")
    return df["sentence"].astype(str).tolist(), df["label"].to_numpy()


def test_export_writes_a_complete_adapter_dir(exported, tiny_study):
    _, home = tiny_study
    best = summary(home)["best"]
    names = {p.name for p in exported.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", META_FILE, "README.md", "tokenizer.json",
            "tokenizer_config.json", "merged"} <= names
    from safetensors import safe_open

    with safe_open(str(exported / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
    assert any(k.endswith("classifier.weight") for k in keys), "the trained head travels with the adapter"
    meta = json.loads((exported / META_FILE).read_text())
    assert meta["trial_id"] == best["trial_id"] and meta["study"] == "tiny"  # the summary's best, by default
    assert meta["metrics"]["accuracy"] == best["accuracy"]
    assert meta["label_names"] == ["negative", "positive"]
    assert meta["id2label"] == {"0": "negative", "1": "positive"}
    card = (exported / "README.md").read_text()
    assert best["trial_id"] in card and "PeftModel.from_pretrained" in card and "merged/" in card
    assert json.loads((exported / "adapter_config.json").read_text())["base_model_name_or_path"] == meta["base_model"]
    cfg = json.loads((exported / "merged" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "negative", "1": "positive"}


STOCK_PEFT = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trainables.data import TokenizedSplit, read_table
from trainables.loop import predict_logits

base_dir, adapter, dev, out = sys.argv[1:5]
model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2), adapter)
tok = AutoTokenizer.from_pretrained(adapter)
meta = json.loads((Path(adapter) / "lora_study.json").read_text())
df = read_table(Path(dev))
enc = tok(df["sentence"].astype(str).tolist(), truncation=True, max_length=meta["max_length"])
split = TokenizedSplit([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]], df["label"].to_numpy())
np.save(out, predict_logits(model, split, tok.pad_token_id, meta["config"]["train"]["eval_batch_size"], torch.device("cpu")))
"""


def test_stock_peft_in_a_fresh_process_reproduces_the_study(exported, tiny_study, tiny_bert, sst2_small, tmp_path, capsys):
    """Plain ``PeftModel.from_pretrained`` in a new interpreter: same dev predictions as the study."""
    _, home = tiny_study
    best = summary(home)["best"]
    out = tmp_path / "logits.npy"
    proc = subprocess.run([sys.executable, "-c", STOCK_PEFT, str(tiny_bert), str(exported), str(sst2_small / "dev.tsv"), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock = np.load(out)
    texts, labels = dev_data(sst2_small)
    assert float((stock.argmax(-1) == labels).mean()) == best["accuracy"]  # the number in summary.json, exactly
    ours = load_classifier(exported).logits(texts)
    assert np.array_equal(stock.argmax(-1), ours.argmax(-1))
    np.testing.assert_allclose(stock, ours, atol=1e-6)
    # and study.evaluate on the same dev data says the same
    from study.deploy import evaluate

    rc, stdout, err = run_cli(evaluate, ["--model", exported, "--data", sst2_small, "--json"], capsys)
    assert rc == 0, err
    res = json.loads(stdout)
    ck = json.loads((exported / META_FILE).read_text())["metrics"]  # the checkpoint's own evaluation
    assert res["n"] == len(texts) and res["accuracy"] == best["accuracy"]
    assert res["f1"] == pytest.approx(ck["f1"], abs=1e-12) and res["eval_loss"] == pytest.approx(ck["eval_loss"], abs=1e-5)


def test_merged_model_loads_without_peft_and_matches(exported, sst2_small):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts, _ = dev_data(sst2_small)
    adapter = load_classifier(exported)
    merged = AutoModelForSequenceClassification.from_pretrained(exported / "merged").eval()
    assert "Peft" not in type(merged).__name__
    tok = AutoTokenizer.from_pretrained(exported / "merged")
    with torch.inference_mode():
        enc = tok(texts[:64], truncation=True, max_length=adapter.max_length, padding=True, return_tensors="pt")
        plain = merged(**enc).logits.numpy()
        with_lora = adapter.model(**enc).logits.numpy()
    assert np.abs(plain - with_lora).max() < 1e-4
    # the length-ordered path used by predict/evaluate agrees as well, on all of dev
    assert np.abs(load_classifier(exported / "merged").logits(texts) - adapter.logits(texts)).max() < 1e-4


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_from_registry_gives_the_registered_best_adapter(exported, tiny_study, tmp_path, capsys):
    name, home = tiny_study
    assert summary(home)["registered_model"]["uri"] == "models:/lora-study-tiny/1"
    out = tmp_path / "reg"
    rc, _, err = run_cli(export, ["--from-registry", "models:/lora-study-tiny/1", "--tracking-uri",
                                  f"sqlite:///{home / 'mlflow.db'}", "--out", out], capsys)
    assert rc == 0, err
    assert sha(out / "adapter_model.safetensors") == sha(exported / "adapter_model.safetensors")
    assert json.loads((out / META_FILE).read_text())["trial_id"] == summary(home)["best"]["trial_id"]
    # without --tracking-uri the study's own tracking URI (study.json) is used
    rc, _, err = run_cli(export, ["--from-registry", "models:/lora-study-tiny/1", "--study", name, "--storage", home,
                                  "--out", tmp_path / "reg2"], capsys)
    assert rc == 0, err
    assert sha(tmp_path / "reg2" / "adapter_model.safetensors") == sha(exported / "adapter_model.safetensors")


def test_trial_option_and_force(tiny_study, tmp_path, capsys):
    name, home = tiny_study
    s = summary(home)
    other = next(r for r in s["table"] if r["trial_id"] != s["best"]["trial_id"] and r["checkpoint"])
    out = tmp_path / "other"
    out.mkdir()
    (out / "old.txt").write_text("x")
    rc, _, err = run_cli(export, ["--study", name, "--storage", home, "--trial", other["trial_id"], "--out", out], capsys)
    assert_one_line_error(rc, err, "not empty (use --force")
    assert (out / "old.txt").is_file()  # refused: nothing touched
    rc, stdout, err = run_cli(export, ["--study", name, "--storage", home, "--trial", other["trial_id"], "--out", out, "--force"], capsys)
    assert rc == 0, err
    assert not (out / "old.txt").exists() and f"trial {other['trial_id']}" in stdout
    meta = json.loads((out / META_FILE).read_text())
    assert meta["trial_id"] == other["trial_id"] and meta["metrics"]["accuracy"] == other["best"]["accuracy"]


@pytest.fixture(scope="module")
def broken_studies(tiny_study, tmp_path_factory) -> Path:
    """Copies of the tiny study with one thing wrong each (a moved study is read where it lies)."""
    name, home = tiny_study
    root = tmp_path_factory.mktemp("broken")
    best = summary(home)["best"]
    rel = Path(best["checkpoint"]).relative_to(home / name)
    ignore = shutil.ignore_patterns("best_adapter")
    shutil.copytree(home / name, root / "torn" / name, ignore=ignore)
    with open(root / "torn" / name / rel / "adapter_model.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    shutil.copytree(home / name, root / "gone" / name, ignore=ignore)
    shutil.rmtree(root / "gone" / name / rel)
    (root / "fresh" / name).mkdir(parents=True)  # created, never ran a trial
    record = json.loads((home / name / "study.json").read_text())
    (root / "fresh" / name / "study.json").write_text(json.dumps({**record, "storage": str(root / "fresh")}))
    return root


ERRORS = [
    # (id, storage: the tiny home or a broken copy, args, expected message)
    ("unknown-study", "home", ["--study", "nope"], "no study named 'nope'"),
    ("torn-checkpoint", "torn", ["--study", "tiny"], "corrupt adapter_model.safetensors"),
    ("missing-checkpoint", "gone", ["--study", "tiny"], "cannot read"),
    ("no-finished-trial", "fresh", ["--study", "tiny"], "has no finished trial"),
    ("unknown-trial", "home", ["--study", "tiny", "--trial", "nosuch"], "has no trial 'nosuch'"),
    ("no-study-arg", "home", [], "--study NAME (or --from-registry"),
    ("unknown-version", "home", ["--from-registry", "models:/lora-study-tiny/99"], "cannot download"),
    ("not-a-model-uri", "home", ["--from-registry", "runs:/abc/model"], "expected models:/NAME/VERSION"),
    ("no-checkpoint-dir", "home", ["--checkpoint", "/nonexistent/run"], "--checkpoint /nonexistent/run: no such directory"),
]


@pytest.mark.parametrize("where,args,expected", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_inputs_are_one_line_errors(where, args, expected, tiny_study, broken_studies, tmp_path, capsys):
    _, home = tiny_study
    storage = home if where == "home" else broken_studies / where
    extra = ["--tracking-uri", f"sqlite:///{home / 'mlflow.db'}"] if "--from-registry" in args else []
    rc, _, err = run_cli(export, [*args, "--storage", storage, *extra, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, expected)
    assert not (tmp_path / "out").exists()


def test_cli_entry_point_in_a_subprocess(tiny_study, tmp_path):
    """The real ``python -m study.export``: exit 2 and a single line, no traceback."""
    _, home = tiny_study
    proc = subprocess.run([sys.executable, "-m", "study.export", "--study", "nope", "--storage", str(home), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "no study named 'nope'")


@pytest.fixture(scope="module")
def mean_export(tiny_st_bert, sst2_small, tmp_path_factory):
    """(export with ``--merge``, training history) of a checkpoint trained with mean pooling
    (``model.pooling=auto`` on a sentence-transformers layout)."""
    from trainables.config import TrialConfig
    from trainables.loop import run_trial

    tmp = tmp_path_factory.mktemp("mean")
    cfg = TrialConfig.from_dict({"model.name": str(tiny_st_bert), "data.path": str(sst2_small), "data.size": 128,
                                 "data.max_length": 48, "train.batch_size": 16, "train.lr": 5e-3, "train.threads": 1, "lora.r": 2})
    ckpt = tmp / "ckpt"

    def keep(metrics, d):
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(d, ckpt)

    history = run_trial(cfg, report=keep)
    assert json.loads((ckpt / META_FILE).read_text())["pooling"] == "mean"
    return export.export_checkpoint(str(ckpt), tmp / "best", merge=True), history


def test_mean_pooling_export_loads_everywhere_with_the_same_logits(mean_export, tiny_st_bert, sst2_small):
    """Our loader, the merged model through stock transformers remote code and the adapter with
    the card's recipe all give the trainable's own logits; the merged model without
    ``trust_remote_code`` fails loudly."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out, history = mean_export
    assert json.loads((out / META_FILE).read_text())["pooling"] == "mean"
    card = (out / "README.md").read_text()
    assert "use_mean_pooling(base)" in card and "trust_remote_code=True" in card
    texts, labels = dev_data(sst2_small)
    ours = load_classifier(out).logits(texts)
    assert float((ours.argmax(-1) == labels).mean()) == history[-1]["accuracy"]
    assert np.abs(load_classifier(out / "merged").logits(texts) - ours).max() < 1e-4

    stock = AutoModelForSequenceClassification.from_pretrained(out / "merged", trust_remote_code=True).eval()
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(out / "merged")
    sys.path.insert(0, str(out))  # the card's recipe: the pooling module shipped in the adapter dir
    try:
        from lora_study_pooling import use_mean_pooling
    finally:
        sys.path.remove(str(out))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_st_bert, num_labels=2)
    adapter = PeftModel.from_pretrained(use_mean_pooling(base), str(out)).eval()
    enc = load_classifier(out).tokenizer(texts[:32], truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = ours[:32]
        # padding within this batch differs from the length-sorted one: tolerance, not equality
        assert np.abs(stock(**enc).logits.numpy() - want).max() < 1e-4
        assert np.abs(adapter(**enc).logits.numpy() - want).max() < 1e-4


def test_stock_peft_refuses_a_mean_pooling_export(mean_export, tiny_st_bert):
    """Without ``use_mean_pooling`` a stock head would read the [CLS] pooler the adapter was not
    trained on (before: chance-level predictions, no error): now both stock PEFT
    loaders stop with the error the card names."""
    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from transformers import AutoModelForSequenceClassification

    out, _ = mean_export
    refusal = r"size mismatch for base_model\.model\.bert\.pooler\.modules_to_save\.default\.dense\.weight: copying a param with shape torch\.Size\(\[0\]\)"
    with pytest.raises(RuntimeError, match=refusal):
        PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_st_bert, num_labels=2), str(out))
    with pytest.raises(RuntimeError, match=refusal):  # its base: adapter_config.json names the local directory
        AutoPeftModelForSequenceClassification.from_pretrained(str(out))
    card = (out / "README.md").read_text()
    assert "size mismatch for base_model.model.bert.pooler.modules_to_save.default.dense.weight" in card
    assert "use_mean_pooling(base)" in card
    assert load_classifier(out).kind == "adapter"  # and ours loads it


def test_export_names_the_base_model_portably(tiny_bert):
    from trainables.model import EMBEDDED_HUB_ID, resolve_model_name

    cases = [  # (model.name the adapter was trained with, name in the export, warns)
        ("embedded-minilm", EMBEDDED_HUB_ID, False),
        (EMBEDDED_HUB_ID, EMBEDDED_HUB_ID, False),
        (resolve_model_name("embedded-minilm"), EMBEDDED_HUB_ID, False),  # the package path itself
        ("bert-base-uncased", "bert-base-uncased", False),  # a hub id stays
        (str(tiny_bert), str(tiny_bert.resolve()), True),  # a local directory: its path, with a warning
    ]
    for name, want, warns in cases:
        got, warning = portable_base_model(name)
        assert (got, warning is not None) == (want, warns), name
    assert resolve_model_name(EMBEDDED_HUB_ID) == resolve_model_name("embedded-minilm")  # loaders map the hub id back, offline


def test_export_of_a_trainable_checkpoint_dir(tiny_study, exported, tmp_path, caplog, capsys):
    """``trainables.loop --out OUT`` keeps its checkpoint in ``OUT/last``: ``--checkpoint OUT`` exports it."""
    _, home = tiny_study
    run_dir = tmp_path / "run"
    shutil.copytree(summary(home)["best"]["checkpoint"], run_dir / "last")
    with caplog.at_level("WARNING", logger="trainables.export"):
        rc, stdout, err = run_cli(export, ["--checkpoint", run_dir, "--out", tmp_path / "out"], capsys)
    assert rc == 0, err
    assert sha(tmp_path / "out" / "adapter_model.safetensors") == sha(exported / "adapter_model.safetensors")
    assert "is a local directory" in caplog.text  # the tiny BERT: a path, not a hub id
    assert load_classifier(tmp_path / "out").kind == "adapter"
    assert f"checkpoint {run_dir}" in stdout


def test_registered_version_is_the_best_trials_run(tiny_study):
    """The version's source run is the best trial's child run; metadata and alias travel with it."""
    from mlflow import MlflowClient

    name, home = tiny_study
    s = summary(home)
    record = json.loads((home / name / "study.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    version = client.get_model_version_by_alias("lora-study-tiny", "best")
    assert str(version.version) == s["registered_model"]["version"] == "1"
    run = client.get_run(version.run_id)
    assert run.data.tags["ray_trial_id"] == s["best"]["trial_id"] and run.data.tags["mlflow.parentRunId"] == record["parent_run_id"]
    assert s["registered_model"]["run_id"] == version.run_id
    assert float(version.tags["accuracy"]) == s["best"]["accuracy"] and version.tags["trial_id"] == s["best"]["trial_id"]
    assert {f"param.{k}" for k in s["best"]["params"]} <= set(version.tags)
    assert s["best"]["trial_id"] in version.description and version.run_id in version.description


@pytest.mark.parametrize("metrics, short, want", [
    ({"accuracy": 0.9, "f1": 0.8, "eval_loss": 0.3}, True, "dev accuracy 0.9000"),
    ({"accuracy": 0.9, "f1": 0.8, "eval_loss": 0.3}, False, "dev accuracy 0.9000, macro-F1 0.8000, eval loss 0.3000"),
    ({"accuracy": 0.932, "f1": 0.93, "dev_accuracy": 0.884, "dev_f1": 0.88, "dev_eval_loss": 0.32}, True,
     "validation accuracy 0.9320, dev accuracy 0.8840"),
    ({"accuracy": 0.932, "f1": 0.93, "dev_accuracy": 0.884, "dev_f1": 0.88, "dev_eval_loss": 0.32}, False,
     "validation accuracy 0.9320, macro-F1 0.9300; dev accuracy 0.8840, macro-F1 0.8800, eval loss 0.3200"),
])
def test_scores_are_named_by_their_split(metrics, short, want):
    """With a holdout, ``accuracy`` is the validation split's: the card and the command say so."""
    from study.deploy.export import scores_line

    assert scores_line(metrics, short=short) == want
