"""The MLflow tracking store: short HTTP timeouts, and one request before any Ray work starts.

Why: MLflow's own HTTP retries default to 7 with exponential backoff (minutes of blocking per
call), and a store that cannot be used should be one line before the study spends compute, not a
traceback from its first MLflow call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from trainables.config import ConfigError

from ..storage.studies import file_lock

__all__ = ["configure_mlflow_http", "tracking_problem", "check_tracking", "client"]


def configure_mlflow_http(timeout_s: int = 5, max_retries: int = 1) -> None:
    """Short MLflow HTTP timeout/retries (setdefault: explicit env vars win).

    Our own buffer retries failed calls, so MLflow's in-client retries only
    need to absorb a single blip.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # "🏃 View run … at: URL" on stdout for every run a client ends: the study prints its own links
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def tracking_problem(tracking_uri: str, exc: BaseException) -> str:
    """One line for an MLflow store that cannot be used: unauthorised (401), forbidden (403),
    or unreachable, with what to do about it."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    code = str(getattr(exc, "error_code", "") or "")
    if code == "UNAUTHENTICATED" or "error code 401" in msg:
        return (f"MLflow at {tracking_uri} answered 401 Unauthorized: set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for it, or pass another --tracking-uri")
    if code == "PERMISSION_DENIED" or "error code 403" in msg:
        return f"MLflow at {tracking_uri} answered 403 Forbidden: your MLflow user may not create experiments and runs there"
    if len(msg) > 200:
        msg = msg[:199] + "…"
    return f"MLflow at {tracking_uri} is unreachable ({type(exc).__name__}: {msg}); start it, or pass another --tracking-uri"


def check_tracking(tracking_uri: str) -> None:
    """One request to the tracking store before any Ray work starts; a problem is a one-line
    ``ConfigError`` (:func:`tracking_problem`) instead of a traceback from the first MLflow call.

    A ``sqlite:///`` store is created (or migrated) here, under an exclusive lock on ``<db>.lock``
    beside it: MLflow's first use of a fresh database runs its schema migrations, and two studies
    starting at once on one store both ran them (the loser crashed with ``duplicate column name:
    step``). Once migrated, concurrent use is sqlite's own business."""
    configure_mlflow_http()
    # urllib3: one "Retrying …" warning per attempt (the line below says it); MLflow's sqlite
    # migrations: INFO lines on MLflow's own stderr handler, before the study log exists
    quiet = [logging.getLogger(n) for n in ("urllib3.connectionpool", "mlflow.store.db.utils", "alembic")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///"):])
            lock = file_lock(db.with_name(db.name + ".lock"))
            try:
                MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
            finally:
                lock.close()
        else:
            client(tracking_uri).search_experiments(max_results=1)
    except Exception as e:
        raise ConfigError(tracking_problem(tracking_uri, e)) from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` with the short HTTP defaults."""
    configure_mlflow_http()
    return MlflowClient(tracking_uri=tracking_uri)
