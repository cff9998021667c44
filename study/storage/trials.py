"""Ray's stored results, read as plain JSON.

Why not Ray's own readers: ``ExperimentAnalysis`` ``cloudpickle.loads`` the blobs embedded in
``experiment_state-*.json``, i.e. runs code planted in a study directory. Export, reports and
summaries read a study through :func:`read_trials`, so only ``--resume`` ever unpickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

from .studies import is_remote

__all__ = ["StoredTrial", "read_trials", "trial_fs", "newest_experiment_state", "read_json_lines", "stored_results"]


@dataclass
class StoredTrial:
    """One trial of a stored Ray experiment, from plain JSON only."""

    trial_id: str
    status: str
    config: dict[str, Any]
    path: str  # the trial dir (local path or URI)
    last_result: dict[str, Any]
    num_failures: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    """Every row of the trial's ``result.json`` (a torn last line is skipped)."""

    def checkpoints(self, fs: Any, fs_path: str) -> list[tuple[str, dict[str, Any]]]:
        """(checkpoint path, the result it was reported with) for each checkpoint still on disk."""
        out = []
        for r in self.results:
            name = r.get("checkpoint_dir_name")
            if name and fs.get_file_info(f"{fs_path}/{name}").type.name == "Directory":
                out.append((f"{self.path.rstrip('/')}/{name}", r))
        return out


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if is_remote(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def _read_text(fs: Any, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.readall().decode("utf-8", "replace")
    except (OSError, FileNotFoundError):
        return None


def read_json_lines(text: str | None) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines text; a torn (half-written) line is skipped, not an error."""
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def newest_experiment_state(fs: Any, experiment: str) -> str | None:
    """Path of the newest ``experiment_state-<timestamp>.json`` (Ray's own choice: by name)."""
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    return f"{experiment}/{names[-1]}" if names else None


def read_trials(experiment: str, with_results: bool = True) -> list[StoredTrial]:
    """Every trial of Ray experiment ``experiment`` (local dir or URI) with its results, read as
    plain JSON: the cloudpickle blobs Ray embeds in ``experiment_state-*.json`` (storage context,
    checkpoint manager, …) stay inert strings, so a planted payload never runs. A trial's
    checkpoints are the ``checkpoint_dir_name`` of its results that still exist. Raises
    ``ConfigError`` when there is no readable experiment state."""
    fs, root = _fs(experiment)
    state_path = newest_experiment_state(fs, root)
    if state_path is None:
        raise ConfigError(f"no Ray experiment state (experiment_state-*.json) at {experiment}")
    try:
        state = json.loads(_read_text(fs, state_path) or "")
        trial_data = state["trial_data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{state_path}: unreadable Ray experiment state ({type(e).__name__})") from None
    trials = []
    for trial_json, meta_json in trial_data:
        t, meta = json.loads(trial_json), json.loads(meta_json)
        dirname = t.get("relative_logdir") or t.get("custom_dirname") or f"trial_{t['trial_id']}"
        if "/" in dirname or dirname in ("", ".", ".."):
            raise ConfigError(f"{state_path}: trial {t.get('trial_id')!r} names directory {dirname!r} outside the experiment")
        last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
        config = t.get("config") if isinstance(t.get("config"), dict) else {}
        path = f"{experiment.rstrip('/')}/{dirname}"
        trial = StoredTrial(str(t["trial_id"]), str(t.get("status")), config, path, last, int(meta.get("num_failures") or 0))
        if with_results:
            trial.results = read_json_lines(_read_text(fs, f"{root}/{dirname}/result.json"))
        trials.append(trial)
    return trials


def trial_fs(trial: StoredTrial) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a stored trial's directory."""
    return _fs(trial.path)


def stored_results(trial: Any) -> list[dict[str, Any]]:
    """A live Ray trial's result rows as stored (``trial.path`` on its storage filesystem), the
    history a resumed trial continues: after a driver crash its staging copy is gone. ``[]``: no
    ``result.json`` yet (a torn last line is skipped)."""
    try:
        with trial.storage.storage_filesystem.open_input_stream(f"{trial.path}/result.json") as f:
            return read_json_lines(f.readall().decode("utf-8", "replace"))
    except Exception:  # a trial that never reported, or no storage (a stand-in trial)
        return []
