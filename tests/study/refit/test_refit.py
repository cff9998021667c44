"""The refit: the search's pick trained again on all the data, as real trials, shipped only when it
beats the pick on the validation split; and the test set, scored once on the shipped model.

The rule (``study.refit.plan``) and the printing are checked on tables; bad input through
``python -m study.run`` in-process (one line, before Ray); the rest on one tiny study run the way
a user runs it: a search with a test file and no refit, then ``--resume --refit``, then a plain
``--resume`` of the finished study, each a real ``python -m study.run`` process.
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from study.config import RefitSection, StudyConfig, load_study_config
from study.refit.plan import choose, make_plan, verdict
from study.run import main
from tests.conftest import ROOT, run_study, tiny_study_args
from tests.study.drivers import mlflow_runs

QUICK = str(ROOT / "study" / "configs" / "sst2-quick.yaml")
PICK = {"trial_id": "abcd1234", "config": {"train.lr": 1e-3, "train.epochs": 1.0, "data.size": 2000, "lora.r": 8,
                                           "train.eval_at_samples": [500, 1000], "train.eval_every_samples": None}}

# --------------------------------------------------------------------------- the rule, on tables

PLANS = [  # (id, refit section, train split, expected plan fields, expected config fields)
    ("defaults: all data, the pick's epochs, three rates checked at 10%", {}, 60_000,
     {"n_train": 60_000, "samples_total": 60_000, "check_at": 6_000, "factors": (1.0, 0.5, 0.25)},
     {"data.size": None, "train.epochs": 1.0, "train.eval_every_samples": 10_000, "train.eval_at_samples": [6_000]}),
    ("3 epochs of 8,000, check at 20%", {"epochs": 3, "data_size": 8000, "check_fraction": 0.2}, 60_000,
     {"n_train": 8_000, "samples_total": 24_000, "check_at": 4_800},
     {"data.size": 8000, "train.epochs": 3.0, "train.eval_every_samples": 4_000}),
    ("one factor: nothing to check", {"lr_factors": [1]}, 1_000, {"check_at": None, "factors": (1.0,)},
     {"train.eval_at_samples": None}),
    ("factors sorted, largest first; a fraction of the split", {"lr_factors": [0.25, 1, 0.5], "data_size": 0.5, "evaluations": 4}, 1_000,
     {"factors": (1.0, 0.5, 0.25), "n_train": 500}, {"data.size": 0.5, "train.eval_every_samples": 125}),
]


@pytest.mark.parametrize("section,n_split,want,want_cfg", [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(section, n_split, want, want_cfg):
    plan = make_plan(PICK, RefitSection(**section), n_split, threads=2)
    assert {k: getattr(plan, k) for k in want} == want
    assert {k: plan.config[k] for k in want_cfg} == want_cfg
    assert plan.config["train.threads"] == 2 and plan.config["lora.r"] == 8 and plan.pick_id == "abcd1234"
    assert plan.candidate(0.25)["train.lr"] == pytest.approx(2.5e-4) and plan.config["train.lr"] == 1e-3


CHOICES = [  # (id, scores, mode, chosen factor)
    ("the best score", [(1.0, 0.80), (0.5, 0.86), (0.25, 0.84)], "max", 0.5),
    ("a tie goes to the larger rate", [(1.0, 0.85), (0.5, 0.85), (0.25, 0.80)], "max", 1.0),
    ("loss: lower is better", [(1.0, 0.40), (0.5, 0.35), (0.25, 0.38)], "min", 0.5),
    ("a candidate without a score is skipped", [(1.0, None), (0.5, 0.70), (0.25, float("nan"))], "max", 0.5),
]


@pytest.mark.parametrize("scores,mode,factor", [c[1:] for c in CHOICES], ids=[c[0] for c in CHOICES])
def test_choose(scores, mode, factor):
    assert choose(scores, mode) == factor


def test_choose_without_any_score_fails():
    with pytest.raises(ValueError, match="no learning-rate candidate"):
        choose([(1.0, None)], "max")


VERDICTS = [  # (id, pick, refit, metric, mode, replaces, words in the reason)
    ("better accuracy", 0.85, 0.88, "accuracy", "max", True, "beats the pick on validation accuracy: 88.00% vs 85.00%"),
    ("worse accuracy", 0.85, 0.80, "accuracy", "max", False, "does not beat the pick on validation accuracy (80.00% vs 85.00%); the pick stays"),
    ("a tie keeps the pick", 0.85, 0.85, "accuracy", "max", False, "does not beat"),
    ("lower loss is better", 0.40, 0.35, "eval_loss", "min", True, "0.3500 vs 0.4000"),
    ("no refit score", 0.85, None, "accuracy", "max", False, "reported no validation accuracy"),
]


@pytest.mark.parametrize("pick,refit,metric,mode,replaces,reason", [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS])
def test_verdict(pick, refit, metric, mode, replaces, reason):
    v = verdict(pick, refit, metric, mode, "validation")
    assert v["replaces"] is replaces and reason in v["reason"]


BAD_CONFIG = [  # (id, --set, what the error names)
    ("no factors", "refit.lr_factors=[]", "refit.lr_factors"),
    ("a zero factor", "refit.lr_factors=[1,0]", "refit.lr_factors"),
    ("a repeated factor", "refit.lr_factors=[1,1]", "refit.lr_factors"),
    ("check at the end", "refit.check_fraction=1", "refit.check_fraction"),
    ("negative data size", "refit.data_size=-5", "refit.data_size"),
    ("unknown key", "refit.epoch=3", "refit.epoch: unknown key"),
    ("searched test path", "search.data.test_path.choice=[a.tsv,b.tsv]", "the test set is never searched"),
]


@pytest.mark.parametrize("override,needle", [b[1:] for b in BAD_CONFIG], ids=[b[0] for b in BAD_CONFIG])
def test_bad_refit_config_names_the_key(override, needle):
    from trainables.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_study_config(QUICK, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_shipped_configs_refit_the_full_studies_only():
    """On in the full configs, off in the quick one (which CI runs with an output budget)."""
    for name, enabled in (("sst2.yaml", True), ("sst2-8k.yaml", True), ("sst2-datasize.yaml", True), ("sst2-quick.yaml", False)):
        assert load_study_config(ROOT / "study" / "configs" / name).refit.enabled is enabled, name
    assert load_study_config(ROOT / "study" / "configs" / "sst2-8k.yaml").refit.epochs == 3


# --------------------------------------------------------------------------- what the console prints

def _summary(refit_acc: float, replaces: bool, test: dict | None) -> dict:
    refit = {"of": "abcd1234", "state": "completed", "trial_id": "f00d_00000", "lr": 2.5e-4, "lr_factor": 0.25, "epochs": 3.0,
             "data_size": None, "plan": {"n_train": 63_349}, "split": "validation", "accuracy": refit_acc, "dev_accuracy": 0.886,
             "samples_seen": 190_047, "time_total_s": 1800.0,
             "check": {"at": 19_005, "candidates": [{"factor": f, "time_total_s": 60.0} for f in (1, 0.5, 0.25)], "factor": 0.25},
             "verdict": verdict(0.8748, refit_acc, "accuracy", "max", "validation")}
    if replaces:
        refit["registered_model"] = {"uri": "models:/lora-study-x/2"}
    return {"metric": "accuracy", "refit": refit, "test": test,
            "best": {"trial_id": "abcd1234", "accuracy": 0.8748, "dev_accuracy": 0.8486, "samples_seen": 8000, "params": {"train.lr": 1e-3}}}


def test_console_shows_pick_and_refit_side_by_side(capsys):
    from study.tracking.summary import print_refit

    test = {"path": "/data/test.tsv", "n": 1821, "accuracy": 0.8891, "f1": 0.8890, "model": "refit", "trial_id": "f00d_00000"}
    print_refit(_summary(0.8910, True, test))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("refit of abcd1234: 63,349 sentences (all) × 3 epochs, lr 2.50e-04 (the pick's × 0.25), "
                               "chosen among 3 rates on validation at 19,005 samples; 33 min 0 s of trial time"), lines[0]
    assert lines[1].split() == ["validation", "dev", "samples", "lr"]
    assert lines[2].split() == ["pick", "87.48%", "84.86%", "8,000", "0.001"]
    assert lines[3].split() == ["refit", "89.10%", "88.60%", "190,047", "0.00025"]
    assert lines[4] == "the refit beats the pick on validation accuracy: 89.10% vs 87.48%; registered as models:/lora-study-x/2"
    assert lines[5].startswith("test: 88.91% accuracy, 88.90% f1 on 1,821 sentences (/data/test.tsv), the refit (f00d_00000)")


def test_console_says_no_test_set_and_why_the_pick_stays(capsys):
    from study.tracking.summary import print_refit

    print_refit(_summary(0.8600, False, {"path": None, "note": "no test set"}))
    out = capsys.readouterr().out
    assert "the refit does not beat the pick on validation accuracy (86.00% vs 87.48%); the pick stays the best model\n" in out
    assert "registered as" not in out and out.rstrip().endswith("test: no test set")


REGISTERED = [  # (pick's alias, refit's registration, what the line says about @best)
    ("best", None, ", alias @best (models:/lora-study-x@best)"),
    (None, {"version": "2", "alias": "best"}, "; @best is the refit, version 2 (below)"),
    (None, None, "; models:/lora-study-x@best stays on a better version registered before"),
]


@pytest.mark.parametrize("pick_alias,refit_reg,tail", REGISTERED, ids=["pick", "refit", "earlier"])
def test_the_registry_line_says_which_version_best_names(pick_alias, refit_reg, tail):
    """A refit registered after the pick holds @best: the line says so rather than "a version before"."""
    from study.tracking.summary import registered_line

    summary = {"registered_model": {"name": "lora-study-x", "uri": "models:/lora-study-x/1", "alias": pick_alias},
               "refit": {"registered_model": refit_reg} if refit_reg else None}
    assert registered_line(summary) == f"best adapter registered as models:/lora-study-x/1{tail}"


# --------------------------------------------------------------------------- bad input: one line, before Ray


def _err(capsys, argv):
    import ray

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert not ray.is_initialized()
    return err


def test_a_test_file_with_other_labels_is_refused(tmp_path, capsys, monkeypatch, sst2_small):
    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    (tmp_path / "test.tsv").write_text("sentence\tlabel\ngood\t1\nmeh\t2\n")
    err = _err(capsys, ["--config", QUICK, "--storage", str(tmp_path), "--set", f"data.path={sst2_small}",
                        "--set", f"data.test_path={tmp_path / 'test.tsv'}"])
    assert f"data.test_path={tmp_path / 'test.tsv'}: labels ['2'] are not training labels (the train split has ['0', '1'])" in err


def test_a_refit_that_cannot_fit_in_memory_is_refused(tmp_path, capsys, monkeypatch, sst2_small, tiny_bert):
    import study.refit.runner

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    monkeypatch.setattr(study.refit.runner, "machine_memory", lambda: 2**29)  # 0.5 GiB: less than the runtime alone
    err = _err(capsys, ["--config", QUICK, "--storage", str(tmp_path), "--refit", "--set", f"data.path={sst2_small}",
                        "--set", f"model.name={tiny_bert}", "--set", "search.data.size.choice=[300,600]"])
    assert err.startswith("error: refit: one trial of it needs about ") and "more than the 0.5 GiB this machine has" in err
    assert "--set refit.data_size=N" in err and not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_refit_of_a_study_without_a_finished_trial_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    d = tmp_path / "empty"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"name": "empty", "config": load_study_config(QUICK).model_dump(mode="json"),
                                           "storage": str(tmp_path)}))
    err = _err(capsys, ["--name", "empty", "--resume", "--refit", "--storage", str(tmp_path)])
    assert "--refit: study 'empty' has no finished trial to refit; finish its search first with " \
           "`python -m study.run --name empty --resume`" in err


# --------------------------------------------------------------------------- a real study: search, then --resume --refit

FACTORS = [1, 0.5]


@pytest.fixture(scope="module")
def refitted(tmp_path_factory, tiny_bert, sst2_small, sst2):
    """A 2-trial tiny study with a test file and no refit; then ``--resume --refit``; then a plain
    ``--resume`` of the finished study. Returns the home, the three runs' stdout and summaries."""
    home = tmp_path_factory.mktemp("refit-studies")
    test = home / "test.tsv"
    lines = (sst2 / "dev.tsv").read_text().splitlines()
    test.write_text("\n".join([lines[0], *lines[201:301]]) + "\n")  # dev sentences the study's dev split (the first 200) lacks
    extra = ["--set", f"data.test_path={test}", "--set", f"refit.lr_factors={FACTORS}", "--set", "refit.evaluations=3"]
    runs = []
    for args in (tiny_study_args("rf", home, tiny_bert, sst2_small, num_samples=2, extra=extra),
                 ["--name", "rf", "--resume", "--refit", "--storage", str(home)],
                 ["--name", "rf", "--resume", "--storage", str(home)]):
        proc = run_study(args, home)
        runs.append(SimpleNamespace(out=proc.stdout, summary=json.loads((home / "rf" / "summary.json").read_text())))
    return SimpleNamespace(home=home, test=test, runs=runs, summary=runs[1].summary)


