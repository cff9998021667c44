"""What a reader of the report can make out: the learning curves' rung and ``max_t`` names never
sit on the trial ids at the lines' ends, the legend's "completed" sample shows the completed
trials' own colours, and building the report prints no Optuna INFO line."""

from __future__ import annotations

from itertools import takewhile
from pathlib import Path
from types import SimpleNamespace

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

from dashboards import plots as P
from dashboards.data import _optuna_study
from study.config import StudyConfig

MAX_T = 600


def _row(tid: str, state: str, end: int, acc: float) -> dict:
    history = [{"samples_seen": s, "accuracy": acc - 0.01 * (end - s) / end} for s in range(100, end + 1, 100)]
    return {"trial_id": tid, "state": state, "history": history, "best": {"accuracy": acc, "samples_seen": end}, "params": {}}


def _data(rows: list[dict]) -> SimpleNamespace:
    counts = {s: sum(r["state"] == s for r in rows) for s in ("completed", "pruned", "failed", "unfinished")}
    best = max(rows, key=lambda r: r["best"]["accuracy"])
    return SimpleNamespace(rows=rows, searched=[], metric="accuracy", best={"trial_id": best["trial_id"]}, counts={**counts, "total": len(rows)})


# (id, trials as (state, samples at the end, accuracy))
STUDIES = [
    ("all-at-max_t-near-the-top", [("completed", MAX_T, 0.90 + 0.001 * i) for i in range(6)]),
    ("pruned-and-completed", [("completed", MAX_T, 0.88), ("completed", MAX_T, 0.89), ("pruned", 200, 0.80), ("pruned", 400, 0.85),
                              ("completed", MAX_T, 0.91)]),
    ("one-completed", [("completed", MAX_T, 0.9), ("pruned", 100, 0.7)]),
]


@pytest.fixture(params=[s[1] for s in STUDIES], ids=[s[0] for s in STUDIES])
def curves(request):
    rows = [_row(f"t{i:07d}", *spec) for i, spec in enumerate(request.param)]
    fig = P.learning_curves(_data(rows), [100, 200, 400], MAX_T)
    FigureCanvasAgg(fig).draw()
    return fig, rows


def _rung_labels(fig) -> list:
    ax = fig.axes[0]
    return [t for child in ax.child_axes for t in child.get_xticklabels() if t.get_text()]


def test_rung_names_sit_above_the_axes_not_on_trial_ids(curves):
    fig, _ = curves
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    names = _rung_labels(fig)
    assert [t.get_text() for t in names] == ["rung 0: 100", "rung 1: 200", "rung 2: 400", "max_t 600"]
    assert not any("rung" in t.get_text() or "max_t" in t.get_text() for t in ax.texts)
    top = ax.get_window_extent(renderer).y1
    for name in names:
        box = name.get_window_extent(renderer)
        assert box.y0 >= top - 1, name.get_text()
        for tid in ax.texts:
            assert not box.overlaps(tid.get_window_extent(renderer)), (name.get_text(), tid.get_text())


def _lines(artist) -> list:
    out = []
    for child in artist.get_children():
        out += ([child] if isinstance(child, Line2D) else []) + _lines(child)
    return out


def test_completed_legend_shows_the_completed_colours(curves):
    fig, rows = curves
    (legend,) = fig.legends
    n = sum(r["state"] == "completed" for r in rows)
    assert legend.get_texts()[0].get_text() == f"completed ({n}): a colour each"
    completed = [to_rgba(line.get_color()) for line in fig.axes[0].get_lines()
                 if line.get_marker() == "o" and line.get_linestyle() == "-" and line.get_color() != "black"]
    drawn = [to_rgba(line.get_color()) for line in _lines(legend)]  # the first entry's segments come first
    sample = list(takewhile(lambda c: c in completed, drawn))
    assert sample == completed[: min(len(completed), 4)] and len(set(sample)) == len(sample)


def test_building_the_optuna_study_prints_nothing(capfd, tmp_path):
    """Optuna says "A new study created in memory …" (INFO) on stderr when the report builds its study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)  # what a fresh process has
    capfd.readouterr()
    paths = SimpleNamespace(journal=Path(tmp_path / "no-journal.log"))
    study, source = _optuna_study(paths, StudyConfig(), [])
    out, err = capfd.readouterr()
    assert study is not None and "rebuilt" in source
    assert "A new study created" not in out + err and err == ""
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # left as it was
