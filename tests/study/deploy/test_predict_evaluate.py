"""study.predict and study.evaluate on an exported adapter and its merged model.

The model is the tiny study's exported best trial (``exported``, shared with test_export);
the data is real SST-2 (the full dev split) and small files written per test. Most CLI calls run
in-process (``main(argv)``); one subprocess per CLI checks the real entry points.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from study.deploy import evaluate, predict
from tests.conftest import ROOT
from tests.study.drivers import assert_one_line_error, run_cli, summary
from trainables import load_classifier
from trainables.data import read_table

TEXTS = ["a gripping , beautifully acted film", "dull , lifeless and far too long", "it 's fine"]


@pytest.fixture(scope="module")
def clf(exported):
    return load_classifier(exported)


@pytest.fixture(params=["adapter", "merged"])
def model_dir(request, exported) -> Path:
    return exported if request.param == "adapter" else exported / "merged"


def expected(clf, texts):
    return [(lab, round(conf, 6)) for lab, conf in clf.predict(texts)]


INPUTS = [
    # (id, how the texts reach predict)
    ("args", "args"),
    ("txt-lines", "txt"),
    ("csv-column", "csv"),
    ("stdin", "stdin"),
]


@pytest.mark.parametrize("how", [i[1] for i in INPUTS], ids=[i[0] for i in INPUTS])
def test_predict_inputs_and_json(how, model_dir, clf, tmp_path, monkeypatch, capsys):
    argv: list = ["--model", model_dir, "--json"]
    if how == "args":
        argv += TEXTS
    elif how == "txt":
        (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n\n")  # blank lines are skipped
        argv += ["--file", tmp_path / "in.txt"]
    elif how == "csv":
        import pandas as pd

        pd.DataFrame({"id": [1, 2, 3], "review": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
        argv += ["--file", tmp_path / "in.csv", "--text-column", "review"]
    else:
        monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS)))
    rc, out, err = run_cli(predict, argv, capsys)
    assert rc == 0, err
    got = json.loads(out)
    assert [g["text"] for g in got] == TEXTS
    assert all(set(g) == {"text", "label", "confidence"} and 0.5 <= g["confidence"] <= 1.0 for g in got)
    # adapter and merged dirs answer alike (merged logits differ by < 1e-4)
    want = expected(clf, TEXTS)
    assert [g["label"] for g in got] == [w[0] for w in want]
    assert [g["confidence"] for g in got] == pytest.approx([w[1] for w in want], abs=1e-4)


def test_predict_on_real_sst2_dev_agrees_with_evaluate(exported, sst2, capsys):
    """``predict --file dev.tsv`` (the model's text column by default) vs ``evaluate`` on the same file."""
    rc, out, err = run_cli(predict, ["--model", exported, "--file", sst2 / "dev.tsv"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    df = read_table(sst2 / "dev.tsv")
    assert len(lines) == len(df) == 872
    labels, confs = zip(*[(ln.split("\t")[0], float(ln.split("\t")[1])) for ln in lines])
    assert set(labels) <= {"negative", "positive"} and min(confs) >= 0.5
    acc = float(np.mean([["negative", "positive"].index(lab) == y for lab, y in zip(labels, df["label"])]))
    rc, out, err = run_cli(evaluate, ["--model", exported, "--data", sst2, "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["n"] == 872 and res["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert sum(map(sum, res["confusion_matrix"])) == 872
    assert set(res["per_class"]) == {"negative", "positive"}
    assert sum(c["support"] for c in res["per_class"].values()) == 872


def test_evaluate_cli_subprocess_on_sst2_dev(exported, sst2):
    """The real ``python -m study.evaluate`` on the full SST-2 dev split, human-readable output."""
    proc = subprocess.run([sys.executable, "-m", "study.evaluate", "--model", str(exported / "merged"), "--data", str(sst2)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "872 examples" in out and "accuracy" in out and "macro-F1" in out
    assert "precision" in out and "recall" in out and "confusion matrix" in out
    assert "Traceback" not in proc.stderr


def _write(path: Path, texts, labels, text_col="sentence", label_col="label") -> Path:
    import pandas as pd

    pd.DataFrame({text_col: texts, label_col: labels}).to_csv(path, index=False)
    return path


def test_evaluate_label_mapping(exported, clf, sst2_small, tmp_path, capsys):
    """Label names match by name, integers the model doesn't name are ids; both score alike."""
    df = read_table(sst2_small / "dev.tsv")
    texts, ids = df["sentence"].astype(str).tolist(), df["label"].to_numpy()
    names = np.array(["negative", "positive"])[ids]
    results = {}
    for kind, labels in (("ids", ids), ("names", names)):
        f = _write(tmp_path / f"{kind}.csv", texts, labels, "review", "y")
        rc, out, err = run_cli(evaluate, ["--model", exported, "--data", f, "--split", "all", "--text-column", "review",
                                          "--label-column", "y", "--json"], capsys)
        assert rc == 0, err
        results[kind] = json.loads(out)
    assert results["ids"]["accuracy"] == results["names"]["accuracy"]
    assert results["ids"]["confusion_matrix"] == results["names"]["confusion_matrix"]
    preds = clf.logits(texts).argmax(-1)
    assert results["ids"]["accuracy"] == float((preds == ids).mean())


def test_evaluate_scores_a_single_file_whole_unless_asked(exported, clf, sst2_small, tmp_path, capsys):
    """A labelled file is scored whole by default (``n`` = its rows); ``--split dev`` is the part
    the study carved off it with the model's data seed/fraction."""
    from trainables.config import DataSection
    from trainables.data import load_splits

    f = tmp_path / "all.tsv"
    f.write_text((sst2_small / "train.tsv").read_text())
    df = read_table(f)
    rc, out, err = run_cli(evaluate, ["--model", exported, "--data", f, "--json"], capsys)
    assert rc == 0, err
    whole = json.loads(out)
    assert whole["n"] == len(df) == 600 and whole["split"] == "all" and whole["data"] == str(f)
    assert whole["accuracy"] == float((clf.logits(df["sentence"].astype(str).tolist()).argmax(-1) == df["label"].to_numpy()).mean())
    rc, out, err = run_cli(evaluate, ["--model", exported, "--data", f, "--split", "dev", "--json"], capsys)
    assert rc == 0, err
    carved = json.loads(out)
    assert carved["n"] == len(load_splits(DataSection(path=str(f))).dev_texts) == 60 and carved["split"] == "dev"
    assert "split carved with seed 0" in carved["data"]


@pytest.fixture(scope="module")
def run_dir(tiny_study, tmp_path_factory) -> Path:
    """The best trial's checkpoint laid out as ``python -m trainables.loop --out RUN`` leaves it
    (``RUN/last``: adapter + lora_study.json, no tokenizer)."""
    _, home = tiny_study
    out = tmp_path_factory.mktemp("run") / "run"
    import shutil

    shutil.copytree(summary(home)["best"]["checkpoint"], out / "last")
    assert not (out / "last" / "tokenizer_config.json").exists()
    return out


@pytest.mark.parametrize("which", ["run", "run/last"])
def test_predict_and_evaluate_load_a_trainable_checkpoint(which, run_dir, exported, clf, sst2_small, capsys):
    """``trainables.loop --out`` output (before: "no tokenizer"): the tokenizer is the
    base model's; same predictions and scores as the export of the same checkpoint."""
    model = run_dir if which == "run" else run_dir / "last"
    rc, out, err = run_cli(predict, ["--model", model, "--json", *TEXTS], capsys)
    assert rc == 0, err
    assert [(g["label"], g["confidence"]) for g in json.loads(out)] == expected(clf, TEXTS)
    rc, out, err = run_cli(evaluate, ["--model", model, "--data", sst2_small, "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["kind"] == "checkpoint" and res["n"] == 200
    assert res["accuracy"] == json.loads((exported / "lora_study.json").read_text())["metrics"]["accuracy"]


def test_evaluate_logs_to_the_study_parent_run(exported, tiny_study, sst2_small, capsys):
    from mlflow import MlflowClient

    name, home = tiny_study
    rc, out, err = run_cli(evaluate, ["--model", exported, "--data", sst2_small, "--json", "--log-to-study", name,
                                      "--storage", home], capsys)
    assert rc == 0, err
    res = json.loads(out)
    record = json.loads((home / name / "study.json").read_text())
    assert res["logged_to"]["run_id"] == record["parent_run_id"]
    run = MlflowClient(record["tracking_uri"]).get_run(record["parent_run_id"])
    assert run.data.metrics["evaluate.accuracy"] == res["accuracy"] == summary(home)["best"]["accuracy"]
    assert run.data.metrics["evaluate.f1"] == pytest.approx(res["f1"])
    assert "evaluate.recall.positive" in run.data.metrics
    assert run.data.tags["evaluate.data"] == res["data"]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    (tmp_path / "empty.txt").write_text("\n  \n")
    _write(tmp_path / "odd.csv", ["good", "bad"], ["maybe", "positive"])
    _write(tmp_path / "nocol.csv", ["good", "bad"], [0, 1], text_col="review")
    (tmp_path / "sst").mkdir()
    return {"empty": tmp_path / "empty.txt", "odd": tmp_path / "odd.csv", "nocol": tmp_path / "nocol.csv", "dir": tmp_path / "sst"}


BAD = [
    # (id, cli, args ({model}, {missing}, files[...] are filled in), expected message)
    ("predict-no-model-dir", "predict", ["--model", "{missing}", "text"], "no such directory"),
    ("predict-empty-file", "predict", ["--model", "{model}", "--file", "{empty}"], "no texts to predict"),
    ("predict-empty-stdin", "predict", ["--model", "{model}"], "no texts to predict: stdin is empty"),
    ("predict-empty-arg", "predict", ["--model", "{model}", "good", "  "], "text argument 2 is empty"),
    ("predict-no-file", "predict", ["--model", "{model}", "--file", "{missing}"], "no such file"),
    ("predict-bad-column", "predict", ["--model", "{model}", "--file", "{odd}", "--text-column", "x"], "no column 'x'"),
    ("predict-not-a-model", "predict", ["--model", "{dir}", "text"], "neither an adapter"),
    ("evaluate-no-model-dir", "evaluate", ["--model", "{missing}", "--data", "{odd}"], "no such directory"),
    ("evaluate-no-data", "evaluate", ["--model", "{model}", "--data", "{missing}"], "no such file or directory"),
    ("evaluate-unknown-labels", "evaluate", ["--model", "{model}", "--data", "{odd}", "--split", "all"], "['maybe']"),
    ("evaluate-no-text-column", "evaluate", ["--model", "{model}", "--data", "{nocol}", "--split", "all"], "no column 'sentence'"),
    ("evaluate-no-dev-file", "evaluate", ["--model", "{model}", "--data", "{dir}"], "no dev file"),
    ("evaluate-unknown-study", "evaluate", ["--model", "{model}", "--data", "{odd}", "--log-to-study", "nope", "--storage", "{dir}"], "no study named 'nope'"),
]


@pytest.mark.parametrize("cli,args,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_are_one_line_errors(cli, args, message, exported, files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    fill = {"model": str(exported), "missing": str(tmp_path / "missing"), **{k: str(v) for k, v in files.items()}}
    rc, _, err = run_cli(predict if cli == "predict" else evaluate, [a.format(**fill) for a in args], capsys)
    assert_one_line_error(rc, err, message)


def test_predict_cli_subprocess_errors_and_output(exported):
    """The real ``python -m study.predict``: tab-separated lines; a bad dir is one line, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "study.predict", "--model", str(exported), *TEXTS[:2]],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(ln.split("\t")[0] in ("negative", "positive") for ln in lines)
    assert [ln.split("\t")[2] for ln in lines] == TEXTS[:2]
    assert proc.stderr.strip() == "", proc.stderr  # no load reports, progress bars or warnings
