"""The search strategy of a study: its config → the Ray Tune searcher and scheduler.

One function builds what ``study.run`` hands to the Tuner, so that the search benchmark
(``benchmarks/search_efficiency.py``), which replays this very function's objects against recorded
learning curves, measures exactly what users run.

``lora-study`` (the default): TPE (Bergstra et al. 2011) told PRUNED for trials ASHA (Li et al.
2020) stopped, the seed recipes first. ``rung-tpe``: TPE fitted on the highest ASHA rung with
enough results, as BOHB does (Falkner et al. 2018), so that trials are compared at equal samples
seen even when the data size is searched. Measured on the 45- and 77-configuration curve tables
(README, "Search efficiency"): rung-tpe had the shortest median time to target of the model-based
searchers on both, but the ranking of the others moved with every batch of new configurations,
so the default stays until the full (≥200) table decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import StudyConfig
from .space import max_samples, param_space, seed_points

__all__ = ["Strategy", "build_strategy", "searched_space"]


@dataclass
class Strategy:
    searcher: Any  # a ray.tune Searcher (or SearchAlgorithm)
    scheduler: Any | None  # a ray.tune TrialScheduler, None = FIFO
    callbacks: list[Any] = field(default_factory=list)  # Tune callbacks the pair needs (state across restores)
    max_t: int | None = None  # samples at which ASHA stops every trial


def searched_space(cfg: StudyConfig) -> dict[str, Any]:
    """The searched keys as Tune distributions, in the trial config's key order (TPE draws its
    start-up points key by key: the same order makes the same seed give the same points)."""
    return {k: v for k, v in param_space(cfg).items() if k in cfg.search}


def build_strategy(cfg: StudyConfig, n_train: int) -> Strategy:
    """Searcher + scheduler for ``cfg`` (``n_train``: examples in the train split, for ASHA's
    default ``max_t``). The seed recipes go first when ``study.seed_points`` is on."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from . import searcher as S

    points = seed_points(cfg) if cfg.study.seed_points else []
    metric, mode, seed, kind = cfg.study.metric, cfg.study.mode, cfg.study.seed, cfg.study.searcher
    scheduler, callbacks, max_t = None, [], None
    if cfg.asha.enabled:
        max_t = cfg.asha.max_t or max_samples(cfg, n_train)
        asha = dict(time_attr="samples_seen", metric=metric, mode=mode, grace_period=min(cfg.asha.grace_period, max_t),
                    reduction_factor=cfg.asha.reduction_factor, max_t=max_t)
        if kind == "lora-study":
            scheduler = S.make_scheduler(**asha)
            callbacks.append(S.SchedulerStateCallback(scheduler))
        else:
            scheduler = ASHAScheduler(**asha)
    if not cfg.search:
        return Strategy(BasicVariantGenerator(points_to_evaluate=points or None, max_concurrent=cfg.study.max_concurrent),
                        scheduler, callbacks, max_t)
    space = searched_space(cfg)
    if kind == "rung-tpe":
        from .rung_tpe import RungTPESearch

        rungs = _asha_rungs(cfg, max_t) if max_t else [max_samples(cfg, n_train)]
        searcher = ConcurrencyLimiter(RungTPESearch(space, metric, mode, rungs=rungs, seed=seed, points_to_evaluate=points or None),
                                      max_concurrent=cfg.study.max_concurrent)
    elif kind == "lora-study":
        searcher = S.make_searcher(space, metric, mode, seed=seed, points_to_evaluate=points or None,
                                   max_concurrent=cfg.study.max_concurrent, pruned_feedback=cfg.optuna.pruned_feedback)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed) if kind == "random" else None
        searcher = ConcurrencyLimiter(
            OptunaSearch(OptunaSearch.convert_search_space(space), metric=metric, mode=mode, seed=seed, sampler=sampler,
                         points_to_evaluate=[dict(p) for p in points] or None),
            max_concurrent=cfg.study.max_concurrent)
    return Strategy(searcher, scheduler, callbacks, max_t)


def _asha_rungs(cfg: StudyConfig, max_t: int) -> list[int]:
    """ASHA's rungs (``grace_period * reduction_factor**k`` up to ``max_t``), where the rung model compares trials."""
    rungs, r = [], float(min(cfg.asha.grace_period, max_t))
    while r < max_t:
        rungs.append(int(r))
        r *= cfg.asha.reduction_factor
    return [*rungs, max_t]
