import numpy as np
import pytest

from trainables.config import DataSection
from trainables.data import (
    DataError,
    load_splits,
    make_batches,
    padding_efficiency,
    prepare_data,
    subset_indices,
    tokenize_cached,
)
from trainables.model import load_tokenizer


def _write(path, rows, header=("sentence", "label"), sep="\t"):
    path.write_text("\n".join(sep.join(map(str, r)) for r in [header, *rows]) + "\n")


def test_sst2_directory(sst2):
    raw = load_splits(DataSection(path=str(sst2)))
    assert len(raw.train_texts) == 67349 and len(raw.dev_texts) == 872
    assert raw.label_names == ["0", "1"]
    assert int(raw.dev_labels.sum()) == 444  # positives in dev, as the data README says


def test_single_csv_gets_stratified_dev(tmp_path):
    rows = [(f"text number {i}", "pos" if i % 3 else "neg") for i in range(300)]
    _write(tmp_path / "reviews.csv", rows, header=("review", "sentiment"), sep=",")
    cfg = DataSection(path=str(tmp_path / "reviews.csv"), text_column="review", label_column="sentiment", dev_fraction=0.2)
    raw = load_splits(cfg)
    assert raw.label_names == ["neg", "pos"]
    assert len(raw.dev_texts) == 60 and len(raw.train_texts) == 240
    assert abs(raw.dev_labels.mean() - 2 / 3) < 0.02  # stratified
    assert not set(raw.dev_texts) & set(raw.train_texts)
    assert load_splits(cfg).dev_texts == raw.dev_texts  # seeded


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_other_formats(tmp_path, fmt):
    import pandas as pd

    for split, n in (("train", 40), ("validation", 10)):
        df = pd.DataFrame({"sentence": [f"s{i}" for i in range(n)], "label": [i % 2 for i in range(n)]})
        if fmt == "parquet":
            df.to_parquet(tmp_path / f"{split}.parquet")
        else:
            df.to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    raw = load_splits(DataSection(path=str(tmp_path)))
    assert len(raw.train_texts) == 40 and len(raw.dev_texts) == 10


def _bad_dir(tmp_path, case):
    d = tmp_path / case
    d.mkdir()
    if case == "no_train":
        _write(d / "dev.tsv", [("a", 0)])
    elif case == "missing_column":
        _write(d / "train.tsv", [("a", 0), ("b", 1)], header=("text", "label"))
        _write(d / "dev.tsv", [("a", 0)], header=("text", "label"))
    elif case == "empty_dev":
        _write(d / "train.tsv", [("a", 0), ("b", 1)])
        _write(d / "dev.tsv", [])
    elif case == "unseen_label":
        _write(d / "train.tsv", [("a", 0), ("b", 1)])
        _write(d / "dev.tsv", [("c", 2)])
    elif case == "one_label":
        _write(d / "train.tsv", [("a", 0), ("b", 0)])
        _write(d / "dev.tsv", [("c", 0)])
    return d


BAD = [
    ("no_train", "no train."),
    ("missing_column", "no column 'sentence'"),
    ("empty_dev", "split is empty"),
    ("unseen_label", "dev label 2 never appears in train"),
    ("one_label", "single label"),
]


@pytest.mark.parametrize("case,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_error(tmp_path, case, needle):
    with pytest.raises(DataError) as e:
        load_splits(DataSection(path=str(_bad_dir(tmp_path, case))))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert case in str(e.value)  # names the file or directory


def test_missing_path_says_how_to_provide_data(tmp_path):
    with pytest.raises(DataError, match="LORA_STUDY_DATA"):
        load_splits(DataSection(path=str(tmp_path / "nowhere")))


def test_size_larger_than_train(sst2_small):
    tok = load_tokenizer("embedded-minilm")
    with pytest.raises(DataError, match="larger than the train split"):
        prepare_data(DataSection(path=str(sst2_small), size=601), tok)


def test_subset_is_stratified_deterministic_and_nested_in_labels():
    labels = np.array([0] * 700 + [1] * 300)
    a = subset_indices(labels, 100, seed=0)
    assert len(a) == 100 and labels[a].sum() == 30
    assert np.array_equal(a, subset_indices(labels, 100, seed=0))
    assert not np.array_equal(a, subset_indices(labels, 100, seed=1))
    assert len(subset_indices(labels, 0.25, seed=0)) == 250
    assert len(subset_indices(labels, None, seed=0)) == 1000


def test_batches_cover_epoch_once_and_are_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    b1 = make_batches(lengths, 32, seed=3, epoch=0)
    assert sorted(np.concatenate(b1).tolist()) == list(range(1000))
    assert len(b1) == 32  # ceil(1000 / 32)
    assert all(np.array_equal(x, y) for x, y in zip(b1, make_batches(lengths, 32, seed=3, epoch=0)))
    assert not np.array_equal(np.concatenate(b1), np.concatenate(make_batches(lengths, 32, seed=3, epoch=1)))
    assert padding_efficiency(lengths, b1) > 0.9
    shuffled = [rng.permutation(1000)[i:i + 32] for i in range(0, 1000, 32)]
    assert padding_efficiency(lengths, shuffled) < 0.7


def test_tokens_are_cached_on_disk(tmp_path, monkeypatch):
    tok = load_tokenizer("embedded-minilm")
    texts = ["a fine film", "an awful , awful movie", "meh"]
    first = tokenize_cached(texts, tok, 16, cache_dir=str(tmp_path))
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    calls = []
    monkeypatch.setattr(type(tok), "__call__", lambda *a, **k: calls.append(1))
    again = tokenize_cached(texts, tok, 16, cache_dir=str(tmp_path))
    assert not calls and all(np.array_equal(x, y) for x, y in zip(first, again))
    assert first[0][0] == tok.cls_token_id and first[0][-1] == tok.sep_token_id


def test_sst2_padding_efficiency_with_real_tokenizer(sst2):
    tok = load_tokenizer("embedded-minilm")
    data = prepare_data(DataSection(path=str(sst2), size=8000), tok)
    lengths = data.train.lengths
    eff = padding_efficiency(lengths, make_batches(lengths, 32, seed=0, epoch=0))
    assert eff >= 0.9, eff


def test_holdout_is_stratified_fixed_and_never_trained_on(sst2_small):
    from trainables.config import DataSection
    from trainables.data import load_splits

    base = load_splits(DataSection(path=str(sst2_small)))
    raw = load_splits(DataSection(path=str(sst2_small), holdout_size=200))
    assert len(raw.val_texts) == 200 and len(raw.train_texts) == len(base.train_texts) - 200
    assert raw.dev_texts == base.dev_texts  # dev stays the untouched report split
    train_rows = set(zip(raw.train_texts, raw.train_labels.tolist()))
    assert not train_rows & set(zip(raw.val_texts, raw.val_labels.tolist()))
    share = base.train_labels.mean()
    assert abs(raw.val_labels.mean() - share) < 0.01  # stratified
    again = load_splits(DataSection(path=str(sst2_small), holdout_size=200))
    assert again.val_texts == raw.val_texts  # fixed by data.seed


def test_holdout_too_large_is_one_line(sst2_small):
    from trainables.config import DataSection
    from trainables.data import DataError, load_splits

    with pytest.raises(DataError, match="holdout_size=599"):
        load_splits(DataSection(path=str(sst2_small), holdout_size=599))
