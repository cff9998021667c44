"""The searchers a study can use, by name, and what ``study.run`` hands the Tuner.

One place maps a searcher name to its builder: ``study.run`` builds the study's search with
:func:`build_search`, the config validates ``study.searcher`` against :data:`SEARCHERS`, and the
search benchmark (``benchmarks/search_efficiency.py``) replays exactly these objects against
recorded learning curves, so it measures what users run. A new searcher is one function here,
decorated with :func:`register_searcher` (like PEFT's ``register_peft_method``).

Every searcher runs behind the same ASHA (Li et al. 2020) on ``samples_seen``
(:mod:`study.search.asha`), which records the trials it prunes, so the console and MLflow say
pruned or completed whatever the searcher; searchers that can use that signal are told at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .space import asha_rungs, max_samples, param_space, seed_points

if TYPE_CHECKING:
    from ..config import StudyConfig

__all__ = ["SEARCHERS", "DEFAULT_SEARCHER", "SearcherEntry", "SearchPlan", "register_searcher", "build_search",
           "searched_space", "comparison_rungs"]

#: What ``study.searcher`` is when a config does not say.
DEFAULT_SEARCHER = "pruned-tpe"


@dataclass(frozen=True)
class SearcherEntry:
    name: str
    summary: str  # one line: what it is, and the paper
    build: Callable[..., Any]  # (space, points, cfg, rungs) -> a ray.tune Searcher
    journal: bool = True  # keeps an Optuna study the journal can save (optuna-dashboard, the report)


#: searcher name → entry, in the order users read them
SEARCHERS: dict[str, SearcherEntry] = {}


def register_searcher(name: str, summary: str, *, journal: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``build(space, points, cfg, rungs)`` under ``name``. ``space`` holds the searched
    keys as Tune distributions, ``points`` the seed recipes to try first (may be empty), ``rungs``
    the fidelities (samples seen) at which ASHA compares trials."""

    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in SEARCHERS:
            raise ValueError(f"searcher {name!r} is registered twice")
        SEARCHERS[name] = SearcherEntry(name, summary, build, journal)
        return build

    return add


@dataclass
class SearchPlan:
    searcher: Any  # a ray.tune Searcher (or SearchAlgorithm)
    scheduler: Any | None  # a ray.tune TrialScheduler, None = FIFO
    callbacks: list[Any] = field(default_factory=list)  # Tune callbacks the pair needs (state across restores)
    max_t: int | None = None  # samples at which ASHA stops every trial
    journal: bool = True  # whether the searcher keeps an Optuna study to journal


def searched_space(cfg: StudyConfig) -> dict[str, Any]:
    """The searched keys as Tune distributions, in the trial config's key order (TPE draws its
    start-up points key by key: the same order makes the same seed give the same points)."""
    return {k: v for k, v in param_space(cfg).items() if k in cfg.search}


def comparison_rungs(cfg: StudyConfig, max_t: int | None, n_train: int) -> list[int]:
    """The fidelities at which a multi-fidelity searcher compares trials: ASHA's rungs and
    ``max_t`` (where every trial ends), or only the end without ASHA."""
    if not max_t:
        return [max_samples(cfg, n_train)]
    return sorted({*asha_rungs(cfg.asha.grace_period, cfg.asha.reduction_factor, max_t), max_t})


def build_search(cfg: StudyConfig, n_train: int) -> SearchPlan:
    """Searcher + scheduler for ``cfg`` (``n_train``: examples in the train split, for ASHA's
    default ``max_t``). The seed recipes go first when ``study.seed_points`` is on."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from .asha import SchedulerStateCallback, make_scheduler

    points = seed_points(cfg) if cfg.study.seed_points else []
    scheduler, callbacks, max_t = None, [], None
    if cfg.asha.enabled:
        max_t = cfg.asha.max_t or max_samples(cfg, n_train)
        scheduler = make_scheduler(metric=cfg.study.metric, mode=cfg.study.mode, grace_period=min(cfg.asha.grace_period, max_t),
                                   reduction_factor=cfg.asha.reduction_factor, max_t=max_t)
        callbacks.append(SchedulerStateCallback(scheduler))
    if not cfg.search:
        return SearchPlan(BasicVariantGenerator(points_to_evaluate=points or None, max_concurrent=cfg.study.max_concurrent),
                          scheduler, callbacks, max_t, journal=False)
    entry = SEARCHERS[cfg.study.searcher]
    searcher = entry.build(searched_space(cfg), points, cfg, comparison_rungs(cfg, max_t, n_train))
    return SearchPlan(searcher, scheduler, callbacks, max_t, journal=entry.journal)


# --------------------------------------------------------------------------- the searchers


def _limited(searcher: Any, cfg: StudyConfig) -> Any:
    from ray.tune.search import ConcurrencyLimiter

    return ConcurrencyLimiter(searcher, max_concurrent=cfg.study.max_concurrent)


@register_searcher("pruned-tpe", "multivariate TPE (Bergstra et al. 2011) told PRUNED for the trials ASHA stopped "
                                 "(study.search.tpe), the seed recipes first")
def _pruned_tpe(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .tpe import make_searcher

    return make_searcher(space, cfg.study.metric, cfg.study.mode, seed=cfg.study.seed, points_to_evaluate=points or None,
                         max_concurrent=cfg.study.max_concurrent, pruned_feedback=cfg.optuna.pruned_feedback)


@register_searcher("rung-tpe", "TPE fitted on the highest ASHA rung with enough results, as BOHB does "
                               "(Falkner et al. 2018; study.search.rung_tpe)", journal=False)
def _rung_tpe(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .rung_tpe import RungTPESearch

    return _limited(RungTPESearch(space, cfg.study.metric, cfg.study.mode, rungs=rungs, seed=cfg.study.seed,
                                  points_to_evaluate=points or None), cfg)


def _stock_optuna(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, sampler: Any) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    return _limited(OptunaSearch(OptunaSearch.convert_search_space(space), metric=cfg.study.metric, mode=cfg.study.mode,
                                 seed=cfg.study.seed, sampler=sampler, points_to_evaluate=[dict(p) for p in points] or None), cfg)


@register_searcher("optuna", "stock Ray OptunaSearch with Optuna's default TPE: what a bare Ray Tune + Optuna script does")
def _optuna(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    return _stock_optuna(space, points, cfg, None)


@register_searcher("random", "random search over the same space (Bergstra & Bengio 2012)")
def _random(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    import optuna

    return _stock_optuna(space, points, cfg, optuna.samplers.RandomSampler(seed=cfg.study.seed))