def test_resume_refit_adds_one_refit_to_a_finished_study(refitted):
    before, after = refitted.runs[0].summary, refitted.summary
    assert "refit" not in before and before["shipped"]["model"] == "pick"
    refit = after["refit"]
    assert refit["state"] == "completed" and refit["of"] == after["best"]["trial_id"] == before["best"]["trial_id"]
    assert refit["data_size"] is None and refit["plan"]["n_train"] == 600 and refit["samples_seen"] <= refit["plan"]["samples_total"] == 600
    assert [c["factor"] for c in refit["check"]["candidates"]] == FACTORS
    assert refit["lr"] == pytest.approx(after["best"]["params"]["train.lr"] * refit["lr_factor"])
    record = json.loads((refitted.home / "rf" / "study.json").read_text())
    assert record["config"]["refit"]["enabled"] is True  # a crash during the refit resumes it
    assert (refitted.home / "rf" / "refit" / "tuner.pkl").is_file() and (refitted.home / "rf" / "refit-check" / "tuner.pkl").is_file()


def test_the_refit_is_a_trial_with_its_own_mlflow_run(refitted):
    from study.tracking.runs import ROLE_TAG, STATE_TAG, TRIAL_ID_TAG

    s, refit = refitted.summary, refitted.summary["refit"]
    record = json.loads((refitted.home / "rf" / "study.json").read_text())
    client, parent, children = mlflow_runs(record["tracking_uri"], record["experiment"])
    refits = {r.data.tags[TRIAL_ID_TAG]: r for r in children if r.data.tags.get(ROLE_TAG) == "refit"}
    assert len(children) - len(refits) == 2 and len(refits) == len(FACTORS) + 1
    pick = s["best"]["trial_id"]
    run = refits[refit["trial_id"]]
    assert run.info.run_name.startswith(f"refit of {pick} · {refit['trial_id']} lr=") and run.info.status == "FINISHED"
    assert run.data.tags["lora_study.refit_of"] == pick and run.data.tags[STATE_TAG] == "completed"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert [m.step for m in history][-1] == 600 and all(m.step > refit["check"]["at"] for m in history)
    for c in refit["check"]["candidates"]:
        r = refits[c["trial_id"]]
        assert r.info.run_name.startswith("checked at ") and f" · lr check of {pick} · {c['trial_id']} lr=" in r.info.run_name  # the state first
        assert r.data.tags[STATE_TAG] == "checked" and {d.dataset.name.rsplit("-", 1)[-1] for d in r.inputs.dataset_inputs} >= {"train"}
        assert [m.step for m in client.get_metric_history(r.info.run_id, "accuracy")] == [c["samples_seen"]]
    assert f"refit of {pick}: lr=" in refitted.runs[1].out and "checked" in refitted.runs[1].out


