"""Reliability of ``python -m study.run`` under faults, on real processes.

Every test runs the real CLI in a subprocess on the tiny random BERT (``tiny_bert`` +
``sst2_small``), with its own storage dir (``LORA_STUDY_HOME``), its own study name and its own
MLflow store, and checks the end state three ways: ``summary.json``, Ray's experiment on disk
(``ExperimentAnalysis`` + every trial's ``result.json``) and MLflow.

Faults:

* driver SIGKILLed mid-study, then ``--resume``, and three times in a row at random points;
* a trial's worker process SIGKILLed: the trial restarts from its last checkpoint;
* the MLflow tracking server (a real ``mlflow server`` process) crashes mid-study and comes back;
* disk: a 20-trial study keeps at most ``checkpoints_to_keep + 1`` checkpoints per trial;
* two drivers starting the same study at once, then a SIGKILL and a torn checkpoint; storage
  running out of space; studies starting at once on a fresh sqlite MLflow store.

A worker node dying is in ``test_cluster.py``.

How a driver "crashes" here: the study runs with ``start_new_session=True``; the driver's
process group (driver, GCS, raylet, ... of the local Ray it started) gets SIGKILL, then whatever
is left of its *session* — Ray's trial workers run in their own process groups but in the
driver's session — is killed too. Only processes of that session are touched, never other Ray
instances on the machine (no ``ray stop``).

Reading a trial's history: Ray appends every result to ``trial_*/result.json`` in its session
dir and copies it to the storage dir with every experiment snapshot (``study.run`` writes through
``AtomicLocalFS``, so a crash during that copy cannot truncate it). After a driver crash a trial
resumes from the checkpoint in Ray's last snapshot, which can be behind its last reported result,
so the evaluations after it are reported again; the trainable resumes exactly, so a re-report
repeats the same ``samples_seen`` with identical metrics. (A trial with no checkpoint left restarts
from scratch, and Ray then starts its ``result.json`` afresh.) "No result lost" means: after
dropping exact re-reports, ``samples_seen`` increases strictly with no gap larger than one
evaluation interval (``eval_every_samples + batch_size - 1``), a completed trial ends at
``samples_total``, and MLflow holds the same evaluation points.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_study, tiny_study_args
from tests.study.drivers import (
    MAX_GAP,
    SLOW,
    MlflowServer,
    checkpoints_on_disk,
    crash_driver,
    fill,
    first_after_restart,
    has_checkpoint,
    kill_session,
    mount_tmpfs,
    n_results,
    snapshot_trials,
    start_study,
    tail,
    trial_results,
    verify_study,
    wait_for,
)

# --------------------------------------------------------------------------- the driver killed


@pytest.mark.slow
def test_driver_sigkill_then_resume(tmp_path, tiny_bert, sst2_small):
    """The driver dies (SIGKILL, with its local Ray) once a trial has a checkpoint;
    ``--resume`` finishes the study with exactly num_samples trials, nothing lost or duplicated.

    The crash also gets the worst timing Ray's checkpoint retention allows: the checkpoint that
    the snapshot calls a running trial's latest is deleted, as Ray does when a newer, better
    checkpoint registers before the next snapshot. ``RepairCheckpointRecords`` must make the trial
    resume from an older checkpoint (or from scratch) under its own id; without it the trial ends
    ERROR and the study "finishes" with a failed trial."""
    n, name, home, log = 6, "crash1", tmp_path / "studies", tmp_path / "crash1.log"
    home.mkdir()
    t0 = time.monotonic()
    proc = start_study(tiny_study_args(name, home, tiny_bert, sst2_small, n, SLOW), home, log)
    try:
        wait_for(lambda: any(st == "RUNNING" and ckpt for st, ckpt in snapshot_trials(home / name).values()),
                 proc, log, 240, "a snapshot with a running, checkpointed trial")
        time.sleep(0.5)
        before = n_results(home / name)
        stragglers = crash_driver(proc)
    finally:
        kill_session(proc.pid)
    assert not (home / name / "summary.json").exists()
    victim, ckpt = next((tid, ckpt) for tid, (st, ckpt) in snapshot_trials(home / name).items() if st == "RUNNING" and ckpt)
    # (already gone if Ray's retention deleted it before the kill: the same situation)
    shutil.rmtree(ckpt, ignore_errors=True)
    at = next((r["samples_seen"] for r in trial_results(home / name)[victim] if r["checkpoint_dir_name"] == Path(ckpt).name), None)
    t1 = time.monotonic()
    out = run_study(["--name", name, "--resume", "--storage", str(home)], home, timeout=400)
    (tmp_path / "resume.log").write_text(out.stdout + out.stderr)
    fig = verify_study(home, name, n)  # without the repair: the victim ends ERROR ("failed": 1)
    assert f"Trial {victim}: latest checkpoint" in out.stdout + out.stderr
    rows = fig["results"][victim]
    print(f"\n[crash1] killed after {t1 - t0:.0f}s with {before} results logged; {stragglers} processes outlived the "
          f"process-group kill; deleted {victim}/{Path(ckpt).name} (at {at} samples); "
          f"victim history {[r['samples_seen'] for r in rows]}; resume took {time.monotonic() - t1:.0f}s; "
          f"{fig['rereports']} re-reported evaluations; trials {fig['summary']['trials']}")
    assert "interrupted" not in out.stdout


@pytest.mark.slow
def test_three_random_driver_kills(tmp_path, tiny_bert, sst2_small):
    """SIGKILL the driver at a random point three times in a row, each time
    followed by ``--resume``; the study ends with exactly num_samples trials, every trial's history
    continuous, no MLflow run duplicated or left RUNNING."""
    n, name, home, log = 6, "kill3", tmp_path / "studies", tmp_path / "kill3.log"
    home.mkdir()
    seed = int(os.environ.get("LORA_STUDY_FAULT_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    resume_args = ["--name", name, "--resume", "--storage", str(home)]
    kills, recorded, t0 = [], [], time.monotonic()

    def n_started() -> int:  # study.json is replaced atomically: safe to read while the driver runs
        f = home / name / "study.json"
        return len(json.loads(f.read_text())["started"]) if f.exists() else 0

    for k in range(3):
        before = n_results(home / name) if k else 0
        started_before = n_started()
        proc = start_study(tiny_study_args(name, home, tiny_bert, sst2_small, n, SLOW) if k == 0 else resume_args, home, log)
        try:
            if k == 1:
                # a random time after the start: in the imports, the restore, or training
                at = rng.uniform(1.0, 10.0)
                time.sleep(at)
                point = f"{at:.1f}s after start"
            else:
                # after 1-6 new results plus 0-0.4 s (the first run not before a checkpoint
                # exists: there is no study to resume before that)
                target, delay = before + rng.randint(1, 6), rng.uniform(0.0, 0.4)
                wait_for(lambda: n_results(home / name) >= target and has_checkpoint(home / name), proc, log, 240,
                         f"{target - before} new results in run {k + 1}", poll=0.05)
                time.sleep(delay)
                point = f"{target - before} new results + {delay:.2f}s"
            assert proc.poll() is None, f"run {k + 1} finished before its kill (seed {seed}):\n{tail(log)}"
            crash_driver(proc)
            kills.append(f"{point} ({n_results(home / name) - before} new results at the kill)")
            recorded.append(n_started() - started_before)
        finally:
            kill_session(proc.pid)
    t1 = time.monotonic()
    run_study(resume_args, home, timeout=400)
    fig = verify_study(home, name, n)
    started = json.loads((home / name / "study.json").read_text())["started"]
    # Runs 1 and 3 were killed after new results, so they had recorded their start; run 2's random
    # kill may come before the driver gets that far (then that resume did nothing to record).
    assert recorded[0] == recorded[2] == 1 and recorded[1] in (0, 1), recorded
    assert len(started) == sum(recorded) + 1, (started, recorded)  # + the final resume
    print(f"\n[kill3] seed {seed}: kills at {kills}; starts recorded {recorded}; killed phase {t1 - t0:.0f}s, final resume "
          f"{time.monotonic() - t1:.0f}s; {fig['rereports']} re-reported evaluations; trials {fig['summary']['trials']}")


# --------------------------------------------------------------------------- a trial's worker killed


def test_trial_worker_killed_restarts_from_checkpoint(tmp_path, tiny_bert, sst2_small):
    """SIGKILL the worker process running a trial (its ``pid`` from the trial's
    result.json); Tune restarts the trial from its last checkpoint (``max_failures`` 2) and it
    finishes: samples_seen continues where it was, not from zero."""
    n, name, home, log = 2, "wkill", tmp_path / "studies", tmp_path / "wkill.log"
    home.mkdir()
    args = tiny_study_args(name, home, tiny_bert, sst2_small, n, SLOW + ["--set", "asha.enabled=false",
                                                                         "--set", "search.data.size.choice=[600]"])
    proc = start_study(args, home, log)
    try:
        def running_trial():
            for tid, rows in trial_results(home / name).items():
                if len(rows) >= 2 and not rows[-1]["done"] and rows[-1]["samples_seen"] <= rows[-1]["samples_total"] // 2:
                    return tid, rows[-1]
            return None

        tid, last = wait_for(running_trial, proc, log, 240, "a trial half-way", poll=0.1)
        pid = last["pid"]
        # it is our trial's worker: in the driver's session, a Ray worker process
        assert os.getsid(pid) == proc.pid and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"), pid
        os.kill(pid, signal.SIGKILL)
        killed_at = last["samples_seen"]
        assert proc.wait(timeout=400) == 0, tail(log)
    finally:
        kill_session(proc.pid)
    fig = verify_study(home, name, n, exact_metrics=True)
    rows = fig["results"][tid]
    pids = [r["pid"] for r in rows]
    assert pid in pids and pids[-1] != pid, f"trial {tid} did not move to a new worker: {pids}"
    first_new = rows[len(pids) - pids[::-1].index(pid)]  # the first result after the killed worker's last
    # resumed from the checkpoint of the last result it had logged (or a later one), not from zero
    assert first_new["iterations_since_restore"] == 1 and first_new["training_iteration"] > 2
    assert first_new["samples_seen"] > killed_at, f"did not resume from its checkpoint: {[r['samples_seen'] for r in rows]}"
    assert fig["states"][tid] == "completed" and rows[-1]["samples_seen"] == rows[-1]["samples_total"]
    from ray.tune import ExperimentAnalysis

    failures = {t.trial_id: t.num_failures for t in ExperimentAnalysis(str(home / name)).trials}
    assert failures[tid] == 1, failures
    print(f"\n[wkill] trial {tid} worker pid {pid} killed at {killed_at} samples; resumed at "
          f"{first_new['samples_seen']} on pid {first_new['pid']}; finished at {rows[-1]['samples_seen']}; failures {failures}")


# --------------------------------------------------------------------------- the MLflow server down


@pytest.mark.slow
def test_mlflow_server_outage_is_buffered(tmp_path, tiny_bert, sst2_small):
    """A real MLflow server outside Docker is SIGKILLed once
    a trial has reported, stays down ~8 s and comes back on the same port. The study does not crash;
    the buffered writes arrive: every child run holds all of its trial's evaluations (count and
    steps equal Ray's results), no run is left RUNNING, and the parent run, its metrics, the best
    adapter's artifacts and the registered model are all readable from the server."""
    n, name, home, log = 4, "outage", tmp_path / "studies", tmp_path / "outage.log"
    home.mkdir()
    (srv_root := tmp_path / "mlflow").mkdir()
    server = MlflowServer(srv_root)
    try:
        first_start = server.start()
        args = tiny_study_args(name, home, tiny_bert, sst2_small, n, SLOW + ["--tracking-uri", server.uri])
        t0 = time.monotonic()
        proc = start_study(args, home, log)
        try:
            wait_for(lambda: has_checkpoint(home / name), proc, log, 240, "the first trial checkpoint")
            server.crash()
            down_at = time.monotonic()
            time.sleep(8.0)
            still_running = proc.poll() is None
            restart_s = server.start()
            outage_s = time.monotonic() - down_at
            rc = proc.wait(timeout=400)
            end = time.monotonic()
            assert rc == 0, tail(log)
        finally:
            kill_session(proc.pid)
        text = log.read_text(errors="replace")
        failed_calls = text.count("MLflow call failed")
        assert failed_calls >= 1, "the study never noticed the outage"
        assert "NOT delivered" not in text and "could not log/register" not in text, tail(log)
        buffered = [int(x.split(" operation")[0].rsplit(" ", 1)[-1]) for x in text.splitlines() if "operation(s) buffered" in x]

        fig = verify_study(home, name, n, exact_metrics=True)
        client, parent = fig["client"], fig["parent"]
        assert client.tracking_uri == server.uri
        for run in fig["children"]:
            rows = fig["results"][run.data.tags["ray_trial_id"]]
            history = client.get_metric_history(run.info.run_id, "accuracy")
            assert len(history) == len(rows), (run.info.run_id, len(history), len(rows))
            assert len(client.get_metric_history(run.info.run_id, "eval_loss")) == len(rows)
            assert run.data.params["lora.r"] == str(rows[0]["config"]["lora.r"])
        assert parent.data.metrics["summary.trials_completed"] + parent.data.metrics["summary.trials_pruned"] == n
        summary = fig["summary"]
        reg = summary["registered_model"]
        assert reg, "best adapter not registered"
        version = client.get_model_version(reg["name"], reg["version"])
        best_run = next(r for r in fig["children"] if r.data.tags["ray_trial_id"] == summary["best"]["trial_id"])
        assert version.run_id == best_run.info.run_id and version.status == "READY", version  # the best trial's own run
        assert version.tags.get("trial_id") == summary["best"]["trial_id"]
        assert client.get_registered_model(reg["name"]).name == reg["name"]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "best_adapter")}
        assert any(p.endswith("adapter_model.safetensors") for p in artifacts), artifacts
        assert any((srv_root / "artifacts").rglob("adapter_model.safetensors")), "artifacts did not go through the server"
    finally:
        server.crash()
    print(f"\n[outage] server start {first_start:.1f}s; down {outage_s:.1f}s (restart {restart_s:.1f}s; study still running "
          f"when it came back: {still_running}); {failed_calls} failed MLflow calls, up to {max(buffered or [0])} "
          f"operations buffered; study ended {end - down_at - outage_s:.1f}s after the server was back, "
          f"wall {end - t0:.0f}s; rc 0")


