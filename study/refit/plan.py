"""What a refit trains, which learning rate goes on, and whether the result replaces the pick.

Pure functions of the study's summary and config (no Ray, no MLflow, no files), so the rule is
tested and read in one place:

- :func:`make_plan`: the pick's configuration with the refit's data size and epochs, evaluated
  ``refit.evaluations`` times, and the learning rates to check (the pick's times each of
  ``refit.lr_factors``) at ``refit.check_fraction`` of the refit's own schedule;
- :func:`choose`: the rate that continues (best on the validation split at the check);
- :func:`verdict`: the refit replaces the pick only if it is better on the validation split.

Why check rates at all: the rate a search picks is the best one for the search's schedule. A
refit on all the data runs many more optimizer steps, and the best rate falls with the length of
training (Bjorck et al. 2024, "Scaling Optimal LR Across Token Horizons", arXiv:2409.19913): the
77-configuration SST-2 table's pick (lr 1.8e-3, 250 steps) fell from 84.9% to 76.5% dev when
trained for 2,100 steps, while lr/4 reached 88.6%. No fixed scaling rule says by how much for a
given model and task (square-root and linear rules, e.g. Malladi et al. 2022, "On the SDEs and
Scaling Rules for Adaptive Gradient Algorithms", relate batch sizes at a fixed number of epochs,
not longer training), so the refit measures it where it matters: on its own schedule, on data
that chose nothing else. The candidates are trained as the first part of that very schedule, so
the winner continues from its checkpoint and only the losers' prefixes are extra cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError, size_count

if TYPE_CHECKING:
    from ..config import RefitSection

__all__ = ["RefitPlan", "make_plan", "choose", "verdict", "check_memory", "LABEL_KEYS"]

#: The trial keys a refit changes, shown in its run names and console lines beside the searched ones.
LABEL_KEYS = ("train.lr", "data.size", "train.epochs")


@dataclass(frozen=True)
class RefitPlan:
    """The refit of one trial (``pick_id``): its trial config at the pick's learning rate, the
    rates to check and where, and the size of its schedule."""

    pick_id: str
    config: dict[str, Any]
    lr: float
    factors: tuple[float, ...]
    check_at: int | None
    """Samples seen at which the rates are compared; ``None``: one rate, nothing to compare."""
    n_train: int
    samples_total: int

    @property
    def checked(self) -> bool:
        return self.check_at is not None

    def candidate(self, factor: float) -> dict[str, Any]:
        """The trial config of the refit at the pick's rate × ``factor``."""
        return {**self.config, "train.lr": self.lr * factor}

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "config"}


def make_plan(pick: dict[str, Any], refit: RefitSection, n_split: int, threads: int) -> RefitPlan:
    """The refit of ``pick`` (``summary.json``'s ``best``: its flat ``config`` and ``trial_id``) on
    a train split of ``n_split`` sentences, with ``threads`` torch threads. Everything the search
    chose stays (rank, targets, dropout, warmup ratio, batch size, seed); the data size, the epochs
    and the evaluation points are the refit's."""
    base = dict(pick["config"])
    n = size_count(refit.data_size, n_split)
    epochs = float(refit.epochs if refit.epochs is not None else base.get("train.epochs", 1.0))
    total = max(1, round(n * epochs))
    check_at = max(1, round(refit.check_fraction * total)) if len(refit.lr_factors) > 1 else None
    base.update({"data.size": refit.data_size, "train.epochs": epochs, "train.threads": threads,
                 "train.eval_every_samples": math.ceil(total / refit.evaluations),
                 "train.eval_at_samples": [check_at] if check_at else None})
    return RefitPlan(pick["trial_id"], base, float(base["train.lr"]), tuple(refit.lr_factors), check_at, n, total)


def choose(scores: list[tuple[float, float | None]], mode: str) -> float:
    """The factor whose rate continues: the best validation score at the check (``scores``:
    (factor, score) pairs). Ties go to the larger rate: a short check favours small rates
    (Wu et al. 2018, "Understanding Short-Horizon Bias in Stochastic Meta-Optimization"), so a
    small rate that only draws level has not shown it is better. Raises ``ValueError`` when no
    candidate has a score."""
    scored = [(f, s) for f, s in scores if s is not None and s == s]
    if not scored:
        raise ValueError("no learning-rate candidate reported a score at the check")
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda fs: (sign * fs[1], fs[0]))[0]


def verdict(pick: float | None, refit: float | None, metric: str, mode: str, split: str) -> dict[str, Any]:
    """Whether the refit replaces the pick: only if its score on the validation split (``split``
    names it) is strictly better; a tie keeps the pick, which the search already validated.
    Returns ``{"replaces": bool, "reason": str}``."""
    if refit is None:
        return {"replaces": False, "reason": f"the refit reported no {split} {metric}; the pick stays"}
    if pick is None:
        return {"replaces": True, "reason": f"the pick has no {split} {metric} to compare with"}
    better = refit > pick if mode == "max" else refit < pick
    shown = (lambda v: f"{v * 100:.2f}%") if metric in ("accuracy", "f1") else (lambda v: f"{v:.4f}")
    if better:
        return {"replaces": True, "reason": f"the refit beats the pick on {split} {metric}: {shown(refit)} vs {shown(pick)}"}
    return {"replaces": False, "reason": f"the refit does not beat the pick on {split} {metric} "
                                         f"({shown(refit)} vs {shown(pick)}); the pick stays the best model"}


def check_memory(needed: int, available: int | None, where: str, hint: str) -> None:
    """Refuse, in one line, a refit whose estimate (``needed`` bytes) exceeds the memory of the
    machine it runs on (``available``; ``None``: unknown, nothing to check)."""
    if available is not None and needed > available:
        raise ConfigError(f"refit: one trial of it needs about {needed / 2**30:.1f} GiB ({where}), more than the "
                          f"{available / 2**30:.1f} GiB this machine has; {hint}")
