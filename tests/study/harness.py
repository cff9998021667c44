"""An in-process Ray Tune harness for the searcher and tracker tests: a toy trainable and helpers
to build, interrupt, resume and read back a Tuner run on it.

The toy trainable is pure Python: accuracy = x * s / (s + 20) at s = samples_seen, so the
ranking at every ASHA rung is the ranking by ``x`` and the ground truth is known: a trial
was pruned iff it stopped before its own natural end (``n_reports * 10`` samples).
Trials run one at a time (``max_concurrent=1``) so rung decisions are deterministic.

Ray workers import ``toy_trainable`` by its module path (``tests.study.harness``), so it stays a
module-level function here.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from ray import tune

from study.search.asha import SchedulerStateCallback

MAX_T = 80
SPACE = {"x": tune.uniform(0.0, 1.0), "n_reports": tune.choice([3, 8])}
# A: full budget (ASHA's own STOP at max_t), B: strongest but finishes naturally at 30 < max_t,
# C: fails once (restore test) -- the rest are TPE suggestions, mostly pruned by A and B.
POINTS = [{"x": 0.9, "n_reports": 8}, {"x": 1.0, "n_reports": 3}, {"x": 0.95, "n_reports": 8}]


def accuracy(x: float, samples: int) -> float:
    return x * samples / (samples + 20)


def toy_trainable(config: dict) -> None:
    """Reports ``n_reports`` times (10 samples each), checkpointing every report."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "i").read_text())
    fail_mark = Path(config["mark_dir"], f"failed_{config['x']}")
    for i in range(start + 1, config["n_reports"] + 1):
        if config["x"] == config.get("fail_once_x") and i == 3 and not fail_mark.exists():
            fail_mark.touch()
            raise RuntimeError("injected failure")
        samples = i * 10
        acc = accuracy(config["x"], samples)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "i").write_text(str(i))
            tune.report(
                {"accuracy": acc, "f1": acc, "eval_loss": 1 - acc, "samples_seen": samples, "epoch": i / 8},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


class InterruptOnce(tune.Callback):
    """Ctrl-C-like stop after ``after`` results (SIGUSR1 is Tune's graceful-stop signal).

    The marker file keeps the copy restored from ``tuner.pkl`` from firing again.
    """

    def __init__(self, marker: Path, after: int) -> None:
        self.marker, self.after, self.seen = str(marker), after, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.after and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGUSR1)


def make_tuner(tmp_path: Path, searcher, scheduler, num_samples: int, callbacks=(), fail_once_x=None):
    return tune.Tuner(
        toy_trainable,
        param_space={"mark_dir": str(tmp_path), "fail_once_x": fail_once_x},
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=num_samples, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            name="exp",
            verbose=0,
            callbacks=[SchedulerStateCallback(scheduler), *callbacks],
        ),
    )


def final_results(grid) -> dict[str, dict]:
    """trial_id -> {config, samples (reported series), acc (series)} from a ResultGrid."""
    out = {}
    for r in grid:
        df = r.metrics_dataframe
        out[r.metrics["trial_id"]] = {
            "config": r.config,
            "samples": [int(s) for s in df["samples_seen"]] if df is not None else [],
            "acc": list(df["accuracy"]) if df is not None else [],
            "error": r.error,
        }
    return out


def resume(path: str) -> dict[str, dict]:
    """``Tuner.restore`` the way the study runner does, run to the end, return final_results."""
    tuner = tune.Tuner.restore(path, toy_trainable, resume_unfinished=True, restart_errored=True)
    return final_results(tuner.fit())


def was_pruned(info: dict) -> bool:
    """Ground truth: stopped before its own natural end."""
    return bool(info["samples"]) and info["samples"][-1] < info["config"]["n_reports"] * 10
