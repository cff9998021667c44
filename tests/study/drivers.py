"""Helpers that drive the study the way a user does, in real processes: ``python -m study.run`` in
its own session (and how to crash it), a real ``mlflow server``, a loopback HTTP listener, free
ports, a full disk; and readers of what a study left behind (every trial's ``result.json``, Ray's
snapshot, MLflow's runs) with the end-state check ``verify_study``. Also the in-process CLI
helpers of the deploy tests (``run_cli``, ``assert_one_line_error``, ``summary``).

How a crash is made and what "no result lost" means are in ``tests/study/test_resume_faults.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

EVAL_EVERY = 100  # tiny_study_args: train.eval_every_samples
BATCH = 32  # sst2-quick.yaml: train.batch_size
MAX_GAP = EVAL_EVERY + BATCH - 1  # consecutive evaluations are at most this many samples apart


# --------------------------------------------------------------------------- processes


#: Slower trials for the kill tests: 18 evaluations per 600-example trial, time to kill things.
SLOW = ["--set", "train.epochs=3"]  # 18 evaluations per 600-example trial: time to kill things


def study_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "LORA_STUDY_HOME": str(home), "RAY_DEDUP_LOGS": "0", **(extra or {})}


def start_study(args: list[str], home: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m study.run ARGS`` in its own session (so it and its Ray can be killed as one)."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "study.run", *args], cwd=ROOT, env=study_env(home, env),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and _state(int(entry)) not in (None, "Z"):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def kill_session(sid: int, timeout: float = 20.0) -> int:
    """SIGKILL every process of session ``sid`` until none is left; returns how many there were."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := session_members(sid):
        seen.update(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of session {sid} survive SIGKILL: {pids}")
        time.sleep(0.2)
    return len(seen)


def crash_driver(proc: subprocess.Popen) -> int:
    """SIGKILL the study driver's process group, then the rest of its session (Ray's workers).
    Returns how many processes outlived the process-group kill (by 1 s)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1.0)
    return kill_session(proc.pid)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def wait_for(cond, proc: subprocess.Popen | None, log: Path | None, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"study exited ({proc.returncode}) before {what}:\n{tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{tail(log) if log else ''}")
        time.sleep(poll)


def wait_for_ping(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 600.0) -> float:
    """Wait until ``mlflow models serve`` at ``url`` answers ``/ping`` (a loaded 2-core machine needs
    minutes: model load + uvicorn start); fail with the server's log if it exits or never comes up.
    Returns the seconds it took."""
    import pytest

    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5):
                return time.monotonic() - t0
        except OSError:
            if time.monotonic() - t0 > timeout_s:
                pytest.fail(f"mlflow models serve not up after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- what a study left


def trial_results(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial dir's ``result.json`` rows (complete lines only: it may be mid-write)."""
    out = {}
    for f in sorted(experiment.glob("trial_*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        out[f.parent.name.removeprefix("trial_")] = rows
    return out


def n_results(experiment: Path) -> int:
    return sum(len(r) for r in trial_results(experiment).values())


def has_checkpoint(experiment: Path) -> bool:
    return any(experiment.glob("trial_*/checkpoint_*"))


def check_history(tid: str, rows: list[dict[str, Any]], state: str) -> tuple[list[int], int]:
    """No result lost (as ``tests/study/test_resume_faults.py`` defines it); returns (distinct evaluation points, re-reports)."""
    assert rows, f"trial {tid}: no results"
    by_step: dict[int, dict[str, Any]] = {}
    rereports, top = 0, -1
    for r in rows:
        s = r["samples_seen"]
        if s > top:
            by_step[s], top = r, s
            continue
        # Ray re-reports evaluations made after the checkpoint it resumed from: same point,
        # same numbers (exact resume), never a point that was not reported before.
        assert s in by_step, f"trial {tid}: samples_seen went back to {s}, never reported before: {[x['samples_seen'] for x in rows]}"
        for key in ("accuracy", "eval_loss", "train_loss"):
            assert r[key] == by_step[s][key], f"trial {tid}: re-reported {key} at {s} differs: {r[key]} != {by_step[s][key]}"
        rereports += 1
    steps = sorted(by_step)
    gaps = [b - a for a, b in zip([0] + steps, steps)]
    assert max(gaps) <= MAX_GAP, f"trial {tid}: an evaluation is missing (gap {max(gaps)} > {MAX_GAP}): {steps}"
    last = rows[-1]
    assert last["samples_seen"] == steps[-1], f"trial {tid}: last result is not its furthest point"
    if state == "completed":
        assert steps[-1] == last["samples_total"], f"trial {tid}: completed at {steps[-1]} of {last['samples_total']} samples"
    return steps, rereports


def mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    from study.tracking.runs import PARENT_TAG, ROLE_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "parent"]
    assert len(parents) == 1, f"{len(parents)} parent runs"
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "runs that are neither the parent nor its children"
    return client, parents[0], children


def verify_study(home: Path, name: str, n: int, *, exact_metrics: bool = False) -> dict[str, Any]:
    """The end state of a finished study, from summary.json, Ray's experiment and MLflow.

    ``exact_metrics``: each MLflow child holds each of Ray's evaluation points exactly once (a
    point Ray re-reported after restoring a trial from its checkpoint, e.g. when the trial's node
    died as it reported, is one MLflow step); otherwise (after driver crashes) the same *set* of
    evaluation points. Returns figures.
    """
    from ray.tune import ExperimentAnalysis

    from study.tracking.runs import STATE_TAG, TRIAL_ID_TAG

    exp_dir = home / name
    summary = json.loads((exp_dir / "summary.json").read_text())
    t = summary["trials"]
    assert t["total"] == n and t["unfinished"] == 0 and t["failed"] == 0, t
    assert t["completed"] + t["pruned"] == n, t
    states = {r["trial_id"]: r["state"] for r in summary["table"]}

    analysis = ExperimentAnalysis(str(exp_dir))
    ray_ids = {tr.trial_id for tr in analysis.trials}
    assert len(analysis.trials) == n, f"Ray experiment has {len(analysis.trials)} trials, want {n}"
    assert {tr.status for tr in analysis.trials} == {"TERMINATED"}, {tr.trial_id: tr.status for tr in analysis.trials}
    assert set(states) == ray_ids

    results = trial_results(exp_dir)
    ghosts = sorted(set(results) - ray_ids)  # trial dirs Ray itself no longer knows (none expected)
    assert not ghosts, f"trial dirs not in Ray's experiment state: {ghosts}"
    steps, rereports = {}, 0
    for tid in ray_ids:
        steps[tid], rr = check_history(tid, results[tid], states[tid])
        rereports += rr

    record = json.loads((exp_dir / "study.json").read_text())
    client, parent, children = mlflow_runs(record["tracking_uri"], record["experiment"])
    assert parent.info.status == "FINISHED", parent.info.status
    per_trial = Counter(r.data.tags.get(TRIAL_ID_TAG) for r in children)
    duplicated = {k: v for k, v in per_trial.items() if v > 1}
    assert not duplicated, f"MLflow runs duplicated: {duplicated}"
    assert set(per_trial) == ray_ids, f"MLflow trials {sorted(per_trial)} != Ray trials {sorted(ray_ids)}"
    running = [r.info.run_id for r in children if r.info.status == "RUNNING"]
    assert not running, f"MLflow runs left RUNNING: {running}"
    want = {"completed": ("FINISHED", "completed"), "pruned": ("FINISHED", "pruned")}
    for run in children:
        tid = run.data.tags[TRIAL_ID_TAG]
        assert (run.info.status, run.data.tags.get(STATE_TAG)) == want[states[tid]], (tid, states[tid], run.info.status, run.data.tags)
        history = client.get_metric_history(run.info.run_id, "accuracy")
        mlflow_steps = [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]
        if exact_metrics:
            assert sorted(mlflow_steps) == steps[tid], (tid, mlflow_steps, steps[tid])
        else:
            assert sorted(set(mlflow_steps)) == steps[tid], (tid, sorted(set(mlflow_steps)), steps[tid])
    return {"summary": summary, "client": client, "parent": parent, "children": children, "results": results,
            "rereports": rereports, "states": states}


# --------------------------------------------------------------------------- Ray's snapshot, checkpoints on disk


def snapshot_trials(experiment: Path) -> dict[str, tuple[str, str | None]]:
    """Ray's newest experiment snapshot: trial id -> (status, path of the checkpoint it restores
    from, i.e. its checkpoint manager's latest; not always the last result's: a result is
    recorded before its checkpoint is registered); {} if there is none (yet)."""
    from functools import partial

    from ray.tune.utils.serialization import TuneFunctionDecoder

    files = sorted(experiment.glob("experiment_state-*.json"))
    try:
        state = json.loads(files[-1].read_text()) if files else {"trial_data": []}
    except json.JSONDecodeError:  # being written
        return {}
    out = {}
    for trial_json, meta_json in state["trial_data"]:
        trial = json.loads(trial_json)
        meta = json.loads(meta_json, cls=partial(TuneFunctionDecoder, allow_cloudpickle=True))  # our own file
        latest = meta["checkpoint_manager"].latest_checkpoint_result
        out[trial["trial_id"]] = (trial["status"], latest.checkpoint.path if latest else None)
    return out


def checkpoints_on_disk(experiment: Path, tid: str) -> dict[str, int]:
    """Checkpoint dir name -> samples_seen it was reported with, for this trial's checkpoints on disk."""
    rows = trial_results(experiment).get(tid, [])
    at = {r["checkpoint_dir_name"]: r["samples_seen"] for r in rows if r.get("checkpoint_dir_name")}
    return {p.name: at[p.name] for p in (experiment / f"trial_{tid}").glob("checkpoint_*") if p.name in at}


def first_after_restart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The first result of the trial's last (re)start (``iterations_since_restore`` 1 again)."""
    starts = [i for i, r in enumerate(rows) if r["iterations_since_restore"] == 1]
    assert len(starts) >= 2, f"the trial never restarted: {[r['samples_seen'] for r in rows]}"
    return rows[starts[-1]]


# --------------------------------------------------------------------------- servers


class MlflowServer:
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) in its own session."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        with open(self.root / "server.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.healthy, self.proc, self.root / "server.log", timeout, "the MLflow server", poll=0.3)
        return time.monotonic() - t0

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def crash(self) -> None:
        if self.proc is not None:
            kill_session(self.proc.pid)
            self.proc.wait(timeout=30)
            assert not self.healthy()


class Listener:
    """A loopback HTTP server that answers every request with ``status`` and records its headers."""

    def __init__(self, status: int):
        import http.server
        import threading

        self.requests: list[dict[str, str]] = []
        seen, code = self.requests, status

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                seen.append(dict(self.headers))
                body = b"<html>401 Unauthorized</html>" if code == 401 else b"{}"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- a full disk


def mount_tmpfs(d: Path, size: str) -> bool:
    d.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                                                capture_output=True).returncode == 0


def fill(d: Path) -> int:
    """Write a filler file into ``d`` until the disk is full; returns its size."""
    chunk = b"\0" * 65536
    with open(d / "filler", "wb", buffering=0) as f:
        try:
            while f.write(chunk):
                pass
        except OSError:  # ENOSPC: full
            pass
    return (d / "filler").stat().st_size


# --------------------------------------------------------------------------- CLIs in-process


def run_cli(mod, argv: list[str], capsys) -> tuple[int, str, str]:
    rc = mod.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, expected: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


def summary(home: Path, name: str = "tiny") -> dict:
    return json.loads((home / name / "summary.json").read_text())
