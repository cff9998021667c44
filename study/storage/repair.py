"""Resume every trial from a checkpoint that exists, reads back whole, and that its stored history reaches.

Why: Ray 2.60 can restore a trial whose latest checkpoint is *gone* (deleted after the last
snapshot), *ahead* of its stored ``result.json`` (the snapshot copy was cut by a driver kill), or
*torn* (unreadable files). Each would fail the trial or restart it from scratch under a new id,
orphaning its history and MLflow run. :class:`RepairCheckpointRecords` checks once per driver,
before any restored trial is scheduled, and whenever Ray restarts a failed trial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .trials import read_json_lines

__all__ = ["RepairCheckpointRecords"]

logger = logging.getLogger(__name__)


class RepairCheckpointRecords(Callback):
    """Make every trial resume from a checkpoint that exists, that can be read, and that its
    stored history reaches, so that no result goes missing and no trial fails on a bad checkpoint.

    Three ways Ray 2.60 can be left holding a latest checkpoint that cannot be resumed as is:

    * *gone*: with ``CheckpointConfig(num_to_keep, checkpoint_score_attribute)`` Ray deletes a
      trial's previous checkpoint as soon as a newer one registers unless it is among the best
      ``num_to_keep``, but persists the experiment snapshot only every ``num_to_keep`` trial
      checkpoints (or 10 s).  A driver killed in between leaves a latest checkpoint that no
      longer exists: the restore fails ``max_failures + 1`` times, the trial ends ERROR and the
      next ``--resume`` (``restart_errored``) re-creates it from scratch under a new trial id,
      orphaning its history, trial dir and MLflow run.
    * *ahead*: a snapshot copies the driver's staging dir to storage file by file, in parallel,
      ``experiment_state-*.json`` (which names each trial's latest checkpoint) among them.  A
      driver killed during that copy can leave the new state beside a trial's *previous*
      ``result.json``; the trial would resume after evaluations its history never got.
    * *torn*: a checkpoint whose files cannot be read (truncated by a crash outside our atomic
      writes, a disk error, a hand edit).  Ray would hand it to the trainable on every restart
      and the trial would FAIL with an error naming a temp dir.

    The trial's history is its ``result.json`` *on storage* (``trial.path`` on the storage
    filesystem): after a driver crash the staging copy under ``trial.local_path`` belonged to the
    crashed run's Ray session and is gone, which made every unfinished trial restart from
    scratch.  Checked once per driver at the first step, before any restored trial is scheduled
    (all three), and whenever Ray is about to restart a failed trial (``on_trial_recover``: gone
    and torn).  The newest checkpoint that passes becomes the latest; a torn one is renamed to a
    hidden ``.torn-…`` dir so nothing picks it as a "best" checkpoint later; none left: the trial
    restarts from scratch under its own id.  One log line per repaired trial says which and why.
    The trainable resumes exactly, so evaluations it reports again repeat the same values.
    """

    def __init__(self, progress_attr: str = "samples_seen", verify: Any = None) -> None:
        self._checked = False
        self._attr = progress_attr
        self._verify = verify

    @staticmethod
    def _history(trial: Any) -> list[dict]:
        """The trial's result rows on storage (``[]``: no result.json yet; torn lines skipped)."""
        try:
            with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/result.json") as f:
                return read_json_lines(f.readall().decode("utf-8", "replace"))
        except Exception:  # a trial that never reported
            return []

    def _recorded(self, rows: list[dict]) -> float:
        """How far the stored history goes (``-1``: nothing recorded)."""
        seen = [v for v in (r.get(self._attr) for r in rows) if isinstance(v, (int, float))]
        return float(max(seen, default=-1.0))

    def _unreadable(self, result: Any) -> str | None:
        """Why a checkpoint cannot be resumed from (``None``: it loads)."""
        verify = getattr(self, "_verify", None)
        if verify is None:
            from trainables import verify_checkpoint as verify
        where = None
        try:
            with result.checkpoint.as_directory() as where:
                verify(where)
        except Exception as e:
            msg = (str(e).splitlines() or [type(e).__name__])[0]
            if where:  # name the checkpoint, not the temp copy it was read from
                msg = msg.replace(f"checkpoint {where}: ", "").replace(str(where), result.checkpoint.path)
            if msg.startswith("unreadable (") and msg.endswith(")"):  # load_checkpoint's wording
                msg = msg[len("unreadable ("):-1]
            return msg[:200]
        return None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                self._repair(trial, "driver crash")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._repair(trial, "trial restart")

    def _repair(self, trial: Any, when: str) -> None:
        """After a driver crash a checkpoint must not be ahead of the stored history; a trial
        Ray restarts within this driver has its history in memory, so nothing is ahead."""
        from ray.train._internal.storage import _exists_at_fs_path

        def gone(r: Any) -> bool:
            return not _exists_at_fs_path(r.checkpoint.filesystem, r.checkpoint.path)

        def progress(r: Any) -> float:
            return float(r.metrics.get(self._attr, 0))

        manager = trial.run_metadata.checkpoint_manager
        latest = manager._latest_checkpoint_result
        manager._checkpoint_results = [r for r in manager._checkpoint_results if not gone(r)]
        if latest is None:
            return
        rows = self._history(trial)
        recorded = self._recorded(rows) if when == "driver crash" else float("inf")
        known = [latest, *manager._checkpoint_results]
        unlisted = self._unlisted_checkpoints(trial, {Path(r.checkpoint.path).name for r in known}, rows)
        candidates = sorted({id(r): r for r in [*known, *unlisted]}.values(), key=progress, reverse=True)
        skipped: list[str] = []
        chosen = None
        for r in candidates:
            if gone(r):
                why = "is gone"
            elif progress(r) > recorded:
                why = f"is beyond its stored results ({self._attr} {recorded:g})"
            else:
                bad = self._unreadable(r)
                if bad is None:
                    chosen = r
                    break
                why = f"is unreadable ({bad})"
                self._set_aside(r)
                manager._checkpoint_results = [x for x in manager._checkpoint_results if x is not r]
            skipped.append(f"{Path(r.checkpoint.path).name} {why}")
        if chosen is latest and not skipped:  # nothing newer on storage, nothing torn: as Ray left it
            return
        if chosen is not None and all(chosen is not r for r in known):
            self._adopt(manager, chosen)
        manager._latest_checkpoint_result = chosen
        if not skipped:  # a newer checkpoint than the snapshot's latest was found on storage
            skipped.append(f"{Path(latest.checkpoint.path).name} is not the newest on storage")
        logger.warning(
            "Trial %s: latest checkpoint %s (%s); resuming from %s.",
            trial.trial_id,
            "; ".join(skipped),
            when,
            chosen.checkpoint.path if chosen else "scratch",
        )

    def _unlisted_checkpoints(self, trial: Any, known: set[str], rows: list[dict]) -> list[Any]:
        """Checkpoints on storage that the restored snapshot does not list, with the metrics their
        ``result.json`` row recorded: Ray snapshots the experiment only every few checkpoints, so
        a driver killed in between leaves newer checkpoints (and deletes older ones) that the
        snapshot never saw. Without them a torn latest checkpoint meant a restart from scratch."""
        import pyarrow.fs
        from ray.train import Checkpoint
        from ray.train._internal.session import _TrainingResult

        by_name = {r["checkpoint_dir_name"]: r for r in rows if r.get("checkpoint_dir_name")}
        if not by_name:
            return []
        fs = trial.storage.storage_filesystem
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(trial.path, allow_not_found=True))
        except Exception:  # unreadable dir: nothing to add
            return []
        return [_TrainingResult(checkpoint=Checkpoint(f"{trial.path}/{i.base_name}", filesystem=fs), metrics=by_name[i.base_name])
                for i in infos
                if i.type == pyarrow.fs.FileType.Directory and i.base_name in by_name and i.base_name not in known]

    @staticmethod
    def _adopt(manager: Any, result: Any) -> None:
        """Book a checkpoint found on storage the way Ray books a reported one (kept in score
        order), without deleting anything: the repair only ever moves the resume point."""
        from ray.train._internal.checkpoint_manager import _insert_into_sorted_list

        score_attr = manager._checkpoint_config.checkpoint_score_attribute
        if score_attr is not None and score_attr in result.metrics:
            _insert_into_sorted_list(manager._checkpoint_results, result, key=manager._get_checkpoint_score)
        else:
            manager._checkpoint_results.append(result)

    @staticmethod
    def _set_aside(result: Any) -> None:
        """Rename a torn checkpoint to a hidden sibling: kept for a post-mortem, never read."""
        fs, path = result.checkpoint.filesystem, result.checkpoint.path
        head, tail = path.rsplit("/", 1)
        try:
            fs.move(path, f"{head}/.torn-{tail}")
        except Exception as e:  # read-only storage: leave it, the record is dropped anyway
            logger.info("Could not set aside torn checkpoint %s: %s", path, e)
