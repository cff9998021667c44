"""Broken data is refused with one line naming file, column and rows; an overlong text is cut
before it reaches the tokenizer. The same rows through ``python -m study.run``
are in ``tests/study/test_run.py::test_hostile_and_broken_input_is_one_line_before_ray``."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest

from trainables.config import DataSection
from trainables.data import DataError, load_splits, prepare_data
from trainables.model import load_tokenizer

GOOD_DEV = pd.DataFrame({"sentence": ["good film", "bad film"], "label": [1, 0]})


def _write(d, fmt: str, train: pd.DataFrame) -> str:
    for split, df in (("train", train), ("dev", GOOD_DEV)):
        if fmt == "parquet":  # through pyarrow: pandas refuses to write repeated column names
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_arrays([pa.array(df.iloc[:, i], from_pandas=True) for i in range(df.shape[1])],
                                                names=list(df.columns)), d / f"{split}.parquet")
        elif fmt == "jsonl":
            df.to_json(d / f"{split}.jsonl", orient="records", lines=True)
        else:
            df.to_csv(d / f"{split}.csv", index=False)
    return str(d)


BAD = [  # (id, format, train frame, what the error says)
    ("null texts parquet", "parquet", pd.DataFrame({"sentence": ["a", None, "c", None], "label": [0, 1, 0, 1]}),
     "column 'sentence' has 2 empty or missing texts of 4 (rows 2, 4)"),
    ("NaN texts jsonl", "jsonl", pd.DataFrame({"sentence": ["a", np.nan, "c"], "label": [0, 1, 0]}),
     "column 'sentence' has 1 empty or missing texts of 3 (row 2)"),
    ("all-empty texts csv", "csv", pd.DataFrame({"sentence": ["", " ", "\t"], "label": [0, 1, 0]}),
     "column 'sentence' has 3 empty or missing texts of 3"),
    ("NaN labels parquet", "parquet", pd.DataFrame({"sentence": ["a", "b", "c", "d"], "label": [0.0, np.nan, 1.0, 0.0]}),
     "column 'label' has 1 missing labels of 4 (row 2)"),
    ("null labels jsonl", "jsonl", pd.DataFrame({"sentence": ["a", "b", "c"], "label": ["pos", None, "neg"]}),
     "column 'label' has 1 missing labels of 3 (row 2)"),
    ("duplicate columns parquet", "parquet", pd.DataFrame([["a", 0, 1], ["b", 1, 0]], columns=["sentence", "label", "label"]),
     "duplicate column names ['label']"),
    ("duplicate columns csv", "csv", pd.DataFrame([["a", 0, "x"], ["b", 1, "y"]], columns=["sentence", "label", "sentence"]),
     "duplicate column names ['sentence']"),
]


@pytest.mark.parametrize("fmt,train,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_broken_data_is_one_line(tmp_path, fmt, train, needle):
    with pytest.raises(DataError) as e:
        load_splits(DataSection(path=_write(tmp_path, fmt, train)))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg
    assert f"train.{fmt}" in msg  # names the file


def test_a_label_named_none_is_a_label(tmp_path):
    """Only pandas' NA spellings mean "no label"; ``None`` can be a class (an emotion dataset)."""
    train = pd.DataFrame({"sentence": ["a", "b", "c", "d"], "label": ["joy", "None", "joy", "None"]})
    dev = pd.DataFrame({"sentence": ["e"], "label": ["None"]})
    train.to_csv(tmp_path / "train.csv", index=False)
    dev.to_csv(tmp_path / "dev.csv", index=False)
    assert load_splits(DataSection(path=str(tmp_path))).label_names == ["None", "joy"]


def test_an_overlong_text_is_cut_before_tokenizing(tmp_path, caplog):
    """A 20 MB single-line text (a reported 50 MB one took 90 s and 7 GB to tokenize in every
    trial process) is cut to 100 x data.max_length characters, with a warning saying how many."""
    huge = "long " * 4_000_000
    train = pd.DataFrame({"sentence": ["short one", huge, "short two", "short three"], "label": [0, 1, 0, 1]})
    path = _write(tmp_path, "csv", train)
    cfg = DataSection(path=path, max_length=64)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        raw = load_splits(cfg)
        data = prepare_data(cfg, load_tokenizer("embedded-minilm"))
    elapsed = time.monotonic() - t0
    assert [len(t) for t in raw.train_texts] == [9, 6400, 9, 11]
    assert raw.train_texts[1] == huge[:6400]
    assert max(len(ids) for ids in data.train.ids) == 64
    assert any("1 texts longer than 6400 characters cut" in r.getMessage() for r in caplog.records)
    assert elapsed < 30, f"{elapsed:.1f}s"
