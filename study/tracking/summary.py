"""The study's end-of-run summary: best trial, trial counts, wall time → ``summary.json`` + a table.

Each trial carries its searched ``params`` and what it trained with (``effective``: ``lora.alpha`` =
multiple × r, ``data.size`` as a count, the module names, the steps), and ``seed`` names the seed
recipe it is (``seed-000``), if any.

A trial's state is read from what it reported, so the same rule works for a live Tuner, a
restored one and a finished experiment on disk: *completed* = it saw all the samples it planned
(``samples_seen == samples_total``), *pruned* = the scheduler stopped it earlier, *failed* = Ray
marked it ERROR, *unfinished* = anything still pending/running/paused (an interrupted study).
"""

from __future__ import annotations

from typing import Any

__all__ = ["summarize", "print_summary", "print_refit", "registered_line", "refit_values", "test_line", "trial_rows", "trial_state"]

#: Effective keys that only repeat how the config spelled a value (shown beside the value itself).
_SPELLINGS = ("lora.target_modules_preset", "data.size_fraction")
_REPORTED = ("accuracy", "f1", "eval_loss", "dev_accuracy", "dev_f1", "train_loss", "samples_seen", "samples_total", "trainable_params",
             "samples_per_s", "epoch")


def trial_state(status: str, last: dict[str, Any]) -> str:
    if status == "ERROR":
        return "failed"
    if status != "TERMINATED":
        return "unfinished"
    if last.get("samples_total") is not None and last.get("samples_seen", 0) < last["samples_total"]:
        return "pruned"
    return "completed"


