"""Where a long study stands: a status line at a steady rhythm (redrawn in place on a terminal,
plain lines in a log), the seed recipes marked, where to watch printed at the start, and the
registered model's ``@best`` alias with the command that serves it at the end."""

from __future__ import annotations

import io
import json
import pickle
import re
from types import SimpleNamespace

import pytest

from study.config import load_study_config
from study.console.progress import ProgressView, Status, measure
from study.search.space import seed_names, seed_points
from tests.conftest import ROOT


def trial(tid: str, status: str, seen: int | None = None, total: int | None = None, **config) -> SimpleNamespace:
    last = {k: v for k, v in (("samples_seen", seen), ("samples_total", total)) if v is not None}
    return SimpleNamespace(trial_id=tid, status=status, last_result=last, config=config)


#: (trials, planned, expected (finished, running, samples, samples left))
MEASURE = [
    ([], 4, (0, 0, 0, None)),  # nothing known yet
    ([trial("a", "RUNNING", 100, 1000), trial("b", "PENDING")], 4, (0, 1, 100, 900 + 3 * 1000)),  # every trial its plan
    # two finished (ASHA stopped one at 200): the rest see their mean, 600; a running trial past it sees its plan
    ([trial("a", "TERMINATED", 200, 1000), trial("b", "TERMINATED", 1000, 1000), trial("c", "RUNNING", 700, 1000),
      trial("d", "RUNNING", 100, 1000)], 6, (2, 2, 2000, 300 + 500 + 2 * 600)),
    ([trial("a", "ERROR", 50, 1000), trial("b", "TERMINATED", 1000, 1000)], 2, (2, 0, 1050, 0)),
    # a running trial with a smaller plan than the finished ones' mean sees its plan
    ([trial("a", "TERMINATED", 2000, 2000), trial("b", "RUNNING", 512, 1000)], 2, (1, 1, 2512, 488)),
]


@pytest.mark.parametrize("trials,total,expected", MEASURE, ids=["empty", "before any finished", "mean of finished", "all done", "a smaller plan"])
def test_measure(trials, total, expected):
    assert measure(trials, total) == expected


#: (status, best, the line it makes)
LINES = [
    (Status(8, 3, 2, 5400, None), "84.20% (abe404f9)",
     "3/8 trials finished, 2 running, 3 pending · best 84.20% (abe404f9) · 5,400 samples · ETA –"),
    (Status(8, 3, 2, 5400, 7200, rate=40.0), None, "3/8 trials finished, 2 running, 3 pending · 5,400 samples at 40/s · ETA ~3:00"),
    (Status(8, 3, 2, 5400, 7200, rate=40.0, budget_left_s=60), None,
     "3/8 trials finished, 2 running, 3 pending · 5,400 samples at 40/s · ETA ≤1:00 (time budget)"),
    (Status(2, 2, 0, 100, 0.0, rate=10.0), None, "2/2 trials finished, 0 running, 0 pending · 100 samples at 10/s · ETA ~0:00"),
    (Status(200, 10, 4, 10**6, 4 * 10**6, rate=500.0), None,
     "10/200 trials finished, 4 running, 186 pending · 1,000,000 samples at 500/s · ETA ~2:13:20"),
]


@pytest.mark.parametrize("status,best,line", LINES, ids=[ln[2][:40] for ln in LINES])
def test_status_text(status, best, line):
    assert status.text(best) == line


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(view: ProgressView, clock: Clock, times: list[float]) -> None:
    """The view through a study: two trials, one result each at t=5, status checks at ``times``."""
    view.setup()
    a, b = trial("aaaa", "RUNNING", **{"lora.r": 4}), trial("bbbb", "RUNNING", **{"lora.r": 8})
    view.on_trial_start(0, [a, b], a)
    view.on_trial_start(0, [a, b], b)
    for t in times:
        clock.t = t
        if t == 5:
            a.last_result, b.last_result = {"samples_seen": 200, "samples_total": 400}, {"samples_seen": 100, "samples_total": 400}
            view.on_trial_result(0, [a, b], a, {"accuracy": 0.7, **a.last_result})
        view.on_step_end(0, [a, b])
    view.on_experiment_end([a, b])


