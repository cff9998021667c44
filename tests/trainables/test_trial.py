"""The trainable end to end: metrics, exact resume, checkpoint size, the CLI, the real model."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.config import TrialConfig
from trainables.loop import load_checkpoint, main, run_trial

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"accuracy", "f1", "eval_loss", "train_loss", "samples_seen", "epoch", "trainable_params", "samples_per_s",
        "setup_s", "train_s", "eval_s", "time_unix"}


def tiny_cfg(model, data, **over):
    d = {"model.name": str(model), "data.path": str(data), "data.size": 256, "data.max_length": 48,
         "train.epochs": 2, "train.batch_size": 16, "train.eval_every_samples": 96, "train.lr": 5e-3,
         "train.threads": 1, "lora.r": 4}
    d.update(over)
    return TrialConfig.from_dict(d)


class Collect:
    def __init__(self, stop_after=None):
        self.metrics, self.ckpts, self.stop_after = [], [], stop_after

    def __call__(self, metrics, ckpt_dir):
        self.metrics.append(metrics)
        self.ckpts.append(load_checkpoint(ckpt_dir))
        if self.stop_after and len(self.metrics) == self.stop_after:
            raise KeyboardInterrupt("simulated kill")


def test_reports_every_eval_point(tiny_bert, sst2_small):
    rep = Collect()
    run_trial(tiny_cfg(tiny_bert, sst2_small), report=rep)
    seen = [m["samples_seen"] for m in rep.metrics]
    # 512 samples over 2 epochs, eval at >=96, 192, ... and at the end
    assert seen == [96, 192, 288, 384, 480, 512]
    assert all(KEYS <= set(m) for m in rep.metrics)
    assert rep.metrics[-1]["epoch"] == pytest.approx(2.0)
    assert all(0 <= m["accuracy"] <= 1 and math.isfinite(m["train_loss"]) for m in rep.metrics)
    assert all(m["train_s"] > 0 and m["eval_s"] > 0 and m["setup_s"] > 0 for m in rep.metrics)
    assert len({m["setup_s"] for m in rep.metrics}) == 1  # once per run of the trial


def test_eval_per_epoch_when_unset(tiny_bert, sst2_small):
    rep = Collect()
    run_trial(tiny_cfg(tiny_bert, sst2_small, **{"train.eval_every_samples": None, "train.epochs": 1.5}), report=rep)
    assert [m["samples_seen"] for m in rep.metrics] == [256, 384]


@pytest.mark.parametrize("every, at, expected", [
    (None, [100, 200, 400], [112, 208, 400, 512]),  # geometric points, then the end
    (160, [50], [64, 160, 320, 480, 512]),  # both schedules merge
    (None, [10_000], [512]),  # a point past the end: only the end
])
def test_eval_at_samples(tiny_bert, sst2_small, every, at, expected):
    rep = Collect()
    run_trial(tiny_cfg(tiny_bert, sst2_small, **{"train.eval_every_samples": every, "train.eval_at_samples": at}), report=rep)
    assert [m["samples_seen"] for m in rep.metrics] == expected


def test_holdout_reports_validation_and_dev(tiny_bert, sst2_small):
    rep = Collect()
    run_trial(tiny_cfg(tiny_bert, sst2_small, **{"data.holdout_size": 100, "train.epochs": 1}), report=rep)
    last = rep.metrics[-1]
    assert {"accuracy", "f1", "eval_loss", "dev_accuracy", "dev_f1", "dev_eval_loss"} <= set(last)
    assert last["accuracy"] != last["dev_accuracy"] or last["eval_loss"] != last["dev_eval_loss"]


def test_resume_continues_exactly(tiny_bert, sst2_small):
    cfg = tiny_cfg(tiny_bert, sst2_small, **{"lora.dropout": 0.3})
    full = Collect()
    run_trial(cfg, report=full)
    killed = Collect(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, report=killed)
    resumed = Collect()
    run_trial(cfg, report=resumed, resume=killed.ckpts[-1])
    assert [m["samples_seen"] for m in resumed.metrics] == [m["samples_seen"] for m in full.metrics[3:]]
    for a, b in zip(full.metrics[3:], resumed.metrics):
        for k in ("train_loss", "eval_loss", "accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_checkpoint_is_adapter_only_and_small(sst2_small, tmp_path):
    """Real MiniLM, r=8 on query/value: the checkpoint holds KBs of adapter, not the 90 MB base."""
    cfg_args = ["--set", f"data.path={sst2_small}", "--set", "data.size=200", "--set", "train.epochs=1",
                "--set", "lora.r=8", "--set", "train.threads=2", "--out", str(tmp_path / "out")]
    assert main(cfg_args) == 0
    last = tmp_path / "out" / "last"
    size = sum(f.stat().st_size for f in last.rglob("*") if f.is_file())
    assert size <= 2 * 1024 * 1024, size
    meta = json.loads((last / "lora_study.json").read_text())
    assert meta["config"]["lora"]["r"] == 8 and meta["metrics"]["samples_seen"] == 200
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(last)).r == 8


def test_real_minilm_learns_from_200_sentences(sst2):
    cfg = TrialConfig.from_dict({"data.path": str(sst2), "data.size": 200, "data.dev_size": 200,
                                 "train.epochs": 6, "train.lr": 5e-3, "train.batch_size": 16,
                                 "train.warmup_ratio": 0.1, "train.threads": 2})
    hist = run_trial(cfg)
    assert hist[-1]["trainable_params"] == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2
    assert hist[-1]["accuracy"] > 0.6, hist  # chance is 0.5


def test_cli_bad_input_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainables.loop", "--set", "lora.r=0"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: invalid config: lora.r") and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "trainables.loop", "--set", f"data.path={tmp_path}/none"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "data not found" in proc.stderr and "Traceback" not in proc.stderr