def trial_rows(experiment_path: str, metric: str = "accuracy", mode: str = "max", searched: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per trial from Ray's stored experiment: params, state, best and last metrics,
    the history of evaluations, and the best checkpoint's path. Read with
    ``study.storage.trials.read_trials`` (plain JSON, nothing unpickled): export and the dashboards use this
    on study directories they must not trust with code."""
    from ..storage.trials import read_trials, trial_fs

    rows = []
    for trial in read_trials(experiment_path):
        history = [{k: r[k] for k in (*_REPORTED, "time_total_s") if k in r} for r in trial.results if _score(r.get(metric)) is not None]
        last = trial.last_result or {}
        best = (max if mode == "max" else min)(history, key=lambda h: h[metric]) if history else {}
        ckpt = _best_checkpoint(trial, trial_fs(trial), metric, mode) if history else None
        cfg = trial.config or {}
        rows.append({
            "trial_id": trial.trial_id,
            "state": trial_state(trial.status, last),
            "status": trial.status,
            "params": {k: cfg.get(k) for k in (searched if searched is not None else sorted(cfg))},
            "config": cfg,
            "best": {k: best.get(k) for k in _REPORTED if k in best},
            "last": {k: last.get(k) for k in _REPORTED if k in last},
            "history": history,
            "checkpoint": ckpt,
            "node_ip": last.get("node_ip"),
            "time_total_s": last.get("time_total_s"),
        })
    return rows


def _score(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _best_checkpoint(trial: Any, fs_and_path: tuple[Any, str], metric: str, mode: str) -> str | None:
    """The kept checkpoint whose result scored best (what ``ExperimentAnalysis.get_best_checkpoint``
    picks among the checkpoints Ray kept: they are the ones still on disk)."""
    scored = [(path, _score(r.get(metric))) for path, r in trial.checkpoints(*fs_and_path)]
    scored = [(p, s) for p, s in scored if s is not None]
    if not scored:
        return None
    return _best_of(scored, lambda ps: ps[1], mode, tiebreak=lambda ps: ps[0])[0]


def _best_of(items: list[Any], score: Any, mode: str, tiebreak: Any) -> Any:
    """The best item by ``score``; ties go to the largest ``tiebreak`` (trial id, checkpoint path),
    so that the same study always names the same best trial and checkpoint whatever order Ray
    lists them in (a resumed finished study must not register a second version)."""
    sign = 1.0 if mode == "max" else -1.0
    return max(items, key=lambda x: (sign * score(x), tiebreak(x)))


def summarize(paths: Any, record: dict[str, Any], results: Any = None) -> dict[str, Any]:
    """Everything a person (or export, or the dashboards) wants to know about a study."""
    from ..config import StudyConfig, effective_values
    from ..search.space import seed_names

    cfg = StudyConfig.from_record(record, paths.study_json)
    metric, mode = cfg.study.metric, cfg.study.mode
    rows = trial_rows(paths.experiment, metric, mode, sorted(cfg.search))
    n_train, seeds = cfg.shared_n_train(record.get("n_train")), seed_names(cfg)
    for r in rows:
        r["effective"] = _jsonable(effective_values(r["config"], n_train))
        r["seed"] = seeds.of(r["config"])
    counts = {s: sum(r["state"] == s for r in rows) for s in ("completed", "pruned", "failed", "unfinished")}
    counts["total"] = len(rows)
    scored = [r for r in rows if r["best"].get(metric) is not None and r["checkpoint"]]
    best = None
    if scored:
        top = _best_of(scored, lambda r: r["best"][metric], mode, tiebreak=lambda r: r["trial_id"])
        best = {"trial_id": top["trial_id"], **top["best"], "state": top["state"], "params": top["params"],
                "effective": top["effective"], "config": top["config"], "checkpoint": top["checkpoint"]}
    return {
        "name": paths.name,
        "metric": metric,
        "mode": mode,
        "experiment": paths.experiment,
        "tracking_uri": record.get("tracking_uri"),
        "parent_run_id": record.get("parent_run_id"),
        "wall_s": round(float(record.get("wall_s", 0.0)), 1),
        "compute_s": round(sum(r["time_total_s"] or 0.0 for r in rows), 1),
        "trials": counts,
        "best": best,
        "table": [{k: r[k] for k in ("trial_id", "state", "seed", "params", "effective", "best", "last", "checkpoint", "node_ip")}
                  for r in rows],
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-study summary on stdout: counts and times, the best trial and its values, then
    every trial (best first) in columns sized to their contents."""
    t, best, metric = summary["trials"], summary.get("best"), summary["metric"]
    print(f"\n== study {summary['name']}: {t['total']} trials ({t['completed']} completed, {t['pruned']} pruned by ASHA, "
          f"{t['failed']} failed), wall time {_duration(summary['wall_s'])}, trial compute {_duration(summary['compute_s'])} ==")
    if not best:
        print("no trial reported a result")
        return
    seed = next((r.get("seed") for r in summary["table"] if r["trial_id"] == best["trial_id"] and r.get("seed")), None)
    print(f"best trial {best['trial_id']} ({best.get('state')}{f', the {seed} recipe' if seed else ''}): {metric} {_shown(metric, best.get(metric))}, "
          f"f1 {_shown('f1', best.get('f1'))}, {best.get('trainable_params', 0):,} trainable params, at {best.get('samples_seen')} samples")
    effective = best.get("effective") or {}
    for k, v in best["params"].items():
        print(f"  {k} = {'all' if v is None and k == 'data.size' else v}" + (f" ({_fmt(effective[k])})" if k in effective and effective[k] != v else ""))
    varying = _varying(summary["table"])
    trained = [f"{k} = {_fmt(effective[k])}" for k in varying if k not in best["params"] and k in effective and k not in _SPELLINGS]
    if trained:
        print("  trained with " + ", ".join(trained))
    keys = list(best["params"])
    shown_effective = [k for k in ("lora.alpha",) if k in varying and k not in keys]  # alpha: the multiple's product
    rows = sorted(summary["table"], key=lambda r: -(r["best"].get(metric) or -1) if summary.get("mode", "max") == "max"
                  else (r["best"].get(metric) if r["best"].get(metric) is not None else float("inf")))
    seeds = any(r.get("seed") for r in rows)
    table = [["trial", "state", metric, "samples", *keys, *shown_effective, *(["recipe"] if seeds else [])]]
    for r in rows:
        table.append([r["trial_id"], r["state"], _shown(metric, r["best"].get(metric)), str(r["last"].get("samples_seen", "-")),
                      *(_fmt(r["params"].get(k)) for k in keys), *(_fmt((r.get("effective") or {}).get(k)) for k in shown_effective),
                      *([r.get("seed") or ""] if seeds else [])])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {2, 3}  # numbers right-aligned
    print()
    for row in table:
        print("  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if summary.get("registered_model"):
        print(f"\n{registered_line(summary)}")
    if summary.get("refit"):
        print_refit(summary)
    elif (summary.get("test") or {}).get("path"):
        print(f"\n{test_line(summary['test'])}")


def registered_line(summary: dict[str, Any]) -> str:
    """Where the search's pick went in the registry, and which version ``@best`` names: the pick's,
    the refit's (registered after it, in this study), or a better one an earlier study registered."""
    reg = summary["registered_model"]
    refit = (summary.get("refit") or {}).get("registered_model") or {}
    if reg.get("alias") == "best":
        alias = f", alias @best (models:/{reg['name']}@best)"
    elif refit.get("alias") == "best":
        alias = f"; @best is the refit, version {refit['version']} (below)"
    else:
        alias = f"; models:/{reg['name']}@best stays on a better version registered before"
    return f"best adapter registered as {reg['uri']}{alias}"


def print_refit(summary: dict[str, Any]) -> None:
    """The refit beside the search's pick: how it was trained, both models' scores on the
    validation and dev splits, which one the study ships and why, and the test score."""
    refit, best, metric = summary["refit"], summary.get("best") or {}, summary["metric"]
    print(f"\n{_refit_headline(refit)}")
    if refit.get("state") != "completed":
        print(f"  the refit {'failed (see the study log)' if refit.get('state') == 'failed' else 'is ' + str(refit.get('state'))}; "
              "the pick stays the shipped model")
    else:
        split = refit.get("split", "validation")
        heads = ["", split, *(["dev"] if refit.get("dev_accuracy") is not None else []), "samples", "lr"]
        rows = [heads]
        for name, e in (("pick", best), ("refit", refit)):
            rows.append([name, _shown(metric, e.get(metric)), *([_shown("accuracy", e.get("dev_accuracy"))] if len(heads) == 5 else []),
                         f"{e.get('samples_seen') or 0:,}", _fmt((e.get("params") or {}).get("train.lr", e.get("lr")))])
        widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
        for r in rows:
            print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        print(f"{(refit.get('verdict') or {}).get('reason', '')}" + (f"; registered as {refit['registered_model']['uri']}"
                                                                        if refit.get("registered_model") else ""))
    print(test_line(summary.get("test")))


def refit_values(summary: dict[str, Any]) -> dict[str, Any]:
    """The refit's values, as a trial's ``params``: the pick's searched values with the refit's own
    learning rate, epochs and data size (``all`` for the whole train split)."""
    refit = summary.get("refit") or {}
    size = refit.get("data_size")
    return {**((summary.get("best") or {}).get("params") or {}), "train.lr": refit.get("lr"), "train.epochs": refit.get("epochs"),
            "data.size": "all" if size is None else size}


def _refit_headline(refit: dict[str, Any]) -> str:
    plan, size = refit.get("plan") or {}, refit.get("data_size")
    data = f"{plan.get('n_train', 0):,} sentences ({'all' if size is None else size})"
    epochs = refit.get("epochs") or 0
    head = f"refit of {refit.get('of')}: {data} × {epochs:g} epoch{'' if epochs == 1 else 's'}"
    check = refit.get("check")
    if refit.get("lr") is not None:
        head += f", lr {refit['lr']:.2e}" + (f" (the pick's × {refit['lr_factor']:g})" if refit.get("lr_factor") != 1 else "")
    if check:
        head += f", chosen among {len(check['candidates'])} rates on {refit.get('split', 'validation')} at {check['at']:,} samples"
    spent = (refit.get("time_total_s") or 0) + sum(c.get("time_total_s") or 0 for c in (check or {}).get("candidates", []))
    return head + (f"; {_duration(spent)} of trial time" if spent else "")


def test_line(test: dict[str, Any] | None) -> str:
    """``test: 88.91% accuracy, 88.90% f1 on 1,821 sentences (test.tsv), the refit`` or ``test: no test set``."""
    if not test or not test.get("path"):
        return "test: no test set"
    if test.get("accuracy") is None:
        return f"test: not scored ({test.get('error', 'unknown error')})"
    return (f"test: {_shown('accuracy', test['accuracy'])} accuracy, {_shown('f1', test['f1'])} f1 on {test['n']:,} sentences "
            f"({test['path']}), the {test.get('model')} ({test.get('trial_id')}); scored once, chose nothing")


def _shown(metric: str, v: Any) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.2f}%" if metric in ("accuracy", "f1") else f"{v:.4f}"


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60} s" if s < 5400 else f"{s // 3600} h {s % 3600 // 60} min"


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _varying(table: list[dict[str, Any]]) -> list[str]:
    """The effective keys whose value differs between trials (what the search changed), in order."""
    keys: dict[str, None] = {}
    for r in table:
        keys.update(dict.fromkeys(r.get("effective") or {}))
    return [k for k in keys if len({repr((r.get("effective") or {}).get(k)) for r in table}) > 1]
