"""The search space: study config → Ray Tune ``param_space`` and the seed recipes as first points.

Trials receive a *flat* dict of dotted trial keys (``{"lora.r": 8, "train.lr": 3e-4, …}``): the
fixed values from the study config with the searched keys replaced by Tune distributions.
Flat keys keep Optuna's parameter names identical to the config keys users write, and they are
what MLflow shows as params.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainables.config import ALL_SIZES, DataSection

if TYPE_CHECKING:
    from ..config import Distribution, StudyConfig

__all__ = ["SEED_RECIPES", "SEED_NAMES", "SeedPoints", "param_space", "seed_points", "seed_names", "in_space", "max_samples",
           "asha_rungs", "describe"]

#: The two hand-picked recipes lora-study starts from (see ``../shared/seeds``):
#: notebook 000 (r=4, alpha=16, lr=1e-4, query+value) and notebook 002 (PEFT r=8, alpha=16,
#: dropout 0.1, query+value). Keys a seed does not state take the study's fixed value.
SEED_RECIPES: list[dict[str, Any]] = [
    {"lora.r": 4, "lora.alpha": 16, "lora.dropout": 0.0, "lora.target_modules": "qv", "train.lr": 1e-4},
    {"lora.r": 8, "lora.alpha": 16, "lora.dropout": 0.1, "lora.target_modules": "qv"},
]
#: The recipes' names: the notebooks they come from (``trainables/configs/seed-000.yaml`` …).
SEED_NAMES = ("seed-000", "seed-002")


def _to_tune(dist: Distribution):
    from ray import tune

    kind, v = dist.kind, getattr(dist, dist.kind)
    if kind == "choice":
        return tune.choice(list(v))
    if kind == "uniform":
        return tune.uniform(*v)
    if kind == "loguniform":
        return tune.loguniform(*v)
    return tune.randint(*v)


def _same(a: Any, b: Any) -> bool:
    norm = lambda x: None if isinstance(x, str) and x.lower() in ALL_SIZES else x  # noqa: E731
    return norm(a) == norm(b)


def in_space(dist: Distribution, value: Any) -> bool:
    """Whether ``value`` is one the distribution can produce."""
    kind, v = dist.kind, getattr(dist, dist.kind)
    if kind == "choice":
        return any(_same(value, c) for c in v)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return v[0] <= value < v[1] if kind == "randint" else v[0] <= value <= v[1]


def param_space(cfg: StudyConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fixed flat trial config with the searched keys replaced by Tune distributions."""
    space: dict[str, Any] = cfg.trial.to_flat()
    space.update(extra or {})
    for key, dist in cfg.search.items():
        space[key] = _to_tune(dist)
    return space


def seed_points(cfg: StudyConfig) -> list[dict[str, Any]]:
    """The seed recipes as complete points over the searched keys (alpha turned into a multiple of
    r when the study searches ``lora.alpha_multiple``). Keys a seed does not fix take the study's
    fixed value when it lies in the space, else ``_default``."""
    base = cfg.trial.to_flat()
    points = []
    for recipe in SEED_RECIPES:
        values = {**base, **recipe}
        if "lora.alpha_multiple" in cfg.search:
            values["lora.alpha_multiple"] = values["lora.alpha"] / values["lora.r"]
        points.append({k: _pick(d, values.get(k)) if in_space(d, values.get(k)) else _default(d) for k, d in cfg.search.items()})
    return points if cfg.search else []


@dataclass(frozen=True)
class SeedPoints:
    """The seed recipes of a study by name, as points over its searched keys: tells which trials
    are the seeds (the console and the summary mark them)."""

    points: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of(self, config: dict[str, Any]) -> str | None:
        """The name of the seed recipe a (flat) trial config is, or ``None``."""
        for name, point in self.points.items():
            if point and all(_close(config.get(k), v) for k, v in point.items()):
                return name
        return None


def seed_names(cfg: StudyConfig) -> SeedPoints:
    """The study's seed points by recipe name (none when ``study.seed_points`` is off)."""
    return SeedPoints(dict(zip(SEED_NAMES, seed_points(cfg))) if cfg.study.seed_points else {})


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return _same(a, b)


def _default(dist: Distribution) -> Any:
    """A value for a key a seed leaves open and the fixed config can't supply (Ray needs complete
    points): the last choice (spaces list sizes/ranks ascending), or the (geometric) midpoint."""
    kind, v = dist.kind, getattr(dist, dist.kind)
    if kind == "choice":
        return v[-1]
    if kind == "loguniform":
        return math.sqrt(v[0] * v[1])
    if kind == "randint":
        return (v[0] + v[1] - 1) // 2
    return (v[0] + v[1]) / 2


def _pick(dist: Distribution, value: Any) -> Any:
    """The space's own spelling of a value (``"all"`` rather than ``None`` for data.size)."""
    if dist.kind == "choice":
        return next(c for c in dist.choice if _same(value, c))
    return value


def max_samples(cfg: StudyConfig, n_train: int) -> int:
    """The most training samples any configuration of the space can see (ASHA's default max_t)."""

    def options(key: str) -> list[Any]:
        if key in cfg.search:
            d = cfg.search[key]
            return list(d.choice) if d.kind == "choice" else [getattr(d, d.kind)[1]]
        return [cfg.trial.to_flat()[key]]

    best = 0
    for size in options("data.size"):
        count = min(DataSection.model_validate({"size": size}).count(n_train), n_train)
        for epochs in options("train.epochs"):
            best = max(best, math.ceil(count * float(epochs)))
    return max(best, 1)


def asha_rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The rung milestones of Ray's ``AsyncHyperBandScheduler`` (one bracket): ``grace × rf^k`` for
    ``k < int(log(max_t / grace) / log(rf) + 1)``, with ``grace`` capped at ``max_t`` as the study
    caps it. ``max_t`` itself is a rung only when it lies on that ladder; it is where every trial stops."""
    grace = min(grace_period, max_t)
    n = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
    return [int(grace * reduction_factor**k) for k in range(n)]


def describe(cfg: StudyConfig) -> str:
    """One line per searched key, for the start-up banner."""
    return "\n".join(f"  {k}: {d.kind} {getattr(d, d.kind)}" for k, d in cfg.search.items()) or "  (nothing searched)"