def test_registered_only_when_it_beats_the_pick_on_validation(refitted):
    from mlflow import MlflowClient

    s, refit = refitted.summary, refitted.summary["refit"]
    better = refit["accuracy"] > s["best"]["accuracy"]
    assert refit["verdict"]["replaces"] is better and s["shipped"]["model"] == ("refit" if better else "pick")
    client = MlflowClient(s["tracking_uri"])
    versions = sorted(int(v.version) for v in client.search_model_versions("name='lora-study-rf'"))
    assert versions == ([1, 2] if better else [1])
    held = client.get_model_version_by_alias("lora-study-rf", "best")
    assert str(held.version) == s["shipped"]["registered_model"]["version"] and held.tags["trial_id"] == s["shipped"]["trial_id"]
    assert bool(refit.get("registered_model")) is better


def test_the_check_and_the_verdict_read_the_validation_split_only(refitted):
    """Recomputed from the scores the summary holds: the rate chosen at the check and the verdict;
    nothing the test set said enters either."""
    s, refit = refitted.summary, refitted.summary["refit"]
    check = refit["check"]
    assert check["factor"] == choose([(c["factor"], c["score"]) for c in check["candidates"]], "max") == refit["lr_factor"]
    assert refit["verdict"] == verdict(s["best"]["accuracy"], refit["accuracy"], "accuracy", "max", "dev")
    trial_keys = {k for r in s["table"] for k in (*r["best"], *r["last"])}
    assert not any("test" in k for k in trial_keys)


