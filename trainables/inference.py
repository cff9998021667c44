"""Load an exported classifier (adapter dir, merged dir or a trainable's checkpoint) and predict texts.

Shared by ``study.predict``, ``study.evaluate`` and the MLflow pyfunc wrapper, so all three
answer exactly like the study's own evaluation: same tokenizer, same truncation, same logits.

Three kinds of directory load:

- an export (``study.export --out DIR``): PEFT adapter + tokenizer + ``lora_study.json``;
- its ``merged/`` model (plain transformers; a mean-pooling one is transformers remote code);
- a trainable's checkpoint (``trainables.loop --out OUT`` writes ``OUT/last``): adapter +
  ``lora_study.json`` without a tokenizer, which then comes from the base model.

Heavy libraries (torch, transformers, PEFT) are imported when a model is loaded, not on import:
the CLIs answer ``--help`` without them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

__all__ = ["Classifier", "load_classifier", "model_dir", "read_meta", "score_test", "META_FILE"]

META_FILE = "lora_study.json"


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    label_names: list[str]
    max_length: int
    kind: str  # "adapter", "merged" or "checkpoint"
    batch_size: int = 128  # the trainable's train.eval_batch_size: same batches → bit-identical logits

    def logits(self, texts: list[str], batch_size: int | None = None) -> Any:
        """Logits per text (a numpy array), batched in length order with the trainable's
        evaluation batch size (padding differs with the batching, so this is what reproduces its
        logits exactly)."""
        import numpy as np
        import torch

        from trainables.data import TokenizedSplit
        from trainables.loop import predict_logits

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        split = TokenizedSplit([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]], np.zeros(len(texts), dtype=np.int64))
        if not len(split):
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return predict_logits(self.model, split, pad, batch_size or self.batch_size, torch.device("cpu"))

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, confidence) per text; confidence = softmax probability of the predicted label."""
        import numpy as np

        logits = self.logits(texts)
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        idx = probs.argmax(-1)
        return [(self.label_names[i], float(probs[n, i])) for n, i in enumerate(idx)]


def model_dir(directory: str | Path) -> Path:
    """The directory to load: ``directory`` itself, or ``directory/last`` for the ``--out`` of
    ``python -m trainables.loop`` (which keeps its latest checkpoint there)."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise ConfigError(f"--model {d}: no such directory")
    if not any((d / f).is_file() for f in ("adapter_config.json", "config.json")) and (d / "last" / "adapter_config.json").is_file():
        return d / "last"
    return d


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``lora_study.json`` of an export or checkpoint, normalized: a checkpoint's file has only
    ``config``/``label_names``/``pooling``, an export's also ``base_model`` and ``max_length``.
    ``{}`` when there is none (a plain merged model)."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: corrupt ({e})") from None
    cfg = meta.get("config") or {}
    meta.setdefault("base_model", (cfg.get("model") or {}).get("name"))
    meta.setdefault("max_length", (cfg.get("data") or {}).get("max_length", 128))
    return meta


def _tokenizer(d: Path, base_name: str | None) -> Any:
    """The directory's own tokenizer (exports, merged models), else the base model's (a
    trainable's checkpoint saves none: it always tokenizes with its base model's)."""
    from transformers import AutoTokenizer

    try:
        if (d / "tokenizer_config.json").is_file() or not base_name:
            # a merged mean-pooling model's config.json names remote code (auto_map): the tokenizer
            # does not need it, and without an explicit no transformers would prompt on stdin
            return AutoTokenizer.from_pretrained(d, trust_remote_code=False)
        from trainables.model import load_tokenizer

        return load_tokenizer(base_name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{d}: no tokenizer ({str(e).splitlines()[0]})") from None


def load_classifier(directory: str | Path) -> Classifier:
    """An exported adapter dir (PEFT + tokenizer + ``lora_study.json``), a merged model dir or a
    trainable's checkpoint (``OUT`` or ``OUT/last``). Every problem (missing dir, no tokenizer,
    torn weights) is a one-line ``ConfigError``.

    A mean-pooling adapter gets ``use_mean_pooling`` before PEFT loads it; lora-study exports
    list the pooler in ``modules_to_save`` with empty tensors (so that stock loading refuses
    them), which PEFT wraps around the ``MeanPooler`` and the pooler ignores."""
    d = model_dir(directory)
    meta = read_meta(d)
    is_adapter, is_model = (d / "adapter_config.json").is_file(), (d / "config.json").is_file()
    if not (is_adapter or is_model):
        raise ConfigError(f"{d}: neither an adapter (adapter_config.json) nor a model (config.json)")
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the base's "classifier newly initialized" report is expected: the adapter brings it
    hf_logging.disable_progress_bar()
    try:
        tokenizer = _tokenizer(d, meta.get("base_model") if is_adapter else None)
        if is_adapter:
            model, labels = _load_adapter(d, meta), meta.get("label_names")
            kind = "adapter" if (d / "tokenizer_config.json").is_file() else "checkpoint"
        else:
            model, kind = _load_merged(d), "merged"
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
    return Classifier(model, tokenizer, list(labels), int(meta.get("max_length") or 128), kind,
                      int(train_cfg.get("eval_batch_size") or 128))


def _load_adapter(d: Path, meta: dict[str, Any]) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from trainables.model import resolve_model_name
    from trainables.pooling import use_mean_pooling

    base_name, labels = meta.get("base_model"), meta.get("label_names")
    if not base_name or not labels:
        raise ConfigError(f"{d}: adapter without a complete {META_FILE}; cannot tell the base model and labels")
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name(base_name), num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if meta.get("pooling", "cls") == "mean":  # older exports have no key: they pooled [CLS]
        use_mean_pooling(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations PEFT still calls
        return PeftModel.from_pretrained(base, str(d))


def _load_merged(d: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    from trainables.pooling import MeanPoolingBertConfig, MeanPoolingBertForSequenceClassification

    mean = json.loads((d / "config.json").read_text()).get("model_type") == MeanPoolingBertConfig.model_type
    # our own class for a mean-pooling merged model: no remote code is executed to load it here
    return (MeanPoolingBertForSequenceClassification if mean else AutoModelForSequenceClassification).from_pretrained(d)


def score_test(directory: str | Path) -> dict[str, Any]:
    """The model in ``directory`` (a checkpoint or an export) scored on its own ``data.test_path``:
    ``accuracy``, ``f1`` (macro), ``eval_loss``, ``n`` and ``path``. The texts go through the
    loader the trial's evaluation uses (same tokenizer, truncation and batches) and the labels are
    numbered as the train split numbers them, so the numbers are the trial's own metrics on
    another file. A model without a test path is a one-line ``ConfigError``."""
    from trainables.config import DataSection
    from trainables.data import load_test
    from trainables.loop import scores

    meta = read_meta(model_dir(directory))
    data = DataSection.model_validate((meta.get("config") or {}).get("data") or {})
    texts, labels, path = load_test(data)
    result = scores(load_classifier(directory).logits(texts), labels)
    return {**result, "n": len(labels), "path": path}
