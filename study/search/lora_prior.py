"""Where a LoRA learning rate should start: ten times full fine-tuning's, from the model's width.

Why: the learning rate dominates LoRA's result, and LoRA's best rate is about ten times full
fine-tuning's ("LoRA Without Regret", Schulman et al. 2025, Thinking Machines Lab: the ratio is
close to 10 across models and ranks; Biderman et al. 2024, "LoRA Learns Less and Forgets Less":
LoRA's best rates are an order of magnitude above full fine-tuning's). A log-uniform search over
[1e-5, 5e-3] spends most of TPE's random start-up draws far from that rate. This module turns the
rule into learning rates for the start-up draws; nothing in it is fitted to any benchmark table.

The rule, each step stated (the constants are the papers' or chosen, none measured here):

* full fine-tuning of BERT-base (width 768) at 3e-5, the middle of the grid BERT was fine-tuned
  with (Devlin et al. 2019: {5, 4, 3, 2}e-5);
* other widths scaled by 768 / width, as μP prescribes for Adam on hidden weights (Yang et al.
  2021, "Tensor Programs V"): MiniLM-L6-H384 → 6e-5;
* LoRA at 10x that (Schulman et al. 2025): 6e-4 for MiniLM-L6-H384;
* draws log-normal around it with a factor of 3 either side as one standard deviation (a chosen
  width: about one step of the usual 1-3-10 learning-rate grid), truncated to the searched range,
  one per stratum so ten draws cover the prior evenly.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist

import numpy as np

from trainables.config import DEFAULT_MODEL

__all__ = ["LORA_OVER_FULL_FT", "lora_lr_center", "full_ft_lr", "model_width", "lr_prior_draws"]

logger = logging.getLogger(__name__)

#: LoRA's best learning rate over full fine-tuning's (Schulman et al. 2025).
LORA_OVER_FULL_FT = 10.0
#: Full fine-tuning learning rate of BERT-base (Devlin et al. 2019's grid, middle) and its width.
BERT_BASE_FULL_FT_LR, BERT_BASE_WIDTH = 3e-5, 768
#: One standard deviation of the prior, as a factor on the learning rate.
PRIOR_SPREAD = 3.0
#: Hidden sizes of the models lora-study ships (from their model cards), read without loading them.
KNOWN_WIDTHS = {DEFAULT_MODEL: 384, "sentence-transformers/all-MiniLM-L6-v2": 384}


def model_width(name: str) -> int:
    """The model's hidden size: known models by name, others from their ``config.json`` if it is
    on this machine (``transformers.AutoConfig``, no download), else BERT-base's 768 (said)."""
    if name in KNOWN_WIDTHS:
        return KNOWN_WIDTHS[name]
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, local_files_only=True)
        return int(getattr(config, "hidden_size", None) or config.d_model)
    except Exception as e:  # the prior is a starting point, never a reason to stop a study
        logger.warning("LoRA learning-rate prior: width of %s unknown (%s); assuming BERT-base's %d", name, e, BERT_BASE_WIDTH)
        return BERT_BASE_WIDTH


def full_ft_lr(width: int) -> float:
    """Full fine-tuning's learning rate at ``width`` (BERT-base's, scaled by μP's 1/width)."""
    return BERT_BASE_FULL_FT_LR * BERT_BASE_WIDTH / width


def lora_lr_center(width: int) -> float:
    """Where the prior is centred: ten times full fine-tuning's rate."""
    return LORA_OVER_FULL_FT * full_ft_lr(width)


def lr_prior_draws(center: float, low: float, high: float, n: int, seed: int) -> list[float]:
    """``n`` learning rates from the log-normal prior truncated to ``[low, high]``: one uniform
    draw inside each of ``n`` equal-probability strata, in a seeded random order."""
    if n <= 0:
        return []
    normal = NormalDist(math.log(center), math.log(PRIOR_SPREAD))
    lo, hi = normal.cdf(math.log(low)), normal.cdf(math.log(high))
    rng = np.random.default_rng(seed % 2**32)
    quantiles = lo + (hi - lo) * (np.arange(n) + rng.random(n)) / n
    draws = [min(max(math.exp(normal.inv_cdf(float(np.clip(q, 1e-12, 1 - 1e-12)))), low), high) for q in quantiles]
    return [draws[i] for i in rng.permutation(n)]