def test_the_test_set_is_scored_once_on_the_shipped_model(refitted):
    from mlflow import MlflowClient

    s, test = refitted.summary, refitted.summary["test"]
    assert test["path"] == str(refitted.test) and test["n"] == 100 and 0 <= test["accuracy"] <= 1
    assert (test["model"], test["trial_id"], test["checkpoint"]) == (s["shipped"]["model"], s["shipped"]["trial_id"], s["shipped"]["checkpoint"])
    client = MlflowClient(s["tracking_uri"])
    parent = client.get_run(s["parent_run_id"])
    assert parent.data.metrics["summary.test_accuracy"] == test["accuracy"] and parent.data.tags["lora_study.shipped"] == test["model"]
    version = client.get_model_version("lora-study-rf", s["shipped"]["registered_model"]["version"])
    assert float(version.tags["test_accuracy"]) == test["accuracy"] and version.tags["test_path"] == test["path"]
    log = (refitted.home / "rf" / "study.log").read_text()
    shipped_checkpoints = {r.summary["shipped"]["checkpoint"] for r in refitted.runs}
    assert log.count("scored the test set") == len(shipped_checkpoints)  # the pick once, the refit once if it won; never again


def test_resuming_a_finished_refitted_study_changes_nothing(refitted):
    from mlflow import MlflowClient

    again, before = refitted.runs[2].summary, refitted.summary
    for key in ("best", "refit", "shipped", "test", "registered_model"):
        assert again[key] == before[key], key
    versions = MlflowClient(before["tracking_uri"]).search_model_versions("name='lora-study-rf'")
    assert len(versions) == (2 if before["refit"]["verdict"]["replaces"] else 1)


