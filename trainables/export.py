"""A trained adapter as a directory others load: the export format of this package's checkpoints.

Why here: the checkpoint format, the mean pooler and the loaders are this package's; what an export
must hold so that it loads correctly anywhere follows from them. An export is the PEFT adapter,
the tokenizer, ``lora_study.json`` and, with ``merge``, ``merged/`` (``merge_and_unload``). The base
model is named portably (the hub id for the embedded MiniLM, never a path into a virtualenv).

Loud or correct wherever it is loaded: a stock ``…ForSequenceClassification`` reads the [CLS]
pooler, so an adapter trained with mean pooling loaded that way predicted at chance without a
word. Such an export lists the pooler in ``modules_to_save`` with an empty tensor for each stock
pooler parameter: stock PEFT then stops with ``size mismatch for …pooler…``, while a model given
``use_mean_pooling`` first loads them into the weightless ``MeanPooler``. A merged mean-pooling
model is transformers remote code (``trust_remote_code``), with ``pooling.py`` beside it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, ConfigError
from .inference import META_FILE, load_classifier

__all__ = ["ADAPTER_FILES", "REMOTE_MODULE", "POOLER", "portable_base_model", "check_checkpoint", "export_meta",
           "write_adapter", "finish_export"]

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REMOTE_MODULE = "lora_study_pooling"  # trainables/pooling.py as shipped beside a mean-pooling export
POOLER = "pooler"


def portable_base_model(name: str) -> tuple[str, str | None]:
    """(how an export names its base model, a warning or None). The embedded MiniLM (by its
    ``embedded-minilm`` alias or its package path) is its hub id, which our loaders map back to
    the package offline; a hub id stays; a local directory stays an absolute path, which loads
    only where that directory exists — hence the warning."""
    from .model import EMBEDDED_HUB_ID, resolve_model_name

    if name in (DEFAULT_MODEL, EMBEDDED_HUB_ID):
        return EMBEDDED_HUB_ID, None
    path = Path(os.path.expanduser(name))
    if not path.exists():
        return name, None  # a hub id
    try:
        if path.resolve() == Path(resolve_model_name(DEFAULT_MODEL)).resolve():
            return EMBEDDED_HUB_ID, None
    except ConfigError:  # the embedded package is not installed: then it is not that path
        pass
    return str(path.resolve()), (f"base model {name!r} is a local directory: the export names it by its absolute path "
                                 f"{path.resolve()}, which loads only where that directory exists (train from a hub id "
                                 "or embedded-minilm for a portable export)")


def check_checkpoint(src: Path, checkpoint: str) -> dict[str, Any]:
    """The checkpoint's ``lora_study.json``, after checking every file it needs reads back whole
    (a torn checkpoint fails here, in one line, not later inside PEFT)."""
    from safetensors.torch import load_file

    missing = [f for f in (*ADAPTER_FILES, META_FILE) if not (src / f).is_file()]
    if missing:
        raise ConfigError(f"checkpoint {checkpoint}: missing {', '.join(missing)} (corrupt or not a lora-study checkpoint)")
    try:
        json.loads((src / "adapter_config.json").read_text())
        ck = json.loads((src / META_FILE).read_text())
        ck["config"]["model"]["name"], ck["config"]["data"]["max_length"], ck["label_names"]  # noqa: B018
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"checkpoint {checkpoint}: corrupt adapter_config.json or {META_FILE} ({type(e).__name__}: {e})") from None
    try:
        tensors = load_file(str(src / "adapter_model.safetensors"))
    except Exception as e:
        raise ConfigError(f"checkpoint {checkpoint}: corrupt adapter_model.safetensors ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ConfigError(f"checkpoint {checkpoint}: adapter_model.safetensors holds no tensors")
    return ck


def export_meta(ck: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    labels = ck["label_names"]
    return {
        "format": 1,
        "base_model": ck["config"]["model"]["name"],  # made portable by _finish
        "label_names": labels,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
        "max_length": ck["config"]["data"]["max_length"],
        "pooling": ck.get("pooling", "cls"),  # checkpoints from before model.pooling pooled [CLS]
        "config": ck["config"],
        "metrics": ck.get("metrics", {}),
        "study": info.get("study"),
        "trial_id": info.get("trial_id"),
    }


def write_adapter(src: Path, out: Path, meta: dict[str, Any]) -> None:
    """The adapter files of checkpoint ``src`` and the base model's tokenizer into ``out`` (created)."""
    from .model import load_tokenizer

    out.mkdir(parents=True)
    for f in ADAPTER_FILES:
        shutil.copy2(src / f, out / f)
    load_tokenizer(meta["base_model"]).save_pretrained(out)