def test_plain_status_lines_at_a_slow_rhythm(capsys):
    clock = Clock()
    view = ProgressView(["lora.r"], num_samples=4, plain_every_s=60, clock=clock)
    _run(view, clock, [0, 1, 5, 30, 59, 61, 90, 119, 121.5])
    lines = capsys.readouterr().out.splitlines()
    assert "\r" not in "".join(lines)
    status = [ln for ln in lines if " status " in ln]
    assert [ln.split()[0] for ln in status] == ["1:01", "2:01"]
    assert status[0].split(None, 3)[1:3] == ["study", "status"]
    # 300 samples in 61 s; left: 200 + 300 of the running trials' plans, 400 for each of the 2 pending
    assert status[0].endswith("0/4 trials finished, 2 running, 2 pending · best 70.00% (aaaa) · 300 samples at 5/s · ETA ~4:24")


def test_terminal_status_line_redrawn_in_place(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr("sys.stdout", term)
    clock = Clock()
    view = ProgressView(["lora.r"], num_samples=4, tty_every_s=1, clock=clock)
    _run(view, clock, [0, 1.5, 2, 3, 5, 7])
    out = term.getvalue()
    assert re.search(r"\r +0:07  study +status +0/4 trials finished, 2 running, 2 pending · best 70.00% \(aaaa\)", out), out
    assert not re.search(r"(^|\n) *\d+:\d\d  study +status", out), "a status line printed as a line of its own"
    assert re.search(r"\r +0:05  aaaa +running +200/400 samples[^\r]*\n\r +0:03  study +status", out)  # the status cleared, the event
    # written as a line, the status drawn again below it
    assert view._bar is None  # closed (and cleared) at the end
    view.show_status([], force=True)
    assert pickle.loads(pickle.dumps(view)).best == (0.7, "aaaa")  # a view with a terminal bar pickles without it


def test_seed_recipes_are_marked(capsys):
    cfg = load_study_config(ROOT / "study" / "configs" / "sst2-quick.yaml")
    seeds = seed_names(cfg)
    assert list(seeds.points) == ["seed-000", "seed-002"] and list(seeds.points.values()) == seed_points(cfg)
    view = ProgressView(sorted(cfg.search), seeds=seeds)
    view.setup()
    first, second = seed_points(cfg)
    for tid, config in (("s0", first), ("s2", {**second, "train.lr": float(second["train.lr"])}), ("tpe", {**first, "train.lr": 0.0031})):
        view.on_trial_start(0, [], SimpleNamespace(trial_id=tid, config=config))
    lines = capsys.readouterr().out.splitlines()
    assert "seed-000 recipe: r=4 a=4 lr=1.0e-4 do=0 qv n=2000" in lines[0]
    assert "seed-002 recipe: r=8 a=2" in lines[1]
    assert "recipe" not in lines[2]
    assert seeds.of({**first, "data.size": 1000}) is None


def _console(tiny_study) -> tuple[list[str], dict, dict]:
    name, home = tiny_study
    out = (home / "console.stdout").read_text().splitlines()
    return out, json.loads((home / name / "summary.json").read_text()), json.loads((home / name / "study.json").read_text())


def test_a_real_study_says_where_to_watch_at_the_start_and_how_to_serve_at_the_end(tiny_study):
    out, summary, record = _console(tiny_study)
    first_trial = next(i for i, ln in enumerate(out) if re.search(r"\sstarted\s", ln))
    start = out[:first_trial]
    from mlflow import MlflowClient

    experiment_id = MlflowClient(record["tracking_uri"]).get_run(record["parent_run_id"]).info.experiment_id
    assert any(f"mlflow ui --backend-store-uri {record['tracking_uri']}" in ln and f"#/experiments/{experiment_id}/runs" in ln
               for ln in start), start
    assert any(ln.split()[:1] == ["report"] and f"dashboards.report --study {summary['name']}" in ln for ln in start), start
    assert any(ln.split()[:3] == ["watch", "tail", "-f"] and ln.endswith("study.log") for ln in start), start
    reg = summary["registered_model"]
    assert any(f"alias @best (models:/{reg['name']}@best)" in ln for ln in out)
    serve = [ln for ln in out if ln.startswith("serve:")]
    assert len(serve) == 1 and f"mlflow models serve -m models:/{reg['name']}@best" in serve[0]
    assert f"MLFLOW_TRACKING_URI={record['tracking_uri']}" in serve[0]


def test_a_real_study_marks_its_seed_trials(tiny_study):
    out, summary, _ = _console(tiny_study)
    seeds = {r["trial_id"]: r["seed"] for r in summary["table"] if r.get("seed")}
    assert sorted(seeds.values()) == ["seed-000", "seed-002"]
    for tid, seed in seeds.items():
        assert any(re.search(rf"\b{tid}\s+started\s+{seed} recipe: ", ln) for ln in out), (tid, seed)
