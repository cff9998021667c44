"""Check, before any cluster work, that every trial a study may run can start.

Why: a mistyped column, a target module the model lacks or a data size larger than the train split
would otherwise surface minutes later, inside a Ray worker, once per trial. Here the data is loaded
once (columns, labels, sizes) and the model is built on the meta device (no weights read), so the
checks take seconds, and each failure is one ``ConfigError`` line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

from .config import ConfigError, TrialConfig

__all__ = ["preflight", "DataCounts", "MIN_PER_LABEL", "memory_estimate", "MemoryEstimate"]

#: Fewest examples per label a training subset or an evaluation split may hold. Why 10: a
#: stratified subset below that gives each label a handful of examples, fewer than one batch
#: sees, so a trial learns nothing worth ranking; an evaluation split below it moves accuracy by
#: 5 points or more per example (binary) with a standard error of 11 points or more (n = 20,
#: p = 0.5), larger than any difference a study is run to find.
MIN_PER_LABEL = 10

GiB = 2**30
#: What a trial process holds before any model or data: Python, torch, transformers, PEFT and
#: Ray's worker (a trial of the tiny test BERT peaked at about 0.7 GiB resident on CPU).
RUNTIME_BYTES = int(0.75 * GiB)


class DataCounts(NamedTuple):
    n_train: int
    """Examples in the train split."""
    dropped_empty: int
    """Rows without a text that ``data.drop_empty`` dropped (train and dev files together)."""


def preflight(trial: TrialConfig, variants: Mapping[str, Sequence[Any]] | None = None) -> DataCounts:
    """Check ``trial`` and, for the keys a study varies (``variants``: dotted key → the values it
    can take, e.g. a search space's choices or bounds), each value of ``data.size``,
    ``lora.target_modules`` and ``model.pooling``; and the test file (``data.test_path``): readable,
    same columns, only training labels. The data and the model path come first: they fail
    without importing torch. Returns the train split's size and the rows ``data.drop_empty`` dropped."""
    from .data import load_splits, load_test
    from .model import apply_pooling, check_modules_to_save, check_target_modules

    variants = variants or {}
    raw = load_splits(trial.data)
    if trial.data.test_path:
        load_test(trial.data, raw)
    n_train = len(raw.train_texts)
    where = "search.data.size" if "data.size" in variants else "data.size"
    sizes = [type(trial.data).model_validate({**trial.data.model_dump(), "size": size}).count(n_train)
             for size in variants.get("data.size", [trial.data.size])]
    for n in sizes:
        if n > n_train:
            raise ConfigError(f"{where}: {n} is larger than the train split ({n_train} examples in {raw.source})")
    _check_enough(raw, sizes, where)
    model = _meta_model(trial, len(raw.label_names))
    for targets in variants.get("lora.target_modules", [trial.lora.target_modules]):
        lora = type(trial.lora).model_validate({**trial.lora.model_dump(), "target_modules": targets})
        check_target_modules(model, lora.module_list())
    check_modules_to_save(model, trial.lora.modules_to_save)
    for pooling in variants.get("model.pooling", [trial.model.pooling]):
        apply_pooling(model, pooling, trial.model.name, trial.lora.modules_to_save)
    return DataCounts(n_train, raw.dropped_empty)


def _check_enough(raw: Any, sizes: Sequence[int], where: str) -> None:
    """Every training subset and evaluation split holds at least :data:`MIN_PER_LABEL` examples
    per label; else one line naming the numbers (a 4-example study reported "accuracy 0.00%")."""
    labels = len(raw.label_names)
    need = MIN_PER_LABEL * labels
    small = []
    if min(sizes) < need:
        small.append(f"{where} {', '.join(str(n) for n in sorted(set(sizes)) if n < need)} training examples")
    if len(raw.dev_texts) < need:
        small.append(f"a dev split of {len(raw.dev_texts)}")
    if raw.val_texts is not None and len(raw.val_texts) < need:
        small.append(f"a validation split (data.holdout_size) of {len(raw.val_texts)}")
    if small:
        raise ConfigError(f"too little data in {raw.source} to mean anything: {' and '.join(small)}, for {labels} labels; "
                          f"training subsets and evaluation splits need at least {need} examples ({MIN_PER_LABEL} per label): "
                          f"use more data, a larger data.size, data.dev_size or data.dev_fraction")


def _meta_model(trial: TrialConfig, n_labels: int) -> Any:
    """The classifier ``model.name`` names, built on the meta device: shapes, no weights read."""
    from .model import check_model_name

    model_path = check_model_name(trial.model.name)
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        mcfg = AutoConfig.from_pretrained(model_path, num_labels=n_labels)
    except OSError as e:
        raise ConfigError(f"model.name={trial.model.name!r}: cannot load ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(mcfg)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one trial of a config holds at its peak, by what holds them."""

    weights: int
    optimizer: int
    activations: int
    data: int
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + self.data + self.runtime

    def describe(self) -> str:
        parts = ", ".join(f"{k} {getattr(self, k) / GiB:.2f}" for k in ("weights", "optimizer", "activations", "data", "runtime"))
        return f"{self.total / GiB:.1f} GiB ({parts} GiB)"


def memory_estimate(trial: TrialConfig) -> MemoryEstimate:
    """What one trial of ``trial`` needs on its ``data.size`` training sentences, before it starts.

    - weights: every parameter in fp32 (the frozen base too: LoRA does not shrink it);
    - optimizer: each trainable parameter (LoRA ``r·(in+out)`` per targeted layer, and the head)
      with its gradient and AdamW's two moments, 4 × fp32;
    - activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
      Transformer Models", eq. 1) count ``s·b·h·(34 + 5·a·s/h)`` bytes per layer for 16-bit
      activations at sequence length ``s`` (``data.max_length``, an upper bound: batches pad to
      their longest text), batch ``b``, width ``h`` and ``a`` heads; twice that for fp32 (a CPU;
      CUDA's bf16 autocast needs about the 16-bit figure, in device memory);
    - data: the training texts as Python strings (twice: the table and the list), their token ids
      (int32, about a token per 4 characters up to ``max_length``) and an array header each.
    """
    from .data import load_splits, subset_indices

    raw = load_splits(trial.data)
    model = _meta_model(trial, len(raw.label_names))
    keep = subset_indices(raw.train_labels, trial.data.size, trial.data.seed)
    chars = [len(raw.train_texts[i]) for i in keep]
    mc = model.config
    s, b, h, a, layers = trial.data.max_length, trial.train.batch_size, mc.hidden_size, mc.num_attention_heads, mc.num_hidden_layers
    act = layers * s * b * h * (34 + 5 * a * s / h) * 2
    tokens = sum(min(trial.data.max_length, c // 4 + 2) for c in chars)
    data = sum(2 * (49 + c) + 112 for c in chars) + 4 * tokens
    return MemoryEstimate(weights=4 * sum(p.numel() for p in model.parameters()),
                          optimizer=16 * _trainable_params(model, trial), activations=int(act), data=int(data))


def _trainable_params(model: Any, trial: TrialConfig) -> int:
    """LoRA's ``r·(in + out)`` per targeted linear layer plus the head's parameters."""
    import torch

    from .model import head_module_names

    heads = tuple(head_module_names(model))
    targets, r = trial.lora.module_list(), trial.lora.r
    lora = sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.startswith(heads) and any(n == t or n.endswith("." + t) for t in targets))
    head = sum(p.numel() for n in heads for p in getattr(model, n).parameters())
    return lora + head
