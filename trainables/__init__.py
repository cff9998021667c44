"""One trial: data → model → loop. Runs with or without Ray.

This package's public surface is what is importable from ``trainables`` itself (``__all__``) and
the typed config in ``trainables.config``; the study, the dashboards and the deployed model reach
it only through these names (an import-linter contract in ``pyproject.toml`` keeps it so):

* the trial: ``train`` (the Ray Tune entry point), ``run_trial`` (the same loop without Ray),
  ``preflight`` (every trial a study may run can start, checked before Ray), ``verify_checkpoint``;
* trained models: ``load_classifier``/``Classifier`` and the export format (``write_adapter``,
  ``finish_export`` …), so every loader answers exactly like the trial's own evaluation;
* data files: ``read_table``, ``load_splits``, ``load_test`` (the held-back test file), ``find_split``,
  ``LABELLED_FORMATS``, ``DataError``, ``split_frames`` (the rows a trial trains and is evaluated on);
* one score and one estimate for a study's end: ``score_test`` (a model on its test file, once),
  ``memory_estimate`` (what a trial of a config needs, checked before a refit starts).

Inside: ``config`` (typed, validated once), ``data`` (files → tokenized splits → batches),
``model`` (base model + PEFT LoRA), ``pooling`` (mean pooling), ``dropout`` (fast CPU dropout),
``loop`` (training steps, evaluation, checkpoints), ``inference``, ``export``, ``checks``,
``hub``, ``cli``. Heavy libraries load when a name that needs them is first used, so
``import trainables`` stays cheap (a CLI's ``--help`` answers before torch loads).
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError, TrialConfig

__all__ = [
    "ConfigError",
    "TrialConfig",
    "train",
    "run_trial",
    "preflight",
    "verify_checkpoint",
    "load_classifier",
    "Classifier",
    "score_test",
    "read_meta",
    "model_dir",
    "META_FILE",
    "EMBEDDED_HUB_ID",
    "portable_base_model",
    "check_checkpoint",
    "export_meta",
    "write_adapter",
    "finish_export",
    "REMOTE_MODULE",
    "POOLER",
    "read_table",
    "load_splits",
    "split_frames",
    "DataError",
    "find_split",
    "LABELLED_FORMATS",
    "load_test",
    "memory_estimate",
]

#: public name → (module, attribute), imported on first use
_LAZY: dict[str, tuple[str, str]] = {
    "train": ("loop", "train"),
    "run_trial": ("loop", "run_trial"),
    "verify_checkpoint": ("loop", "load_checkpoint"),
    "preflight": ("checks", "preflight"),
    "load_classifier": ("inference", "load_classifier"),
    "Classifier": ("inference", "Classifier"),
    "score_test": ("inference", "score_test"),
    "read_meta": ("inference", "read_meta"),
    "model_dir": ("inference", "model_dir"),
    "META_FILE": ("inference", "META_FILE"),
    "EMBEDDED_HUB_ID": ("model", "EMBEDDED_HUB_ID"),
    "portable_base_model": ("export", "portable_base_model"),
    "check_checkpoint": ("export", "check_checkpoint"),
    "export_meta": ("export", "export_meta"),
    "write_adapter": ("export", "write_adapter"),
    "finish_export": ("export", "finish_export"),
    "REMOTE_MODULE": ("export", "REMOTE_MODULE"),
    "POOLER": ("export", "POOLER"),
    "read_table": ("data", "read_table"),
    "load_splits": ("data", "load_splits"),
    "split_frames": ("data", "split_frames"),
    "load_test": ("data", "load_test"),
    "memory_estimate": ("checks", "memory_estimate"),
    "DataError": ("data", "DataError"),
    "find_split": ("data", "find_split"),
    "LABELLED_FORMATS": ("data", "LABELLED_FORMATS"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
