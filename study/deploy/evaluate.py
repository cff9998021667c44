"""``python -m study.evaluate``: score an exported adapter (or merged model) on labelled data.

    python -m study.evaluate --model DIR --data ../shared/data/sst2            # its dev split
    python -m study.evaluate --model DIR --data test.tsv                        # all of a labelled file
    python -m study.evaluate --model DIR --data reviews.csv --text-column review --label-column sentiment
    python -m study.evaluate --model DIR --data ../shared/data/sst2 --json --log-to-study NAME

Prints accuracy, macro-F1, eval loss, scikit-learn's per-class precision/recall/F1 and the
confusion matrix (``--json``: the same as one JSON object, with ``n`` and ``split``). DATA is read
with the trainable's loaders (``trainables.data``): a directory is scored on its ``dev.*`` (or
``validation.*``) file; a single labelled file is scored whole. ``--split dev`` / ``--split
train`` on a single file score the part the study carved off it (the model's own
``data.seed``/``data.dev_fraction``: the very examples the study evaluated on); ``--split NAME``
picks ``NAME.tsv`` etc. in a directory. MODEL is an export, its ``merged/`` or the ``--out`` of
``python -m trainables.loop`` (its ``last/`` checkpoint; the tokenizer is the base model's).

Labels: names the model knows (``negative``) are matched by name; integers the model does not
name (``0``/``1`` when the model says ``[negative, positive]``) are label ids.
``--log-to-study NAME`` logs ``evaluate.*`` metrics to the study's MLflow parent run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from trainables import LABELLED_FORMATS, ConfigError, find_split

__all__ = ["main", "load_eval_data", "label_ids", "metrics"]

_DEV_NAMES = ("dev", "validation", "valid", "val")


def _key(v: Any) -> str:
    """A label as text, ``1.0`` read as ``1`` (as ``trainables.data`` keys labels; numpy's
    floating types are ``float`` subclasses or convert with ``float``)."""
    if not isinstance(v, (bool, int, str)) and hasattr(v, "is_integer") and float(v).is_integer():
        v = int(v)
    return str(v)


def _read_columns(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    from trainables import DataError, read_table

    df = read_table(path)
    for col in (text_column, label_column):
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                            f"use --text-column / --label-column")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    return [str(t) for t in df[text_column].tolist()], [_key(v) for v in df[label_column].tolist()]


def default_split(data: str) -> str:
    """``all`` for a single labelled file (evaluating a file means all of it), ``dev`` for a
    directory (its dev file)."""
    return "dev" if Path(data).expanduser().is_dir() else "all"


def load_eval_data(data: str, split: str | None, text_column: str, label_column: str,
                   trained: dict[str, Any] | None = None) -> tuple[list[str], list[str], str]:
    """(texts, labels as text, source) of one split of DATA (``None``: ``default_split``).

    ``dev``/``train`` go through ``trainables.data.load_splits`` with the model's data seed and
    dev fraction, so a single file yields the very dev split the study evaluated on."""
    from trainables import load_splits
    from trainables.config import DataSection

    trained = trained or {}
    path = Path(data).expanduser()
    if not path.exists():
        raise ConfigError(f"--data {data}: no such file or directory")
    split = split or default_split(data)
    if path.is_dir():
        if split in ("dev", "train") and find_split(path, ("train",)) is not None:
            pass  # load_splits below
        else:
            f = find_split(path, _DEV_NAMES if split == "dev" else (split,))
            if f is None:
                raise ConfigError(f"--data {data}: no {split} file ({'/'.join(_DEV_NAMES) if split == 'dev' else split}"
                                  f".{{{','.join(e[1:] for e in LABELLED_FORMATS)}}}) in this directory")
            texts, labels = _read_columns(f, text_column, label_column)
            return texts, labels, str(f)
    elif split == "all":
        texts, labels = _read_columns(path, text_column, label_column)
        return texts, labels, str(path)
    elif split not in ("dev", "train"):
        raise ConfigError(f"--split {split}: a single file has the splits dev, train (as the study carved them) and all")
    cfg = DataSection(path=str(path), text_column=text_column, label_column=label_column,
                     seed=int(trained.get("seed", 0)), dev_fraction=float(trained.get("dev_fraction", 0.1)))
    raw = load_splits(cfg)  # names = the raw label values (label_names is not set), ids index them
    texts, ids = (raw.dev_texts, raw.dev_labels) if split == "dev" else (raw.train_texts, raw.train_labels)
    src = raw.source if path.is_dir() else f"{raw.source} ({split} split carved with seed {cfg.seed}, fraction {cfg.dev_fraction})"
    return list(texts), [raw.label_names[i] for i in ids], src


def label_ids(labels: list[str], names: list[str], source: str) -> Any:
    """Map the data's labels to the model's ids (a numpy array): by name where the model names
    them all, else integers 0..K-1 as ids."""
    import numpy as np

    index = {n: i for i, n in enumerate(names)}
    if all(lab in index for lab in labels):
        return np.asarray([index[lab] for lab in labels], dtype=np.int64)
    if all(re.fullmatch(r"-?\d+", lab) and 0 <= int(lab) < len(names) for lab in labels):
        return np.asarray([int(lab) for lab in labels], dtype=np.int64)
    unknown = sorted({lab for lab in labels if lab not in index}, key=str)
    raise ConfigError(f"{source}: labels {unknown[:5]} are neither the model's label names {names} "
                      f"nor label ids 0..{len(names) - 1}")


def metrics(labels: Any, logits: Any, names: list[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 as the trainable computes them, plus eval loss, the per-class report
    and the confusion matrix (rows = true label, columns = predicted); numpy arrays in."""
    import numpy as np
    import torch
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    preds = logits.argmax(-1)
    ids = list(range(len(names)))
    report = classification_report(labels, preds, labels=ids, target_names=names, output_dict=True, zero_division=0)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(labels))
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, preds)),
        "f1": float(f1_score(labels, preds, average="macro")),
        "eval_loss": float(loss),
        "per_class": {n: {"precision": report[n]["precision"], "recall": report[n]["recall"],
                          "f1": report[n]["f1-score"], "support": int(report[n]["support"])} for n in names},
        "labels": list(names),
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
        "report": classification_report(labels, preds, labels=ids, target_names=names, digits=4, zero_division=0),
    }


