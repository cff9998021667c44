"""``RepairCheckpointRecords`` (study/storage/repair.py) on hand-made trials: which checkpoint a trial
resumes from after a driver crash or a trial restart (a checkpoint that is gone, torn, or beyond the
trial's stored history is skipped). The end-to-end version (real SIGKILL, real torn file) is
``tests/study/test_resume_faults.py::test_same_name_twice_then_sigkill_and_resume_continues_from_checkpoints``."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

import pyarrow.fs
import pytest
from ray.tune import Checkpoint

from study.storage.repair import RepairCheckpointRecords


def _verify(d: str) -> None:
    """Stands for ``trainables.loop.load_checkpoint``: a checkpoint is intact if it says so."""
    if (Path(d) / "state").read_text() != "intact":
        raise ValueError(f"checkpoint {d}: unreadable (truncated)")


def _trial(tmp_path: Path, seen: list[int], torn: set[int] = frozenset(), recorded: int | None = None, status: str = "RUNNING"):
    """A trial whose checkpoints were reported at ``seen`` samples (the last one is the latest);
    its result.json on storage goes up to ``recorded`` (default: the last checkpoint)."""
    trial_dir = tmp_path / "exp" / "trial_a"
    results = []
    fs = pyarrow.fs.LocalFileSystem()
    for i, s in enumerate(seen):
        d = trial_dir / f"checkpoint_{i:06d}"
        d.mkdir(parents=True)
        (d / "state").write_text("torn" if i in torn else "intact")
        results.append(types.SimpleNamespace(checkpoint=Checkpoint(str(d), filesystem=fs), metrics={"samples_seen": s}))
    upto = seen[-1] if recorded is None else recorded
    (trial_dir / "result.json").write_text("".join(json.dumps({"samples_seen": s}) + "\n" for s in range(100, upto + 1, 100)))
    manager = types.SimpleNamespace(_latest_checkpoint_result=results[-1], _checkpoint_results=list(results))
    return types.SimpleNamespace(
        trial_id="a", status=status, path=str(trial_dir), local_path=str(tmp_path / "gone-session" / "trial_a"),
        storage=types.SimpleNamespace(storage_filesystem=fs), run_metadata=types.SimpleNamespace(checkpoint_manager=manager),
    ), results


def _latest(trial) -> str | None:
    r = trial.run_metadata.checkpoint_manager._latest_checkpoint_result
    return Path(r.checkpoint.path).name if r else None


def test_after_a_crash_history_is_read_from_storage(tmp_path, caplog):
    """The crashed run's session dir (``local_path``) is gone; the history on storage reaches the
    latest checkpoint, so the trial continues from it (before: samples_seen -1, from scratch)."""
    trial, _ = _trial(tmp_path, [100, 200, 300])
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000002" and not caplog.records


@pytest.mark.parametrize("seen,torn,recorded,want,says", [
    ([100, 200, 300], {2}, None, "checkpoint_000001", "checkpoint_000002 is unreadable"),
    ([100, 200, 300], {1, 2}, None, "checkpoint_000000", "checkpoint_000001 is unreadable"),
    ([100, 200, 300], {0, 1, 2}, None, None, "resuming from scratch"),
    ([100, 200, 300], set(), 200, "checkpoint_000001", "checkpoint_000002 is beyond its stored results (samples_seen 200)"),
    ([100, 200, 300], {1}, 200, "checkpoint_000000", "checkpoint_000001 is unreadable"),
])
def test_crash_falls_back_to_the_newest_usable_checkpoint(tmp_path, caplog, seen, torn, recorded, want, says):
    trial, results = _trial(tmp_path, seen, torn, recorded)
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify).on_step_begin(0, [trial])
    assert _latest(trial) == want
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("Trial a: latest checkpoint") and says in lines[0], lines
    for i in torn:  # set aside, so no reader picks it as a "best" checkpoint later
        p = Path(results[i].checkpoint.path)
        assert not p.exists() and (p.parent / f".torn-{p.name}").is_dir()
    assert all(r.checkpoint.path not in {results[i].checkpoint.path for i in torn}
               for r in trial.run_metadata.checkpoint_manager._checkpoint_results)


def test_a_restarted_trial_skips_a_torn_checkpoint(tmp_path, caplog):
    """A worker died and Ray restarts the trial in the same driver: a torn latest checkpoint
    is replaced by the previous one before Ray hands it to the trainable."""
    trial, _ = _trial(tmp_path, [100, 200], torn={1})
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify).on_trial_recover(3, [trial], trial)
    assert _latest(trial) == "checkpoint_000000"
    assert "(trial restart); resuming from" in caplog.records[0].getMessage()


def test_finished_trials_are_left_alone(tmp_path):
    trial, _ = _trial(tmp_path, [100, 200], torn={1}, status="TERMINATED")
    RepairCheckpointRecords(verify=_verify).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000001"


def test_a_checkpoint_the_snapshot_never_listed_is_found_on_storage(tmp_path, caplog):
    """Ray snapshots the experiment every few checkpoints: a driver killed in between leaves a
    snapshot whose older checkpoint is already deleted and whose latest is torn, while a newer
    intact checkpoint (and its result.json row) sits on storage. The trial resumes from that one
    (before: from scratch)."""
    import shutil

    trial, results = _trial(tmp_path, [100, 200, 300], torn={1})
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_config = types.SimpleNamespace(checkpoint_score_attribute=None)
    manager._latest_checkpoint_result = results[1]  # the snapshot predates checkpoint_000002
    manager._checkpoint_results = results[:2]
    shutil.rmtree(results[0].checkpoint.path)  # deleted after the snapshot, when checkpoint_000002 registered
    history = Path(trial.path) / "result.json"
    rows = [{"samples_seen": s, **({"checkpoint_dir_name": f"checkpoint_{i:06d}"} if s % 100 == 0 else {})}
            for i, s in enumerate([100, 200, 300])]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000002"
    assert [r.getMessage() for r in caplog.records] == [
        f"Trial a: latest checkpoint checkpoint_000001 is unreadable (truncated) (on resume); "
        f"resuming from {results[2].checkpoint.path}."]
    assert any(r is manager._latest_checkpoint_result for r in manager._checkpoint_results)


def test_a_torn_checkpoint_newer_than_the_snapshot_is_set_aside_and_said(tmp_path, caplog):
    """The stored result.json already names a checkpoint newer than the snapshot's latest (its
    row was copied to storage before the snapshot naming it) and that one is torn: the trial
    resumes from the snapshot's own latest, the torn one is set aside, and one line says so
    (before: set aside without a word, found by a SIGKILL test in 1 run of 3)."""
    trial, results = _trial(tmp_path, [100, 200, 300], torn={2})
    manager = trial.run_metadata.checkpoint_manager
    manager._latest_checkpoint_result = results[1]  # the snapshot predates checkpoint_000002
    manager._checkpoint_results = results[:2]
    rows = [{"samples_seen": s, "checkpoint_dir_name": f"checkpoint_{i:06d}"} for i, s in enumerate([100, 200, 300])]
    (Path(trial.path) / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        RepairCheckpointRecords(verify=_verify).on_step_begin(0, [trial])
    assert _latest(trial) == "checkpoint_000001"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("Trial a: latest checkpoint checkpoint_000002 is unreadable (truncated)"), lines
    assert lines[0].endswith(f"(on resume); resuming from {results[1].checkpoint.path}."), lines
    torn = Path(results[2].checkpoint.path)
    assert not torn.exists() and (torn.parent / f".torn-{torn.name}").is_dir()


# --------------------------------------------------------------------------- which checkpoint, against the stored history


# (stored history's samples_seen, checkpoints (samples_seen, exists), latest, status, expected latest after repair)
REPAIR_CASES = [
    ("history reaches latest", [100, 200, 300], [(100, True), (300, True)], 300, "PENDING", 300),
    ("latest ahead of history", [100, 200, 312], [(200, True), (500, True)], 500, "PENDING", 200),
    ("ahead, nothing older", [100, 200, 312], [(500, True)], 500, "PENDING", None),
    ("latest gone", [100, 200, 300, 400], [(200, True), (300, True), (400, False)], 400, "PENDING", 300),
    ("torn last row ignored", [100, 200, "torn"], [(200, True), (300, True)], 300, "PENDING", 200),
    ("no result.json", None, [(100, True)], 100, "PENDING", None),
    ("finished trials untouched", [100], [(100, True), (500, True)], 500, "TERMINATED", 500),
]


@pytest.mark.parametrize("case,rows,ckpts,latest,status,expected", REPAIR_CASES, ids=[c[0] for c in REPAIR_CASES])
def test_repair_resumes_only_from_checkpoints_the_history_reaches(case, rows, ckpts, latest, status, expected, tmp_path):
    """``RepairCheckpointRecords`` after a crash: the latest checkpoint must exist and must not be
    beyond the trial's stored ``result.json`` (else evaluations in between would never be stored)."""
    from types import SimpleNamespace as NS

    fs = pyarrow.fs.LocalFileSystem()
    records = {}
    for seen, exists in ckpts:
        d = tmp_path / f"checkpoint_{seen}"
        if exists:
            d.mkdir()
        records[seen] = NS(metrics={"samples_seen": seen, "training_iteration": seen // 100},
                           checkpoint=Checkpoint(str(d), filesystem=fs) if exists else NS(filesystem=fs, path=str(d)))
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    if rows is not None:
        (trial_dir / "result.json").write_text(
            "".join('{"samples_se' if r == "torn" else json.dumps({"samples_seen": r, "accuracy": 0.5}) + "\n" for r in rows))
    manager = NS(_latest_checkpoint_result=records[latest], _checkpoint_results=list(records.values()))
    # the history is read from storage (``trial.path``); the crashed run's session dir is gone
    trial = NS(trial_id="t1", status=status, path=str(trial_dir), local_path=str(tmp_path / "gone"),
               storage=NS(storage_filesystem=fs), run_metadata=NS(checkpoint_manager=manager))
    repair = RepairCheckpointRecords(verify=lambda d: None)  # empty dirs stand for intact checkpoints here
    repair.on_step_begin(0, [trial])
    got = manager._latest_checkpoint_result
    assert (got.metrics["samples_seen"] if got else None) == expected
    assert all(Path(r.checkpoint.path).exists() for r in manager._checkpoint_results)
    repair.on_step_begin(1, [trial])  # once per driver: later steps never touch a trial again
    assert manager._latest_checkpoint_result is got
