"""Optuna samplers the searchers share: a model-based sampler that keeps proposing at random now and then.

Why: a model-based sampler can stall. TPE (Bergstra et al. 2011) proposes what is likely under the
density of its best trials; when those sit in a wrong basin, every proposal lands there too and a
seed never reaches the target, while random search, which needs no model, keeps covering the
space. BOHB (Falkner et al. 2018, "BOHB: Robust and Efficient Hyperparameter Optimization at
Scale", Sec. 4) draws one third of its configurations at random for exactly this reason: the
model can only slow the search down by a constant factor relative to random search, never stall
it. Optuna's samplers have no such option, so :class:`RandomFractionSampler` wraps one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RandomFractionSampler", "BOHB_RANDOM_FRACTION", "derived_seed"]

#: The share of random configurations in BOHB (Falkner et al. 2018: ``random_fraction = 1/3``).
BOHB_RANDOM_FRACTION = 1 / 3


def derived_seed(seed: int, *stream: int) -> int:
    """A seed for one stream of random numbers derived from the study's seed (NumPy's
    ``SeedSequence``): two samplers built from one seed must not draw the same sequence."""
    return int(np.random.SeedSequence([seed % 2**32, *stream]).generate_state(1)[0])


class RandomFractionSampler(BaseSampler):
    """Asks ``inner`` for most trials and :class:`optuna.samplers.RandomSampler` for a ``fraction``.

    Which trials are random is a function of the seed and the trial number alone (no state), so
    a restored study makes the same choice for the same trial. The random draws come from a
    stream of their own: ``inner``'s start-up sampler, seeded alike, would repeat them.
    """

    def __init__(self, inner: BaseSampler, fraction: float = BOHB_RANDOM_FRACTION, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1] (got {fraction})")
        self._inner, self._fraction, self._seed = inner, fraction, seed
        self._random = RandomSampler(seed=derived_seed(seed, 1))

    def is_random(self, trial: FrozenTrial) -> bool:
        """Whether ``trial`` gets a random configuration."""
        return bool(np.random.default_rng([derived_seed(self._seed, 2), trial.number]).random() < self._fraction)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {} if self.is_random(trial) else self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {} if self.is_random(trial) else self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        sampler = self._random if self.is_random(trial) else self._inner
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
        self._random.reseed_rng()
