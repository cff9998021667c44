"""``python -m study.run``: errors before Ray, and a real end-to-end study on the embedded MiniLM."""

import json
from pathlib import Path

import pytest

from study.run import main
from tests.conftest import ROOT, run_study, tiny_study_args

QUICK = str(ROOT / "study" / "configs" / "sst2-quick.yaml")


def _err(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


BAD = [
    (["--config", QUICK, "--set", "lora.r=0"], "lora.r"),
    (["--config", QUICK, "--set", "lora.target_modules=[q_proj]"], "lora.target_modules: this key is searched"),
    (["--config", QUICK, "--set", "data.path=/nonexistent/sst2"], "data not found"),
    (["--config", QUICK, "--set", "data.text_column=review"], "no column 'review'"),
    (["--config", QUICK, "--set", "search.lora.target_modules.choice=[qv,[query,q_proj]]"], "q_proj"),
    (["--config", QUICK, "--set", "lora.modules_to_save=[poolr]"], "lora.modules_to_save: ['poolr']"),
    (["--config", QUICK, "--set", "search.data.size.choice=[1000,99999999]"], "larger than the train split"),
    (["--config", QUICK, "--set", "model.pooling=max"], "model.pooling"),
    (["--config", QUICK, "--set", "lora.modules_to_save=[pooler]"], "pooler has no weights with mean pooling"),
    (["--config", QUICK, "--set", "model.name=/nonexistent/model"], "model.name"),
    (["--name", "nope", "--resume"], "no study named 'nope'"),
    (["--resume"], "--resume needs --name"),
    ([], "--config FILE is required"),
    (["--config", "missing.yaml"], "config file not found"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_fails_before_ray(argv, needle, capsys, tmp_path, monkeypatch, sst2):
    import ray

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    monkeypatch.setenv("LORA_STUDY_DATA", str(sst2))
    if "--config" in argv and "missing.yaml" not in argv:
        argv = [*argv, "--storage", str(tmp_path)]
    assert needle in _err(capsys, argv)
    assert not ray.is_initialized()


def test_existing_name_without_resume_is_refused(tiny_study, capsys):
    name, home = tiny_study
    err = _err(capsys, ["--config", QUICK, "--name", name, "--storage", str(home)])
    assert "already exists" in err and "--resume" in err


def test_tiny_study_summary(tiny_study):
    name, home = tiny_study
    summary = json.loads((home / name / "summary.json").read_text())
    t = summary["trials"]
    assert t["total"] == 6 and t["completed"] + t["pruned"] == 6 and t["failed"] == t["unfinished"] == 0
    assert summary["best"]["checkpoint"] and Path(summary["best"]["checkpoint"]).is_dir()


def test_real_study_end_to_end(tmp_path, sst2_small):
    """MiniLM on 600 SST-2 sentences, 6 trials (2 concurrent): OptunaSearch + ASHA + MLflow."""
    import mlflow
    import optuna
    from mlflow import MlflowClient

    from study.searcher import load_optuna_study

    home = tmp_path / "studies"
    args = tiny_study_args("e2e", home, "embedded-minilm", sst2_small, num_samples=6)
    proc = run_study(args + ["--set", "data.max_length=48"], home)
    assert "best adapter registered as models:/lora-study-e2e/1" in proc.stdout
    summary = json.loads((home / "e2e" / "summary.json").read_text())
    rows = {r["trial_id"]: r for r in summary["table"]}
    pruned = {t for t, r in rows.items() if r["state"] == "pruned"}
    assert len(rows) == 6 and len(pruned) >= 1, summary["trials"]

    # Optuna saw the ASHA-stopped trials as PRUNED (not COMPLETE at low fidelity)
    study = load_optuna_study(home / "e2e")
    states = {t.user_attrs.get("ray_trial_id"): t.state for t in study.trials}
    assert {t for t, s in states.items() if s == optuna.trial.TrialState.PRUNED} == pruned
    assert all(states[t] == optuna.trial.TrialState.COMPLETE for t in rows if t not in pruned)

    # exactly one MLflow child run per trial, none left RUNNING, step = samples_seen
    record = json.loads((home / "e2e" / "study.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id],
                              f"tags.`mlflow.parentRunId` = '{record['parent_run_id']}'")
    by_trial = {}
    for r in runs:
        by_trial.setdefault(r.data.tags["ray_trial_id"], []).append(r)
    assert set(by_trial) == set(rows) and all(len(v) == 1 for v in by_trial.values())
    assert all(v[0].info.status in ("FINISHED", "KILLED") for v in by_trial.values())
    assert {t for t, v in by_trial.items() if v[0].data.tags["lora_study.state"] == "pruned"} == pruned
    from study.report import trial_rows

    for row in trial_rows(str(home / "e2e")):
        hist = client.get_metric_history(by_trial[row["trial_id"]][0].info.run_id, "accuracy")
        assert [m.step for m in hist] == [h["samples_seen"] for h in row["history"]]
    assert client.get_run(record["parent_run_id"]).info.status == "FINISHED"

    # the registered best adapter (mean pooling): stock PEFT refuses it (issue #16), with the
    # model card's use_mean_pooling it loads and predicts
    mlflow.set_tracking_uri(record["tracking_uri"])
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/lora-study-e2e/1", dst_path=str(tmp_path / "dl")))
    adapter = next(local.rglob("adapter_config.json")).parent
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainables.model import resolve_model_name
    from trainables.pooling import use_mean_pooling

    with pytest.raises(RuntimeError, match="size mismatch for base_model.model.bert.pooler"):
        PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(resolve_model_name("embedded-minilm"), num_labels=2), str(adapter))
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model_name("embedded-minilm"), num_labels=2)
    model = PeftModel.from_pretrained(use_mean_pooling(base), str(adapter)).eval()
    tok = AutoTokenizer.from_pretrained(str(adapter))
    logits = model(**tok(["a gorgeous , witty film", "dull and lifeless"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2)
    pyfunc = mlflow.pyfunc.load_model("models:/lora-study-e2e/1")
    out = pyfunc.predict(__import__("pandas").DataFrame({"text": ["a gorgeous , witty film"]}))
    assert list(out.columns) == ["label", "confidence"] and out["label"][0] in ("negative", "positive")
