"""One function per report figure; each returns a matplotlib ``Figure`` (Agg, no pyplot state).

Why ``Figure`` objects and not ``pyplot``: the report is built in a batch process (CI, a cron
job, a machine without a display) and may build several reports in one process; ``Figure()``
needs no GUI backend and leaks no global state between figures. Colours follow one convention
everywhere: completed trials coloured, pruned trials grey and dashed, failed red, unfinished
orange, the best trial black.

Three rules every figure keeps: legends sit outside the axes (``fig.legend(loc="outside …")``
with the constrained layout), so they never cover data; the x-axis of anything that evolves
during training is *training samples seen* (ASHA's fidelity; epochs only as a secondary axis);
and every per-trial artist carries the trial's label (``study.console.labels``: id + searched values) as a
hover title. :func:`to_svg` writes those titles into the SVG (a ``<title>`` in the artist's
group: browsers show it on hover, no script needed), which is what the HTML report embeds; the
PNGs beside it are the same figures, static, with the trial ids written at the line ends.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from study.console.labels import trial_label  # noqa: E402

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
    "slice_plots",
    "to_png",
    "to_svg",
    "hover_titles",
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
    """PNG bytes of ``fig`` (written next to the HTML; embedded when the figure has no hover titles)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


_HOVER = "_lora_study_hover"


def _hover(fig: Figure, artist: Any, text: str) -> None:
    """Give ``artist`` a hover title (see :func:`to_svg`)."""
    items = fig.__dict__.setdefault(_HOVER, {})
    gid = f"hover-{len(items)}"
    artist.set_gid(gid)
    items[gid] = text


def hover_titles(fig: Figure) -> dict[str, str]:
    """The hover titles of ``fig``'s artists, by SVG group id."""
    return dict(fig.__dict__.get(_HOVER, {}))


def to_svg(fig: Figure, prefix: str = "fig") -> str:
    """``fig`` as an inline ``<svg>`` element whose per-trial artists show their hover titles.

    Matplotlib writes an artist with a gid as ``<g id="gid">``; a ``<title>`` as that group's first
    child is what browsers show on hover, and ``class="hover"`` lets the page's CSS thicken the
    hovered line. Text stays text (``svg.fonttype: none``), ids get ``prefix`` so several figures
    can share one page, and the fixed size becomes a ``viewBox`` that scales with the page."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and doctype: it lives inside HTML
    for gid, text in hover_titles(fig).items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{prefix}-{gid}" class="hover"><title>{html.escape(text)}</title>', 1)
    svg = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="figure"', svg, count=1)
    return svg


def _fig(w: float = 9.0, h: float = 4.8) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def _legend(fig: Figure, handles: list[Any], **kwargs: Any) -> None:
    """The legend beside the axes, never on them (constrained layout makes room for it)."""
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, **kwargs)


def _label(data: StudyData, row: dict[str, Any]) -> str:
    return trial_label(row["trial_id"], row.get("params") or {}, data.searched)


def _score_text(data: StudyData, v: Any) -> str:
    if v is None:
        return "–"
    return f"{v * 100:.2f}%" if data.metric in ("accuracy", "f1") else f"{v:.4f}"


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
    fig = _fig(11, 5.4)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    best = _best_id(data)
    k = 0
    ends: list[tuple[float, float, str, Any]] = []
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
        (line,) = ax.plot([x["samples_seen"] for x in h], [x["accuracy"] for x in h], marker="o", markersize=3, **style)
        _hover(fig, line, f"{_label(data, r)} — {r['state']}, best {_score_text(data, r['best'].get(data.metric))}"
                          f" at {r['best'].get('samples_seen')} samples")
        if r["state"] == "pruned":
            ax.plot(h[-1]["samples_seen"], h[-1]["accuracy"], marker="x", color="0.3", markersize=8, linestyle="none")
        if r["state"] != "pruned":
            ends.append((h[-1]["samples_seen"], h[-1]["accuracy"], r["trial_id"], line.get_color()))
    _label_line_ends(ax, ends)
    _mark_rungs(ax, rungs, max_t)
    ax.set_xlabel("training samples seen (ASHA fidelity)")
    ax.set_ylabel("dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3)
    counts = data.counts
    handles = [_completed_handle(cmap, k), Line2D([], [], **STATE_STYLE["pruned"], marker="x", label=f"pruned by ASHA ({counts['pruned']}); x = stopped")]
    labels = [f"completed ({counts['completed']}): a colour each", handles[1].get_label()]
    for s in ("failed", "unfinished"):
        if counts.get(s):
            handles.append(Line2D([], [], **STATE_STYLE[s], label=f"{s} ({counts[s]})"))
    if best:
        handles.append(Line2D([], [], color="black", linewidth=2.6, label=f"best trial {best}"))
    if rungs:
        handles.append(Line2D([], [], color="tab:purple", linestyle=":", label="ASHA rungs (grace × rf^k), named on top"))
    labels += [h.get_label() for h in handles[2:]]
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, handlelength=3.2, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
               title="trial id at each line's end;\nhover a line for its values", title_fontsize=8)
    ax.set_title(f"Learning curves of all {counts['total']} trials")
    return fig


def _completed_handle(cmap: Any, n: int) -> tuple[Line2D, ...]:
    """The legend's sample for completed trials: a short segment in each colour they were drawn
    in (at least one, at most four), not one blue line that matches none of them but the first."""
    style = {k: v for k, v in STATE_STYLE["completed"].items() if k != "color"}
    return tuple(Line2D([], [], color=cmap(i % 10), **style) for i in range(min(max(n, 1), 4)))


def _mark_rungs(ax: Any, rungs: list[int], max_t: int | None) -> None:
    """ASHA's rungs (purple) and ``max_t`` (green) as dotted verticals, named above the axes on a
    top axis of their own: inside the axes, a name at ``max_t`` would sit on the trial ids written
    at the lines' ends."""
    marks = [(rung, f"max_t {rung:,}" if max_t is not None and rung >= max_t else f"rung {i}: {rung:,}") for i, rung in enumerate(rungs)]
    if max_t is not None and (not rungs or rungs[-1] < max_t):
        marks.append((max_t, f"max_t {max_t:,}"))
    if not marks:
        return
    top = ax.secondary_xaxis("top")
    top.set_xticks([x for x, _ in marks], [text for _, text in marks], rotation=90, fontsize=8)
    top.tick_params(length=3, pad=2)
    for (x, text), label in zip(marks, top.get_xticklabels()):
        color = "tab:green" if text.startswith("max_t") else "tab:purple"
        label.set_color(color)
        ax.axvline(x, color=color, linestyle=":", linewidth=1.2, alpha=0.8)


