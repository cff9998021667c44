"""Where a study lives and what it left behind: the study's stored results.

Layout (local default): ``./studies/<name>/`` holds Ray's experiment (trial dirs, checkpoints,
``tuner.pkl``) plus our own files: ``study.json`` (the validated config, storage, tracking URI,
MLflow parent run id) and ``summary.json`` (written at the end). With ``--storage s3://…`` or a
shared mount Ray's part goes there and ours stays in ``./studies/<name>/``.

Export, the dashboards and ``--resume`` all start from ``study.json``; nothing else reaches into
the runner's memory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

__all__ = ["StudyPaths", "study_paths", "write_json", "read_study", "list_studies", "LOCAL_ROOT", "is_remote"]

LOCAL_ROOT = Path(os.environ.get("LORA_STUDY_HOME", "./studies"))


def is_remote(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class StudyPaths:
    name: str
    local: Path  # study.json, summary.json, exports
    storage: str  # Ray storage root (local dir or URI)

    @property
    def experiment(self) -> str:
        """Ray's experiment directory (what ``Tuner.restore`` takes)."""
        return f"{self.storage.rstrip('/')}/{self.name}" if is_remote(self.storage) else str(Path(self.storage) / self.name)

    @property
    def study_json(self) -> Path:
        return self.local / "study.json"

    @property
    def summary_json(self) -> Path:
        return self.local / "summary.json"


def study_paths(name: str, storage: str | None = None) -> StudyPaths:
    """Paths of study ``name``; local storage holds both parts in one directory."""
    storage = storage or str(LOCAL_ROOT)
    if not is_remote(storage):
        storage = str(Path(storage).expanduser().resolve())
        return StudyPaths(name, Path(storage) / name, storage)
    return StudyPaths(name, (LOCAL_ROOT / name).resolve(), storage)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a crash never leaves half a study.json behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def list_studies(storage: str | None = None) -> list[str]:
    root = Path(storage or LOCAL_ROOT)
    if is_remote(str(root)) or not root.is_dir():
        root = LOCAL_ROOT
    return sorted(p.parent.name for p in root.glob("*/study.json")) if root.is_dir() else []


def read_study(name: str, storage: str | None = None) -> tuple[StudyPaths, dict[str, Any]]:
    """``study.json`` of an existing study, or a one-line error listing the known ones."""
    paths = study_paths(name, storage)
    if not paths.study_json.is_file():
        # a study started with --storage elsewhere keeps its study.json under ./studies/<name>
        alt = (LOCAL_ROOT / name / "study.json").resolve()
        if storage and alt.is_file():
            paths = StudyPaths(name, alt.parent, storage)
        else:
            known = list_studies(storage)
            raise ConfigError(
                f"no study named {name!r} under {paths.local.parent}"
                + (f" (known: {', '.join(known)})" if known else " (no studies there yet)")
            )
    try:
        record = json.loads(paths.study_json.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{paths.study_json}: corrupt ({e})") from None
    return StudyPaths(name, paths.local, record.get("storage", paths.storage)), record


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
