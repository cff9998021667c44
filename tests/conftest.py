"""Shared fixtures: the real SST-2 files, and a tiny random-init BERT built from a config.

SST-2 comes from the copy shipped in the package (``embedded-sst2``), written out as GLUE's
``train.tsv``/``dev.tsv`` once per session, so the suite passes on a bare clone. GLUE's own TSVs
in ``../shared/data/sst2`` (or ``$LORA_STUDY_DATA``) are an optional cross-check
(``shared_sst2``: skipped where they are absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sst2_dir() -> Path:
    """Where GLUE's own SST-2 TSVs may lie beside the clone (the cross-check's source)."""
    return Path(os.environ.get("LORA_STUDY_DATA", ROOT.parent / "shared" / "data" / "sst2")).resolve()


def write_tsv(parquet: Path, out: Path) -> None:
    """An embedded split as GLUE's TSV: a ``sentence<TAB>label`` header, no quoting (the texts
    hold no tabs or newlines; ``trainables.data.read_table`` reads TSVs with quoting off)."""
    import pandas as pd

    df = pd.read_parquet(parquet)
    rows = (f"{text}\t{label}" for text, label in zip(df["sentence"], df["label"]))
    out.write_text("\n".join(["sentence\tlabel", *rows]) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def sst2(tmp_path_factory) -> Path:
    """SST-2 as a directory of ``train.tsv`` and ``dev.tsv``, from the embedded copy."""
    from trainables.config import EMBEDDED_DATA, resolve_data_path

    src, out = Path(resolve_data_path(EMBEDDED_DATA)), tmp_path_factory.mktemp("sst2")
    for split in ("train", "dev"):
        write_tsv(src / f"{split}.parquet", out / f"{split}.tsv")
    return out


@pytest.fixture(scope="session")
def shared_sst2() -> Path:
    """GLUE's own SST-2 TSVs, for the cross-check against the embedded copy; skipped without them."""
    d = sst2_dir()
    if not (d / "train.tsv").is_file() or not (d / "dev.tsv").is_file():
        pytest.skip(f"GLUE's SST-2 TSVs not at {d} (optional: put them there or set LORA_STUDY_DATA)")
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


@pytest.fixture(scope="session")
def tiny_st_bert(tiny_bert, tmp_path_factory) -> Path:
    """``tiny_bert`` laid out like a sentence-transformers model trained with mean pooling (its
    ``1_Pooling/config.json``, as in the embedded MiniLM): ``model.pooling=auto`` picks mean."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("tiny_st_bert") / "model"
    shutil.copytree(tiny_bert, out)
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                                                              "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}))
    return out


@pytest.fixture(scope="session", autouse=True)
def _config_home(tmp_path_factory):
    """Studies sign their Ray state with a key in the user's config dir: the tests' own, never yours."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        yield


@pytest.fixture(autouse=True)
def _token_cache(tmp_path_factory, monkeypatch):
    """Keep the token cache inside pytest's temp dir (shared across tests of one session)."""
    monkeypatch.setenv("LORA_STUDY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_study(args: list[str], home: Path, timeout: float = 600, check: bool = True, env: dict | None = None):
    """``python -m study.run ARGS`` in a subprocess with ``LORA_STUDY_HOME=home`` (own Ray)."""
    import subprocess
    import sys

    full_env = {**os.environ, "LORA_STUDY_HOME": str(home), "RAY_DEDUP_LOGS": "0", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "study.run", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"study.run failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_study_args(name: str, home: Path, model: Path, data: Path, num_samples: int = 6, extra: list[str] | None = None) -> list[str]:
    """A seconds-long study on the tiny BERT: 2 sizes, ASHA with a 100-sample grace period."""
    return ["--config", str(ROOT / "study" / "configs" / "sst2-quick.yaml"), "--name", name, "--storage", str(home),
            "--num-samples", str(num_samples), "--set", f"model.name={model}", "--set", f"data.path={data}",
            "--set", "search.data.size.choice=[300,600]", "--set", "train.eval_every_samples=100",
            "--set", "asha.grace_period=100", "--set", "data.dev_size=200", *(extra or [])]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, tiny_bert, sst2_small):
    """A finished 6-trial study on the tiny BERT (ASHA + Optuna + MLflow): (name, home dir). What
    the command printed is kept beside it, ``home/console.stdout`` and ``home/console.stderr``."""
    home = tmp_path_factory.mktemp("studies")
    proc = run_study(tiny_study_args("tiny", home, tiny_bert, sst2_small), home)
    (home / "console.stdout").write_text(proc.stdout)
    (home / "console.stderr").write_text(proc.stderr)
    return "tiny", home
