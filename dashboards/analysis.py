"""The numbers behind the figures, as pure functions of a :class:`~dashboards.data.StudyData`.

Kept apart from the plotting so the tables in the HTML and the figures show the same values and
the tests can check them without reading pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .data import StudyData

__all__ = [
    "SEED_002",
    "SEED_002_SETUP",
    "asha_max_t",
    "best_so_far",
    "data_sizes",
    "SizeRow",
    "trainable_points",
    "pareto_front",
    "param_importances",
    "resolve_size",
]

#: Notebook 002's table (bert-base-uncased, PEFT LoRA r=8 α=16 dropout 0.1 on query/value, SST-2):
#: training samples -> (accuracy, macro-F1, test loss). Shown beside the study's own numbers.
SEED_002: dict[int, tuple[float, float, float]] = {
    1000: (0.873, 0.875, 0.329),
    8000: (0.906, 0.906, 0.240),
    56000: (0.935, 0.934, 0.172),
}
SEED_002_SETUP = "bert-base-uncased, LoRA r=8 α=16 dropout 0.1 on query/value (0.27% of parameters trained)"


def asha_max_t(data: StudyData) -> int:
    """ASHA's ``max_t`` as the runner computes it: configured, else largest data size × epochs."""
    from study.search.space import max_samples

    return int(data.cfg.asha.max_t or max_samples(data.cfg, data.n_train or 1))


def best_so_far(data: StudyData) -> list[tuple[float, float, str]]:
    """(seconds since start, best metric so far, trial id holding it) at every improvement."""
    better = (lambda a, b: a > b) if data.mode == "max" else (lambda a, b: a < b)
    out: list[tuple[float, float, str]] = []
    for ev in data.evaluations:
        if ev.accuracy is None:
            continue
        if not out or better(ev.accuracy, out[-1][1]):
            out.append((ev.t, ev.accuracy, ev.trial_id))
    return out


def resolve_size(size: Any, n_train: int) -> int | None:
    """A ``data.size`` value as a count of training samples (``DataSection.count``, capped at the
    split); ``None`` for a relative size when the split's size is unknown."""
    from trainables.config import DataSection

    value = DataSection.model_validate({"size": size}).size
    if not n_train:
        return value if isinstance(value, int) else None
    return min(DataSection.model_validate({"size": value}).count(n_train), n_train)


@dataclass(frozen=True)
class SizeRow:
    """Best trial at one training-data size."""

    size: int | None
    trials: int
    completed: int
    pruned: int
    best_trial: str | None
    accuracy: float | None
    f1: float | None
    eval_loss: float | None
    params: dict[str, Any]


def data_sizes(data: StudyData) -> list[SizeRow]:
    """Best trial per training-data size (over every trial that reported, as ``summary.json``'s
    best is), sorted by size."""
    metric = data.metric
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in data.rows:
        size = resolve_size(r["config"].get("data.size", data.cfg.trial.data.size), data.n_train)
        groups.setdefault(size, []).append(r)
    out = []
    for size, rows in groups.items():
        scored = [r for r in rows if r["best"].get(metric) is not None]
        top = ((max if data.mode == "max" else min)(scored, key=lambda r: r["best"][metric]) if scored else None)
        out.append(SizeRow(size, len(rows), sum(r["state"] == "completed" for r in rows), sum(r["state"] == "pruned" for r in rows),
                           top["trial_id"] if top else None, top["best"].get("accuracy") if top else None,
                           top["best"].get("f1") if top else None, top["best"].get("eval_loss") if top else None,
                           dict(top["params"]) if top else {}))
    return sorted(out, key=lambda s: (s.size is None, s.size or 0))


def trainable_points(data: StudyData) -> list[dict[str, Any]]:
    """Per trial with a result: trainable parameters, best accuracy, rank, target modules, state."""
    pts = []
    for r in data.rows:
        acc = r["best"].get("accuracy")
        n = r["best"].get("trainable_params") or r["last"].get("trainable_params")
        if acc is None or not n:
            continue
        pts.append({"trial_id": r["trial_id"], "trainable_params": int(n), "accuracy": float(acc), "state": r["state"],
                    "r": r["config"].get("lora.r"), "target_modules": r["config"].get("lora.target_modules")})
    return pts


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both axes (fewer trainable parameters *and* higher
    accuracy), ordered by parameter count: the cheapest adapter for each accuracy level."""
    front: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (p["trainable_params"], -p["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front


def param_importances(data: StudyData) -> tuple[dict[str, float] | None, str]:
    """``optuna.importance.get_param_importances`` (fANOVA) over the Optuna study, or ``None``
    and the reason it cannot be computed. Optuna's evaluators use COMPLETE trials only (a pruned
    trial's value is a low-fidelity one), so that is what the note says it was computed on."""
    import optuna
    from optuna.trial import TrialState

    study = data.optuna_study
    if study is None:
        return None, "not computable: no Optuna study stored with the experiment"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    if len(complete) < 2:
        return None, (f"not computable: optuna.importance needs at least 2 COMPLETE trials, the study has "
                      f"{len(complete)} (+{pruned} pruned, which Optuna's importance evaluators ignore)")
    varying = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varying:
        return None, "not computable: the completed trials all share the same parameters"
    if len({t.value for t in complete}) < 2:
        return None, f"not computable: all {len(complete)} completed trials scored the same {data.metric} ({complete[0].value:.4f})"
    try:
        imp = optuna.importance.get_param_importances(study, params=varying)
    except Exception as e:  # e.g. distributions that changed between trials
        return None, f"not computable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not imp or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in imp.values()):
        return None, "not computable: fANOVA returned no variance to attribute"
    note = (f"fANOVA (optuna.importance) over {len(complete)} completed trials" + (f"; {pruned} pruned trial{'s' if pruned != 1 else ''} excluded by Optuna" if pruned else "")
            + ("; with this few trials the ranking is indicative only" if len(complete) < 10 else ""))
    return dict(imp), note
