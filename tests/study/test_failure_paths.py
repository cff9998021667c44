"""Failure paths say one thing once: a full disk at start, an MLflow outage, a warning a trial
worker repeats, a ``--resume`` while the study is still starting; and data too small to mean
anything is refused before Ray, naming the numbers."""

from __future__ import annotations

import fcntl
import logging
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_study, tiny_study_args

QUICK = str(ROOT / "study" / "configs" / "sst2-quick.yaml")


def one_error(rc: int, err: str, rc_want: int = 2) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == rc_want and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, f"rc {rc}:\n{err[-3000:]}"
    return lines[0]


# --------------------------------------------------------------------------- a full disk at start


@pytest.fixture
def full_dir(tmp_path, monkeypatch):
    """A directory on a filesystem with no space left: a filled 1 MiB tmpfs where this process may
    mount one, else every write of the study's lock file fails with ENOSPC as on a full disk."""
    d = tmp_path / "full"
    d.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True).returncode == 0
    if mounted:
        with open(d / "filler", "wb", buffering=0) as f:
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
    else:
        import errno

        import study.storage.studies as studies

        real = studies.file_lock

        class Full:
            def __init__(self, f):
                self.f = f

            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(studies, "file_lock", lambda *a, **k: (lambda f: f and Full(f))(real(*a, **k)))
    yield d
    if mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_disk_full_at_start_is_one_line(full_dir, capsys, monkeypatch, sst2):
    """Before: a 15-line traceback from the study's lock file (``lock_study``)."""
    import ray

    from study.run import main

    monkeypatch.setenv("LORA_STUDY_HOME", str(full_dir))
    monkeypatch.setenv("LORA_STUDY_DATA", str(sst2))
    rc = main(["--config", QUICK, "--name", "full", "--storage", str(full_dir)])
    line = one_error(rc, capsys.readouterr().err, rc_want=1)
    assert line.startswith(f"error: disk full writing {full_dir / '.full.lock'}") and "free some space" in line, line
    assert not ray.is_initialized()


# --------------------------------------------------------------------------- MLflow lost mid-study


def test_an_mlflow_outage_is_two_lines_however_long(caplog):
    """The first failure and the delivery after it reach the terminal (warnings); each retry in
    between goes to the study log only (before: one warning per retry, 35 in a minute-long outage)."""
    from study.tracking.queue import OperationQueue

    down = {"on": True}

    def apply(*op):
        if down["on"]:
            raise ConnectionError("Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch")

    queue = OperationQueue(retry_interval_s=0.0)
    with caplog.at_level(logging.INFO, logger="study.tracking"):
        for i in range(30):
            queue.submit(("metrics", "t", i), apply)
        down["on"] = False
        queue.submit(("metrics", "t", 30), apply)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("MLflow call failed (ConnectionError: Max retries exceeded") and "1 operation(s) buffered" in warnings[0]
    assert warnings[1] == "MLflow is reachable again: 31 buffered operation(s) delivered."
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 29  # the retries, in the study log
    assert len(queue) == 0


def test_mlflow_prints_no_run_links_on_stdout(capsys):
    """MLflow's client writes "🏃 View run … at: URL" to stdout each time it ends a run on a
    server (8 lines in a study); the study prints its own links."""
    from mlflow import MlflowClient

    from study.tracking.server import configure_mlflow_http

    configure_mlflow_http()
    MlflowClient("http://127.0.0.1:9")._tracking_client._log_url("r1")  # what set_terminated ends with
    assert "View run" not in capsys.readouterr().out


# --------------------------------------------------------------------------- a warning from trial workers


