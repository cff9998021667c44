"""The first Ctrl-C at any moment stops a study with its one line and the resume command: in the
imports and the preflight, while Ray starts, in Tune's start-up, while trials run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, run_study, tiny_study_args
from tests.study.drivers import SLOW, kill_session, study_env, wait_for


@pytest.fixture
def ctrl_c():
    """The study's handler, installed for one test and removed after it."""
    from study.console.ctrl_c import CtrlC

    sigs = signal.SIGINT, signal.SIGUSR1, signal.SIGALRM
    before, hook = [signal.getsignal(s) for s in sigs], sys.unraisablehook
    yield CtrlC().install()
    signal.setitimer(signal.ITIMER_REAL, 0)
    sys.unraisablehook = hook
    for sig, handler in zip(sigs, before):
        signal.signal(sig, handler)


def _ctrl_c_now(seconds: float = 1.0) -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(seconds)


def test_outside_fit_ctrl_c_raises(ctrl_c):
    """Outside ``fit`` a Ctrl-C is a ``KeyboardInterrupt`` the runner turns into its line."""
    with pytest.raises(KeyboardInterrupt):
        _ctrl_c_now()
    assert ctrl_c.caught


def test_inside_fit_the_first_ctrl_c_asks_tune_to_stop_the_second_stops_at_once(ctrl_c):
    """Inside ``fit`` the first Ctrl-C hands over to Tune's graceful stop (its SIGUSR1 handler)."""
    asked = []

    def signal_interrupt_tune_run(sig, frame):  # Tune's handler, by name
        asked.append(sig)

    ctrl_c.in_fit = True
    signal.signal(signal.SIGUSR1, signal_interrupt_tune_run)
    _ctrl_c_now(0.2)
    assert asked == [signal.SIGUSR1] and ctrl_c.caught
    with pytest.raises(KeyboardInterrupt):
        _ctrl_c_now()
    assert asked == [signal.SIGUSR1]


def test_a_ctrl_c_inside_logging_waits_for_a_safe_moment(ctrl_c):
    """A Ctrl-C that lands in :mod:`logging` (an exception there can leave its lock held: measured,
    the study then hung at its end) is acted on a moment later, outside it, and only once."""
    import logging

    in_logging = SimpleNamespace(f_code=SimpleNamespace(co_filename=logging.__file__))
    alarm = signal.getsignal(signal.SIGALRM)
    ctrl_c._on_sigint(signal.SIGINT, in_logging)  # what Python does when the signal lands there
    assert ctrl_c.caught
    ctrl_c._on_sigint(signal.SIGINT, in_logging)  # a repeat before it acted: still the first Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        time.sleep(1.0)  # the retry raises here, in safe code
    assert signal.getsignal(signal.SIGALRM) == alarm  # borrowed for the retry only
    assert logging._lock.acquire(blocking=False)  # nobody holds the lock
    logging._lock.release()


def test_a_ctrl_c_swallowed_where_it_landed_is_raised_at_the_next_checkpoint(ctrl_c):
    """Python ignores an exception raised in a finaliser or an at-fork hook ("Exception ignored
    in", a traceback on the terminal): the study would run on as if no Ctrl-C came. The traceback
    stays off the terminal (other unraisable errors still show) and the next checkpoint raises it."""
    ctrl_c.checkpoint()  # nothing caught: nothing raised
    shown = []
    sys.unraisablehook = shown.append  # what Python would print
    ctrl_c.install()

    class Finalised:
        def __init__(self, fault):
            self.fault = fault

        def __del__(self):
            self.fault()

    Finalised(_ctrl_c_now)  # the KeyboardInterrupt is raised in __del__ and ignored there
    assert ctrl_c.caught and shown == []
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.checkpoint()
    Finalised(lambda: 1 / 0)
    assert [u.exc_type for u in shown] == [ZeroDivisionError]


def test_ctrl_c_while_ray_starts_stops_resumably(tmp_path, monkeypatch, capsys, sst2_small):
    """Ctrl-C while Ray starts (before: a traceback, or on a faster machine the study ran on): one
    line with the resume command, the parent run KILLED, study.json written, and ``--resume``
    starts the study from its stored config (Ray had saved nothing yet)."""
    from mlflow import MlflowClient

    import study.run as run

    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    args = run.build_parser().parse_args(tiny_study_args("ctrlc", tmp_path, Path("embedded-minilm"), sst2_small, 2))
    prep = run.prepare(args)

    def ctrl_c_in_ray_init(address):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_init_ray", ctrl_c_in_ray_init)
    try:
        rc = run.execute(prep, None)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped the runner (a traceback on the terminal)")
    finally:
        prep.lock.close()
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 130 and out[-2:] == ["study ctrlc interrupted; resume with:",
                                      f"  python -m study.run --name ctrlc --resume --storage {tmp_path.resolve()}"], out
    record = json.loads((tmp_path / "ctrlc" / "study.json").read_text())
    assert MlflowClient(record["tracking_uri"]).get_run(record["parent_run_id"]).info.status == "KILLED"
    again = run.prepare(run.build_parser().parse_args(["--name", "ctrlc", "--resume", "--storage", str(tmp_path)]))
    again.lock.close()
    assert again.resume is False and again.record["parent_run_id"] == record["parent_run_id"]  # a fresh start, same parent run


def _interrupt(tmp_path: Path, home: Path, when, args: list[str]) -> tuple[int, str]:
    log = tmp_path / f"{home.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "study.run", *args], cwd=ROOT, env=study_env(home), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        when(proc, log)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rc = proc.wait(timeout=180)
    finally:
        kill_session(proc.pid)
    return rc, log.read_text(errors="replace")


@pytest.mark.slow
def test_the_first_ctrl_c_at_any_moment_stops_the_study(tmp_path, tiny_bert, sst2_small):
    """SIGINT to the study's process group 2 s after it starts (imports, preflight), right after
    its header (Ray starting), and once a trial has reported: each run stops with rc 130, no
    traceback, and its line; the last one then resumes to the end."""
    moments = {
        "preflight": lambda proc, log: time.sleep(2.0),
        "ray-start": lambda proc, log: wait_for(lambda: "  MLflow " in log.read_text(errors="replace"), proc, log, 300, "the header", 0.05),
        "trials": lambda proc, log: wait_for(lambda: "samples  accuracy" in log.read_text(errors="replace"), proc, log, 600,
                                             "a result", 0.1),
    }
    for moment, when in moments.items():
        home = tmp_path / moment
        home.mkdir()
        rc, text = _interrupt(tmp_path, home, when, tiny_study_args("c", home, tiny_bert, sst2_small, 2, SLOW))
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert rc == 130 and "Traceback" not in text, f"{moment}: rc {rc}\n{text[-3000:]}"
        if moment == "preflight" and not (home / "c" / "study.json").exists():
            assert lines == ["interrupted before the study started; nothing was written"], f"{moment}: {lines}"
        else:
            assert lines[-2:] == ["study c interrupted; resume with:", "  python -m study.run --name c --resume"], \
                f"{moment}: {lines[-5:]}"  # (the study's home is LORA_STUDY_HOME: no --storage needed)
    out = run_study(["--name", "c", "--resume", "--storage", str(tmp_path / "trials")], tmp_path / "trials", timeout=900)
    assert json.loads((tmp_path / "trials" / "c" / "summary.json").read_text())["trials"]["unfinished"] == 0, out.stdout[-2000:]
