"""``python -m dashboards.report``: one self-contained HTML report of a study (finished or running).

    python -m dashboards.report --study NAME [--storage PATH] [--tracking-uri URI] [--out DIR]

Writes ``DIR/report.html`` (default ``DIR`` = the study's local dir ``/report``) with every
figure inside it — as inline SVG whose lines and points name their trial on hover where a
figure has one artist per trial, else as a base64 PNG — so the one file opens offline, plus
every figure as a PNG beside it, and
logs both as artifacts (``report/``) of the study's MLflow parent run — skipped with a warning
when MLflow cannot be reached, because the report must not depend on it.

Sections: summary (config, trial counts, best trial, wall time and compute), the refit beside
the pick and the test score (or "no test set"), learning curves
with ASHA rungs, best-so-far progress over wall-clock time, parameter importances, slice plots
(each searched key against the score) and parallel coordinates, accuracy vs training-data size (next to notebook 002's bert-base table), accuracy
vs trainable parameters with the Pareto front, and the best trial's confusion matrix and
loss/accuracy curves. A study without ``summary.json`` gets a banner saying the data is partial.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.console.labels import trial_label
from study.search.space import asha_rungs
from trainables.config import ConfigError

from . import analysis as A
from . import html as H
from .data import StudyData, load_study_data, mlflow_reachable_store, one_line, quiet_logger

__all__ = ["main", "build_parser", "build_report", "render_report", "ReportResult", "log_report", "SECTION_IDS", "FIGURES"]

log = logging.getLogger("dashboards.report")

#: Section ids of the page, in order (anchors: ``report.html#learning-curves``).
SECTION_IDS = ("summary", "refit", "learning-curves", "progress", "importance", "slices", "parallel-coordinates", "data-size",
               "trainable-params", "best-trial")
#: Every figure file the report can write (a figure that cannot be drawn is left out and explained).
FIGURES = ("learning_curves.png", "progress.png", "param_importances.png", "slice_plots.png", "parallel_coordinates.png",
           "accuracy_vs_data_size.png", "accuracy_vs_trainable_params.png", "confusion_matrix.png",
           "best_trial_loss.png", "best_trial_accuracy.png")
HTML_NAME = "report.html"
#: Counts behind the confusion matrix, reused while the best checkpoint is unchanged.
CONFUSION_JSON = "confusion_matrix.json"


@dataclass
class ReportResult:
    html_path: Path
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Why a figure is missing or partial (also shown in the page)."""
    mlflow_logged: bool = False
    running: bool = False


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int((s % 3600) // 60)} min"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _acc(v: float | None) -> str:
    """Accuracy as the report prints it everywhere: 4 decimals and a percentage."""
    return "–" if v is None else f"{v:.4f} ({v * 100:.2f}%)"


def _dist(d: Any) -> str:
    v = getattr(d, d.kind)
    return f"choice {list(v)}" if d.kind == "choice" else f"{d.kind} [{v[0]:g}, {v[1]:g}]"


# --------------------------------------------------------------------------- sections
def _summary_section(data: StudyData, max_t: int | None, rungs: list[int]) -> H.Section:
    cfg, base = data.cfg, data.cfg.trial
    flat = base.to_flat()
    sec = H.Section("summary", "Study summary")
    fixed: list[tuple[str, Any]] = [("study", data.name), ("model.name", base.model.name), ("data.path", base.data.path),
                                    ("train split (n_train)", data.n_train or None), ("data.dev_size", base.data.dev_size or "all"),
                                    ("data.max_length", base.data.max_length)]
    # what every trial trains with (lora.alpha = multiple × r, sizes as counts, module names), not the
    # config's base values; values a searched key derives (alpha when the rank is searched) are left out
    n = cfg.shared_n_train(data.n_train)
    shared = base.effective(n, varied=cfg.search)
    varying = set(base.effective(n)) - set(shared)
    for key in ("data.size", "lora.r", "lora.alpha", "lora.alpha_multiple", "lora.dropout", "lora.target_modules",
                "train.lr", "train.epochs", "train.batch_size", "train.warmup_ratio", "train.warmup_steps",
                "train.total_steps", "train.eval_every_samples"):
        if key in cfg.search or key in varying or (key not in flat and key not in shared):
            continue
        value = shared.get(key, flat.get(key))
        fixed.append((key, value if value is not None else ("all" if key == "data.size" else None)))
    fixed += [("metric (mode)", f"{cfg.study.metric} ({cfg.study.mode})"),
              ("trials planned / at once", f"{cfg.study.num_samples} / {cfg.study.max_concurrent}"),
              ("search", cfg.study.searcher),
              ("ASHA", f"grace_period {cfg.asha.grace_period:,}, reduction_factor {cfg.asha.reduction_factor:g}, max_t {max_t:,}"
                       + f" → rungs {', '.join(f'{r:,}' for r in rungs)}" if cfg.asha.enabled and max_t else "off (FIFO)"),
              ("resources per trial", f"{cfg.resources.cpus_per_trial:g} CPU, {cfg.resources.gpus_per_trial:g} GPU"),
              ("study seed", cfg.study.seed)]
    space = [(k, _dist(d)) for k, d in sorted(cfg.search.items())]
    c = data.counts
    counts = [("completed", c["completed"]), ("pruned", c["pruned"]), ("failed", c["failed"]), ("unfinished", c["unfinished"]),
              ("total", c["total"])]
    if data.not_started:
        counts.append(("not started yet", data.not_started))
    best = data.best or {}
    best_pairs: list[tuple[str, Any]] = []
    if best:
        best_pairs = [("trial", best.get("trial_id")), ("state", best.get("state")), ("dev accuracy", _acc(best.get("accuracy")))]
        if data.metric != "accuracy":
            best_pairs.append((f"dev {data.metric} (study metric)", best.get(data.metric)))
        best_pairs += [("dev macro-F1", _acc(best.get("f1"))), ("dev loss", best.get("eval_loss")),
                       ("at samples seen", best.get("samples_seen")), ("trainable params", best.get("trainable_params")),
                       ("checkpoint", best.get("checkpoint"))]
        best_pairs += [(k, v) for k, v in sorted((best.get("params") or {}).items())]
    compute, wall = data.compute_s, data.wall_s
    time_pairs = [("wall time" + ("" if data.finished else " so far"), _duration(wall)),
                  ("compute used (Σ trial time_total_s)", _duration(compute)),
                  ("compute / wall (mean parallel trials)", f"{compute / wall:.2f}" if wall else None),
                  ("data as of", _when(data.data_as_of))]
    reg = data.summary.get("registered_model") or {}
    ml_pairs = [("tracking URI", data.tracking_uri), ("experiment", data.record.get("experiment")),
                ("parent run", data.parent_run_id), ("parent run status", data.parent_status or f"unknown ({data.mlflow_error or 'MLflow not read'})"),
                ("registered best adapter", reg.get("uri"))]
    sec.add('<div class="grid"><div>', "<h3>Configuration (fixed)</h3>", H.kv_table(fixed, id="config"),
            "<h3>Search space</h3>", H.table(["key", "distribution"], space, id="search-space") if space else H.note("nothing searched"),
            "</div><div>", "<h3>Trials</h3>", H.kv_table(counts, id="trial-counts"),
            "<h3>Best trial</h3>", H.kv_table(best_pairs, id="best-trial-table") if best_pairs else H.note("no trial reported a result yet"),
            "<h3>Time and compute</h3>", H.kv_table(time_pairs, id="time"),
            "<h3>MLflow</h3>", H.kv_table(ml_pairs, id="mlflow"), "</div></div>")
    # every trial, best first
    metric = data.metric
    key = (lambda r: -(r["best"].get(metric) if r["best"].get(metric) is not None else -1e9)) if data.mode == "max" else \
        (lambda r: r["best"].get(metric) if r["best"].get(metric) is not None else 1e9)
    rows, classes = [], []
    for r in sorted(data.rows, key=key):
        rows.append([r["trial_id"], r["state"], r["best"].get(metric), r["last"].get(metric), r["last"].get("samples_seen"),
                     r["best"].get("trainable_params") or r["last"].get("trainable_params"),
                     round(r["time_total_s"], 1) if r.get("time_total_s") is not None else None]
                    + [r["params"].get(k) for k in data.searched])
        classes.append("best" if r["trial_id"] == best.get("trial_id") else f"state-{r['state']}")
    sec.add("<h3>All trials</h3>", H.table(["trial", "state", f"best {metric}", f"last {metric}", "samples seen", "trainable params",
                                             "time (s)"] + data.searched, rows, id="trials", row_classes=classes))
    return sec


def _refit_section(data: StudyData) -> H.Section:
    """The search's pick and its refit side by side (how the refit was trained, the learning-rate
    check, both models on the validation and dev splits, which one ships and why) and the shipped
    model's one test score, or "no test set"."""
    from study.tracking.summary import test_line

    sec = H.Section("refit", "Refit and test")
    refit, best, metric = data.summary.get("refit") or {}, data.best or {}, data.metric
    if not refit:
        sec.add(H.note(f"No refit: refit.enabled is off for this study. `python -m study.run --name {data.name} --resume --refit` "
                       "trains the pick again on all the data and ships it if it is better on validation."))
    elif refit.get("state") != "completed":
        sec.add(H.note(f"Refit of trial {refit.get('of')}: {refit.get('state')}."))
    else:
        split = refit.get("split", "validation")
        plan = refit.get("plan") or {}
        rows = [[name, e.get("trial_id"), _acc(e.get(metric)) if metric in ("accuracy", "f1") else e.get(metric), _acc(e.get("dev_accuracy")),
                 _acc(e.get("f1")), e.get("samples_seen"), lr, data_size, epochs]
                for name, e, lr, data_size, epochs in (
                    ("pick", best, (best.get("params") or {}).get("train.lr", (best.get("config") or {}).get("train.lr")),
                     (best.get("config") or {}).get("data.size", "–"), (best.get("config") or {}).get("train.epochs")),
                    ("refit", refit, refit.get("lr"), f"{plan.get('n_train', 0):,} (all)" if refit.get("data_size") is None else refit.get("data_size"),
                     refit.get("epochs")))]
        shipped = (data.summary.get("shipped") or {}).get("model", "pick")
        sec.add(H.table(["model", "trial", f"{split} {metric}", "dev accuracy", f"{split} macro-F1", "samples seen", "lr", "training sentences", "epochs"],
                        rows, id="refit-table", row_classes=["best" if r[0] == shipped else None for r in rows]))
        reg = refit.get("registered_model") or {}
        sec.add(H.kv_table([("verdict", (refit.get("verdict") or {}).get("reason")), ("shipped", shipped),
                            ("refit registered as", reg.get("uri") or "not registered")], id="refit-verdict"))
        check = refit.get("check")
        if check:
            sec.add(f"<h3>Learning-rate check at {check['at']:,} samples ({split} {metric})</h3>",
                    H.table(["trial", "lr", "× pick's lr", f"{split} {metric}", "continued"],
                            [[c["trial_id"], c["lr"], c["factor"], c["score"], "yes" if c["factor"] == check["factor"] else ""] for c in check["candidates"]],
                            id="lr-check"))
    sec.add(H.note(test_line(data.summary.get("test")).replace("test: ", "Test set: ", 1)))
    return sec


def _fig_section(sec: H.Section, figs: dict[str, bytes], name: str, fig: Any, alt: str, caption: str) -> None:
    """The figure's PNG goes beside the page; the page shows it as inline SVG when it has per-trial
    hover titles, else embeds the PNG."""
    from .plots import hover_titles, to_png, to_svg

    png = to_png(fig)
    figs[name] = png
    if hover_titles(fig):
        sec.add(H.svg_figure(to_svg(fig, prefix=Path(name).stem.replace("_", "-")), alt, caption, name))
    else:
        sec.add(H.image(png, alt, caption, name))


def render_report(data: StudyData, predict: bool = True, cache_dir: Path | None = None) -> tuple[str, dict[str, bytes], list[str]]:
    """(HTML, {png name: bytes}, notes) for ``data``. Writes nothing except, with ``cache_dir``,
    the confusion-matrix cache ``confusion_matrix.json`` there."""
    from . import plots as P

    figs: dict[str, bytes] = {}
    notes: list[str] = []
    cfg = data.cfg
    max_t = A.asha_max_t(data) if cfg.asha.enabled else None
    rungs = asha_rungs(cfg.asha.grace_period, cfg.asha.reduction_factor, max_t) if max_t else []
    sections = [_summary_section(data, max_t, rungs), _refit_section(data)]

    sec = H.Section("learning-curves", "Learning curves")
    _fig_section(sec, figs, "learning_curves.png", P.learning_curves(data, rungs, max_t), "learning curves",
                 "Dev accuracy vs training samples seen, one line per trial (its id at the line's end); pruned trials grey "
                 "and dashed (× where ASHA stopped them), dotted verticals at ASHA's rungs (grace_period × reduction_factor^k "
                 "up to max_t).")
    sections.append(sec)

    sec = H.Section("progress", "Study progress")
    imp = A.best_so_far(data)
    _fig_section(sec, figs, "progress.png", P.study_progress(data, imp), "best accuracy so far vs wall-clock time",
                 "Top: every evaluation and the best dev accuracy found so far, against seconds since the study started "
                 "(result timestamps from Ray's result.json). Bottom: when each trial ran.")
    if imp:
        sec.add(H.table(["seconds since start", f"best {data.metric} so far", "trial"], [[round(t, 1), _acc(v), tid] for t, v, tid in imp], id="improvements"))
    sections.append(sec)

    sec = H.Section("importance", "Parameter importances")
    importances, why = A.param_importances(data)
    if importances:
        _fig_section(sec, figs, "param_importances.png", P.param_importances(importances), "parameter importances", why + ".")
        sec.add(H.table(["parameter", "importance"], [[k, round(v, 4)] for k, v in importances.items()], id="importances"))
    else:
        notes.append(f"parameter importances {why}")
        sec.add(f'<p class="note" id="importance-missing">Parameter importances {H.esc(why)}.</p>')
    sec.add(H.note(f"Optuna study: {data.optuna_source}."))
    sections.append(sec)

    sec = H.Section("slices", "Slice plots")
    _fig_section(sec, figs, "slice_plots.png", P.slice_plots(data), "slice plots",
                 f"Each trial's best dev {data.metric} against the value it tried, one panel per searched key; pruned trials "
                 "as grey crosses (their best is from fewer samples), the best trial black.")
    sections.append(sec)

    sec = H.Section("parallel-coordinates", "Parameters vs accuracy")
    _fig_section(sec, figs, "parallel_coordinates.png", P.parallel_coordinates(data), "parallel coordinates",
                 "One line per trial through its searched values (categorical axes: category index, names as ticks; "
                 "loguniform axes on a log scale) to its best dev accuracy.")
    sections.append(sec)

    sec = H.Section("data-size", "Accuracy vs training-data size")
    sizes = A.data_sizes(data)
    model_name = Path(cfg.trial.model.name).name
    ref_rows = [[f"{n:,}", f"{v[0] * 100:.1f}%", v[1], v[2]] for n, v in sorted(A.SEED_002.items())]
    ours = [[f"{s.size:,}" if s.size else "–", f"{s.trials} ({s.completed} / {s.pruned})", s.best_trial,
             f"{s.accuracy * 100:.2f}%" if s.accuracy is not None else None, s.f1, s.eval_loss] for s in sizes]
    sec.add('<div class="grid"><div class="wide">', f"<h3>This study ({H.esc(model_name)}, dev split)</h3>",
            H.table(["training samples", "trials (completed / pruned)", "best trial", "best dev accuracy", "macro-F1", "dev loss"], ours, id="size-table"),
            "</div><div>", "<h3>Seed notebook 002 (reference)</h3>",
            H.table(["training samples", "accuracy", "F1", "test loss"], ref_rows, id="seed-002-table"),
            H.note(A.SEED_002_SETUP + "; numbers as published, not re-run here."), "</div></div>")
    _fig_section(sec, figs, "accuracy_vs_data_size.png", P.accuracy_vs_data_size(sizes, model_name), "accuracy vs data size",
                 "Best trial per training-set size in this study, with notebook 002's 1k/8k/56k bert-base results for reference.")
    sections.append(sec)

    sec = H.Section("trainable-params", "Accuracy vs trainable parameters")
    pts = A.trainable_points(data)
    front = A.pareto_front(pts)
    labels = {r["trial_id"]: trial_label(r["trial_id"], r["params"], data.searched) for r in data.rows}
    _fig_section(sec, figs, "accuracy_vs_trainable_params.png", P.accuracy_vs_trainable_params(pts, front, labels), "accuracy vs trainable parameters",
                 "Trainable parameters grow with the rank and the number of target modules; the red step line is the Pareto front.")
    if front:
        sec.add("<h3>Pareto front</h3>", H.table(["trial", "trainable params", "best dev accuracy", "lora.r", "target modules", "state"],
                                                 [[p["trial_id"], p["trainable_params"], _acc(p["accuracy"]), p["r"], p["target_modules"], p["state"]] for p in front],
                                                 id="pareto"))
    sections.append(sec)

    sections.append(_best_trial_section(data, figs, notes, predict, cache_dir))

    title = f"lora-study report: {data.name}"
    subtitle = f"{data.counts['total']} trials · {cfg.study.metric} ({cfg.study.mode}) · storage {data.paths.experiment} · generated {_when(time.time())}"
    banner, ok = _banner(data)
    return H.page(title, subtitle, sections, banner=banner, banner_ok=ok), figs, notes


def _banner(data: StudyData) -> tuple[str, bool]:
    c = data.counts
    as_of = _when(data.data_as_of)
    if not data.running:
        best = data.best or {}
        return (f"study finished: {c['total']} trials ({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed); "
                f"best dev {data.metric} {_acc(best.get(data.metric))} (trial {best.get('trial_id', '–')}).", True)
    open_ = c["unfinished"] + data.not_started
    detail = f" ({c['unfinished']} in progress or paused, {data.not_started} not started yet)" if data.not_started else ""
    what = f"{open_} trial{'s' if open_ != 1 else ''} unfinished{detail}" if open_ else \
        f"no summary.json yet although all {c['total']} trials have ended (the runner is finishing up, or stopped before it)"
    if data.interrupted:
        return (f"study interrupted: {what}, data as of {as_of}. MLflow marks the study's run {data.parent_status}; "
                f"continue it with: python -m study.run --name {data.name} --resume", False)
    return f"study still running: {what}, data as of {as_of}. Numbers below are partial.", False


def _best_trial_section(data: StudyData, figs: dict[str, bytes], notes: list[str], predict: bool, cache_dir: Path | None) -> H.Section:
    from . import plots as P

    sec = H.Section("best-trial", "Best trial")
    best = data.best
    if not best:
        notes.append("best trial: no trial reported a result yet")
        sec.add(H.note("No trial has reported a result yet."))
        return sec
    tid = best["trial_id"]
    row = data.row(tid) or {}
    sec.add(H.note(f"Trial {tid} ({best.get('state')}): best dev accuracy {_acc(best.get('accuracy'))} at {best.get('samples_seen')} samples seen."))
    if predict:
        ckpt = next((c for c in (row.get("checkpoint"), best.get("checkpoint")) if c and (("://" in c) or Path(c).exists())), None)
        if ckpt is None:
            notes.append(f"confusion matrix: checkpoint of trial {tid} not found ({best.get('checkpoint')})")
            sec.add(H.note(f"Confusion matrix not drawn: the checkpoint {best.get('checkpoint')} is not there any more."))
        else:
            try:
                from .best_trial import cached_confusion

                cm, cached = cached_confusion(ckpt, cache_dir / CONFUSION_JSON if cache_dir else None)
            except Exception as e:  # a report with the rest of the figures beats no report
                msg = one_line(e)
                notes.append(f"confusion matrix: {msg}")
                sec.add(H.note(f"Confusion matrix not drawn: {msg}"))
            else:
                sec.add('<div class="grid"><div>')
                _fig_section(sec, figs, "confusion_matrix.png",
                             P.confusion_matrix(cm.matrix, cm.label_names, f"Trial {tid} on the dev split (n={cm.n:,})"),
                             "confusion matrix", f"Predicted from the checkpoint {Path(cm.checkpoint).name}"
                             + (f" (reused from {CONFUSION_JSON}: same checkpoint)." if cached else "."))
                sec.add("</div><div>", "<h3>Per class</h3>",
                        H.table(["label", "precision", "recall", "F1", "support"],
                                [[p["label"], round(p["precision"], 4), round(p["recall"], 4), round(p["f1"], 4), p["support"]] for p in cm.per_class()],
                                id="per-class"),
                        H.kv_table([("accuracy recomputed from the checkpoint", _acc(cm.accuracy)),
                                    ("accuracy the trial reported", _acc(best.get("accuracy")))], id="accuracy-check"),
                        "</div></div>")
    else:
        sec.add(H.note("Confusion matrix skipped (--no-predict)."))
    history = row.get("history") or []
    if history:
        sec.add('<div class="grid"><div>')
        _fig_section(sec, figs, "best_trial_loss.png", P.best_trial_loss(history, tid), "best trial loss",
                     "Train loss (mean over the steps since the previous evaluation) and dev loss per evaluation.")
        sec.add("</div><div>")
        _fig_section(sec, figs, "best_trial_accuracy.png", P.best_trial_accuracy(history, tid, data.metric), "best trial accuracy",
                     "Dev accuracy and macro-F1 per evaluation; circled: the best checkpoint.")
        sec.add("</div></div>")
    return sec


# --------------------------------------------------------------------------- writing / MLflow
def log_report(tracking_uri: str | None, run_id: str | None, files: list[Path]) -> str | None:
    """Log ``files`` under ``report/`` of the parent run; returns a warning instead of raising.

    Only the report's own files are logged (not whatever else a user's ``--out`` holds)."""
    if not tracking_uri or not run_id:
        return "report not logged to MLflow: the study has no tracking URI / parent run id"
    if not mlflow_reachable_store(tracking_uri):
        return f"report not logged to MLflow: no store at {tracking_uri}"
    try:
        from mlflow import MlflowClient

        from study.tracking.server import configure_mlflow_http
        from study.tracking.trust import check_run_artifacts

        configure_mlflow_http()
        client = MlflowClient(tracking_uri)
        with quiet_logger("urllib3"):
            check_run_artifacts(client, run_id, tracking_uri)  # the store picks where artifacts go
            for f in files:
                client.log_artifact(run_id, str(f), "report")
    except ConfigError as e:
        return f"report not logged to MLflow: {e}"
    except Exception as e:
        return f"report not logged to MLflow ({tracking_uri}, run {run_id}): {one_line(e)}"
    return None


def build_report(name: str, storage: str | None = None, tracking_uri: str | None = None, out: str | os.PathLike | None = None,
                 mlflow: bool = True, predict: bool = True) -> ReportResult:
    """Load study ``name``, write ``report.html`` + PNGs to ``out`` and log them to MLflow."""
    data = load_study_data(name, storage, tracking_uri, read_mlflow=mlflow)
    out_dir = Path(out) if out else data.paths.local / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    page_html, figs, notes = render_report(data, predict=predict, cache_dir=out_dir)
    for stale in FIGURES:  # a figure not drawn this time must not linger from an earlier report
        if stale not in figs and (out_dir / stale).is_file():
            (out_dir / stale).unlink()
    written = {}
    for fname, png in figs.items():
        (out_dir / fname).write_bytes(png)
        written[fname] = out_dir / fname
    html_path = out_dir / HTML_NAME
    tmp = out_dir / f".{HTML_NAME}.{os.getpid()}.tmp"
    tmp.write_text(page_html, encoding="utf-8")
    os.replace(tmp, html_path)
    result = ReportResult(html_path, written, notes, running=data.running)
    if mlflow:
        extra = [out_dir / CONFUSION_JSON] if "confusion_matrix.png" in figs and (out_dir / CONFUSION_JSON).is_file() else []
        warning = (f"report not logged to MLflow ({data.tracking_uri}): {data.mlflow_error}" if data.mlflow_error  # already failed once
                   else log_report(data.tracking_uri, data.parent_run_id, [html_path, *written.values(), *extra]))
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
            result.notes.append(warning)
        else:
            result.mlflow_logged = True
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dashboards.report",
                                description="Self-contained HTML report of a lora-study study (finished or still running).")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", help="storage the study was run with (default ./studies or $LORA_STUDY_HOME)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one in study.json)")
    p.add_argument("--out", help="output directory (default: the study's local dir /report)")
    p.add_argument("--no-mlflow", action="store_true", help="do not read from or log the report to MLflow")
    p.add_argument("--no-predict", action="store_true", help="skip re-predicting the dev split for the confusion matrix")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        res = build_report(args.study, args.storage, args.tracking_uri, args.out, mlflow=not args.no_mlflow, predict=not args.no_predict)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {res.html_path} ({len(res.figures)} figures"
          + (", logged to MLflow under report/" if res.mlflow_logged else "") + (", study still running" if res.running else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
