"""The throughput benchmark runs end to end on a tiny setting and writes the agreed JSON keys.

Speed ratios are not asserted: the machine may be shared, and a test must not flake on load.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "trainable_speed.py"
KEYS = ("ours", "hf_trainer", "hf_trainer_grouped", "padding_efficiency")


def _run(args, env):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)  # generous: a busy 2-core machine


@pytest.mark.slow
def test_tiny_run_writes_json(sst2, tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "LORA_STUDY_DATA": str(sst2)}
    proc = _run(["--samples", "128", "--threads", "1", "--json", str(out)], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, (key, res.get(key))
    for key in ("padding_efficiency", "padding_efficiency_random", "padding_efficiency_grouped"):
        assert 0 < res[key] <= 1, (key, res[key])
    assert res["config"]["samples"] == 128 and res["config"]["threads"] == 1
    assert res["config"]["fast_dropout"] is True and res["config"]["overrides"] == []
    assert all(r["threads"] == 1 for runs in res["runs"].values() for r in runs)
    assert res["runs"]["hf_trainer_grouped"][0]["sampler"] == "LengthGroupedSampler"
    assert res["runs"]["hf_trainer"][0]["sampler"] == "RandomSampler"
    assert {r["timed_samples"] for runs in res["runs"].values() for r in runs} == {128}  # the whole epoch
    assert res["date"] and res["hardware"]["usable_cpus"] >= 1
    assert "ours" in proc.stdout and "samples/s" in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_warmup_steps_are_excluded(sst2, tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "LORA_STUDY_DATA": str(sst2)}
    proc = _run(["--samples", "96", "--threads", "1", "--warmup-steps", "1", "--set", "train.fast_dropout=false",
                 "--json", str(out)], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["config"]["fast_dropout"] is False and res["config"]["overrides"] == ["train.fast_dropout=false"]
    assert {r["timed_samples"] for runs in res["runs"].values() for r in runs} == {64}  # 3 steps, 1 untimed
    assert all(r["samples_per_s_epoch"] > 0 for runs in res["runs"].values() for r in runs)


def test_missing_data_is_one_line_error(tmp_path):
    env = {**os.environ, "LORA_STUDY_DATA": str(tmp_path / "nowhere")}
    proc = _run(["--samples", "64"], env)
    assert proc.returncode == 2
    assert "SST-2 not found" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_override_is_one_line_error(sst2):
    env = {**os.environ, "LORA_STUDY_DATA": str(sst2)}
    proc = _run(["--samples", "64", "--set", "lora.r=0"], env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lora.r" in proc.stderr and "Traceback" not in proc.stderr
