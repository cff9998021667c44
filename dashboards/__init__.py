"""Dashboards for lora-study: a self-contained HTML report of a finished or running study.

    python -m dashboards.report --study NAME [--storage PATH] [--tracking-uri URI] [--out DIR]

Everything here only *reads* what a study stored (``study.json``, ``summary.json``, Ray's
experiment directory, the Optuna journal beside ``study.json``, MLflow), through the same readers
the runner's own summary and export use (``study.storage``, ``study.tracking.summary``,
``study.search.journal.read_optuna_journal``), and never unpickles anything from a study directory.
Nothing imports the runner's live objects, so a report can be built while the study runs, after
it crashed, or on another machine that sees the storage.

Modules: ``data`` (load a :class:`~dashboards.data.StudyData`), ``analysis`` (pure numbers:
ASHA rungs, best per data size, Pareto front, importances), ``best_trial`` (confusion matrix of
the best checkpoint), ``plots`` (one function per figure), ``html`` (the page), ``report`` (CLI).
"""

__all__ = ["analysis", "best_trial", "data", "html", "plots", "report"]