def test_console_and_report_show_pick_and_refit_side_by_side(refitted):
    from dashboards.report import build_report

    s, out = refitted.summary, refitted.runs[1].out
    assert f"\nrefit of {s['best']['trial_id']}: 600 sentences (all) × 1 epoch" in out
    assert any(ln.split()[0] == "pick" for ln in out.splitlines() if ln.startswith("  ")) and "\n  refit " in out
    assert refitted.runs[0].out.count("test: ") == 1 and "refit of" not in refitted.runs[0].out
    page = build_report("rf", str(refitted.home), out=refitted.home / "report", mlflow=False, predict=False).html_path.read_text()
    assert '<section id="refit">' in page and 'id="refit-table"' in page and 'id="lr-check"' in page
    assert s["refit"]["verdict"]["reason"].split(";")[0] in page and "Test set: " in page


# --------------------------------------------------------------------------- both registration branches, in-process


@pytest.mark.parametrize("delta,registered", [(+0.1, True), (-0.1, False)], ids=["better: registered", "worse: the pick stays"])
def test_registration_follows_the_verdict(refitted, tmp_path, monkeypatch, delta, registered):
    """The runner's own steps after a refit (``_refit``, ``_ship``) with the refit's score moved
    above or below the pick's: a better refit becomes a registered version holding ``best``, with
    tags naming the trial it refits; a worse one is not registered and the pick ships."""
    import uuid

    from mlflow import MlflowClient

    import study.refit.runner
    import study.run as run
    from study.refit.ship import refit_and_register, ship
    from study.storage.studies import StudyPaths

    s = refitted.summary
    shutil.copytree(refitted.home / "rf", tmp_path / "rf")
    name = f"branch-{uuid.uuid4().hex[:8]}"
    cfg = StudyConfig.from_record(json.loads((tmp_path / "rf" / "study.json").read_text()), "study.json")
    cfg = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"registered_model": name})})
    prep = run.Prepared(cfg, StudyPaths("rf", tmp_path / "rf", str(tmp_path)), True, 600, {"tracking_uri": s["tracking_uri"]})
    moved = {**s["refit"], "accuracy": s["best"]["accuracy"] + delta}
    moved.pop("verdict"), moved.pop("registered_model", None)
    monkeypatch.setattr(study.refit.runner, "run_refit", lambda *a, **k: dict(moved))
    summary = {k: v for k, v in s.items() if k not in ("refit", "shipped", "test")}
    assert refit_and_register(cfg, prep.paths, prep.tracking_uri, s["parent_run_id"], summary, {}, 600, tmp_path / "log") is None
    ship(cfg, prep.tracking_uri, summary, {})
    assert summary["refit"]["verdict"]["replaces"] is registered and summary["shipped"]["model"] == ("refit" if registered else "pick")
    client = MlflowClient(s["tracking_uri"])
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == int(registered)
    if registered:
        v = client.get_model_version_by_alias(name, "best")
        assert v.tags["refit_of"] == s["best"]["trial_id"] and v.tags["trial_id"] == s["refit"]["trial_id"]
        assert float(v.tags["refit.lr_factor"]) == s["refit"]["lr_factor"] and v.tags["param.data.size"] == "all"
        assert float(v.tags["test_accuracy"]) == summary["test"]["accuracy"] and summary["test"]["model"] == "refit"
    else:
        assert "the pick stays the best model" in summary["refit"]["verdict"]["reason"] and summary["test"]["model"] == "pick"


