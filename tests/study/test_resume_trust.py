"""``--resume`` unpickles only study state this user's driver wrote (``--trust`` overrides), says in
one line why it cannot resume, touches nothing in MLflow when it refuses, and writes the trials
to the tracking store the user names now.

Each test resumes a copy of the finished ``tiny_study`` (its own MLflow store beside it), in a
subprocess, as a user would.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_study, tiny_study_args
from tests.study.drivers import SLOW, crash_driver, has_checkpoint, kill_session, n_results, start_study, wait_for
from trainables import ConfigError


class Payload:
    """Unpickling this creates ``marker`` (stands for any code a planted pickle could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def copy_study(tiny_study, root: Path) -> tuple[str, Path]:
    """The finished tiny study and its MLflow store, copied under ``root``; (name, study dir)."""
    name, home = tiny_study
    shutil.copytree(home / name, root / name, ignore=shutil.ignore_patterns("report"))
    shutil.copy(home / "mlflow.db", root / "mlflow.db")
    record = json.loads((root / name / "study.json").read_text())
    (root / name / "study.json").write_text(json.dumps({**record, "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}))
    return name, root / name


def parent_status(study_dir: Path) -> str:
    from mlflow import MlflowClient

    record = json.loads((study_dir / "study.json").read_text())
    return MlflowClient(record["tracking_uri"]).get_run(record["parent_run_id"]).info.status


def resume(name: str, root: Path, *extra: str, env: dict | None = None):
    return run_study(["--name", name, "--resume", "--storage", str(root), *extra], root, timeout=600, check=False, env=env)


def one_error(proc) -> str:
    """The run's only output: one ``error:`` line, no traceback."""
    text = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2 and text.startswith("error: ") and "\n" not in text and "Traceback" not in text, \
        f"rc {proc.returncode}:\n{text[-3000:]}"
    return text


def test_a_planted_tuner_pkl_is_refused_before_anything_runs(tiny_study, tmp_path):
    """Before: the payload ran, a 27-line traceback followed, and the finished parent run was RUNNING again."""
    name, d = copy_study(tiny_study, tmp_path / "st")
    marker = tmp_path / "PWNED"
    (d / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    err = one_error(resume(name, tmp_path / "st"))
    assert f"{d / 'tuner.pkl'} has changed since your lora-study wrote it" in err and "--trust" in err, err
    assert not marker.exists(), "the planted pickle ran"
    assert parent_status(d) == "FINISHED"


def test_a_truncated_tuner_pkl_is_one_line_saying_what_to_do(tiny_study, tmp_path):
    """Before: a 24-line traceback (``pickle data was truncated``) and the parent run RUNNING again."""
    name, d = copy_study(tiny_study, tmp_path / "st")
    data = (d / "tuner.pkl").read_bytes()
    (d / "tuner.pkl").write_bytes(data[: len(data) // 2])
    err = one_error(resume(name, tmp_path / "st"))
    assert f"{d / 'tuner.pkl'} is unreadable (" in err and "new --name" in err and "dashboards.report" in err, err
    assert parent_status(d) == "FINISHED"


def test_trusting_a_pickle_that_does_not_load_still_leaves_mlflow_alone(tiny_study, tmp_path):
    """``--trust`` unpickles what the user vouched for; a restore that then fails is one line and
    the finished parent run stays FINISHED (Ray restores before MLflow is touched)."""
    name, d = copy_study(tiny_study, tmp_path / "st")
    marker = tmp_path / "PWNED"
    (d / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    err = one_error(resume(name, tmp_path / "st", "--trust"))
    assert err.startswith(f"error: Ray cannot restore study {name!r}"), err
    assert marker.exists()  # what --trust means, documented in docs/trust.md
    assert parent_status(d) == "FINISHED"


def test_a_study_from_another_user_needs_trust_once(tiny_study, tmp_path, monkeypatch):
    """Another user's key (or none): refused until ``--trust``; that resume signs the state, so the
    next one is checked like the user's own."""
    from study.refit.runner import STAGES
    from study.storage.resumable import check_state
    from study.storage.studies import study_paths

    name, d = copy_study(tiny_study, tmp_path / "st")
    other = {"XDG_CONFIG_HOME": str(tmp_path / "other-user")}
    err = one_error(resume(name, tmp_path / "st", env=other))
    assert f"{d / 'tuner.pkl'} was not written by your lora-study on this machine" in err, err
    proc = resume(name, tmp_path / "st", "--trust", env=other)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("XDG_CONFIG_HOME", other["XDG_CONFIG_HOME"])
    paths = study_paths(name, str(tmp_path / "st"))
    assert paths.experiment == str(d)
    check_state(paths, False, STAGES)  # the copy, signed by the resume that trusted it


def _trial_points(uri: str, experiment: str) -> dict[str, tuple[str, list[int]]]:
    """Trial id -> (run status, accuracy steps) of the trial runs in ``uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lora_study.role` = 'trial'") if exp else []
    return {r.data.tags["ray_trial_id"]: (r.info.status, sorted(m.step for m in client.get_metric_history(r.info.run_id, "accuracy")))
            for r in runs}


@pytest.mark.slow
def test_resume_with_a_new_tracking_uri_writes_the_trials_there(tmp_path, tiny_bert, sst2_small):
    """A study killed mid-way is copied and resumed with ``--tracking-uri NEW``: the trials continue
    in NEW (runs FINISHED with their new points) and the original store is left exactly as the
    kill left it (before: the pickled tracker sent every trial's metrics to the original store,
    and NEW got no trial runs)."""
    name, home, log = "two", tmp_path / "orig", tmp_path / "run.log"
    home.mkdir()
    args = tiny_study_args(name, home, tiny_bert, sst2_small, 2,
                           SLOW + ["--set", "asha.enabled=false", "--set", "search.data.size.choice=[600]"])
    proc = start_study(args, home, log)
    try:
        wait_for(lambda: n_results(home / name) >= 4 and has_checkpoint(home / name), proc, log, 600, "results", poll=0.1)
        crash_driver(proc)
    finally:
        kill_session(proc.pid)
    old_uri = json.loads((home / name / "study.json").read_text())["tracking_uri"]
    before = _trial_points(old_uri, name)
    copy = tmp_path / "copy"
    shutil.copytree(home / name, copy / name)
    new_uri = f"sqlite:///{tmp_path / 'new.db'}"
    out = resume(name, copy, "--tracking-uri", new_uri)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _trial_points(old_uri, name) == before, "the resumed study wrote into the original store"
    after = _trial_points(new_uri, name)
    trials = {row["trial_id"] for row in json.loads((copy / name / "summary.json").read_text())["table"]}
    assert set(after) == trials and len(trials) == 2, (after, trials)
    assert {status for status, _ in after.values()} == {"FINISHED"}, after
    assert all(steps for _, steps in after.values()), after


def test_a_planted_refit_stage_is_refused_too(tiny_study, tmp_path):
    """The refit's stages are Tuners of their own inside the study: their pickles are checked
    like the search's before ``--resume`` restores them."""
    from study.refit.runner import REFIT, STAGES
    from study.storage.resumable import check_state
    from study.storage.studies import study_paths

    name, d = copy_study(tiny_study, tmp_path / "st")
    marker = tmp_path / "PWNED"
    (d / REFIT).mkdir()
    (d / REFIT / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    paths = study_paths(name, str(tmp_path / "st"))
    assert paths.experiment == str(d)
    check_state(paths, True, STAGES)  # what --trust vouches for
    with pytest.raises(ConfigError, match=rf"{REFIT}/tuner.pkl was not written by your lora-study"):
        check_state(paths, False, STAGES)
    assert not marker.exists()
