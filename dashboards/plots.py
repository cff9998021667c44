"""One function per report figure; each returns a matplotlib ``Figure`` (Agg, no pyplot state).

Why ``Figure`` objects and not ``pyplot``: the report is built in a batch process (CI, a cron
job, a machine without a display) and may build several reports in one process; ``Figure()``
needs no GUI backend and leaks no global state between figures. Colours follow one convention
everywhere: completed trials coloured, pruned trials grey and dashed, failed red, unfinished
orange, the best trial black.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .analysis import SEED_002, SizeRow  # noqa: E402
from .data import StudyData  # noqa: E402

__all__ = [
    "learning_curves",
    "study_progress",
    "param_importances",
    "parallel_coordinates",
    "accuracy_vs_data_size",
    "accuracy_vs_trainable_params",
    "confusion_matrix",
    "best_trial_loss",
    "best_trial_accuracy",
    "to_png",
    "STATE_STYLE",
]

#: Line style per trial state (see module docstring).
STATE_STYLE: dict[str, dict[str, Any]] = {
    "completed": {"linestyle": "-", "alpha": 0.95, "linewidth": 1.6},
    "pruned": {"linestyle": "--", "color": "0.55", "alpha": 0.85, "linewidth": 1.2},
    "failed": {"linestyle": ":", "color": "tab:red", "alpha": 0.9, "linewidth": 1.4},
    "unfinished": {"linestyle": "-.", "color": "tab:orange", "alpha": 0.9, "linewidth": 1.4},
}
_STATE_COLOR = {"completed": "tab:blue", "pruned": "0.55", "failed": "tab:red", "unfinished": "tab:orange"}


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig`` (the report embeds them and writes them next to the HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _fig(w: float = 9.0, h: float = 4.8) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def _pct(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v * 100:.1f}%")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _best_id(data: StudyData) -> str | None:
    return (data.best or {}).get("trial_id")


# --------------------------------------------------------------------------- learning curves
def learning_curves(data: StudyData, rungs: list[int], max_t: int | None) -> Figure:
    """Dev accuracy vs samples seen for every trial, with ASHA's rungs: shows where each pruned
    trial was stopped and what the survivors did after each cut."""
    fig = _fig(10, 5.2)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    best = _best_id(data)
    k = 0
    for r in data.rows:
        h = [x for x in r["history"] if x.get("samples_seen") is not None and x.get("accuracy") is not None]
        if not h:
            continue
        style = dict(STATE_STYLE[r["state"]])
        if r["state"] == "completed":
            style["color"] = cmap(k % 10)
            k += 1
        if r["trial_id"] == best:
            style.update(color="black", linewidth=2.6, alpha=1.0)
        ax.plot([x["samples_seen"] for x in h], [x["accuracy"] for x in h], marker="o", markersize=3, **style)
        if r["state"] == "pruned":
            ax.plot(h[-1]["samples_seen"], h[-1]["accuracy"], marker="x", color="0.3", markersize=8, linestyle="none")
    ymin, ymax = ax.get_ylim()
    for i, rung in enumerate(rungs):
        is_max = max_t is not None and rung >= max_t
        ax.axvline(rung, color="tab:purple" if not is_max else "tab:green", linestyle=":", linewidth=1.2, alpha=0.8)
        ax.annotate(f"max_t {rung:,}" if is_max else f"rung {i}: {rung:,}", (rung, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -12), textcoords="offset points", fontsize=8, color="tab:purple" if not is_max else "tab:green", rotation=90, va="top")
    if max_t is not None and (not rungs or rungs[-1] < max_t):
        ax.axvline(max_t, color="tab:green", linestyle=":", linewidth=1.2)
        ax.annotate(f"max_t {max_t:,}", (max_t, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -12),
                    textcoords="offset points", fontsize=8, color="tab:green", rotation=90, va="top")
    ax.set_xlabel("training samples seen (ASHA fidelity)")
    ax.set_ylabel("dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3)
    counts = data.counts
    handles = [Line2D([], [], color="tab:blue", **{k: v for k, v in STATE_STYLE["completed"].items() if k != "color"}, label=f"completed ({counts['completed']})"),
               Line2D([], [], **STATE_STYLE["pruned"], marker="x", label=f"pruned by ASHA ({counts['pruned']}); x = stopped")]
    for s in ("failed", "unfinished"):
        if counts.get(s):
            handles.append(Line2D([], [], **STATE_STYLE[s], label=f"{s} ({counts[s]})"))
    if best:
        handles.append(Line2D([], [], color="black", linewidth=2.6, label=f"best trial {best}"))
    if rungs:
        handles.append(Line2D([], [], color="tab:purple", linestyle=":", label="ASHA rungs (grace × rf^k)"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_title(f"Learning curves of all {counts['total']} trials")
    return fig


# --------------------------------------------------------------------------- progress
def study_progress(data: StudyData, improvements: list[tuple[float, float, str]]) -> Figure:
    """Best-so-far dev accuracy against study wall-clock time, over a timeline of the trials: how
    quickly the search found its best configuration and how busy the workers were."""
    fig = _fig(10, 6.0)
    ax, tl = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    state = {r["trial_id"]: r["state"] for r in data.rows}
    evs = [e for e in data.evaluations if e.accuracy is not None]
    for s in ("completed", "pruned", "failed", "unfinished"):
        pts = [e for e in evs if state.get(e.trial_id) == s]
        if pts:
            ax.scatter([e.t for e in pts], [e.accuracy for e in pts], s=12, color=_STATE_COLOR[s], alpha=0.5, label=f"evaluation ({s} trial)")
    if improvements:
        end = max([improvements[-1][0]] + [e.t for e in evs] + [data.wall_s if data.finished else 0.0])
        xs = [t for t, _, _ in improvements] + [end]
        ys = [v for _, v, _ in improvements] + [improvements[-1][1]]
        ax.step(xs, ys, where="post", color="black", linewidth=2, label="best so far")
        t, v, tid = improvements[-1]
        ax.annotate(f"{v * 100:.2f}% ({tid})", (t, v), xytext=(4, 6), textcoords="offset points", fontsize=8)
    ax.set_xlim(left=0)
    ax.set_ylabel("dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Study progress: best dev accuracy so far vs wall-clock time")
    order = sorted(data.trial_spans.items(), key=lambda kv: kv[1][0])
    for i, (tid, (a, b)) in enumerate(order):
        tl.barh(i, max(b - a, 0.2), left=a, color=_STATE_COLOR.get(state.get(tid, "unfinished"), "0.5"), alpha=0.8,
                hatch="//" if state.get(tid) == "pruned" else None, edgecolor="white")
    tl.set_yticks(range(len(order)), [tid for tid, _ in order], fontsize=7)
    tl.invert_yaxis()
    tl.set_xlabel("seconds since the study started")
    tl.set_ylabel("trial")
    tl.grid(alpha=0.3, axis="x")
    return fig


# --------------------------------------------------------------------------- search space
def param_importances(importances: dict[str, float]) -> Figure:
    """Horizontal bars, most important at the top (fANOVA share of the metric's variance)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _fig(8, 0.45 * len(items) + 1.4)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of explained variance)")
    ax.set_xlim(0, max(1e-9, max(v for _, v in items)) * 1.18)
    ax.set_title("Hyperparameter importances (optuna.importance, fANOVA)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def parallel_coordinates(data: StudyData) -> Figure:
    """Searched parameters and the resulting accuracy, one polyline per trial. Numeric axes are
    scaled to their search range (log for loguniform), categorical ones show category indices
    with the category names as tick labels."""
    keys = data.searched
    fig = _fig(max(8.0, 1.6 * (len(keys) + 1)), 5.0)
    ax = fig.add_subplot()
    rows = [r for r in data.rows if r["best"].get(data.metric) is not None]
    if not keys or not rows:
        ax.text(0.5, 0.5, "no searched parameters" if not keys else "no trial reported yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes: list[tuple[str, Any, list[tuple[float, str]]]] = []  # (label, value->[0,1], ticks)
    for k in keys:
        d = data.cfg.search[k]
        if d.kind == "choice":
            cats = list(d.choice)
            idx = {repr(c): i for i, c in enumerate(cats)}
            n = max(1, len(cats) - 1)
            axes.append((k, lambda v, idx=idx, n=n: idx.get(repr(v), np.nan) / n, [(i / n, str(c)) for i, c in enumerate(cats)]))
        else:
            lo, hi = map(float, getattr(d, d.kind))
            if d.kind == "loguniform":
                f = lambda v, lo=lo, hi=hi: (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))  # noqa: E731
                ticks = [(f(x), f"{x:.0e}") for x in np.geomspace(lo, hi, 4)]
            else:
                f = lambda v, lo=lo, hi=hi: (v - lo) / (hi - lo)  # noqa: E731
                ticks = [(f(x), f"{x:.3g}") for x in np.linspace(lo, hi, 4)]
            axes.append((k, f, ticks))
    accs = [float(r["best"][data.metric]) for r in rows]
    lo, hi = min(accs), max(accs)
    span = hi - lo or 1.0
    axes.append((f"best dev {data.metric}", lambda v: (v - lo) / span if hi > lo else 0.5,
                 [((x - lo) / span if hi > lo else 0.5, f"{x * 100:.1f}%") for x in (np.linspace(lo, hi, 4) if hi > lo else [lo])]))
    cmap = matplotlib.colormaps["viridis"]
    best = _best_id(data)
    for r, acc in sorted(zip(rows, accs), key=lambda ra: ra[1]):
        ys = [fn(r["params"][k]) if r["params"].get(k) is not None else np.nan for k, (_, fn, _) in zip(keys, axes[:-1])]
        ys.append(axes[-1][1](acc))
        color = cmap((acc - lo) / span if hi > lo else 0.5)
        style = {"linestyle": "--", "alpha": 0.7} if r["state"] == "pruned" else {"alpha": 0.9}
        ax.plot(range(len(axes)), ys, color=color, linewidth=3 if r["trial_id"] == best else 1.5, marker="o", markersize=3, **style)
    for i, (label, _, ticks) in enumerate(axes):
        ax.axvline(i, color="0.3", linewidth=0.8)
        for y, text in ticks:
            ax.text(i + 0.03, y, text, fontsize=7, va="center", color="0.25")
    ax.set_xticks(range(len(axes)), [a[0] for a in axes], rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(axes) - 0.5)
    for s in ("top", "right", "left"):
        ax.spines[s].set_visible(False)
    if hi > lo:
        sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(lo, hi))
        fig.colorbar(sm, ax=ax, label=f"best dev {data.metric}", shrink=0.8, format=matplotlib.ticker.FuncFormatter(lambda v, _: f"{v * 100:.1f}%"))
    ax.set_title("Parallel coordinates: searched parameters → accuracy (dashed = pruned, thick = best)")
    return fig


# --------------------------------------------------------------------------- data size / parameters
def accuracy_vs_data_size(sizes: list[SizeRow], model_name: str) -> Figure:
    """Best accuracy per training-set size next to notebook 002's bert-base numbers."""
    fig = _fig(8.5, 4.8)
    ax = fig.add_subplot()
    pts = [s for s in sizes if s.size and s.accuracy is not None]
    if pts:
        ax.plot([s.size for s in pts], [s.accuracy for s in pts], marker="o", color="tab:blue", linewidth=2,
                label=f"this study: best trial per size ({model_name})")
        for s in pts:
            ax.annotate(f"{s.accuracy * 100:.1f}%", (s.size, s.accuracy), xytext=(5, -12), textcoords="offset points", fontsize=8, color="tab:blue")
    ref = sorted(SEED_002.items())
    ax.plot([n for n, _ in ref], [v[0] for _, v in ref], marker="s", linestyle="--", color="tab:gray", label="seed 002 (bert-base-uncased, r=8 q,v)")
    for n, v in ref:
        ax.annotate(f"{v[0] * 100:.1f}%", (n, v[0]), xytext=(5, 4), textcoords="offset points", fontsize=8, color="tab:gray")
    ax.set_xscale("log")
    ax.set_xlabel("training samples (data.size)")
    ax.set_ylabel("dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Accuracy vs training-data size")
    return fig


def accuracy_vs_trainable_params(points: list[dict[str, Any]], front: list[dict[str, Any]]) -> Figure:
    """Accuracy against the adapter's trainable parameters (rank × target modules, plus the
    classifier head), with the Pareto front: the cheapest adapter reaching each accuracy."""
    fig = _fig(9, 5.0)
    ax = fig.add_subplot()
    if not points:
        ax.text(0.5, 0.5, "no trial reported yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    targets = sorted({str(p["target_modules"]) for p in points})
    cmap = matplotlib.colormaps["tab10"]
    color = {t: cmap(i % 10) for i, t in enumerate(targets)}
    ranks = [p["r"] for p in points if isinstance(p["r"], (int, float))]
    rmax = max(ranks) if ranks else 1
    for p in points:
        size = 30 + 120 * (float(p["r"]) / rmax if isinstance(p["r"], (int, float)) else 0.5)
        ax.scatter(p["trainable_params"], p["accuracy"], s=size, color=color[str(p["target_modules"])],
                   alpha=0.55 if p["state"] == "pruned" else 0.9, edgecolor="black" if p["state"] != "pruned" else "0.6",
                   linestyle="--" if p["state"] == "pruned" else "-", zorder=3)
        ax.annotate(f"r={p['r']}", (p["trainable_params"], p["accuracy"]), xytext=(5, 3), textcoords="offset points", fontsize=7)
    if front:
        xs = [p["trainable_params"] for p in front]
        ys = [p["accuracy"] for p in front]
        xmax = max(p["trainable_params"] for p in points)
        ax.step(xs + [xmax], ys + [ys[-1]], where="post", color="tab:red", linewidth=1.5, zorder=2, label="Pareto front")
        ax.scatter(xs, ys, s=220, facecolor="none", edgecolor="tab:red", linewidth=1.5, zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (LoRA A/B + classifier head)")
    ax.set_ylabel("best dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], marker="o", linestyle="none", color=color[t], label=f"target_modules={t}") for t in targets]
    handles += [Line2D([], [], color="tab:red", label="Pareto front (circled)"),
                Line2D([], [], marker="o", linestyle="none", color="0.6", alpha=0.55, label="pruned (faded); size ∝ rank")]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_title("Accuracy vs trainable parameters")
    return fig


# --------------------------------------------------------------------------- best trial
def confusion_matrix(matrix: np.ndarray, labels: list[str], title: str) -> Figure:
    """Counts with row-normalised shading (recall per true class)."""
    fig = _fig(5.2, 4.4)
    ax = fig.add_subplot()
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]:,}\n{norm[i, j] * 100:.1f}%", ha="center", va="center", fontsize=10,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    ax.set_title(title, fontsize=10)
    return fig


def _epoch_axis(history: list[dict[str, Any]]) -> tuple[list[float], str]:
    if history and all(h.get("epoch") is not None for h in history):
        return [float(h["epoch"]) for h in history], "epoch"
    return [float(h.get("samples_seen") or i) for i, h in enumerate(history)], "samples seen"


def _plot_series(ax: Any, xs: list[float], history: list[dict[str, Any]], series: tuple) -> None:
    """One line per (key, label, colour) that the history has values for; gaps stay gaps."""
    for key, name, c in series:
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", color=c, label=name)


def best_trial_loss(history: list[dict[str, Any]], trial_id: str) -> Figure:
    """Train loss (mean since the previous evaluation) and dev loss per evaluation (seed 002's loss.pdf)."""
    fig = _fig(6.5, 4.2)
    ax = fig.add_subplot()
    xs, label = _epoch_axis(history)
    _plot_series(ax, xs, history, (("train_loss", "train loss", "tab:blue"), ("eval_loss", "dev loss", "tab:orange")))
    ax.set_xlabel(label)
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Best trial {trial_id}: loss", fontsize=10)
    return fig


def best_trial_accuracy(history: list[dict[str, Any]], trial_id: str, metric: str = "accuracy") -> Figure:
    """Dev accuracy and macro-F1 per evaluation, the chosen checkpoint marked (seed 002's acc.pdf)."""
    fig = _fig(6.5, 4.2)
    ax = fig.add_subplot()
    xs, label = _epoch_axis(history)
    _plot_series(ax, xs, history, (("accuracy", "dev accuracy", "tab:green"), ("f1", "dev macro-F1", "tab:purple")))
    scored = [(x, h[metric]) for x, h in zip(xs, history) if h.get(metric) is not None]
    if scored and metric in ("accuracy", "f1"):
        x, y = max(scored, key=lambda p: p[1])
        ax.scatter([x], [y], s=160, facecolor="none", edgecolor="black", zorder=4, label="best checkpoint")
    ax.set_xlabel(label)
    ax.set_ylabel("dev score")
    _pct(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Best trial {trial_id}: dev accuracy", fontsize=10)
    return fig
