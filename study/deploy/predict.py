"""``python -m study.predict``: label texts with an exported adapter (or its merged model).

    python -m study.predict --model DIR "a gripping film" "dull and far too long"
    python -m study.predict --model DIR --file reviews.txt          # one text per line
    python -m study.predict --model DIR --file reviews.csv --text-column review --json
    cat reviews.txt | python -m study.predict --model DIR/merged
    python -m study.predict --model runs/x "a text"     # the --out of python -m trainables.loop

Prints ``label<TAB>confidence<TAB>text`` per text (confidence = softmax probability of the
predicted label), or with ``--json`` a list of ``{"text", "label", "confidence"}``. Texts are
tokenized and batched exactly as the study evaluated them (``trainables.load_classifier``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from trainables import ConfigError

__all__ = ["main", "read_texts"]



def _lines(stream: TextIO | str) -> list[str]:
    text = stream if isinstance(stream, str) else stream.read()
    return [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]


def _text_column(df: Any, wanted: str | None, trained: str | None, where: str) -> str:
    cols = [str(c) for c in df.columns]
    if wanted is not None:
        if wanted not in cols:
            raise ConfigError(f"{where}: no column {wanted!r} (columns: {', '.join(cols)})")
        return wanted
    for c in (trained, "text", "sentence"):
        if c and c in cols:
            return c
    if len(cols) == 1:
        return cols[0]
    raise ConfigError(f"{where}: which column holds the text? use --text-column (columns: {', '.join(cols)})")


def read_texts(texts: list[str], file: str | None, text_column: str | None, trained_column: str | None = None,
               stdin: TextIO | None = None) -> list[str]:
    """Texts from the arguments, a file (lines or a table) or stdin; empty input is an error."""
    if texts and file:
        raise ConfigError("give texts as arguments or --file, not both")
    if texts:
        empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ConfigError(f"text argument {empty[0]} is empty")
        return list(texts)
    if file is not None and file != "-":
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--file {file}: no such file")
        from trainables import LABELLED_FORMATS, read_table

        if path.suffix.lower() in LABELLED_FORMATS:
            df = read_table(path)
            col = _text_column(df, text_column, trained_column, str(path))
            out = ["" if v is None else str(v) for v in df[col].tolist()]
            empty = [i + 1 for i, t in enumerate(out) if not t.strip()]
            if empty:
                raise ConfigError(f"{path}: column {col!r} is empty in row {empty[0]}")
            source = f"{path} (column {col!r})"
        else:
            try:
                out, source = _lines(path.read_text(encoding="utf-8")), str(path)
            except UnicodeDecodeError as e:
                raise ConfigError(f"--file {path}: not UTF-8 text ({e.reason})") from None
    else:
        stream = stdin if stdin is not None else sys.stdin
        if file is None and stream.isatty():
            raise ConfigError("no input: give texts as arguments, --file F, or pipe one text per line on stdin")
        out, source = _lines(stream), "stdin"
    if not out:
        raise ConfigError(f"no texts to predict: {source} is empty")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.predict", description="Label texts with an exported LoRA adapter or merged model.")
    ap.add_argument("--model", required=True, help="exported adapter dir (python -m study.export --out DIR), its merged/ dir, "
                                                   "or the --out dir of python -m trainables.loop")
    ap.add_argument("texts", nargs="*", help="texts to label (default: --file, else stdin)")
    ap.add_argument("--file", help="one text per line, or a csv/tsv/parquet/jsonl table ('-' = stdin)")
    ap.add_argument("--text-column", help="table column with the text (default: the model's training text column, 'text' or 'sentence')")
    ap.add_argument("--json", action="store_true", help="print a JSON list of {text, label, confidence}")
    ap.add_argument("--batch-size", type=int, help="texts per forward pass (default: the study's evaluation batch size)")
    args = ap.parse_args(argv)
    try:
        from trainables import load_classifier

        if args.batch_size is not None and args.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        trained = _trained_text_column(args.model)
        texts = read_texts(args.texts, args.file, args.text_column, trained)
        clf = load_classifier(args.model)
        preds = clf.predict(texts) if args.batch_size is None else _predict(clf, texts, args.batch_size)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"text": t, "label": lab, "confidence": round(c, 6)} for t, (lab, c) in zip(texts, preds)], ensure_ascii=False))
    else:
        for t, (lab, c) in zip(texts, preds):
            print(f"{lab}\t{c:.4f}\t{' '.join(t.split())}")
    return 0


def _predict(clf: Any, texts: list[str], batch_size: int) -> list[tuple[str, float]]:
    clf.batch_size = batch_size
    return clf.predict(texts)


def _trained_text_column(directory: str) -> str | None:
    from trainables import model_dir, read_meta

    try:
        return read_meta(model_dir(directory))["config"]["data"]["text_column"]
    except (ConfigError, KeyError, TypeError):  # no such dir, no or a corrupt lora_study.json: load_classifier says so
        return None


if __name__ == "__main__":
    sys.exit(main())
