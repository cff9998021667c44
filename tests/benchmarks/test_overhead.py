"""The overhead benchmark: a real (tiny) study, its wall time split into parts that tile it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.overhead import breakdown

ROOT = Path(__file__).resolve().parents[2]


def rows(start, evals, train=2.0, ev=0.5, gap=0.1, setup=1.0):
    """Reported rows of one trial whose first training step is at ``start``."""
    out, t = [], start
    for i in range(evals):
        t += train + ev + (gap if i else 0.0)
        out.append({"time_unix": t, "train_s": train, "eval_s": ev, "setup_s": setup})
    return out


def test_breakdown_tiles_the_wall_time():
    # fit starts at 100; trial 1's first step at 104 (4 s start-up: 3 outside + 1 setup), 3 evals;
    # trial 2 starts 2 s after trial 1's last report; fit returns 1 s after the last report.
    t1 = rows(104.0, 3)
    t2 = rows(t1[-1]["time_unix"] + 2.0, 2)
    wall = t2[-1]["time_unix"] + 1.0 - 100.0
    b = breakdown([t2, t1], fit_start=100.0, wall_s=wall)  # any order in, start order out
    assert b["startup_s_per_trial"] == pytest.approx([4.0, 2.0])
    assert b["startup_outside_trial_s"] == pytest.approx([3.0, 1.0])
    assert b["report_overhead_s_per_eval"] == pytest.approx([0.1, 0.1, 0.1])
    parts = b["breakdown_s"]
    assert parts == pytest.approx({"train": 10.0, "eval": 2.5, "startup": 6.0, "report": 0.3, "tail": 1.0})
    assert sum(parts.values()) == pytest.approx(wall)
    assert b["overhead_fraction"] == pytest.approx((wall - 12.5) / wall)
    assert b["replay_startup_s"] == pytest.approx(2.0) and b["replay_eval_overhead_s"] == pytest.approx(0.1)


@pytest.mark.slow
def test_tiny_study_end_to_end(tiny_bert, sst2_small, tmp_path):
    out = tmp_path / "overhead.json"
    env = {**os.environ, "LORA_STUDY_DATA": str(sst2_small)}
    p = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--model", str(tiny_bert), "--size", "96",
                        "--trials", "2", "--evals", "2", "--threads", "1", "--storage", str(tmp_path / "s"),
                        "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["trials"] == 2 and len(res["startup_s_per_trial"]) == 2 and len(res["report_overhead_s_per_eval"]) == 2
    assert sum(res["breakdown_s"].values()) == pytest.approx(res["wall_s"], rel=1e-6)
    assert all(v >= 0 for k, v in res["breakdown_s"].items() if k != "report")
    assert all(o > 0 for o in res["startup_outside_trial_s"])  # Ray schedules before the trainable runs
    assert 0 < res["overhead_fraction"] < res["outside_train_fraction"] < 1
    assert res["date"] and res["hardware"]["usable_cpus"] >= 1
    assert "goal ≤ 5%" in p.stdout
