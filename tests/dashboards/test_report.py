"""The study report: built from the finished ``tiny_study`` (and a copy made to look running),
checked by content (sections, header numbers against summary.json and Ray, embedded figures,
files, MLflow artifacts), by its figures (legends off the data, every trial named on hover,
samples seen on the x-axes, a slice panel per searched key) and rendered in real headless
Chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboards import analysis as A
from dashboards import plots as P
from dashboards.data import load_study_data
from dashboards.html import fmt
from dashboards.report import CONFUSION_JSON, FIGURES, SECTION_IDS, build_report, main
from study.console.labels import trial_label
from study.search.space import asha_rungs

#: Figures every study with at least one result gets (importances need varied accuracies).
ALWAYS = [f for f in FIGURES if f != "param_importances.png"]


def kv(page: str, key: str) -> str:
    """Value cell of the key/value row ``key`` (rows carry ``data-key``)."""
    m = re.search(rf'<tr data-key="{re.escape(html.escape(key))}"><th>[^<]*</th><td[^>]*>(.*?)</td></tr>', page)
    assert m, f"no row {key!r} in the report"
    return html.unescape(m.group(1))


@pytest.fixture(scope="module")
def built(tiny_study, tmp_path_factory):
    """The CLI run on the finished tiny study: (home, out dir, page, summary.json)."""
    name, home = tiny_study
    out = tmp_path_factory.mktemp("report")
    assert main(["--study", name, "--storage", str(home), "--out", str(out)]) == 0
    summary = json.loads((Path(home) / name / "summary.json").read_text())
    return home, out, (out / "report.html").read_text(encoding="utf-8"), summary


def test_every_section_present(built):
    _, _, page, _ = built
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page, sid
    for heading in ("Study summary", "Learning curves", "Study progress", "Parameter importances", "Slice plots", "Parameters vs accuracy",
                    "Accuracy vs training-data size", "Accuracy vs trainable parameters", "Best trial"):
        assert f"<h2>{heading}</h2>" in page
    assert 'id="seed-002-table"' in page and "87.3%" in page and "90.6%" in page and "93.5%" in page
    assert "Pareto front" in page and 'id="pareto"' in page
    assert "study still running" not in page and 'class="banner ok"' in page


def shown_seconds(text: str) -> float:
    """A duration as the page shows it ("42.0 s", "3 min 31 s", "2 h 5 min") back in seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    parts = re.findall(r"([\d.]+) (h|min|s)\b", text)
    assert parts, text
    return sum(float(n) * units[u] for n, u in parts)


def test_header_numbers_equal_summary_and_ray(built, tiny_study):
    from study.tracking.summary import trial_rows

    home, _, page, summary = built
    rows = trial_rows(str(Path(home) / tiny_study[0]))
    for state in ("completed", "pruned", "failed", "unfinished"):
        assert int(kv(page, state)) == summary["trials"][state] == sum(r["state"] == state for r in rows), state
    assert int(kv(page, "total")) == summary["trials"]["total"] == len(rows)
    best = summary["best"]
    acc = best["accuracy"]
    assert kv(page, "dev accuracy") == f"{acc:.4f} ({acc * 100:.2f}%)"
    assert kv(page, "trial") == best["trial_id"]
    assert kv(page, "trainable params") == f"{best['trainable_params']:,}"
    for k, v in best["params"].items():
        assert kv(page, k) == fmt(v), k
    assert abs(shown_seconds(kv(page, "wall time")) - summary["wall_s"]) <= 1.0  # "211.9 s" or "3 min 31 s"
    assert abs(shown_seconds(kv(page, "compute used (Σ trial time_total_s)")) - summary["compute_s"]) <= 1.0
    assert kv(page, "parent run") == summary["parent_run_id"]