def finish_export(out: Path, meta: dict[str, Any], merge: bool) -> list[str]:
    """Everything after the adapter files and tokenizer are in place (also for a registry
    export, which may predate it): portable base id, stock refusal for mean pooling, the pooling
    code, ``lora_study.json``, ``merged/``. Returns the keys that make stock PEFT refuse a mean-pooling adapter."""
    base, warning = portable_base_model(meta["base_model"])
    if warning:
        log.warning(warning)
    meta["base_model"] = base
    cfg_path = out / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n")
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    mean = meta.get("pooling") == "mean"
    clf = None
    if mean or merge:
        clf = load_classifier(out)
    refusal_keys = _refuse_stock_pooling(out, clf.model) if mean else []
    if mean:
        _ship_pooling_code(out)
    if merge:
        _merge(out, meta, clf)
    _one_mode(out)
    return refusal_keys


def _one_mode(out: Path) -> None:
    """Give every file of the export the mode of its ``adapter_config.json`` (the process's
    default): safetensors creates its files 0600, so re-saved or merged weights would be the
    only files others cannot read."""
    mode = stat.S_IMODE((out / "adapter_config.json").stat().st_mode)
    for f in out.rglob("*"):
        if f.is_file() and not f.is_symlink():
            f.chmod(mode)


def _refuse_stock_pooling(out: Path, model: Any) -> list[str]:
    """Make stock PEFT refuse a mean-pooling adapter (see the module docstring): ``pooler`` in
    ``modules_to_save`` and a 0-element tensor under each key a stock pooler would load.
    ``model`` is the adapter as our loader loaded it; returns those keys (an adapter that already
    carries them is left as it is)."""
    import torch
    from safetensors.torch import load_file, save_file

    from .pooling import MeanPooler

    cfg_path, weights = out / "adapter_config.json", out / "adapter_model.safetensors"
    # the pooler's name in the adapter: without PEFT's ModulesToSaveWrapper parts, which an
    # adapter that is already marked (one downloaded from the registry) has around it
    poolers = {re.sub(r"\.(original_module|modules_to_save\.[^.]+)$", "", name): m
               for name, m in model.named_modules() if isinstance(m, MeanPooler)}
    if len(poolers) != 1 or not next(iter(poolers)).endswith(f".{POOLER}") or not next(iter(poolers.values())).replaced:
        raise ConfigError(f"{out}: cannot mark the mean-pooling adapter for stock loaders (mean poolers found: "
                          f"{sorted(poolers)}); export it from a BERT-style model")
    name, pooler = next(iter(poolers.items()))
    keys = [f"{name}.{k}" for k in pooler.replaced]  # the stock pooler's order: its error names the first
    cfg = json.loads(cfg_path.read_text())
    if POOLER in (cfg.get("modules_to_save") or []):
        return keys
    tensors = load_file(str(weights))
    tensors.update({k: torch.zeros(0) for k in keys})
    save_file(tensors, str(weights), metadata={"format": "pt"})
    cfg["modules_to_save"] = [*(cfg.get("modules_to_save") or []), POOLER]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return keys


def _merge(out: Path, meta: dict[str, Any], clf: Any) -> None:
    from transformers.utils import logging as hf_logging

    from .pooling import pooling_of

    merged = clf.model.merge_and_unload()
    target = out / "merged"
    mean = pooling_of(merged) == "mean"
    if mean:
        _as_mean_pooling_remote_code(merged)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" for one file is noise in a CLI
    try:
        merged.save_pretrained(target)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if mean:
        _ship_pooling_code(target)
    clf.tokenizer.save_pretrained(target)
    (target / META_FILE).write_text(json.dumps({**meta, "merged": True}, indent=1, default=str))


def _ship_pooling_code(directory: Path) -> None:
    """``trainables/pooling.py`` beside an export: the adapter card imports it, a merged model's
    ``auto_map`` names it."""
    from . import pooling

    shutil.copy2(pooling.__file__, directory / f"{REMOTE_MODULE}.py")


def _as_mean_pooling_remote_code(merged: Any) -> None:
    """A merged mean-pooling model is saved under ``MeanPoolingBertConfig``'s own model type, with
    ``trainables/pooling.py`` beside it as remote code (``auto_map``): stock transformers then
    loads it with ``trust_remote_code=True`` and refuses without — it never silently classifies
    the [CLS] pooler output the adapter was not trained on."""
    from transformers import BertForSequenceClassification

    from . import pooling

    if not isinstance(merged, BertForSequenceClassification):
        raise ConfigError(f"--merge: a merged mean-pooling model is written for BERT models only, not {type(merged).__name__}; "
                          "use the adapter directory (study.predict, the MLflow model) instead")
    fields = {k: v for k, v in merged.config.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    config = pooling.MeanPoolingBertConfig.from_dict(fields)
    config.architectures = [pooling.MeanPoolingBertForSequenceClassification.__name__]
    config.auto_map = {
        "AutoConfig": f"{REMOTE_MODULE}.{pooling.MeanPoolingBertConfig.__name__}",
        "AutoModelForSequenceClassification": f"{REMOTE_MODULE}.{pooling.MeanPoolingBertForSequenceClassification.__name__}",
    }
    merged.config = config
