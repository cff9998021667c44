"""Load an exported classifier (adapter dir or merged dir) and predict texts.

Shared by ``study.predict``, ``study.evaluate`` and the MLflow pyfunc wrapper, so all three
answer exactly like the study's own evaluation: same tokenizer, same truncation, same logits.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import ConfigError
from trainables.pooling import MeanPoolingBertConfig, MeanPoolingBertForSequenceClassification, use_mean_pooling

__all__ = ["Classifier", "load_classifier", "META_FILE"]

META_FILE = "lora_study.json"


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    label_names: list[str]
    max_length: int
    kind: str  # "adapter" or "merged"
    batch_size: int = 128  # the trainable's train.eval_batch_size: same batches → bit-identical logits

    def logits(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Logits per text, batched in length order with the trainable's evaluation batch size
        (padding differs with the batching, so this is what reproduces its logits exactly)."""
        import torch

        from trainables.data import TokenizedSplit
        from trainables.lora import predict_logits

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        split = TokenizedSplit([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]], np.zeros(len(texts), dtype=np.int64))
        if not len(split):
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return predict_logits(self.model, split, pad, batch_size or self.batch_size, torch.device("cpu"))

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, confidence) per text; confidence = softmax probability of the predicted label."""
        logits = self.logits(texts)
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        idx = probs.argmax(-1)
        return [(self.label_names[i], float(probs[n, i])) for n, i in enumerate(idx)]


def load_classifier(directory: str | Path) -> Classifier:
    """An exported adapter dir (PEFT + tokenizer + ``lora_study.json``) or a merged model dir.
    Every problem (missing dir, no tokenizer, torn weights) is a one-line ``ConfigError``."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"--model {d}: no such directory")
    meta_path = d / META_FILE
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{meta_path}: corrupt ({e})") from None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    is_adapter, is_model = (d / "adapter_config.json").is_file(), (d / "config.json").is_file()
    if not (is_adapter or is_model):
        raise ConfigError(f"{d}: neither an adapter (adapter_config.json) nor a model (config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(d)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{d}: no tokenizer ({str(e).splitlines()[0]})") from None
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the base's "classifier newly initialized" report is expected: the adapter brings it
    hf_logging.disable_progress_bar()
    try:
        if is_adapter:
            from peft import PeftModel

            from trainables.model import resolve_model_name

            base_name = meta.get("base_model")
            labels = meta.get("label_names")
            if not base_name or not labels:
                raise ConfigError(f"{d}: adapter without a complete {META_FILE}; cannot tell the base model and labels")
            base = AutoModelForSequenceClassification.from_pretrained(
                resolve_model_name(base_name), num_labels=len(labels),
                id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
            if meta.get("pooling", "cls") == "mean":  # older exports have no key: they pooled [CLS]
                use_mean_pooling(base)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations PEFT still calls
                model, kind = PeftModel.from_pretrained(base, str(d)), "adapter"
        else:
            mean = json.loads((d / "config.json").read_text()).get("model_type") == MeanPoolingBertConfig.model_type
            factory = MeanPoolingBertForSequenceClassification if mean else AutoModelForSequenceClassification
            model, kind = factory.from_pretrained(d), "merged"
            labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    except ConfigError:
        raise
    except Exception as e:  # torn safetensors, missing base model, mismatched shapes …
        msg = str(e).strip().splitlines()
        raise ConfigError(f"{d}: cannot load the {'adapter' if is_adapter else 'model'} ({type(e).__name__}: {msg[0] if msg else ''})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    train_cfg = (meta.get("config") or {}).get("train") or {}
    return Classifier(model, tokenizer, list(labels), int(meta.get("max_length", 128)), kind,
                      int(train_cfg.get("eval_batch_size") or 128))
