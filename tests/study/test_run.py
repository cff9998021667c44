"""``python -m study.run``: errors before Ray, and a real end-to-end study on the embedded MiniLM."""

import json
import time
from pathlib import Path

import pytest

from study.run import main
from tests.conftest import ROOT, run_study, tiny_study_args
from tests.study.drivers import Listener, free_port

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


# --------------------------------------------------------------------------- hostile and broken input


def _data_dir(root: Path, name: str, train: str, dev: str = "sentence\tlabel\ngood film\t1\nbad film\t0\n", ext: str = "tsv") -> str:
    d = root / name
    d.mkdir()
    (d / f"train.{ext}").write_text(train)
    (d / f"dev.{ext}").write_text(dev)
    return str(d)


def _rows(n: int, text=lambda i: f"sentence {i}", label=lambda i: str(i % 2)) -> str:
    return "sentence\tlabel\n" + "".join(f"{text(i)}\t{label(i)}\n" for i in range(n))


def _plant_study(root: Path, name: str, **record) -> Path:
    """A study directory holding only a study.json (what --resume reads before anything else)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "study.json").write_text(json.dumps({"name": name, "config": {}, "storage": str(root), **record}))
    return d


def _hostile_rows(ctx) -> list[tuple[str, list[str], str]]:
    """(id, argv, what the one-line error must say): every hostile or broken input the runner must refuse."""
    t, root = ctx.tmp, str(ctx.tmp)
    new = ["--config", QUICK, "--storage", root]
    _plant_study(t, "planted")
    (t.parent / "elsewhere").mkdir(exist_ok=True)
    _plant_study(t.parent / "elsewhere", "evil")
    _plant_study(t, "foreign", tracking_uri=ctx.creds_listener.uri)
    (t / "data").mkdir()
    (t / "models").mkdir()
    nan_texts = "sentence,label\ngood,1\n,0\nNaN,1\nfine,0\n"  # an empty cell; "NaN" is a word
    csv_dev = "sentence,label\ngood film,1\nbad film,0\n"
    dup = "sentence\tlabel\tlabel\na\t1\t0\nb\t0\t1\n"
    return [
        ("resume ../ name", ["--name", "../elsewhere/evil", "--resume", "--storage", root], "study name '../elsewhere/evil'"),
        ("300-char name", [*new, "--name", "n" * 300], "is 300 characters long"),
        ("all texts empty", [*new, "--set", f"data.path={_data_dir(t, 'empty', _rows(6, text=lambda i: ' '))}"],
         "column 'sentence' has 6 empty or missing texts of 6"),
        ("missing texts", [*new, "--set", f"data.path={_data_dir(t, 'nantext', nan_texts, csv_dev, 'csv')}"],
         "column 'sentence' has 1 empty or missing texts of 4 (row 2)"),
        ("NaN labels", [*new, "--set", f"data.path={_data_dir(t, 'nanlabel', _rows(6, label=lambda i: 'NaN' if i in (1, 4) else str(i % 2)))}"],
         "column 'label' has 2 missing labels of 6 (rows 2, 5)"),
        ("empty labels", [*new, "--set", f"data.path={_data_dir(t, 'nolabel', _rows(4, label=lambda i: '' if i == 3 else '1'))}"],
         "column 'label' has 1 missing labels of 4"),
        ("duplicate columns", [*new, "--set", f"data.path={_data_dir(t, 'dup', dup)}"],
         "duplicate column names ['label']"),
        ("mistyped data path", [*new, "--set", "data.path=data/sst2x"], "data.path='data/sst2x': cannot load: no such file or directory"),
        ("mistyped model path", [*new, "--set", "model.name=models/minilmx"], "model.name='models/minilmx': cannot load: no such file or directory"),
        ("empty search block", ["--config", str(ctx.empty_search), "--storage", root], "search: Value error, the block is empty"),
        ("num-samples on resume", ["--name", "planted", "--resume", "--storage", root, "--num-samples", "20"],
         "--num-samples 20: a resumed study keeps its stored study.num_samples=12"),
        ("study already running", ["--name", "planted", "--resume", "--storage", root], "study 'planted' is already running (pid"),
        ("MLflow unreachable", [*new, "--tracking-uri", f"http://127.0.0.1:{free_port()}"], "is unreachable"),
        ("MLflow 401", [*new, "--tracking-uri", ctx.listener_401.uri], "answered 401 Unauthorized"),
        ("credentials to a study's URI", ["--name", "foreign", "--resume", "--storage", root],
         f"records MLflow at {ctx.creds_listener.uri} but you did not name it"),
    ]


HOSTILE_IDS = ["resume ../ name", "300-char name", "all texts empty", "missing texts", "NaN labels", "empty labels",
               "duplicate columns", "mistyped data path", "mistyped model path", "empty search block",
               "num-samples on resume", "study already running", "MLflow unreachable", "MLflow 401",
               "credentials to a study's URI"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    import types

    ctx = types.SimpleNamespace(tmp=tmp_path_factory.mktemp("hostile") / "studies", listener_401=Listener(401),
                                creds_listener=Listener(200))
    ctx.tmp.mkdir()
    ctx.empty_search = ctx.tmp.parent / "empty-search.yaml"
    ctx.empty_search.write_text(Path(QUICK).read_text().split("search:")[0] + "search:\nstudy:\n  num_samples: 2\n")
    ctx.rows = {row[0]: row for row in _hostile_rows(ctx)}
    assert sorted(ctx.rows) == sorted(HOSTILE_IDS)
    yield ctx
    ctx.listener_401.close()
    ctx.creds_listener.close()


@pytest.mark.parametrize("row", HOSTILE_IDS)
def test_hostile_and_broken_input_is_one_line_before_ray(row, hostile, capsys, monkeypatch, sst2):
    """Every row fails before Ray starts, fast, with one ``error:`` line saying what."""
    import ray

    _, argv, needle = hostile.rows[row]
    monkeypatch.chdir(hostile.tmp)  # relative paths (data/…, models/…) resolve here, where data/ and models/ exist
    monkeypatch.setenv("LORA_STUDY_HOME", str(hostile.tmp))
    monkeypatch.setenv("LORA_STUDY_DATA", str(sst2))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    if row == "credentials to a study's URI":
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    held = None
    if row == "study already running":  # another driver holds the study's lock (README: .NAME.lock beside the study)
        import fcntl

        held = open(hostile.tmp / ".planted.lock", "a+")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 1 on elsewhere")
        held.flush()
    t0 = time.monotonic()
    try:
        err = _err(capsys, argv)
    finally:
        if held is not None:
            held.close()
    elapsed = time.monotonic() - t0
    assert needle in err, err
    assert not ray.is_initialized()
    if row.startswith("mistyped"):
        assert elapsed < 10, f"{row}: {elapsed:.1f}s (a hub id is retried for ~30 s offline)"
    if row == "credentials to a study's URI":
        assert hostile.creds_listener.requests == [], "credentials went to the URI a study.json named"


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

    from study.search.journal import load_optuna_study

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
    from study.tracking.summary import trial_rows

    for row in trial_rows(str(home / "e2e")):
        hist = client.get_metric_history(by_trial[row["trial_id"]][0].info.run_id, "accuracy")
        assert [m.step for m in hist] == [h["samples_seen"] for h in row["history"]]
    assert client.get_run(record["parent_run_id"]).info.status == "FINISHED"

    # the registered best adapter (mean pooling): stock PEFT refuses it, with the
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


def test_undelivered_mlflow_operations_are_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    """MLflow down at the end is not a success: with operations "NOT delivered" and nothing
    registered, the study still prints its summary, then one line saying what MLflow lacks and what to run, and exits 3.
    (Tuner and MLflow replaced by stand-ins: this is the runner's end-of-study decision.)"""
    import study.deploy.registry
    import study.run as run
    import study.tracking.queue
    import study.tracking.runs
    import study.tracking.summary
    from study.config import StudyConfig
    from study.storage.studies import study_paths

    uri = "http://127.0.0.1:9"
    prep = run.Prepared(StudyConfig(), study_paths("down", str(tmp_path)), False, 10,
                        {"name": "down", "tracking_uri": uri, "config": {}})

    class Tuner:
        def fit(self):
            study.tracking.queue.record_undelivered("parent-1", 20)  # what MLflowTracker.on_experiment_end records
            return None

    def no_registry(*a, **k):
        raise ConnectionError("Max retries exceeded")

    summary = {"name": "down", "metric": "accuracy", "wall_s": 1.0, "compute_s": 1.0, "table": [],
               "trials": {"completed": 2, "pruned": 0, "failed": 0, "unfinished": 0, "total": 2},
               "best": {"trial_id": "t1", "accuracy": 0.9, "checkpoint": "/x", "params": {}}}
    monkeypatch.setattr(study.tracking.runs, "start_parent_run", lambda *a, **k: "parent-1")
    monkeypatch.setattr(study.tracking.runs, "finish_parent_run", lambda *a, **k: False)
    monkeypatch.setattr(study.tracking.summary, "summarize", lambda *a, **k: dict(summary))
    monkeypatch.setattr(study.tracking.summary, "print_summary", lambda s: print("== summary =="))
    monkeypatch.setattr(study.deploy.registry, "log_best_adapter", no_registry)
    monkeypatch.setattr(run, "_init_ray", lambda address: False)
    monkeypatch.setattr(run, "_tuner", lambda prep, parent: (Tuner(), None))
    assert run.execute(prep, None) == run.EXIT_TRACKING == 3
    out, err = capsys.readouterr()
    assert "== summary ==" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: MLflow at {uri}: 20 operations (trial runs, metrics) not delivered; "
                           "the best adapter not registered; parent run parent-1 not closed"), line
    assert f"python -m study.run --name down --resume --storage {tmp_path} --tracking-uri {uri}" in line
    assert json.loads((tmp_path / "down" / "summary.json").read_text())["registered_model"] is None
