"""Check, before any cluster work, that every trial a study may run can start.

Why: a mistyped column, a target module the model lacks or a data size larger than the train split
would otherwise surface minutes later, inside a Ray worker, once per trial. Here the data is loaded
once (columns, labels, sizes) and the model is built on the meta device (no weights read), so the
checks take seconds, and each failure is one ``ConfigError`` line naming the key.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from .config import ConfigError, TrialConfig

__all__ = ["preflight", "DataCounts", "MIN_PER_LABEL"]

#: Fewest examples per label a training subset or an evaluation split may hold. Why 10: a
#: stratified subset below that gives each label a handful of examples, fewer than one batch
#: sees, so a trial learns nothing worth ranking; an evaluation split below it moves accuracy by
#: 5 points or more per example (binary) with a standard error of 11 points or more (n = 20,
#: p = 0.5), larger than any difference a study is run to find.
MIN_PER_LABEL = 10


class DataCounts(NamedTuple):
    n_train: int
    """Examples in the train split."""
    dropped_empty: int
    """Rows without a text that ``data.drop_empty`` dropped (train and dev files together)."""


def preflight(trial: TrialConfig, variants: Mapping[str, Sequence[Any]] | None = None) -> DataCounts:
    """Check ``trial`` and, for the keys a study varies (``variants``: dotted key → the values it
    can take, e.g. a search space's choices or bounds), each value of ``data.size``,
    ``lora.target_modules`` and ``model.pooling``. The data and the model path come first: they fail
    without importing torch. Returns the train split's size and the rows ``data.drop_empty`` dropped."""
    from .data import load_splits
    from .model import apply_pooling, check_model_name, check_modules_to_save, check_target_modules

    variants = variants or {}
    raw = load_splits(trial.data)
    n_train = len(raw.train_texts)
    where = "search.data.size" if "data.size" in variants else "data.size"
    sizes = [type(trial.data).model_validate({**trial.data.model_dump(), "size": size}).count(n_train)
             for size in variants.get("data.size", [trial.data.size])]
    for n in sizes:
        if n > n_train:
            raise ConfigError(f"{where}: {n} is larger than the train split ({n_train} examples in {raw.source})")
    _check_enough(raw, sizes, where)
    model_path = check_model_name(trial.model.name)
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        mcfg = AutoConfig.from_pretrained(model_path, num_labels=len(raw.label_names))
    except OSError as e:
        raise ConfigError(f"model.name={trial.model.name!r}: cannot load ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(mcfg)
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
