"""The data a trial saw, as MLflow dataset inputs (what ``mlflow.log_input`` logs).

Each trial run gets its ``train`` subset (``data.size`` of the train split, drawn as the trial draws
it), the ``validation`` split carved out by ``data.holdout_size`` and the ``dev`` split, each with its
source, digest, row count and schema, so MLflow's dataset view tells which trials saw the same rows.
Built once per distinct data config in the driver (the train split is read once, like the preflight).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, InputTag

from trainables import split_frames
from trainables.config import DataSection

__all__ = ["dataset_inputs", "CONTEXT_TAG"]

#: MLflow's tag for what a dataset was used for (shown beside it on the run page).
CONTEXT_TAG = "mlflow.data.context"


def _context(split: str, has_validation: bool) -> str:
    """``training``; ``validation`` for the split the study selects on (the held-out one, else
    dev); ``testing`` for dev when it is only reported beside it."""
    if split == "train":
        return "training"
    return "testing" if split == "dev" and has_validation else "validation"


def _source(data: DataSection, where: str, split: str) -> Any:
    """A Hugging Face source for a hub dataset, else the local file or directory (MLflow resolves
    a path to its local source; the warning that two registered schemes both take it is dropped)."""
    if where.startswith("hub:"):
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        return HuggingFaceDatasetSource(path=data.path, config_name=data.hub_config, split="validation" if split == "dev" else "train")
    return str(Path(where).resolve())


def _label(data: DataSection) -> str:
    """``embedded-sst2``, a hub id, or the file or directory name."""
    return data.path if "/" not in data.path or not Path(data.path).exists() else Path(data.path).name


def dataset_inputs(data: DataSection) -> list[DatasetInput]:
    """The dataset inputs of a trial with data config ``data`` (named ``<data>-<split>``)."""
    import mlflow.data

    where, frames = split_frames(data)
    inputs = []
    with warnings.catch_warnings():  # MLflow's hint about integer columns and missing values: not ours
        warnings.simplefilter("ignore")
        for split, df in frames.items():
            ds = mlflow.data.from_pandas(df, source=_source(data, where, split), targets=data.label_column, name=f"{_label(data)}-{split}")
            tag = InputTag(CONTEXT_TAG, _context(split, "validation" in frames))
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[tag]))
    return inputs
