"""A study whose driver is SIGKILLed again and again: MLflow holds every evaluation once, and no
trial redoes work a checkpoint on disk already holds.

Uses the process helpers of ``test_resume_faults`` (the driver and its local Ray run in their own
session; a kill takes the whole session).
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from tests.conftest import run_study, tiny_study_args
from tests.study.drivers import (
    crash_driver,
    has_checkpoint,
    kill_session,
    n_results,
    start_study,
    tail,
    verify_study,
    wait_for,
)

#: Two 600-example trials side by side, 36 evaluations each (time to kill the driver three times).
LONG = ["--set", "train.epochs=5", "--set", "asha.enabled=false", "--set", "search.data.size.choice=[600]",
        "--cpus-per-trial", "0.5"]


def assert_each_point_once(fig: dict) -> dict[str, int]:
    """Every metric of every trial run: its steps, in the order MLflow recorded them, strictly
    increase and are exactly the trial's evaluations in Ray's history. Returns points per trial."""
    client, points = fig["client"], {}
    for run in fig["children"]:
        tid = run.data.tags["ray_trial_id"]
        want = sorted({r["samples_seen"] for r in fig["results"][tid]})
        assert run.data.metrics, f"trial {tid}: no metrics"
        for key in run.data.metrics:
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.timestamp, m.step))
            steps = [m.step for m in history]
            assert all(a < b for a, b in zip(steps, steps[1:])), f"trial {tid} {key}: steps not strictly increasing: {steps}"
            assert steps == want, f"trial {tid} {key}: MLflow steps {steps} != Ray's evaluations {want}"
        points[tid] = len(want)
    return points


@pytest.mark.slow
def test_three_driver_kills_write_each_point_once(tmp_path, tiny_bert, sst2_small):
    """Three SIGKILLs of the driver, each after a few new results, each followed by ``--resume``,
    then a last ``--resume`` to the end. Before: 3 of 4 resumes wrote points twice (224, 416, 416,
    608, 608, 800), and a trial restarted from an older checkpoint while a newer intact one sat on
    disk ahead of its result.json."""
    n, name, home, log = 2, "kills", tmp_path / "studies", tmp_path / "kills.log"
    home.mkdir()
    seed = int(os.environ.get("LORA_STUDY_FAULT_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    resume_args = ["--name", name, "--resume", "--storage", str(home)]
    kills = []
    for k in range(3):
        before = n_results(home / name)
        proc = start_study(tiny_study_args(name, home, tiny_bert, sst2_small, n, LONG) if k == 0 else resume_args, home, log)
        try:
            target, delay = before + rng.randint(2, 6), rng.uniform(0.0, 0.5)
            wait_for(lambda: n_results(home / name) >= target and has_checkpoint(home / name), proc, log, 600,
                     f"{target - before} new results in run {k + 1}", poll=0.05)
            time.sleep(delay)
            assert proc.poll() is None, f"run {k + 1} finished before its kill (seed {seed}):\n{tail(log)}"
            crash_driver(proc)
            kills.append(n_results(home / name) - before)
        finally:
            kill_session(proc.pid)
    out = run_study(resume_args, home, timeout=900)
    text = log.read_text(errors="replace") + out.stdout + out.stderr
    fig = verify_study(home, name, n)
    points = assert_each_point_once(fig)
    assert "is beyond its stored results" not in text, f"a checkpoint on disk was passed over (seed {seed})"
    assert fig["rereports"] == 0, f"{fig['rereports']} evaluations were done twice (seed {seed}): " + json.dumps(
        {tid: [r["samples_seen"] for r in rows] for tid, rows in fig["results"].items()})
    print(f"\n[kills] seed {seed}: {kills} new results at the kills; MLflow points per trial {points}; "
          f"{fig['rereports']} re-reported evaluations")
