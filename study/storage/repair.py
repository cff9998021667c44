"""Resume every trial from a checkpoint that exists, reads back whole, and that its stored history reaches.

Why: Ray 2.60 can restore a trial whose latest checkpoint is *gone* (deleted after the last
snapshot), *ahead* of its stored ``result.json`` (the snapshot copy was cut by a driver kill), or
*torn* (unreadable files). Each would fail the trial or restart it from scratch under a new id,
orphaning its history and MLflow run. :class:`RepairCheckpointRecords` checks once per driver,
before any restored trial is scheduled, and whenever Ray restarts a failed trial.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .trials import stored_results

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
      ``experiment_state-*.json`` (which names each trial's latest checkpoint) among them, and a
      trial writes each checkpoint to storage before the driver records its result.  A driver
      killed in between leaves checkpoints newer than the trial's stored ``result.json``; resumed
      as is, the trial would continue after evaluations its history never got, and falling back
      to an older checkpoint redoes work.  Each checkpoint carries its metrics
      (``lora_study.json``) and every evaluation before it (its trainer state), so the newest
      intact one is used and the evaluations it adds are appended to the stored history.
    * *torn*: a checkpoint whose files cannot be read (truncated by a crash outside our atomic
      writes, a disk error, a hand edit).  Ray would hand it to the trainable on every restart
      and the trial would FAIL with an error naming a temp dir.

    The trial's history is its ``result.json`` *on storage* (``trial.path`` on the storage
    filesystem): after a driver crash the staging copy under ``trial.local_path`` belonged to the
    crashed run's Ray session and is gone, which made every unfinished trial restart from
    scratch.  Checked once per driver at the first step, before any restored trial is scheduled
    (all three), and whenever Ray is about to restart a failed trial (``on_trial_recover``: gone
    and torn).  The newest checkpoint that passes becomes the latest (the trial's next one is
    numbered after it); a torn one, newer or kept by Ray, is renamed to a hidden ``.torn-…`` dir
    so nothing picks it as a "best" checkpoint later; none left: the trial restarts from scratch
    under its own id.  One log line per repaired trial says which and why.
    The trainable resumes exactly, so evaluations it reports again repeat the same values.
    """

    def __init__(self, progress_attr: str = "samples_seen", verify: Any = None) -> None:
        self._checked = False
        self._attr = progress_attr
        self._verify = verify

    def _recorded(self, rows: list[dict]) -> float:
        """How far the stored history goes (``-1``: nothing recorded)."""
        seen = [v for v in (r.get(self._attr) for r in rows) if isinstance(v, (int, float))]
        return float(max(seen, default=-1.0))

    def _load(self, result: Any) -> tuple[Any, str | None]:
        """(what the checkpoint loads as, ``None``) or (``None``, why it cannot be resumed from)."""
        verify = getattr(self, "_verify", None)
        if verify is None:
            from trainables import verify_checkpoint as verify
        where = None
        try:
            with result.checkpoint.as_directory() as where:
                return verify(where), None
        except Exception as e:
            msg = (str(e).splitlines() or [type(e).__name__])[0]
            if where:  # name the checkpoint, not the temp copy it was read from
                msg = msg.replace(f"checkpoint {where}: ", "").replace(str(where), result.checkpoint.path)
            if msg.startswith("unreadable (") and msg.endswith(")"):  # load_checkpoint's wording
                msg = msg[len("unreadable ("):-1]
            return None, _shorten(msg, 200)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                self._repair(trial, "on resume")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._repair(trial, "trial restart")

    def _repair(self, trial: Any, when: str) -> None:
        """Pick the checkpoint the trial resumes from (see the class docstring) and say why in one
        line when it is not the one Ray would have used. On resume the stored history is what
        the trial has; a trial Ray restarts within this driver has its history in memory."""
        manager = trial.run_metadata.checkpoint_manager
        latest = manager._latest_checkpoint_result
        manager._checkpoint_results = [r for r in manager._checkpoint_results if not _gone(r)]
        resumed = when == "on resume"
        if latest is None and not resumed:
            return
        rows = stored_results(trial)
        known = [r for r in (latest, *manager._checkpoint_results) if r is not None]
        unlisted = self._unlisted_checkpoints(trial, {Path(r.checkpoint.path).name for r in known}, rows) if resumed else []
        if not known and not unlisted:
            return
        chosen, skipped, filled = self._choose([*known, *unlisted], rows, self._recorded(rows) if resumed else float("inf"))
        manager._checkpoint_results = [r for r in manager._checkpoint_results if not _gone(r)]  # the torn ones were moved
        if chosen is latest and not skipped:  # nothing newer on storage, nothing torn: as Ray left it
            return
        if filled:
            self._store_history(trial, rows, filled, chosen)
        if chosen is not None and all(chosen is not r for r in known):
            self._adopt(trial, manager, chosen)
        manager._latest_checkpoint_result = chosen
        if not skipped:  # a newer checkpoint than the snapshot's latest was found on storage
            skipped.append(f"{Path(latest.checkpoint.path).name} is not the newest on storage" if latest
                           else "none in the saved state")
        logger.warning("Trial %s: latest checkpoint %s (%s); resuming from %s.", trial.trial_id, "; ".join(skipped), when,
                       chosen.checkpoint.path if chosen else "scratch")

    def _choose(self, candidates: list[Any], rows: list[dict], recorded: float) -> tuple[Any, list[str], list[dict]]:
        """(the newest checkpoint that exists, loads, and whose evaluations are all recorded or
        carried in its own history; why each other one was skipped or set aside; the evaluations
        its own history adds to the stored one). Every candidate is read: a torn one older than
        the chosen one is set aside too, so no reader picks it later."""
        skipped: list[str] = []
        chosen, filled = None, []
        for r in sorted({id(r): r for r in candidates}.values(), key=self._progress, reverse=True):
            name = Path(r.checkpoint.path).name
            if _gone(r):
                skipped += [] if chosen else [f"{name} is gone"]
                continue
            loaded, bad = self._load(r)
            if bad is not None:
                skipped.append(f"{name} is unreadable ({bad})")
                self._set_aside(r)
            elif chosen is None:
                more = self._missing_evaluations(loaded, recorded, self._progress(r))
                if more is None:
                    skipped.append(f"{name} is beyond its stored results ({self._attr} {recorded:g})")
                else:
                    chosen, filled = r, more
        return chosen, skipped, filled

    def _progress(self, r: Any) -> float:
        return float(r.metrics.get(self._attr, 0))

    def _missing_evaluations(self, loaded: Any, recorded: float, progress: float) -> list[dict] | None:
        """The evaluations after ``recorded`` up to this checkpoint, from the history the checkpoint
        carries (``[]``: none missing; ``None``: some are missing and it carries no history that
        covers them). A checkpoint written just before the driver died is ahead of the stored
        ``result.json`` (Ray copies it to storage with the next snapshot) but holds every evaluation
        it was reported with: resuming from it redoes nothing and loses nothing."""
        if progress <= recorded:
            return []
        history = (getattr(loaded, "trainer", None) or {}).get("history") or []
        missing = [h for h in history if isinstance(h.get(self._attr), (int, float)) and recorded < h[self._attr] <= progress]
        return missing if missing and missing[-1][self._attr] == progress else None

    def _store_history(self, trial: Any, rows: list[dict], filled: list[dict], chosen: Any) -> None:
        """Append the evaluations the chosen checkpoint carries to the stored ``result.json``, in
        Ray's row format (Ray copies this file back when the trial starts, then appends to it)."""
        last = rows[-1] if rows else {"trial_id": trial.trial_id, "config": dict(trial.config or {})}
        index = _checkpoint_index(chosen.checkpoint.path)
        it, since, total = int(last.get("training_iteration") or 0), int(last.get("iterations_since_restore") or 0), \
            float(last.get("time_total_s") or 0.0)
        new = []
        for i, h in enumerate(filled, start=1):
            took = float(h.get("train_s") or 0.0) + float(h.get("eval_s") or 0.0)
            total += took
            new.append({**last, **h, "training_iteration": it + i, "iterations_since_restore": since + i, "time_this_iter_s": took,
                        "time_total_s": total, "timestamp": int(h.get("time_unix") or last.get("timestamp") or 0), "done": False,
                        "checkpoint_dir_name": f"checkpoint_{index - len(filled) + i:06d}" if index is not None else None})
        text = "".join(json.dumps(r) + "\n" for r in [*rows, *new])
        with trial.storage.storage_filesystem.open_output_stream(f"{trial.path}/result.json") as f:
            f.write(text.encode())
        if "training_iteration" not in chosen.metrics:  # a checkpoint the saved state never listed
            chosen.metrics = new[-1]

    def _unlisted_checkpoints(self, trial: Any, known: set[str], rows: list[dict]) -> list[Any]:
        """Checkpoints on storage that the restored snapshot does not list, with the metrics their
        ``result.json`` row recorded, else the metrics they carry (``lora_study.json``): Ray
        snapshots the experiment only every few checkpoints, so a driver killed in between leaves
        newer checkpoints (and deletes older ones) that the snapshot never saw."""
        import pyarrow.fs
        from ray.train import Checkpoint
        from ray.train._internal.session import _TrainingResult

        by_name = {r["checkpoint_dir_name"]: r for r in rows if r.get("checkpoint_dir_name")}
        fs = trial.storage.storage_filesystem
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(trial.path, allow_not_found=True))
        except Exception:  # unreadable dir: nothing to add
            return []
        out = []
        for i in infos:
            if i.type != pyarrow.fs.FileType.Directory or i.base_name in known or _checkpoint_index(i.base_name) is None:
                continue
            metrics = by_name.get(i.base_name) or _own_metrics(fs, f"{trial.path}/{i.base_name}")
            if metrics is not None:
                out.append(_TrainingResult(checkpoint=Checkpoint(f"{trial.path}/{i.base_name}", filesystem=fs), metrics=metrics))
        return out

    @staticmethod
    def _adopt(trial: Any, manager: Any, result: Any) -> None:
        """Book a checkpoint found on storage the way Ray books a reported one (kept in score
        order), without deleting anything, and number the trial's next checkpoint after it (Ray
        would write its next one over it). The repair only ever moves the resume point."""
        from ray.train._internal.checkpoint_manager import _insert_into_sorted_list

        score_attr = manager._checkpoint_config.checkpoint_score_attribute
        if score_attr is not None and score_attr in result.metrics:
            _insert_into_sorted_list(manager._checkpoint_results, result, key=manager._get_checkpoint_score)
        else:
            manager._checkpoint_results.append(result)
        index = _checkpoint_index(result.checkpoint.path)
        storage = getattr(trial, "storage", None)
        if index is not None and hasattr(storage, "current_checkpoint_index"):
            storage.current_checkpoint_index = max(storage.current_checkpoint_index, index)

    @staticmethod
    def _set_aside(result: Any) -> None:
        """Rename a torn checkpoint to a hidden sibling: kept for a post-mortem, never read."""
        fs, path = result.checkpoint.filesystem, result.checkpoint.path
        head, tail = path.rsplit("/", 1)
        try:
            fs.move(path, f"{head}/.torn-{tail}")
        except Exception as e:  # read-only storage: leave it, the record is dropped anyway
            logger.info("Could not set aside torn checkpoint %s: %s", path, e)


def _gone(r: Any) -> bool:
    from ray.train._internal.storage import _exists_at_fs_path

    return not _exists_at_fs_path(r.checkpoint.filesystem, r.checkpoint.path)


def _checkpoint_index(path: str) -> int | None:
    """Ray's number of a ``checkpoint_000012`` dir (``None``: not one of Ray's checkpoint dirs)."""
    m = re.fullmatch(r"checkpoint_(\d+)", Path(path).name)
    return int(m.group(1)) if m else None


def _own_metrics(fs: Any, path: str) -> dict | None:
    """The metrics a checkpoint was reported with, from its own ``lora_study.json`` (plain JSON)."""
    try:
        with fs.open_input_stream(f"{path}/lora_study.json") as f:
            metrics = json.loads(f.readall()).get("metrics")
    except Exception:  # no such file, torn, not ours: not a checkpoint to resume from
        return None
    return metrics if isinstance(metrics, dict) else None


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, marked with ``…``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:(") + "…"