def test_images_embedded_and_written(built):
    """Every PNG beside the page is in it: embedded as is, or as the same figure in inline SVG."""
    _, out, page, _ = built
    written = sorted(p.name for p in out.glob("*.png"))
    assert set(ALWAYS) <= set(written)
    assert ("param_importances.png" in written) or 'id="importance-missing"' in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    as_svg = re.findall(r'<figure data-png="([^"]+)"><svg ', page)
    assert len(embedded) + len(as_svg) >= len(written) >= len(ALWAYS)
    assert {"learning_curves.png", "slice_plots.png", "parallel_coordinates.png", "progress.png"} <= set(as_svg)
    for b64 in embedded:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in written:  # the files beside the page are the embedded images
        assert name in as_svg or base64.b64encode((out / name).read_bytes()).decode() in embedded, name
    assert not re.search(r'(src|href)="(https?:|//)', page), "the report must not fetch anything"
    assert "<script" not in page


def _svg(page: str, png: str) -> str:
    m = re.search(rf'<figure data-png="{re.escape(png)}">(<svg .*?</svg>)', page, re.S)
    assert m, png
    return m.group(1)


def test_every_trial_named_on_hover(built, tiny_study):
    """Each trial's line (learning curves, parallel coordinates) and its point in every slice panel
    carries its label (id + searched values) as an SVG <title>."""
    home, _, page, summary = built
    keys = sorted(summary["best"]["params"])
    labels = {r["trial_id"]: trial_label(r["trial_id"], r["params"], keys) for r in summary["table"]}
    for png, per_trial in (("learning_curves.png", 1), ("parallel_coordinates.png", 1), ("slice_plots.png", len(keys))):
        titles = [html.unescape(t) for t in re.findall(r'<g id="[^"]+" class="hover"><title>([^<]*)</title>', _svg(page, png))]
        for tid, label in labels.items():
            assert sum(t.startswith(label + " — ") for t in titles) == per_trial, (png, label, titles)
    assert 'id="learning-curves-hover-0"' in page and 'id="slice-plots-hover-0"' in page  # ids unique per figure


@pytest.fixture(scope="module")
def figures(tiny_study):
    """Every per-study figure, drawn from the tiny study."""
    name, home = tiny_study
    data = load_study_data(name, str(home), read_mlflow=False)
    max_t = A.asha_max_t(data)
    rungs = asha_rungs(data.cfg.asha.grace_period, data.cfg.asha.reduction_factor, max_t)
    pts = A.trainable_points(data)
    history = data.row(data.best["trial_id"])["history"]
    return data, {
        "learning_curves": P.learning_curves(data, rungs, max_t),
        "progress": P.study_progress(data, A.best_so_far(data)),
        "slices": P.slice_plots(data),
        "parallel": P.parallel_coordinates(data),
        "data_size": P.accuracy_vs_data_size(A.data_sizes(data), "tiny"),
        "trainable_params": P.accuracy_vs_trainable_params(pts, A.pareto_front(pts)),
        "best_loss": P.best_trial_loss(history, "t"),
        "best_accuracy": P.best_trial_accuracy(history, "t"),
    }


def test_legends_never_cover_data(figures):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for name, fig in figures[1].items():
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), f"{name}: legend on the axes"


def test_samples_seen_on_every_training_axis(figures):
    data, figs = figures
    for name in ("learning_curves", "best_loss", "best_accuracy"):
        assert "samples seen" in figs[name].axes[0].get_xlabel(), name
    xs = [line.get_xdata() for line in figs["best_loss"].axes[0].get_lines()]
    best = data.row(data.best["trial_id"])["history"]
    assert list(xs[0]) == [h["samples_seen"] for h in best]


def test_one_slice_panel_per_searched_key(figures):
    data, figs = figures
    panels = [ax for ax in figs["slices"].axes if ax.axison]
    assert sorted(ax.get_xlabel() for ax in panels) == data.searched
    for ax in panels:
        key = ax.get_xlabel()
        assert (ax.get_xscale() == "log") == (data.cfg.search[key].kind == "loguniform"), key
        assert len(ax.collections) == sum(r["best"].get(data.metric) is not None for r in data.rows), key