def _label_line_ends(ax: Any, ends: list[tuple[float, float, str, Any]], limit: int = 12) -> None:
    """The trial id right of each line's last point (the ``limit`` best-ending lines), nudged
    apart vertically so that ids of lines ending close together stay readable."""
    if not ends:
        return
    ends = sorted(ends, key=lambda e: -e[1])[:limit]
    lo, hi = ax.get_ylim()
    xmin, xmax = ax.get_xlim()
    gap, xgap = (hi - lo) * 0.035, (xmax - xmin) * 0.1
    placed: list[tuple[float, float]] = []
    for x, y, tid, color in sorted(ends, key=lambda e: e[1]):
        ty = y
        while any(abs(px - x) < xgap and abs(py - ty) < gap * 0.999 for px, py in placed):
            ty += gap
        placed.append((x, ty))
        ax.text(x, ty, f"  {tid}", fontsize=7, color=color, ha="left", va="center", clip_on=False)
    xmin, xmax = ax.get_xlim()
    ax.set_xlim(xmin, xmax + (xmax - xmin) * 0.07)  # room for the ids


# --------------------------------------------------------------------------- progress
def study_progress(data: StudyData, improvements: list[tuple[float, float, str]]) -> Figure:
    """Best-so-far dev accuracy against study wall-clock time, over a timeline of the trials: how
    quickly the search found its best configuration and how busy the workers were."""
    fig = _fig(11, 6.0)
    ax, tl = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    state = {r["trial_id"]: r["state"] for r in data.rows}
    rows = {r["trial_id"]: r for r in data.rows}
    evs = [e for e in data.evaluations if e.accuracy is not None]
    for tid in dict.fromkeys(e.trial_id for e in evs):
        pts = [e for e in evs if e.trial_id == tid]
        s = state.get(tid, "unfinished")
        dots = ax.scatter([e.t for e in pts], [e.accuracy for e in pts], s=12, color=_STATE_COLOR[s], alpha=0.5)
        if tid in rows:
            _hover(fig, dots, f"{_label(data, rows[tid])} — {s}")
    handles = [Line2D([], [], marker="o", linestyle="none", color=_STATE_COLOR[s], alpha=0.5, label=f"evaluation ({s} trial)")
               for s in ("completed", "pruned", "failed", "unfinished") if any(state.get(e.trial_id) == s for e in evs)]
    if improvements:
        end = max([improvements[-1][0]] + [e.t for e in evs] + [data.wall_s if data.finished else 0.0])
        xs = [t for t, _, _ in improvements] + [end]
        ys = [v for _, v, _ in improvements] + [improvements[-1][1]]
        ax.step(xs, ys, where="post", color="black", linewidth=2)
        handles.append(Line2D([], [], color="black", linewidth=2, label="best so far"))
        t, v, tid = improvements[-1]
        ax.annotate(f"{v * 100:.2f}% ({tid})", (t, v), xytext=(4, 6), textcoords="offset points", fontsize=8)
    ax.set_xlim(left=0)
    ax.set_ylabel("dev accuracy")
    _pct(ax)
    ax.grid(alpha=0.3)
    ax.set_title("Study progress: best dev accuracy so far vs wall-clock time")
    order = sorted(data.trial_spans.items(), key=lambda kv: kv[1][0])
    for i, (tid, (a, b)) in enumerate(order):
        (bar,) = tl.barh(i, max(b - a, 0.2), left=a, color=_STATE_COLOR.get(state.get(tid, "unfinished"), "0.5"), alpha=0.8,
                         hatch="//" if state.get(tid) == "pruned" else None, edgecolor="white")
        if tid in rows:
            _hover(fig, bar, f"{_label(data, rows[tid])} — {state.get(tid)}, {b - a:.0f} s")
    if handles:
        _legend(fig, handles)
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
        (line,) = ax.plot(range(len(axes)), ys, color=color, linewidth=3 if r["trial_id"] == best else 1.5, marker="o", markersize=3, **style)
        _hover(fig, line, f"{_label(data, r)} — {r['state']}, best {_score_text(data, acc)}")
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


