"""A study started with nothing beside the clone reads the embedded SST-2 and records it by name,
so that ``--resume`` (or a trial on another node) resolves it to its own installed copy."""

from __future__ import annotations

from study.run import build_parser, prepare
from tests.conftest import ROOT


def test_study_records_embedded_data_by_name(tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("LORA_STUDY_DATA", raising=False)
    monkeypatch.setenv("LORA_STUDY_HOME", str(tmp_path))
    args = build_parser().parse_args(["--config", str(ROOT / "study" / "configs" / "sst2-quick.yaml"), "--name", "emb",
                                      "--storage", str(tmp_path)])
    prep = prepare(args)
    assert prep.record["config"]["data"]["path"] == "embedded-sst2"
    assert prep.n_train == 67349
    assert not ray.is_initialized()
