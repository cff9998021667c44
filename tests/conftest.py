"""Shared fixtures: the real SST-2 files, and a tiny random-init BERT built from a config.

SST-2 is read from ``../shared/data/sst2`` (or ``$LORA_STUDY_DATA``). When it is missing the
tests fail with instructions instead of skipping: a suite that silently skips its data tests
proves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sst2_dir() -> Path:
    return Path(os.environ.get("LORA_STUDY_DATA", ROOT.parent / "shared" / "data" / "sst2")).resolve()


@pytest.fixture(scope="session")
def sst2() -> Path:
    d = sst2_dir()
    if not (d / "train.tsv").is_file() or not (d / "dev.tsv").is_file():
        pytest.fail(
            f"SST-2 not found at {d}. Put the GLUE SST-2 train.tsv and dev.tsv there "
            f"(sentence<TAB>label with a header row) or set LORA_STUDY_DATA=/path/to/sst2."
        )
    return d


@pytest.fixture(scope="session")
def sst2_small(sst2: Path, tmp_path_factory) -> Path:
    """A 600-train / 200-dev slice of real SST-2, as a directory (fast trials)."""
    out = tmp_path_factory.mktemp("sst2_small")
    for name, n in (("train.tsv", 600), ("dev.tsv", 200)):
        lines = (sst2 / name).read_text().splitlines()
        (out / name).write_text("\n".join(lines[: n + 1]) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights plus the embedded MiniLM tokenizer, saved as a
    local model directory: exercises every code path in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trainables.model import resolve_model_name

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(resolve_model_name("embedded-minilm"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory, monkeypatch):
    """Keep the token cache inside pytest's temp dir (shared across tests of one session)."""
    monkeypatch.setenv("LORA_STUDY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
