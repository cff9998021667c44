"""Mean pooling for BERT-family classifiers: the sentence vector a sentence-transformers encoder
was trained to produce.

Why: sentence-transformers models — the embedded all-MiniLM-L6-v2 among them — are trained so
that the *mean* of the last layer's token states represents the sentence (Reimers & Gurevych
2019, Sentence-BERT, arXiv:1908.10084); their [CLS] state and BERT pooler are not trained for
that (the embedded MiniLM's pooler bias is exactly zero). A stock ``…ForSequenceClassification``
head reads the pooler. Measured on SST-2 with the frozen embedded MiniLM (logistic regression on
6,000 train sentences, standardized features, dev accuracy): mean 80.0%, [CLS] 73.9%, pooler
73.5%.

``MeanPooler`` replaces the encoder's pooler, so the rest of the model (LoRA targets, the
classifier head, PEFT's adapter format) is untouched; the pooler has no weights. The encoder
passes its pooler only the hidden states, so a forward pre-hook on the encoder hands the pooler
the attention mask of the current call: padding never enters the mean.

This file is self-contained (torch + transformers only) on purpose: ``study.export --merge``
copies it beside a merged model as remote code, so that
``AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`` loads a
mean-pooling model without lora-study, and a stock load without ``trust_remote_code`` fails
loudly instead of silently reading the [CLS] pooler.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

__all__ = [
    "MeanPooler",
    "use_mean_pooling",
    "pooling_of",
    "supports_mean_pooling",
    "MeanPoolingBertConfig",
    "MeanPoolingBertForSequenceClassification",
]


class MeanPooler(torch.nn.Module):
    """Mean of the last hidden states over the real (unmasked) tokens.

    ``replaced`` names the parameters (and shapes) of the pooler it stands in for: what a stock
    model has at this place, so an export can store tensors there that a stock pooler refuses."""

    def __init__(self, replaced: dict[str, tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None  # set by the encoder's pre-hook for each call
        self.replaced = dict(replaced or {})

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None:
            return hidden_states.mean(1)
        m = mask[:, : hidden_states.shape[1]].unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * m).sum(1) / m.sum(1).clamp(min=1.0)


def _encoder(model: Any) -> Any:
    return getattr(model, getattr(model, "base_model_prefix", ""), None)


def supports_mean_pooling(model: Any) -> bool:
    """A head that reads its encoder's pooler (BERT, MiniLM, ALBERT …); RoBERTa, DistilBERT,
    ELECTRA heads read the first token themselves and have no pooler to replace."""
    enc = _encoder(model)
    return enc is not None and isinstance(getattr(enc, "pooler", None), torch.nn.Module)


def _hand_mask(encoder: Any, args: tuple, kwargs: dict) -> None:
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1:  # encoder(input_ids, attention_mask, …) called positionally
        mask = args[1]
    # the pooler itself, or its copies inside PEFT's ModulesToSaveWrapper: lora-study exports list
    # ``pooler`` in ``modules_to_save`` so that stock loading refuses them (see study/export.py)
    for module in encoder.pooler.modules():
        if isinstance(module, MeanPooler):
            module.mask = mask


def use_mean_pooling(model: Any) -> Any:
    """Swap the encoder's pooler for ``MeanPooler`` (in place, before any PEFT wrapping); returns
    the model. A model whose head does not read a pooler raises ``ValueError``."""
    if isinstance(getattr(_encoder(model), "pooler", None), MeanPooler):
        return model
    if not supports_mean_pooling(model):
        raise ValueError(f"{type(model).__name__} has no pooler to replace; mean pooling needs a BERT-style head")
    enc = _encoder(model)
    enc.pooler = MeanPooler({k: tuple(v.shape) for k, v in enc.pooler.state_dict().items()})
    enc.register_forward_pre_hook(_hand_mask, with_kwargs=True)
    return model


def pooling_of(model: Any) -> str:
    """``"mean"`` when the model (PEFT-wrapped or not) pools with ``MeanPooler``, else ``"cls"``."""
    return "mean" if any(isinstance(m, MeanPooler) for m in model.modules()) else "cls"


class MeanPoolingBertConfig(BertConfig):
    """A BERT config under its own ``model_type``: transformers has no built-in class for it, so
    a stock load must opt in to this file (``trust_remote_code=True``) — never silently [CLS]."""

    model_type = "lora-study-mean-pooling-bert"


class MeanPoolingBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` whose classifier reads the masked mean of the last
    layer (how a merged lora-study model with ``model.pooling=mean`` was trained)."""

    config_class = MeanPoolingBertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        use_mean_pooling(self)