def test_a_data_warning_is_said_once_without_colour_codes(tmp_path, tiny_bert, sst2_small):
    """A train file with an overlong text: the preflight says it once; the trial workers loading
    the same data said it again (before), forwarded by Ray as ``(train pid=…)`` with ANSI codes."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text((sst2_small / name).read_text())
    with open(data / "train.tsv", "a") as f:
        f.write("x" * 7000 + "\t1\n")
    home = tmp_path / "studies"
    args = tiny_study_args("warn", home, tiny_bert, data, 1, ["--set", "search.data.size.choice=[300]", "--set", "data.max_length=64"])
    proc = run_study(args, home)
    text = proc.stdout + proc.stderr
    said = [ln for ln in text.splitlines() if "texts longer than" in ln]
    assert len(said) == 1 and said[0].startswith("warning: "), said
    assert "\x1b[" not in text, "ANSI codes on the terminal"


# --------------------------------------------------------------------------- --resume while the study starts


def test_resume_while_the_study_is_starting_says_it_runs(tmp_path, capsys, monkeypatch):
    """A new study holds its lock seconds before its study.json exists (preflight, MLflow):
    ``--resume`` then says it is running (before: "no study named …")."""
    from study.run import main

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    with open(tmp_path / ".starting.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on here since now")
        held.flush()
        line = one_error(main(["--name", "starting", "--resume", "--storage", str(tmp_path)]), capsys.readouterr().err)
    assert "study 'starting' is already running (pid 4242 on here since now)" in line, line
    line = one_error(main(["--name", "starting", "--resume", "--storage", str(tmp_path)]), capsys.readouterr().err)
    assert "no study named 'starting'" in line, line  # once it is gone
    one_error(main(["--name", "nosuch", "--resume", "--storage", str(tmp_path)]), capsys.readouterr().err)
    assert not (tmp_path / ".nosuch.lock").exists(), "asking left a lock file for a study that does not exist"


# --------------------------------------------------------------------------- too little data


def _write(d: Path, train_rows: int, dev_rows: int | None) -> Path:
    d.mkdir()
    rows = lambda n, off=0: "sentence\tlabel\n" + "".join(f"sentence number {i + off}\t{i % 2}\n" for i in range(n))  # noqa: E731
    if dev_rows is None:
        (d / "all.tsv").write_text(rows(train_rows))
        return d / "all.tsv"
    (d / "train.tsv").write_text(rows(train_rows))
    (d / "dev.tsv").write_text(rows(dev_rows, 1000))
    return d


@pytest.mark.parametrize("train,dev,sizes,says", [
    (5, None, "[2,4]", "search.data.size 2, 4 training examples and a dev split of 1, for 2 labels"),
    (600, 3, "[300,600]", "a dev split of 3, for 2 labels"),
    (600, 200, "[10,600]", "search.data.size 10 training examples, for 2 labels"),
])
def test_too_little_data_is_refused_before_ray(tmp_path, tiny_bert, train, dev, sizes, says):
    """Before: 5 rows with sizes [2, 4] trained, evaluated on one sentence and reported
    "accuracy 0.00%" with rc 0."""
    data = _write(tmp_path / "data", train, dev)
    home = tmp_path / "studies"
    args = ["--config", QUICK, "--name", "tiny-data", "--storage", str(home), "--num-samples", "2",
            "--set", f"model.name={tiny_bert}", "--set", f"data.path={data}", "--set", f"search.data.size.choice={sizes}",
            "--set", "train.eval_every_samples=100", "--set", "asha.grace_period=100"]
    proc = run_study(args, home, timeout=600, check=False)
    line = one_error(proc.returncode, proc.stdout + proc.stderr)
    assert f"too little data in {data}" in line and says in line and "at least 20 examples (10 per label)" in line, line
    assert not (home / "tiny-data" / "study.json").exists()


def test_enough_data_passes_the_preflight(tmp_path):
    """20 examples per split for 2 labels is the floor, not a refusal."""
    from trainables import preflight
    from trainables.config import TrialConfig

    data = _write(tmp_path / "data", 20, 20)
    cfg = TrialConfig.from_dict({"model.name": "embedded-minilm", "data.path": str(data)})
    assert preflight(cfg).n_train == 20


@pytest.mark.slow
def test_mlflow_lost_mid_study_is_two_lines(tmp_path, tiny_bert, sst2_small):
    """A real ``mlflow server`` is killed once a trial has a checkpoint and comes back 25 s later:
    the study says so when it happens and when the buffer is delivered, nothing in between, and
    MLflow prints no run links on stdout (before: 39 stderr lines, 35 of them "retrying in 10s",
    and 8 "View run" lines)."""
    from tests.study.drivers import SLOW, MlflowServer, has_checkpoint, kill_session, start_study, wait_for

    home, log = tmp_path / "studies", tmp_path / "outage.log"
    home.mkdir()
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    try:
        server.start()
        proc = start_study(tiny_study_args("lost", home, tiny_bert, sst2_small, 2, SLOW + ["--tracking-uri", server.uri]), home, log)
        try:
            wait_for(lambda: has_checkpoint(home / "lost"), proc, log, 600, "the first checkpoint")
            server.crash()
            time.sleep(25.0)
            server.start()
            rc = proc.wait(timeout=900)
        finally:
            kill_session(proc.pid)
    finally:
        server.crash()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    said = [ln for ln in text.splitlines() if "MLflow" in ln and ln.startswith(("warning:", "error:"))]
    assert len(said) == 2 and "MLflow call failed" in said[0] and "MLflow is reachable again" in said[1], said
    assert "View run" not in text and "View experiment" not in text