def slice_plots(data: StudyData) -> Figure:
    """One panel per searched key: each trial's best dev score against the value it tried
    (Optuna's "slice plot"). Where importances need many completed trials, this shows every
    trial at once — which learning rates worked, and whether a rank or data size mattered at all.
    Categorical values sit at their category's position (spread a little so equal values stay
    visible); loguniform keys get a log axis; pruned trials are grey crosses (their best is a
    low-fidelity value)."""
    keys = data.searched
    rows = [r for r in data.rows if r["best"].get(data.metric) is not None]
    cols = max(1, min(3, len(keys)))
    nrows = max(1, math.ceil(len(keys) / cols))
    fig = _fig(3.6 * cols + 1.8, 2.9 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, cols, sharey=True, squeeze=False)).ravel()
    if not keys or not rows:
        axes[0].text(0.5, 0.5, "no searched parameters" if not keys else "no trial reported yet", ha="center", va="center")
        for ax in axes:
            ax.set_axis_off()
        return fig
    best = _best_id(data)
    for ax, key in zip(axes, keys):
        d = data.cfg.search[key]
        cats = [repr(c) for c in d.choice] if d.kind == "choice" else None
        for i, r in enumerate(rows):
            v = r["params"].get(key)
            if v is None and d.kind != "choice":
                continue
            x = (cats.index(repr(v)) if repr(v) in cats else np.nan) + 0.08 * (((i * 7) % 5) - 2) if cats else float(v)
            y = r["best"][data.metric]
            if r["state"] == "pruned":
                dot = ax.scatter([x], [y], marker="x", s=28, color="0.55", zorder=2)
            else:
                dot = ax.scatter([x], [y], s=60 if r["trial_id"] == best else 30, color="black" if r["trial_id"] == best else _STATE_COLOR[r["state"]],
                                 edgecolor="white", linewidth=0.6, zorder=3)
            _hover(fig, dot, f"{_label(data, r)} — {r['state']}, best {_score_text(data, y)}")
        if cats:
            ax.set_xticks(range(len(cats)), [str(c) for c in d.choice], fontsize=8)
            ax.set_xlim(-0.6, len(cats) - 0.4)
        elif d.kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(key, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    for ax in axes[::cols]:
        ax.set_ylabel(f"best dev {data.metric}", fontsize=9)
        if data.metric in ("accuracy", "f1"):
            _pct(ax)
    handles = [Line2D([], [], marker="o", linestyle="none", color=_STATE_COLOR["completed"], label="completed"),
               Line2D([], [], marker="x", linestyle="none", color="0.55", label="pruned by ASHA"),
               Line2D([], [], marker="o", linestyle="none", color="black", label=f"best trial {best}")]
    _legend(fig, handles, title="hover a point\nfor its trial", title_fontsize=8)
    fig.suptitle(f"Slice plots: each trial's best dev {data.metric} against each searched value", fontsize=11)
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
    _legend(fig, ax.get_legend_handles_labels()[0])
    ax.set_title("Accuracy vs training-data size")
    return fig


def accuracy_vs_trainable_params(points: list[dict[str, Any]], front: list[dict[str, Any]],
                                 labels: dict[str, str] | None = None) -> Figure:
    """Accuracy against the adapter's trainable parameters (rank × target modules, plus the
    classifier head), with the Pareto front: the cheapest adapter reaching each accuracy.
    ``labels``: trial id -> hover title."""
    fig = _fig(10, 5.0)
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
        dot = ax.scatter(p["trainable_params"], p["accuracy"], s=size, color=color[str(p["target_modules"])],
                         alpha=0.55 if p["state"] == "pruned" else 0.9, edgecolor="black" if p["state"] != "pruned" else "0.6",
                         linestyle="--" if p["state"] == "pruned" else "-", zorder=3)
        _hover(fig, dot, f"{(labels or {}).get(p['trial_id'], p['trial_id'])} — {p['state']}, {p['trainable_params']:,} params, "
                         f"{p['accuracy'] * 100:.2f}%")
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
    _legend(fig, handles)
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


def _samples_axis(ax: Any, history: list[dict[str, Any]]) -> list[float]:
    """x = training samples seen, as on every other plot; epochs on a secondary axis on top
    (samples per epoch read from the history: samples_seen / epoch)."""
    xs = [float(h.get("samples_seen") or 0) for h in history]
    ax.set_xlabel("training samples seen")
    per_epoch = [float(h["samples_seen"]) / float(h["epoch"]) for h in history if h.get("samples_seen") and h.get("epoch")]
    if per_epoch:
        n = per_epoch[-1]
        top = ax.secondary_xaxis("top", functions=(lambda s, n=n: np.asarray(s) / n, lambda e, n=n: np.asarray(e) * n))
        top.set_xlabel("epochs", fontsize=8)
        top.tick_params(labelsize=7)
    return xs


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
    xs = _samples_axis(ax, history)
    _plot_series(ax, xs, history, (("train_loss", "train loss", "tab:blue"), ("eval_loss", "dev loss", "tab:orange")))
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    _legend(fig, ax.get_legend_handles_labels()[0])
    fig.suptitle(f"Best trial {trial_id}: loss", fontsize=10)  # above the epochs axis
    return fig


def best_trial_accuracy(history: list[dict[str, Any]], trial_id: str, metric: str = "accuracy") -> Figure:
    """Dev accuracy and macro-F1 per evaluation, the chosen checkpoint marked (seed 002's acc.pdf)."""
    fig = _fig(6.5, 4.2)
    ax = fig.add_subplot()
    xs = _samples_axis(ax, history)
    _plot_series(ax, xs, history, (("accuracy", "dev accuracy", "tab:green"), ("f1", "dev macro-F1", "tab:purple")))
    scored = [(x, h[metric]) for x, h in zip(xs, history) if h.get(metric) is not None]
    if scored and metric in ("accuracy", "f1"):
        x, y = max(scored, key=lambda p: p[1])
        ax.scatter([x], [y], s=160, facecolor="none", edgecolor="black", zorder=4, label="best checkpoint")
    ax.set_ylabel("dev score")
    _pct(ax)
    ax.grid(alpha=0.3)
    _legend(fig, ax.get_legend_handles_labels()[0])
    fig.suptitle(f"Best trial {trial_id}: dev accuracy", fontsize=10)
    return fig