def _metric_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", s)


def log_to_study(study: str, storage: str | None, tracking_uri: str | None, result: dict[str, Any]) -> dict[str, str]:
    """``evaluate.*`` metrics (+ data/model tags) on the study's MLflow parent run."""
    from ..storage.studies import read_study
    from ..tracking.trust import trusted_tracking_uri

    _, record = read_study(study, storage)
    parent, uri = record.get("parent_run_id"), trusted_tracking_uri(study, record.get("tracking_uri"), tracking_uri)
    if not parent or not uri:
        raise ConfigError(f"study {study!r}: study.json has no MLflow parent run (was it started?)")
    try:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        values = {"evaluate.accuracy": result["accuracy"], "evaluate.f1": result["f1"],
                  "evaluate.eval_loss": result["eval_loss"], "evaluate.n": result["n"]}
        for name, m in result["per_class"].items():
            for k in ("precision", "recall", "f1"):
                values[_metric_name(f"evaluate.{k}.{name}")] = m[k]
        for k, v in values.items():
            client.log_metric(parent, k, float(v))
        client.set_tag(parent, "evaluate.data", result["data"])
        client.set_tag(parent, "evaluate.model", result["model"])
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ConfigError(f"cannot log to study {study!r} (run {parent} at {uri}): {type(e).__name__}: {msg[0] if msg else ''}") from None
    return {"study": study, "run_id": parent, "tracking_uri": uri}


def _print(result: dict[str, Any]) -> None:
    print(f"model {result['model']} ({result['kind']}), data {result['data']}, split {result['split']}: {result['n']} examples")
    print(f"accuracy {result['accuracy']:.4f}   macro-F1 {result['f1']:.4f}   eval loss {result['eval_loss']:.4f}\n")
    print(result["report"])
    names = result["labels"]
    w = max(8, *(len(n) for n in names)) + 2
    print("confusion matrix (rows: true label, columns: predicted)")
    print(" " * w + "".join(f"{n:>{w}}" for n in names))
    for n, row in zip(names, result["confusion_matrix"]):
        print(f"{n:<{w}}" + "".join(f"{v:>{w}}" for v in row))
    if result.get("logged_to"):
        lt = result["logged_to"]
        print(f"\nlogged evaluate.* to study {lt['study']} (MLflow run {lt['run_id']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.evaluate", description="Evaluate an exported LoRA adapter or merged model on labelled data.")
    ap.add_argument("--model", required=True, help="exported adapter dir, its merged/ dir, or the --out dir of python -m trainables.loop")
    ap.add_argument("--data", required=True, help="directory with train/dev files, or one labelled tsv/csv/parquet/jsonl file")
    ap.add_argument("--split", help="default: all of a single file, the dev file of a directory; dev/train: the split the "
                                    "study carved off a single file; NAME: NAME.tsv etc. in a directory")
    ap.add_argument("--text-column", help="text column (default: the model's data.text_column, else 'sentence')")
    ap.add_argument("--label-column", help="label column (default: the model's data.label_column, else 'label')")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--log-to-study", metavar="NAME", help="also log evaluate.* metrics to this study's MLflow parent run")
    ap.add_argument("--storage", help="storage of --log-to-study's study, if not ./studies")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one in the study's study.json)")
    args = ap.parse_args(argv)
    try:
        from trainables import load_classifier, model_dir, read_meta

        if args.log_to_study:  # fail on a wrong study name before minutes of inference
            from ..storage.studies import read_study

            read_study(args.log_to_study, args.storage)
        trained: dict[str, Any] = (read_meta(model_dir(args.model)).get("config") or {}).get("data") or {}
        split = args.split or default_split(args.data)
        clf = load_classifier(args.model)
        texts, raw_labels, source = load_eval_data(args.data, split, args.text_column or trained.get("text_column", "sentence"),
                                                   args.label_column or trained.get("label_column", "label"), trained)
        y = label_ids(raw_labels, clf.label_names, source)
        result = metrics(y, clf.logits(texts), clf.label_names)
        result.update(model=str(Path(args.model).resolve()), kind=clf.kind, data=source, split=split)
        if args.log_to_study:
            result["logged_to"] = log_to_study(args.log_to_study, args.storage, args.tracking_uri, result)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=1))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
