"""Every file of an export has one mode (the tokenizer's, the config's): safetensors writes new
files 0600, and a mean-pooling export re-saves ``adapter_model.safetensors`` (the stock-loader
refusal) and writes ``merged/model.safetensors``; others must read those like the rest."""

from __future__ import annotations

import json
import shutil
import stat

import pytest

from trainables import META_FILE


@pytest.fixture(scope="module")
def mean_export(tiny_st_bert, sst2_small, tmp_path_factory):
    """A ``--merge`` export of a checkpoint trained with mean pooling (the refusal re-saves its weights)."""
    from study.deploy import export
    from trainables.config import TrialConfig
    from trainables.loop import run_trial

    tmp = tmp_path_factory.mktemp("modes")
    cfg = TrialConfig.from_dict({"model.name": str(tiny_st_bert), "data.path": str(sst2_small), "data.size": 64,
                                 "data.max_length": 32, "train.batch_size": 16, "train.threads": 1, "lora.r": 2})
    ckpt = tmp / "ckpt"

    def keep(metrics, d):
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(d, ckpt)

    run_trial(cfg, report=keep)
    assert json.loads((ckpt / META_FILE).read_text())["pooling"] == "mean"
    return export.export_checkpoint(str(ckpt), tmp / "best", merge=True)


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "merged/model.safetensors", "lora_study.json", "merged/config.json"])
def test_export_file_has_the_exports_mode(mean_export, name):
    mode = stat.S_IMODE((mean_export / "adapter_config.json").stat().st_mode)
    assert mode & 0o044 == 0o044  # group and others read it
    assert oct(stat.S_IMODE((mean_export / name).stat().st_mode)) == oct(mode)
