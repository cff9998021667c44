"""The best trial's confusion matrix, predicted from its stored checkpoint.

Why re-predict: the trials report accuracy/F1/loss only, not predictions. The checkpoint the
study picked is a PEFT adapter dir with ``lora_study.json`` (config, label names); it is exported
with ``study.deploy.export.export_checkpoint`` and loaded with ``trainables.load_classifier`` —
the same path ``study.predict`` and the served model take — and run on the study's dev split
(``trainables.data.load_splits`` with the trial's own data config, so ``dev_size`` and the label
names match what the trial was scored on). The recomputed accuracy is shown beside the recorded
one as a check that the right checkpoint was loaded.

Predicting the whole dev split is the slow part of a report (≈15 s for MiniLM on SST-2's 872
dev sentences on 2 CPU cores), so the result is kept as ``confusion_matrix.json`` beside the
report and reused while the checkpoint's adapter file is unchanged: re-running the report on a
running study only re-predicts when the best trial changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Confusion", "confusion_for_checkpoint", "cached_confusion"]


@dataclass
class Confusion:
    matrix: np.ndarray  # [true, predicted] counts
    label_names: list[str]
    n: int
    accuracy: float
    checkpoint: str

    def per_class(self) -> list[dict[str, float]]:
        """Precision, recall, F1 and support per label (rows of the matrix are the truth)."""
        out = []
        for i, name in enumerate(self.label_names):
            tp = float(self.matrix[i, i])
            pred, true = float(self.matrix[:, i].sum()), float(self.matrix[i, :].sum())
            p = tp / pred if pred else 0.0
            r = tp / true if true else 0.0
            out.append({"label": name, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": int(true)})
        return out


def confusion_for_checkpoint(checkpoint: str, threads: int | None = None) -> Confusion:
    """Predict the dev split with the adapter in ``checkpoint`` and count (true, predicted)."""
    import torch

    from study.deploy.export import export_checkpoint
    from trainables import META_FILE, load_classifier, load_splits
    from trainables.config import DataSection

    before = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, min(4, os.cpu_count() or 1)))
    try:
        with tempfile.TemporaryDirectory(prefix="lora-study-report-") as tmp:
            out = export_checkpoint(checkpoint, Path(tmp) / "adapter")
            meta = json.loads((out / META_FILE).read_text())
            clf = load_classifier(out)
            raw = load_splits(DataSection(**meta["config"]["data"]))
            logits = clf.logits(raw.dev_texts, batch_size=int(meta["config"].get("train", {}).get("eval_batch_size", 128)))
    finally:
        torch.set_num_threads(before)  # a library call must not change its caller's threading
    pred = logits.argmax(-1)
    k = len(clf.label_names)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(raw.dev_labels, dtype=np.int64), pred), 1)
    n = int(m.sum())
    return Confusion(m, list(clf.label_names), n, float(np.trace(m) / n) if n else float("nan"), checkpoint)


def _identity(checkpoint: str) -> dict | None:
    """What makes a cached matrix valid: the checkpoint path and its adapter file's size/mtime."""
    if "://" in checkpoint:
        return None
    f = Path(checkpoint) / "adapter_model.safetensors"
    if not f.is_file():
        return None
    st = f.stat()
    return {"checkpoint": str(checkpoint), "adapter_size": st.st_size, "adapter_mtime_ns": st.st_mtime_ns}


def cached_confusion(checkpoint: str, cache: Path | None) -> tuple[Confusion, bool]:
    """:func:`confusion_for_checkpoint`, reusing ``cache`` (a JSON file) when it is for the same
    checkpoint; writes the cache. Returns (confusion, whether it came from the cache)."""
    ident = _identity(checkpoint)
    if cache is not None and ident is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("identity") == ident:
                m = np.asarray(saved["matrix"], dtype=np.int64)
                return Confusion(m, list(saved["label_names"]), int(m.sum()), float(saved["accuracy"]), checkpoint), True
        except (ValueError, KeyError, TypeError):
            pass  # unreadable cache: predict again
    cm = confusion_for_checkpoint(checkpoint)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"identity": ident, "matrix": cm.matrix.tolist(), "label_names": cm.label_names,
                                     "accuracy": cm.accuracy, "n": cm.n, "per_class": cm.per_class()}, indent=1))
    return cm, False