# --------------------------------------------------------------------------- checkpoint disk


@pytest.mark.slow
def test_checkpoint_disk_is_bounded(tmp_path, tiny_bert, sst2_small):
    """Disk per study is bounded by ``storage.checkpoints_to_keep``.

    Stated bound: every trial dir holds at most ``checkpoints_to_keep + 1 = 3`` checkpoints (Ray
    keeps the best ``num_to_keep`` = 2 by accuracy and never deletes the latest, which is what a
    restore resumes from), so a trial's checkpoint bytes are at most 3 x its largest checkpoint,
    and each checkpoint is at most ``16 B x trainable_params + 64 KiB`` (fp32 adapter + head and
    the two AdamW moments, 12 B/param, plus config, scheduler, RNG state and the metric history).
    For the whole 20-trial study: sum over trials of ``3 x (16 B x trainable_params + 64 KiB)``.
    """
    n, name, home = 20, "disk", tmp_path / "studies"
    home.mkdir()
    t0 = time.monotonic()
    run_study(tiny_study_args(name, home, tiny_bert, sst2_small, n), home, timeout=500)
    wall = time.monotonic() - t0
    record = json.loads((home / name / "study.json").read_text())
    keep = record["config"]["storage"]["checkpoints_to_keep"]
    assert keep == 2
    summary = json.loads((home / name / "summary.json").read_text())
    assert summary["trials"]["total"] == n and summary["trials"]["unfinished"] == 0
    per_trial, total, bound_total = {}, 0, 0
    for tid, rows in trial_results(home / name).items():
        ckpts = sorted((home / name / f"trial_{tid}").glob("checkpoint_*"))
        sizes = [sum(f.stat().st_size for f in c.rglob("*") if f.is_file()) for c in ckpts]
        params = rows[-1]["trainable_params"]
        one = 16 * params + 64 * 1024
        assert 1 <= len(ckpts) <= keep + 1, (tid, [c.name for c in ckpts])
        assert max(sizes) <= one, (tid, sizes, one)
        assert sum(sizes) <= (keep + 1) * one
        per_trial[tid] = (len(ckpts), sum(sizes), len(rows), params)
        total += sum(sizes)
        bound_total += (keep + 1) * one
    assert len(per_trial) == n
    assert total <= bound_total
    # the latest checkpoint (what a restore uses) is always among those kept
    for tid in per_trial:
        last = trial_results(home / name)[tid][-1]["checkpoint_dir_name"]
        assert (home / name / f"trial_{tid}" / last).is_dir(), (tid, last)
    print(f"\n[disk] {n} trials, wall {wall:.0f}s; checkpoint bytes total {total:,} (bound {bound_total:,}); per trial "
          f"(checkpoints kept, bytes, evaluations, trainable params):")
    for tid, (k, b, e, p) in sorted(per_trial.items(), key=lambda kv: -kv[1][1]):
        print(f"  {tid}: {k} ckpts {b:>9,} B  {e:>2} evals  {p:>6,} params")