def test_confusion_matrix_reproduces_recorded_accuracy(built):
    _, out, page, summary = built
    assert kv(page, "accuracy recomputed from the checkpoint") == kv(page, "accuracy the trial reported")
    saved = json.loads((out / CONFUSION_JSON).read_text())
    assert sum(map(sum, saved["matrix"])) == 200  # the tiny study's data.dev_size
    assert saved["identity"]["checkpoint"] == summary["best"]["checkpoint"]


def test_logged_to_mlflow_parent_run(built):
    from mlflow import MlflowClient

    _, out, _, summary = built
    names = {Path(a.path).name for a in MlflowClient(summary["tracking_uri"]).list_artifacts(summary["parent_run_id"], "report")}
    assert {"report.html", *ALWAYS} <= names


def test_running_study_shows_banner(tiny_study, tmp_path):
    """A copy of the study with no summary.json and one trial still RUNNING in Ray's state."""
    name, home = tiny_study
    copy = tmp_path / "studies"
    shutil.copytree(Path(home) / name, copy / name, ignore=shutil.ignore_patterns("best_adapter", "report"))
    (copy / name / "summary.json").unlink()
    record = json.loads((copy / name / "study.json").read_text())
    (copy / name / "study.json").write_text(json.dumps({**record, "storage": str(copy)}))
    state_file = max((copy / name).glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    trial = json.loads(state["trial_data"][0][0])
    state["trial_data"][0][0] = json.dumps({**trial, "status": "RUNNING"})
    state_file.write_text(json.dumps(state))

    res = build_report(name, str(copy), out=tmp_path / "out", mlflow=False, predict=False)
    page = res.html_path.read_text(encoding="utf-8")
    assert res.running
    assert 'id="status-banner">study still running: 1 trial unfinished, data as of ' in page
    assert int(kv(page, "unfinished")) == 1
    assert int(kv(page, "completed")) == record["config"]["study"]["num_samples"] - 1
    assert kv(page, "wall time so far")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page, sid
    assert {"learning_curves.png", "progress.png", "best_trial_loss.png"} <= set(res.figures)


def test_unknown_study_is_one_line_exit_2(tiny_study, capsys):
    assert main(["--study", "no-such-study", "--storage", str(tiny_study[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no study named 'no-such-study'") and "\n" not in err


def test_pareto_front_and_resolve_size():
    pts = [{"trainable_params": n, "accuracy": a} for n, a in [(10, 0.80), (20, 0.79), (30, 0.85), (40, 0.85), (50, 0.90)]]
    assert [(p["trainable_params"], p["accuracy"]) for p in A.pareto_front(pts)] == [(10, 0.80), (30, 0.85), (50, 0.90)]
    assert A.resolve_size(None, 67349) == 67349 and A.resolve_size(0.5, 1000) == 500 and A.resolve_size(8000, 600) == 600


def test_renders_in_headless_chromium(built, tmp_path):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    _, out, _, _ = built
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,4000",
         (out / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    assert shot.is_file(), proc.stderr[-2000:]
    assert shot.stat().st_size > 50_000, f"screenshot only {shot.stat().st_size} bytes: page blank?"


def test_param_importances_complete_trials_only():
    """Computed from COMPLETE trials (x drives the value, y is noise); explained when too few."""
    import types

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    dists = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}
    study = optuna.create_study(direction="maximize")
    for i in range(12):
        x, y = i / 11, ((i * 7) % 12) / 11
        study.add_trial(create_trial(params={"x": x, "y": y}, distributions=dists, value=x + 0.01 * y))
    imp, note = A.param_importances(types.SimpleNamespace(optuna_study=study, metric="accuracy"))
    assert imp is not None and imp["x"] > imp["y"] and "12 completed trials" in note

    few = optuna.create_study(direction="maximize")
    few.add_trial(create_trial(params={"x": 0.1, "y": 0.2}, distributions=dists, value=0.5))
    few.add_trial(create_trial(params={"x": 0.3, "y": 0.4}, distributions=dists, state=TrialState.PRUNED, intermediate_values={100: 0.4}))
    imp, note = A.param_importances(types.SimpleNamespace(optuna_study=few, metric="accuracy"))
    assert imp is None and note.startswith("not computable") and "1 pruned" in note
