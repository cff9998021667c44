"""``RepairCheckpointRecords`` on hand-made trials: a checkpoint written after the stored history (a
driver killed before its next snapshot) is resumed from when it carries its own evaluations, and
the history gets them; torn checkpoints Ray still keeps are set aside; the line says what it knows."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

from study.storage.repair import RepairCheckpointRecords
from tests.study.storage.test_repair import _latest, _trial


def _verify_with_history(d: str):
    """Stands for ``trainables.verify_checkpoint``: intact if it says so; its trainer state holds
    the evaluations up to it (``history.json`` here)."""
    if (Path(d) / "state").read_text() != "intact":
        raise ValueError(f"checkpoint {d}: unreadable (SafetensorError: Error while deserializing header: "
                         f"MetadataIncompleteBuffer, the file is cut short somewhere in its middle part: {'expected more bytes ' * 6})")
    history = Path(d) / "history.json"
    return types.SimpleNamespace(trainer={"history": json.loads(history.read_text()) if history.exists() else []})


def _ahead(tmp_path: Path, seen: list[int], recorded: int, listed: int, own_history: bool = True):
    """A trial with checkpoints at ``seen`` (each carrying the evaluations up to it), a stored
    history up to ``recorded`` and a saved state listing the first ``listed`` checkpoints; the
    rest were written after the last snapshot and name themselves in ``lora_study.json`` only."""
    trial, results = _trial(tmp_path, seen, recorded=recorded)
    trial.config = {"x": 1}
    trial.storage.current_checkpoint_index = listed - 1
    rows = [{"samples_seen": s, "accuracy": s / 1000, "training_iteration": i + 1, "iterations_since_restore": i + 1,
             "time_total_s": float(i + 1), "trial_id": "a", "config": {"x": 1},
             "checkpoint_dir_name": f"checkpoint_{i:06d}"} for i, s in enumerate(seen) if s <= recorded]
    (Path(trial.path) / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i, r in enumerate(results):
        d = Path(r.checkpoint.path)
        evals = [{"samples_seen": s, "accuracy": s / 1000, "train_s": 0.5, "eval_s": 0.25, "time_unix": 1.7e9 + s}
                 for s in seen[: i + 1]]
        (d / "lora_study.json").write_text(json.dumps({"metrics": evals[-1]}))
        if own_history:
            (d / "history.json").write_text(json.dumps(evals))
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_config = types.SimpleNamespace(checkpoint_score_attribute=None)
    manager._latest_checkpoint_result = results[listed - 1]
    manager._checkpoint_results = results[:listed]
    return trial, results


def _stored(trial) -> list[dict]:
    return [json.loads(line) for line in (Path(trial.path) / "result.json").read_text().splitlines()]


def test_a_checkpoint_ahead_of_the_history_is_resumed_from_and_fills_it(tmp_path, caplog):
    """Killed twice: the saved state lists checkpoint_000001 (gone by now), result.json reaches 200,
    and checkpoint_000003 (400 samples) sat intact on storage. The trial resumes from it, not from
    checkpoint_000000 (before: "checkpoint_000001 is gone", 100 samples redone); the history gets
    the evaluations at 300 and 400 from the checkpoint itself, and Ray numbers the next one 000004."""
    import shutil

    trial, results = _ahead(tmp_path, [100, 200, 300, 400], recorded=200, listed=2)
    shutil.rmtree(results[1].checkpoint.path)
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify_with_history).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000003"
    rows = _stored(trial)
    assert [r["samples_seen"] for r in rows] == [100, 200, 300, 400]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4] and rows[-1]["checkpoint_dir_name"] == "checkpoint_000003"
    assert rows[-1]["accuracy"] == 0.4 and rows[-1]["config"] == {"x": 1} and rows[-1]["time_total_s"] == 3.5
    assert trial.run_metadata.checkpoint_manager._latest_checkpoint_result.metrics["training_iteration"] == 4
    assert trial.storage.current_checkpoint_index == 3, "Ray would write its next checkpoint over the resumed one"
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("Trial a: latest checkpoint checkpoint_000001 is not the newest on storage (on resume); resuming from ") \
        and line.endswith("checkpoint_000003."), line


def test_without_its_own_history_an_ahead_checkpoint_is_still_skipped(tmp_path, caplog):
    trial, _ = _ahead(tmp_path, [100, 200, 300], recorded=200, listed=3, own_history=False)
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify_with_history).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000001"
    assert "checkpoint_000002 is beyond its stored results (samples_seen 200)" in caplog.records[0].getMessage()
    assert [r["samples_seen"] for r in _stored(trial)] == [100, 200]


def test_a_torn_checkpoint_ray_keeps_is_set_aside_and_the_line_is_whole(tmp_path, caplog):
    """The newest checkpoint is intact, an older one Ray keeps (it may become the "best") is torn:
    it is set aside too. The line cuts a long reason at a word, and names no cause it cannot know
    (before: "… MetadataIncompleteBuf (driver crash)")."""
    trial, results = _ahead(tmp_path, [100, 200, 300], recorded=300, listed=3)
    (Path(results[0].checkpoint.path) / "state").write_text("torn")
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify_with_history).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000002"
    torn = Path(results[0].checkpoint.path)
    assert not torn.exists() and (torn.parent / f".torn-{torn.name}").is_dir()
    assert all(r.checkpoint.path != str(torn) for r in trial.run_metadata.checkpoint_manager._checkpoint_results)
    (line,) = [r.getMessage() for r in caplog.records]
    reason = line.split("checkpoint_000000 is unreadable (", 1)[1].rsplit(") (on resume)", 1)[0]
    assert reason.endswith("…") and len(reason) <= 200, line
    assert reason[:-1].split()[-1] in {"expected", "more", "bytes"} | {*"MetadataIncompleteBuffer, the file is cut short".split()}, line
    assert "driver crash" not in line
