"""The SST-2 copy shipped in the package (``data.path: embedded-sst2``): the default data, equal to
GLUE's TSVs in ``../shared/data/sst2`` text for text, and sharing their token cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from trainables.config import EMBEDDED_DATA, DataSection, TrialConfig, resolve_data_path
from trainables.data import load_splits, tokenize_cached


def _digest(texts: list[str], labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels.tolist()):
        h.update(t.encode("utf-8"))
        h.update(f"\x00{y}\x00".encode())
    return h.hexdigest()


@pytest.mark.parametrize("env,expected", [(None, EMBEDDED_DATA), ("/data/elsewhere", "/data/elsewhere")])
def test_default_path_is_embedded_unless_env_says_otherwise(env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("LORA_STUDY_DATA", raising=False)
    else:
        monkeypatch.setenv("LORA_STUDY_DATA", env)
    assert DataSection().path == expected
    assert TrialConfig.from_dict({"data.path": "x.csv"}).data.path == "x.csv"  # --set data.path= wins


def test_embedded_resolves_inside_the_package():
    d = Path(resolve_data_path(EMBEDDED_DATA))
    assert d.parent.parent == Path(__file__).resolve().parents[2] / "trainables"
    assert {p.name for p in d.iterdir()} >= {"train.parquet", "dev.parquet", "README.md"}
    assert "Socher" in (d / "README.md").read_text()
    assert resolve_data_path("../shared/data/sst2") == "../shared/data/sst2"


def test_embedded_equals_the_shared_tsvs(shared_sst2):
    emb = load_splits(DataSection(path=EMBEDDED_DATA))
    tsv = load_splits(DataSection(path=str(shared_sst2)))
    assert (len(emb.train_texts), len(emb.dev_texts)) == (len(tsv.train_texts), len(tsv.dev_texts)) == (67349, 872)
    assert emb.label_names == tsv.label_names == ["0", "1"]
    assert np.bincount(emb.train_labels).tolist() == np.bincount(tsv.train_labels).tolist() == [29780, 37569]
    assert np.bincount(emb.dev_labels).tolist() == np.bincount(tsv.dev_labels).tolist() == [428, 444]
    assert _digest(emb.train_texts, emb.train_labels) == _digest(tsv.train_texts, tsv.train_labels)
    assert _digest(emb.dev_texts, emb.dev_labels) == _digest(tsv.dev_texts, tsv.dev_labels)


class _CountingTokenizer:
    """Stands in for a tokenizer; counts calls so a cache hit is visible."""

    name_or_path = "counting"
    calls = 0

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, "b": 1}

    def __call__(self, texts, truncation, max_length, add_special_tokens):
        type(self).calls += 1
        return {"input_ids": [[len(t)] for t in texts]}


def test_token_cache_is_shared_with_the_tsvs(shared_sst2, tmp_path):
    """The cache key hashes texts, not paths: the embedded dev split hits the TSV's cache entry."""
    tok = _CountingTokenizer()
    first = tokenize_cached(load_splits(DataSection(path=str(shared_sst2))).dev_texts, tok, 64, str(tmp_path))
    again = tokenize_cached(load_splits(DataSection(path=EMBEDDED_DATA)).dev_texts, tok, 64, str(tmp_path))
    assert _CountingTokenizer.calls == 1 and len(list((tmp_path / "tokens").iterdir())) == 1
    assert [a.tolist() for a in first] == [b.tolist() for b in again]