# --------------------------------------------------------------------------- concurrent starts, torn checkpoints, a full disk


TWO_AT_ONCE = ["--set", "train.epochs=5", "--set", "asha.enabled=false", "--set", "search.data.size.choice=[600]",
               "--cpus-per-trial", "0.5"]  # 2 trials side by side even on one core, 36 evaluations each


def test_same_name_twice_then_sigkill_and_resume_continues_from_checkpoints(tmp_path, tiny_bert, sst2_small):
    """Two drivers starting the same study, then a crash with a torn checkpoint, on one study.

    Two drivers start the same new study at the same moment on a fresh store: one runs it, the
    other stops with one line (before: both were accepted — one directory, two experiment states,
    two MLflow parent runs, registry versions 1 and 2, or the loser crashed with ``duplicate
    column name: step``).

    Then the driver is SIGKILLed and ``--resume`` continues every unfinished trial from a
    checkpoint — its first result after the restart is beyond its first evaluation, not a fresh
    start at 0 (before: "beyond its stored results (samples_seen -1); resuming from scratch" for
    every trial, because the history was read from the crashed run's Ray session dir). One
    trial's latest checkpoint is also torn (its adapter file truncated): that trial falls back to
    its previous checkpoint, said in one log line, and the torn one is set aside — never a FAILED
    trial naming a temp dir."""
    n, name, home = 2, "cont", tmp_path / "studies"
    home.mkdir()
    exp = home / name
    args = tiny_study_args(name, home, tiny_bert, sst2_small, n, TWO_AT_ONCE)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_study(args, home, lg) for lg in logs]
    try:
        # 1 + the index of the first driver to exit (the one that lost the lock)
        loser = wait_for(lambda: next((i + 1 for i, p in enumerate(procs) if p.poll() is not None), 0),
                         None, None, 600, "one of the two drivers to give up") - 1
        proc, text = procs[1 - loser], logs[loser].read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
        assert procs[loser].returncode == 2 and len(errors) == 1 and "Traceback" not in text, text[-3000:]
        assert f"study {name!r} is already running (pid {proc.pid} " in errors[0] or "already exists" in errors[0], errors

        def both_checkpointed():
            snap = snapshot_trials(exp)
            ready = len(snap) == n and all(st == "RUNNING" and ck for st, ck in snap.values())
            return snap if ready and all(len(checkpoints_on_disk(exp, t)) >= 2 for t in snap) else None

        wait_for(both_checkpointed, proc, logs[1 - loser], 600, "both trials running with two checkpoints each", poll=0.05)
        assert len(list(exp.glob("experiment_state-*.json"))) == 1
        crash_driver(proc)
    finally:
        for p in procs:
            kill_session(p.pid)
    snap = snapshot_trials(exp)  # the snapshot --resume will read
    victim, other = sorted(snap)
    # tear the newest checkpoint the trial's history names: the snapshot's latest, or a newer one
    # written after the snapshot (the repair finds those on storage too)
    on_disk = checkpoints_on_disk(exp, victim)
    assert len(on_disk) >= 2, on_disk  # it had two when the driver was killed, and the history only grows
    torn = exp / f"trial_{victim}" / max(on_disk, key=on_disk.get)
    adapter = torn / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    out = run_study(["--name", name, "--resume", "--storage", str(home)], home, timeout=900)
    text = out.stdout + out.stderr
    (tmp_path / "resume.log").write_text(text)
    fig = verify_study(home, name, n)  # one MLflow parent, no failed trial, no result lost
    # The victim's one repair line names the torn checkpoint and resumes from an older one. The kill
    # lands just after a snapshot reaches storage, while Ray may still be copying its other files, so
    # the snapshot's latest checkpoint can be ahead of the stored result.json (skipped first: "is
    # gone" or "is beyond its stored results") or behind it (the torn one is newer than the
    # snapshot; the trial resumes from the snapshot's latest). Measured: each about 1 run in 10.
    latest = Path(snap[victim][1]).name if snap[victim][1] else None
    lines = [ln for ln in text.splitlines() if f"Trial {victim}: latest checkpoint " in ln]
    seen = (f"snapshot's latest {latest}; checkpoints with a stored result {on_disk}; tore {torn.name}; "
            f"repair lines {lines}\n{text[-3000:]}")
    assert len(lines) == 1, seen
    skipped, resumed = re.search(r"latest checkpoint (.*) \(on resume\); resuming from (\S+)\.$", lines[0]).groups()
    reasons = skipped.split("; ")
    torn_at = [i for i, r in enumerate(reasons) if r.startswith(f"{torn.name} is unreadable")]
    assert len(torn_at) == 1, seen
    torn_at = torn_at[0]
    assert all(" is beyond its stored results " in r or r.endswith(" is gone") for r in reasons[:torn_at]), seen
    # an older checkpoint, or one written after the history was stored (it carries its own evaluations)
    assert Path(resumed).name not in on_disk or on_disk[Path(resumed).name] < on_disk[torn.name], seen
    assert "resuming from scratch" not in text, text[-3000:]
    assert not torn.exists() and (torn.parent / f".torn-{torn.name}").is_dir()
    firsts = {}
    for tid in (victim, other):
        first = first_after_restart(fig["results"][tid])
        firsts[tid] = first["samples_seen"]
        assert first["samples_seen"] > MAX_GAP and first["training_iteration"] >= 2, \
            f"trial {tid} restarted from scratch: {[r['samples_seen'] for r in fig['results'][tid]]}"
    reg = fig["summary"]["registered_model"]
    assert [str(v.version) for v in fig["client"].search_model_versions(f"name='{reg['name']}'")] == ["1"]
    print(f"\n[cont] second driver: {errors[0]}\n[cont] killed with both trials checkpointed; tore {victim}/{torn.name}; "
          f"first results after the restart at samples_seen {firsts} (first evaluation is at <= {MAX_GAP}); "
          f"{fig['rereports']} re-reported evaluations")


