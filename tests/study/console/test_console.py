"""What a study prints: one progress view on stdout within a line budget, libraries in the study
log instead of stderr, and ``--help`` answered before anything heavy is imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.console.labels import legend, short_values, trial_label
from study.console.progress import ProgressView
from tests.conftest import ROOT

#: The console budget of the quick study (.ci/run checks it on the README's first command); the
#: tiny study (6 trials, an evaluation every 100 of up to 600 samples: up to 36 evaluations) must
#: keep it too.
MAX_STDOUT, MAX_STDERR = 80, 5


def _console(tiny_study) -> tuple[list[str], list[str], dict, Path]:
    name, home = tiny_study
    out = (home / "console.stdout").read_text().splitlines()
    err = (home / "console.stderr").read_text().splitlines()
    return out, err, json.loads((home / name / "summary.json").read_text()), home / name


def test_line_budget(tiny_study):
    out, err, _, _ = _console(tiny_study)
    assert len(out) <= MAX_STDOUT, "\n".join(out)
    assert len(err) <= MAX_STDERR, "\n".join(err)
    assert not [ln for ln in out if re.search(r"[╭│╰]|Trial status|Current time:|started with configuration", ln)], "Ray's reporter is on"


def test_one_progress_view_with_values_states_and_best(tiny_study):
    out, _, summary, _ = _console(tiny_study)
    out = out[: next(i for i, ln in enumerate(out) if ln.startswith("== study "))]  # the progress, not the summary
    rows = {r["trial_id"]: r for r in summary["table"]}
    searched = sorted(summary["best"]["params"])
    for tid, row in rows.items():
        started = [ln for ln in out if re.search(rf"\b{tid}\s+started\s", ln)]
        assert len(started) == 1, (tid, started)
        assert started[0].rstrip().endswith(short_values(row["params"], searched)), started[0]
        ends = [ln for ln in out if re.search(rf"\b{tid}\s+(completed|pruned|failed|stopped)\s", ln)]
        assert len(ends) == 1 and re.search(rf"\b{row['state']}\b", ends[0]), (tid, row["state"], ends)
        running = [ln for ln in out if re.search(rf"\b{tid}\s+running\s", ln)]
        assert all("best " in ln for ln in running + ends)
    best = summary["best"]
    last_eval = [ln for ln in out if re.search(r"\s(running|completed|pruned)\s", ln)][-1]
    assert f"best {best['accuracy'] * 100:.2f}%" in last_eval  # best so far ends at the study's best


def test_libraries_write_to_the_study_log(tiny_study):
    _, err, _, study_dir = _console(tiny_study)
    log = (study_dir / "study.log").read_text()
    assert "Started a local Ray instance" in log and "A new study created in memory" in log
    noise = ("Checkpoint successfully created", "INFO", "Downloading artifacts", "A new study created",
             "Successfully registered model", "UserWarning")
    assert not [ln for ln in err if any(n in ln for n in noise)], err


VALUES = [
    ({"lora.r": 4, "lora.alpha_multiple": 4.0, "train.lr": 0.004, "lora.target_modules": "qv", "data.size": 2000},
     "r=4 a=4 lr=4.0e-3 qv n=2000"),
    ({"lora.dropout": 0.0523, "data.size": None, "lora.target_modules": ["query", "value"]}, "do=0.052 query,value n=all"),
    ({"train.lr": 1e-4, "train.seed": 3}, "lr=1.0e-4 seed=3"),
]


@pytest.mark.parametrize("config,expected", VALUES, ids=[v[1] for v in VALUES])
def test_short_values(config, expected):
    assert short_values(config, list(config)) == expected
    assert trial_label("abe404f9", config, list(config)) == f"abe404f9 {expected}"


def test_legend_names_the_keys():
    assert legend(["train.lr", "lora.r", "lora.target_modules"]) == "r=lora.r lr=train.lr lora.target_modules"


class _Pruned:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def was_pruned(self, trial_id: str) -> bool:
        return trial_id in self.ids


def test_progress_view_states_and_best_so_far(capsys):
    pruned = _Pruned()
    view = ProgressView(["lora.r"], "accuracy", "max", pruned_signal=pruned)
    view.setup()
    a, b = (SimpleNamespace(trial_id=t, config={"lora.r": r}, last_result={}) for t, r in (("aaaa", 4), ("bbbb", 8)))
    view.on_trial_start(0, [], a)
    view.on_trial_start(0, [], b)
    view.on_trial_result(0, [], a, {"accuracy": 0.70, "samples_seen": 100, "samples_total": 200})
    view.on_trial_result(0, [], b, {"accuracy": 0.60, "samples_seen": 100, "samples_total": 200})
    pruned.ids.add("bbbb")  # ASHA decides before callbacks see the result, and marks it done
    view.on_trial_result(0, [], b, {"accuracy": 0.65, "samples_seen": 200, "samples_total": 400, "done": True})
    view.on_trial_complete(0, [], b)  # already said "pruned": no second line
    view.on_trial_result(0, [], a, {"accuracy": 0.80, "samples_seen": 200, "samples_total": 200})
    view.on_trial_complete(0, [], a)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1:3] for ln in lines] == [["aaaa", "started"], ["bbbb", "started"], ["aaaa", "running"],
                                                 ["bbbb", "running"], ["bbbb", "pruned"], ["aaaa", "completed"]]
    assert lines[0].endswith("r=4") and lines[1].endswith("r=8")
    assert "best 70.00% (aaaa)" in lines[3] and "best 80.00% (aaaa)" in lines[5]
    assert view.get_state() == {"best": (0.80, "aaaa")}


@pytest.mark.parametrize("module", ["study.run", "trainables.loop", "dashboards.report"])
def test_help_imports_nothing_heavy(module):
    """``--help`` answers before torch, transformers, Ray or MLflow load (those take seconds)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    heavy = {"torch", "transformers", "ray", "mlflow", "peft", "matplotlib"} & imported
    assert not heavy, f"{module} --help imports {sorted(heavy)}"


_UNRAISABLE = """
import gc, sys
from study.console.logs import quiet_worker_exit
quiet_worker_exit()
class Exits:
    def __del__(self):
        raise SystemExit(1)  # what Ray's SIGTERM handler raises when the signal lands in a GC callback
class Fails:
    def __del__(self):
        raise ValueError("a real bug")
Exits(); Fails(); gc.collect()
print("alive")
"""


def test_a_worker_told_to_exit_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-c", _UNRAISABLE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "alive", proc.stderr
    assert "SystemExit" not in proc.stderr
    assert "ValueError: a real bug" in proc.stderr  # every other unraisable exception is still shown


_WORKER_HOOK = """
import sys, ray
from study.run import _init_ray, _shutdown_ray
assert _init_ray(None) is True and _init_ray(None) is False
@ray.remote
def hook_name():
    import sys
    return sys.unraisablehook.__qualname__
print(ray.get(hook_name.remote()))
_shutdown_ray(True, sys.argv[1])
print(ray.is_initialized())
"""


def test_study_ray_workers_install_the_quiet_exit_hook(tmp_path):
    log = tmp_path / "study.log"
    proc = subprocess.run([sys.executable, "-c", _WORKER_HOOK, str(log)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["quiet_worker_exit.<locals>.hook", "False"], proc.stdout
