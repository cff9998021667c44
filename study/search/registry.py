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

#: What ``study.searcher`` is when a config does not say: chosen by the search benchmark on the
#: full 200-configuration table (``benchmarks/README.md``, "Search efficiency"): the soonest to
#: the table's 95th percentile of the model-based searchers, at 4 workers and at 1.
DEFAULT_SEARCHER = "tpe-lora-prior"


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
    """Behind a concurrency limit that still tells the searcher about trials Tune re-created
    (``restart_errored``), which the stock limiter drops."""
    from .tpe import ForwardingConcurrencyLimiter

    return ForwardingConcurrencyLimiter(searcher, max_concurrent=cfg.study.max_concurrent)


def _tpe_sampler(seed: int, **options: Any) -> Any:
    """The TPE the TPE searchers here start from: multivariate (one joint density models
    interactions such as rank x learning rate; BOHB's density is joint too, Falkner et al. 2018),
    with the constant liar so concurrent trials are not proposed the same point."""
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed, **options)


def _pruned_feedback(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, sampler: Any = None) -> Any:
    """Ray's ``OptunaSearch`` told PRUNED for the trials ASHA stopped (:mod:`study.search.tpe`),
    with ``sampler`` (default: :func:`_tpe_sampler`)."""
    from .tpe import make_searcher

    return make_searcher(space, cfg.study.metric, cfg.study.mode, seed=cfg.study.seed, points_to_evaluate=points or None,
                         max_concurrent=cfg.study.max_concurrent, pruned_feedback=cfg.optuna.pruned_feedback, sampler=sampler)


@register_searcher("pruned-tpe", "multivariate TPE (Bergstra et al. 2011) told PRUNED for the trials ASHA stopped "
                                 "(study.search.tpe), the seed recipes first")
def _pruned_tpe(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    return _pruned_feedback(space, points, cfg)


@register_searcher("tpe-random", "pruned-tpe with one configuration in three drawn at random, so no seed stalls in a "
                                 "wrong basin, as BOHB does (Falkner et al. 2018; study.search.samplers)")
def _tpe_random(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .samplers import BOHB_RANDOM_FRACTION, RandomFractionSampler

    sampler = RandomFractionSampler(_tpe_sampler(cfg.study.seed), BOHB_RANDOM_FRACTION, cfg.study.seed)
    return _pruned_feedback(space, points, cfg, sampler)


@register_searcher("tpe-lora-prior", "pruned-tpe whose random start-up draws the learning rate around 10x full "
                                     "fine-tuning's for the model's width (Schulman et al. 2025, \"LoRA Without Regret\"; "
                                     "Biderman et al. 2024; study.search.lora_prior)")
def _tpe_lora_prior(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .asha import unwrap_searcher
    from .lora_prior import lora_lr_center, lr_prior_draws, model_width

    searcher = _pruned_feedback(space, points, cfg)
    lr = cfg.search.get("train.lr")
    if lr is None or lr.kind not in ("loguniform", "uniform"):
        return searcher  # nothing to centre: the learning rate is fixed or a list of choices
    low, high = getattr(lr, lr.kind)
    study = unwrap_searcher(searcher)._ot_study
    # As many draws as TPE's random start-up (Optuna's n_startup_trials default, 10), after the seed
    # recipes; the other keys of these trials are drawn by TPE as usual (Optuna fills a partial point).
    for value in lr_prior_draws(lora_lr_center(model_width(cfg.model.name)), low, high, n=10, seed=cfg.study.seed):
        study.enqueue_trial({"train.lr": value})
    return searcher


@register_searcher("tpe-group", "pruned-tpe with Optuna's TPESampler(multivariate=True, group=True, constant_liar=True) "
                                "(Bergstra et al. 2011; Optuna: Akiba et al. 2019); the same as pruned-tpe on a space "
                                "without conditional keys")
def _tpe_group(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    import warnings

    import optuna

    with warnings.catch_warnings():  # "``group`` is experimental": one line per study, nothing to act on
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, message=".*group")
        sampler = _tpe_sampler(cfg.study.seed, group=True)
    return _pruned_feedback(space, points, cfg, sampler)


@register_searcher("gp", "Optuna's GPSampler: Gaussian-process Bayesian optimisation with expected improvement "
                         "(Snoek et al. 2012), categorical keys included, told PRUNED for the trials ASHA stopped "
                         "(it fits the completed ones)")
def _gp(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    import optuna

    return _pruned_feedback(space, points, cfg, optuna.samplers.GPSampler(seed=cfg.study.seed, warn_independent_sampling=False))


@register_searcher("rung-tpe", "TPE fitted on the highest ASHA rung with enough results, as BOHB does "
                               "(Falkner et al. 2018; study.search.rung_tpe)", journal=False)
def _rung_tpe(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .rung_tpe import RungTPESearch

    return _limited(RungTPESearch(space, cfg.study.metric, cfg.study.mode, rungs=rungs, seed=cfg.study.seed,
                                  points_to_evaluate=points or None), cfg)


@register_searcher("bohb", "BOHB's searcher: rung-tpe with one configuration in three drawn at random "
                           "(Falkner et al. 2018; study.search.rung_tpe), behind the study's ASHA", journal=False)
def _bohb(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    from .rung_tpe import RungTPESearch
    from .samplers import BOHB_RANDOM_FRACTION

    return _limited(RungTPESearch(space, cfg.study.metric, cfg.study.mode, rungs=rungs, seed=cfg.study.seed,
                                  points_to_evaluate=points or None, random_fraction=BOHB_RANDOM_FRACTION), cfg)


@register_searcher("optuna", "stock Ray OptunaSearch with Optuna's default TPE: what a bare Ray Tune + Optuna script does")
def _optuna(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    """Ray's own ``OptunaSearch`` behind Ray's own ``ConcurrencyLimiter``, unchanged: the baseline."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(OptunaSearch.convert_search_space(space), metric=cfg.study.metric, mode=cfg.study.mode,
                            seed=cfg.study.seed, points_to_evaluate=[dict(p) for p in points] or None)
    return ConcurrencyLimiter(searcher, max_concurrent=cfg.study.max_concurrent)


@register_searcher("random", "random search over the same space (Bergstra & Bengio 2012)")
def _random(space: dict[str, Any], points: list[dict[str, Any]], cfg: StudyConfig, rungs: list[int]) -> Any:
    """Optuna's ``RandomSampler`` through the same searcher as ``pruned-tpe``: the proposals are
    what stock ``OptunaSearch`` would make (the sampler ignores all feedback), and it survives
    ``restart_errored`` and warm starts as the others do. The sampler comes seeded, so Ray's
    ``OptunaSearch`` gets no ``seed`` of its own (it would warn that it ignores it)."""
    import optuna

    return _pruned_feedback(space, points, cfg, optuna.samplers.RandomSampler(seed=cfg.study.seed))