def test_full_disk_stops_cleanly_and_resume_finishes_the_same_study(tmp_path, tiny_bert, sst2_small):
    """Storage runs out of space mid-study. The study stops at once with one
    line (which file, how much space, what to run), every stored file is intact (an old or a new
    version, never torn), and after space is freed ``--resume`` finishes the *same* study — every
    trial with the stored fixed config (before: fixed keys back at their defaults) — and a second
    ``--resume`` of the finished study registers no duplicate model version.

    The disk is a 64 MiB tmpfs filled up once a checkpoint exists (when this process may mount),
    else writes through ``study.storage.atomic_fs`` fail with ENOSPC while a flag file exists (injected in
    the driver and Ray's workers by ``tests/study/enospc_site/sitecustomize.py``)."""
    n, name = 2, "full"
    small = tmp_path / "small"
    mounted = mount_tmpfs(small, "64m")
    home, log, flag = small / "st", tmp_path / "full.log", tmp_path / "disk-full"
    home.mkdir(parents=True)
    env = {} if mounted else {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "enospc_site"), str(ROOT)]),
                              "LORA_STUDY_TEST_ENOSPC_FLAG": str(flag)}
    try:
        proc = start_study(tiny_study_args(name, home, tiny_bert, sst2_small, n, TWO_AT_ONCE), home, log, env)
        try:
            wait_for(lambda: has_checkpoint(home / name), proc, log, 600, "the first checkpoint", poll=0.05)
            config_before = json.loads((home / name / "study.json").read_text())["config"]
            filled = fill(small) if mounted else flag.touch()
            rc = proc.wait(timeout=600)
        finally:
            kill_session(proc.pid)
        text = log.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
        assert rc == 1, f"rc {rc}:\n{text[-3000:]}"
        assert len(errors) == 1 and errors[0].startswith("error: disk full writing "), errors or text[-3000:]
        assert "MiB free" in errors[0] and f"--name {name} --resume" in errors[0], errors[0]
        assert text.rstrip().splitlines()[-1] == errors[0], "the disk-full line is not the last word"
        # nothing torn: every file Ray keeps reads back whole (the pickles are this test's own study)
        exp = home / name
        for f in [*exp.glob("experiment_state-*.json"), exp / "study.json", *exp.glob("trial_*/params.json")]:
            json.loads(f.read_text())
        for f in exp.glob("trial_*/result.json"):
            [json.loads(line) for line in f.read_text().splitlines()]
        for f in [*exp.glob("search_gen_state-*.json"), *exp.glob("*.pkl")]:  # Ray's pickles, whatever the suffix
            pickle.loads(f.read_bytes())
        assert not list((home / name).rglob(".*.tmp-*")), "temp files left behind"
        if mounted:
            (small / "filler").unlink()
        else:
            flag.unlink()
        run_study(["--name", name, "--resume", "--storage", str(home)], home, timeout=900, env=env)
        fig = verify_study(home, name, n)
        record = json.loads((home / name / "study.json").read_text())
        assert record["config"] == config_before, "the resumed study runs with another config"
        for tid, rows in fig["results"].items():
            cfg = rows[-1]["config"]
            assert cfg["train.epochs"] == 5 and cfg["train.eval_every_samples"] == 100 and cfg["data.dev_size"] == 200, (tid, cfg)
        reg = fig["summary"]["registered_model"]
        assert reg and reg["version"] == "1", reg
        # resuming the finished study again: same registration, no second version
        run_study(["--name", name, "--resume", "--storage", str(home)], home, timeout=900, env=env)
        again = json.loads((home / name / "summary.json").read_text())
        versions = fig["client"].search_model_versions(f"name='{reg['name']}'")
        assert again["registered_model"] == reg and [str(v.version) for v in versions] == ["1"], versions
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(small)], check=False)
    print(f"\n[full] {'tmpfs, filler ' + format(filled, ',') + ' B' if mounted else 'injected ENOSPC'}: rc {rc}, "
          f"{len(text.splitlines())} log lines, {text.count('Traceback')} tracebacks; {errors[0]}")


def test_fresh_sqlite_store_first_use_is_serialized(tmp_path):
    """Two studies starting at once on a fresh sqlite MLflow store both ran
    MLflow's schema migrations; the loser crashed with ``duplicate column name: step``. The
    runner's first use (``check_tracking``) holds a lock beside the database."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("import sys; from study.tracking.server import check_tracking; from study.tracking.runs import start_parent_run; "
            "check_tracking(sys.argv[1]); start_parent_run(sys.argv[1], sys.argv[2], sys.argv[2], {'a': 1})")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, f"s{i}"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-1500:] for o in outs)
    from mlflow.tracking import MlflowClient

    assert sorted(e.name for e in MlflowClient(uri).search_experiments() if e.name != "Default") == ["s0", "s1", "s2"]
    assert (tmp_path / "mlflow.db.lock").exists()
