"""``data.drop_empty``: a review file with a few empty texts among thousands is refused by default
(the refusal names the opt-in); with ``data.drop_empty=true`` those rows are dropped and counted —
in the split (``RawSplits.dropped_empty``), the preflight's counts, the trial's log line and its
results, and the study's parent run in MLflow (``data.dropped_empty``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from trainables.config import DataSection
from trainables.data import DataError, load_splits


def _csv(path: Path, texts: list[str | None], labels: list[str]) -> Path:
    import pandas as pd

    pd.DataFrame({"sentence": texts, "label": labels}).to_csv(path, index=False)
    return path


def _reviews(n: int, empty_at: list[int]) -> tuple[list[str | None], list[str]]:
    texts: list[str | None] = [f"review number {i}" for i in range(n)]
    for i, at in enumerate(empty_at):
        texts[at] = None if i % 2 else "   "
    return texts, ["pos" if i % 2 else "neg" for i in range(n)]


# (id, train rows, empty rows in train, dev rows, empty rows in dev, drop_empty, rows dropped or the refusal)
CASES = [
    ("default-refuses", 200, [3, 50, 120], 40, [], False, "has 3 empty or missing texts of 200 (rows 4, 51, 121); remove those rows or fill them in, or set data.drop_empty=true"),
    ("drops-train", 200, [3, 50, 120], 40, [], True, 3),
    ("drops-train-and-dev", 200, [3], 40, [0, 7], True, 3),
    ("nothing-to-drop", 200, [], 40, [], True, 0),
    ("all-empty-refused", 4, [0, 1, 2, 3], 40, [], True, "has no text in any of its 4 rows"),
]


@pytest.mark.parametrize("n,empty,n_dev,empty_dev,drop,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_drop_empty(n, empty, n_dev, empty_dev, drop, expected, tmp_path):
    _csv(tmp_path / "train.csv", *_reviews(n, empty))
    _csv(tmp_path / "dev.csv", *_reviews(n_dev, empty_dev))
    cfg = DataSection(path=str(tmp_path), label_column="label", drop_empty=drop)
    if isinstance(expected, str):
        with pytest.raises(DataError, match="data.drop_empty" if not drop else "no text"):
            load_splits(cfg)
        with pytest.raises(DataError) as e:
            load_splits(cfg)
        assert expected in str(e.value) and "\n" not in str(e.value)
        return
    raw = load_splits(cfg)
    assert raw.dropped_empty == expected
    assert len(raw.train_texts) == len(raw.train_labels) == n - len(empty)
    assert len(raw.dev_texts) == n_dev - len(empty_dev)
    kept = [f"review number {i}" for i in range(n) if i not in empty]
    assert raw.train_texts == kept
    assert [raw.label_names[y] for y in raw.train_labels] == ["pos" if i % 2 else "neg" for i in range(n) if i not in empty]


def test_default_is_off():
    assert DataSection().drop_empty is False


def test_preflight_counts_and_trial_reports(tiny_bert, tmp_path):
    """The preflight's counts, and the trial's log line and results (what the study's tracker
    puts in each trial's MLflow run)."""
    from trainables import preflight
    from trainables.config import TrialConfig
    from trainables.loop import run_trial

    data = _csv(tmp_path / "reviews.csv", *_reviews(300, [5, 6, 200]))
    cfg = TrialConfig.from_dict({"model.name": str(tiny_bert), "data.path": str(data), "data.drop_empty": True, "data.size": 64,
                                 "data.max_length": 16, "train.batch_size": 16, "train.threads": 1, "lora.r": 2})
    assert tuple(preflight(cfg)) == (267, 3)  # 297 kept, dev (data.dev_fraction 0.1, rounded up) carved off
    lines: list[str] = []
    history = run_trial(cfg, log=lines.append)
    assert history[-1]["data_dropped_empty"] == 3
    assert "(3 rows without a text dropped, data.drop_empty)" in lines[0]


@pytest.mark.parametrize("record,param", [({"data_dropped_empty": 3}, "3"), ({"data_dropped_empty": 0}, "0"), ({}, None)])
def test_study_parent_run_param(record, param):
    from study import run
    from study.config import StudyConfig

    params = run._parent_params(SimpleNamespace(cfg=StudyConfig(), n_train=1000, record=record))
    assert params.get("data.dropped_empty") == param