# --------------------------------------------------------------------------- a crash during the refit


@pytest.mark.slow
def test_a_crash_during_the_refit_resumes_it(tmp_path, tiny_bert, sst2_small):
    """The driver SIGKILLed while the refit trains (after its first checkpoint): ``--resume``
    restores the finished search as it is, the finished check, and the refit from its newest
    checkpoint; one MLflow run per trial, none left running, the pick registered once."""
    from study.tracking.runs import TRIAL_ID_TAG
    from tests.study.drivers import crash_driver, start_study, trial_results, wait_for

    home = tmp_path / "studies"
    home.mkdir()
    log = tmp_path / "driver.log"
    args = tiny_study_args("crash", home, tiny_bert, sst2_small, num_samples=2,
                           extra=["--refit", "--set", f"refit.lr_factors={FACTORS}", "--set", "refit.epochs=6",
                                  "--set", "refit.evaluations=12"])
    proc = start_study(args, home, log)
    refit_dir = home / "crash" / "refit"
    wait_for(lambda: any(refit_dir.glob("trial_*/checkpoint_*")) and any(trial_results(refit_dir).values()), proc, log,
             timeout=900, what="the refit's first checkpoint and result", poll=0.1)
    crash_driver(proc)
    rows = next(iter(trial_results(refit_dir).values()), [])
    assert rows and rows[-1]["samples_seen"] < 3600, "the refit finished before the crash: nothing to resume"
    run_study(["--name", "crash", "--resume", "--storage", str(home)], home)

    s = json.loads((home / "crash" / "summary.json").read_text())
    assert s["refit"]["state"] == "completed" and s["refit"]["last"]["samples_seen"] == 3600
    results = trial_results(refit_dir)[s["refit"]["trial_id"]]
    seen = sorted({r["samples_seen"] for r in results})
    assert seen[-1] == 3600 and max(b - a for a, b in zip(seen, seen[1:])) <= 300 + 31, seen  # no evaluation lost
    record = json.loads((home / "crash" / "study.json").read_text())
    _, _, children = mlflow_runs(record["tracking_uri"], record["experiment"])
    per_trial = [r.data.tags[TRIAL_ID_TAG] for r in children]
    assert len(per_trial) == len(set(per_trial)) == 2 + len(FACTORS) + 1
    assert not [r.info.run_id for r in children if r.info.status == "RUNNING"]
    from mlflow import MlflowClient

    versions = MlflowClient(record["tracking_uri"]).search_model_versions("name='lora-study-crash'")
    assert len(versions) == 1 + int(s["refit"]["verdict"]["replaces"])
