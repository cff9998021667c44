"""Load everything the report shows from a study's stored results into one :class:`StudyData`.

Why one loader: every figure needs the same few things (trial rows with their evaluation
histories, the study config, wall-clock timestamps, the Optuna study) and reading Ray's
experiment directory is the slow part, so it is read once here and the plots stay pure functions
of this object. The readers are the project's own (``study.storage.studies.read_study`` /
``study.storage.trials.read_trials``, ``study.tracking.summary.trial_rows`` / ``summarize``): the report counts trials and
picks the best one exactly as ``summary.json`` does, and it never touches the runner's live
objects, so it works on a finished study, a running one (no ``summary.json`` yet) and an
interrupted one alike.

A report is read-only and must not run code from a study directory: nothing here unpickles.
Ray's ``ExperimentAnalysis`` would (it ``cloudpickle.loads`` blobs embedded in
``experiment_state-*.json``) and so would the searcher's ``searcher-state-*.pkl``; the trials are
read as plain JSON (``study.storage.trials.read_trials``) and the Optuna study from the journal the runner
writes beside ``study.json`` (``optuna-journal.log``, JSON lines), else rebuilt from the trials.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from study.config import StudyConfig
from study.storage.studies import StudyPaths, is_remote, read_study
from study.storage.trials import read_trials
from study.tracking.trust import trusted_tracking_uri
from trainables.config import ConfigError

__all__ = ["StudyData", "Evaluation", "load_study_data", "mlflow_parent_status", "mlflow_reachable_store", "one_line", "quiet_logger", "STATES"]

log = logging.getLogger(__name__)

#: Trial states as ``study.tracking.summary.trial_state`` defines them, in display order.
STATES = ("completed", "pruned", "failed", "unfinished")


@dataclass(frozen=True)
class Evaluation:
    """One reported dev evaluation placed on the study's wall clock (seconds since start)."""

    trial_id: str
    t: float
    accuracy: float | None
    samples_seen: int | None
    time_total_s: float | None


@dataclass
class StudyData:
    """A study's stored results, read once; see :func:`load_study_data`."""

    name: str
    paths: StudyPaths
    record: dict[str, Any]
    cfg: StudyConfig
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    """``summary.json`` when the study finished, else the same dict computed now by ``summarize``."""
    finished: bool
    """``summary.json`` exists: the runner got to the end of the study."""
    evaluations: list[Evaluation] = field(default_factory=list)
    trial_spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Trial id -> (first, last) second on the study clock (start estimated from ``time_total_s``)."""
    start_time: float = 0.0
    """Unix time the study (first) started: ``study.json`` ``started[0]``, else the first trial."""
    data_as_of: float = 0.0
    """Unix time of the newest stored result/experiment snapshot (what a running study's report shows)."""
    optuna_study: Any = None
    optuna_source: str = ""
    """Where ``optuna_study`` came from ("the study's Optuna journal" or "rebuilt from Ray's trials")."""
    tracking_uri: str | None = None
    parent_status: str | None = None
    """MLflow status of the study's parent run, when MLflow was reachable."""
    mlflow_error: str | None = None
    """Why MLflow could not be read (then the report is not logged there either)."""

    # ------------------------------------------------------------------ derived values
    @property
    def metric(self) -> str:
        return self.cfg.study.metric

    @property
    def mode(self) -> str:
        return self.cfg.study.mode

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.summary["trials"])

    @property
    def best(self) -> dict[str, Any] | None:
        return self.summary.get("best")

    @property
    def n_train(self) -> int:
        return int(self.record.get("n_train") or 0)

    @property
    def searched(self) -> list[str]:
        return sorted(self.cfg.search)

    @property
    def parent_run_id(self) -> str | None:
        return self.record.get("parent_run_id")

    @property
    def not_started(self) -> int:
        """Trials the study will still create (0 once it finished or ran out of time budget)."""
        return 0 if self.finished else max(0, self.cfg.study.num_samples - self.counts["total"])

    @property
    def running(self) -> bool:
        """No ``summary.json`` yet, or trials left unfinished: the data is partial."""
        return not self.finished or self.counts["unfinished"] > 0

    @property
    def interrupted(self) -> bool:
        """MLflow says the driver stopped (parent run KILLED/FAILED) without finishing the study."""
        return self.running and self.parent_status in ("KILLED", "FAILED")

    @property
    def wall_s(self) -> float:
        """Study wall time; for a running study the time so far (stored sessions + this one)."""
        if self.finished:
            return float(self.summary.get("wall_s") or 0.0)
        started = self.record.get("started") or []
        stored = float(self.record.get("wall_s") or 0.0)
        last = _parse_iso(started[-1]) if started else None
        if last is None or self.interrupted:
            return stored
        return stored + max(0.0, self.data_as_of - last)

    @property
    def compute_s(self) -> float:
        """Sum of the trials' ``time_total_s``: the compute the study used (CPU/GPU slots × time)."""
        return float(sum(r.get("time_total_s") or 0.0 for r in self.rows))

    def row(self, trial_id: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["trial_id"] == trial_id), None)


def _parse_iso(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _timeline(experiment: str, metric: str) -> tuple[dict[str, list[dict[str, float]]], float]:
    """Per trial, its results' wall-clock time, metric and fidelity, from Ray's stored results.

    Ray stores ``timestamp`` in whole seconds, too coarse for seconds-long trials, but also the
    float ``time_total_s``. Within one run of a trial (``iterations_since_restore`` counting up
    from 1) ``timestamp - time_total_s`` is the trial's start up to the rounding; its maximum is
    the tightest estimate, and ``start + time_total_s`` places every result precisely.
    """
    out: dict[str, list[dict[str, float]]] = {}
    newest = 0.0
    for trial in read_trials(experiment):
        recs = [r for r in trial.results if _num(r.get("timestamp")) is not None]
        if not recs:
            continue
        runs: list[list[dict[str, Any]]] = []
        for rec in recs:
            if not runs or int(rec.get("iterations_since_restore") or 1) <= 1:
                runs.append([])
            runs[-1].append(rec)
        events = []
        for run in runs:
            anchor = max(float(r["timestamp"]) - float(r.get("time_total_s") or 0.0) for r in run)
            for r in run:
                tts = float(r.get("time_total_s") or 0.0)
                events.append({"at": anchor + tts, "start": anchor, "metric": _num(r.get(metric)),
                               "samples_seen": _num(r.get("samples_seen")), "time_total_s": tts})
            newest = max(newest, float(run[-1]["timestamp"]))
        out[trial.trial_id] = events
    return out, newest


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _optuna_study(paths: StudyPaths, cfg: StudyConfig, rows: list[dict[str, Any]]) -> tuple[Any, str]:
    """The Optuna study the searcher kept (PRUNED trials marked as such), from the journal the
    runner writes (plain JSON lines, never a pickle); rebuilt from Ray's trials when there is none
    (random search, a study from before the journal existed, an unreadable journal)."""
    import optuna  # noqa: F401  (first: importing it sets its logger to INFO)

    with quiet_logger("optuna"):  # "A new study created in memory …" (INFO, on stderr) says nothing to a report's reader
        if paths.journal.is_file():
            try:
                from study.search.journal import read_optuna_journal

                return read_optuna_journal(paths.journal), "the study's Optuna journal (the study TPE used)"
            except Exception as e:  # a torn or foreign file: rebuild
                log.info("cannot read the Optuna journal %s (%s); rebuilding from trials", paths.journal, e)
        return _rebuild_optuna_study(cfg, rows), "rebuilt from Ray's trials (no Optuna journal)"


def _rebuild_optuna_study(cfg: StudyConfig, rows: list[dict[str, Any]]) -> Any:
    """Same mapping as the searcher: completed -> COMPLETE with the last value, pruned -> PRUNED."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    dists = {}
    for key, d in cfg.search.items():
        v = getattr(d, d.kind)
        dists[key] = (CategoricalDistribution(list(v)) if d.kind == "choice" else
                      FloatDistribution(v[0], v[1], log=d.kind == "loguniform") if d.kind != "randint" else
                      IntDistribution(int(v[0]), int(v[1]) - 1))
    study = optuna.create_study(direction="maximize" if cfg.study.mode == "max" else "minimize")
    metric = cfg.study.metric
    for r in rows:
        params = {k: r["params"].get(k) for k in dists}
        if any(not dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in params.items() if v is not None) \
                or any(v is None for v in params.values()):
            continue
        last = r["last"].get(metric)
        inter = {int(h["samples_seen"]): float(h[metric]) for h in r["history"] if h.get("samples_seen") is not None and h.get(metric) is not None}
        state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}.get(r["state"], TrialState.RUNNING)
        if state == TrialState.COMPLETE and last is None:
            state = TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(
            state=state, params=params, distributions=dists, value=last if state == TrialState.COMPLETE else None,
            intermediate_values=inter, user_attrs={"ray_trial_id": r["trial_id"]}))
    return study


def mlflow_parent_status(tracking_uri: str | None, run_id: str | None) -> tuple[str | None, str | None]:
    """(status of the study's parent run: RUNNING/FINISHED/KILLED/FAILED, error) — one of them
    ``None``, or both when there is nothing to ask.

    A ``sqlite:///`` URI whose file does not exist is not opened: MLflow would create an empty
    store there."""
    if not tracking_uri or not run_id:
        return None, None
    if not mlflow_reachable_store(tracking_uri):
        return None, f"no store at {tracking_uri}"
    try:
        from mlflow import MlflowClient

        from study.tracking.server import configure_mlflow_http

        configure_mlflow_http()
        with quiet_logger("urllib3"):
            return MlflowClient(tracking_uri).get_run(run_id).info.status, None
    except Exception as e:  # the report never depends on MLflow
        return None, one_line(e)


def one_line(e: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters (MLflow's are long)."""
    msg = str(e).splitlines()[0] if str(e) else ""
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class quiet_logger:
    """Silence a chatty logger (urllib3's per-retry warnings, Optuna's INFO) for the duration of a block."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


def mlflow_reachable_store(tracking_uri: str) -> bool:
    """False for a local store that does not exist (sqlite file / file: dir); True otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).is_file()
    if tracking_uri.startswith("file:"):
        from urllib.parse import urlparse

        return Path(urlparse(tracking_uri).path).exists()
    if "://" not in tracking_uri:  # a bare path is a file store
        return Path(tracking_uri).exists()
    return True


def load_study_data(name: str, storage: str | None = None, tracking_uri: str | None = None,
                    read_mlflow: bool = True) -> StudyData:
    """Read study ``name`` from its storage. Raises ``ConfigError`` (one line) when it cannot."""
    paths, record = read_study(name, storage)
    cfg = StudyConfig.from_record(record, paths.study_json)
    from study.tracking.summary import summarize, trial_rows

    try:
        rows = trial_rows(paths.experiment, cfg.study.metric, cfg.study.mode, sorted(cfg.search))
    except Exception as e:
        raise ConfigError(f"study {name!r}: cannot read its trials at {paths.experiment} ({type(e).__name__}: {e})") from None
    finished = paths.summary_json.is_file()
    if finished:
        try:
            summary = json.loads(paths.summary_json.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{paths.summary_json}: corrupt ({e})") from None
    else:
        summary = summarize(paths, record)
    try:
        timeline, newest = _timeline(paths.experiment, cfg.study.metric)
    except Exception as e:  # progress plot only; the rest of the report stands
        log.warning("no result timestamps in %s (%s)", paths.experiment, e)
        timeline, newest = {}, 0.0

    starts = [ev["start"] for evs in timeline.values() for ev in evs]
    started = record.get("started") or []
    start_time = _parse_iso(started[0]) if started else None
    if start_time is None or (starts and min(starts) < start_time - 60):
        start_time = min(starts) if starts else time.time()
    evaluations, spans = [], {}
    for tid, evs in timeline.items():
        for ev in evs:
            evaluations.append(Evaluation(tid, ev["at"] - start_time, ev["metric"],
                                          int(ev["samples_seen"]) if ev["samples_seen"] is not None else None, ev["time_total_s"]))
        spans[tid] = (min(ev["start"] for ev in evs) - start_time, max(ev["at"] for ev in evs) - start_time)
    evaluations.sort(key=lambda e: e.t)

    snapshots = [] if is_remote(paths.experiment) else list(Path(paths.experiment).glob("experiment_state-*.json"))
    data_as_of = max([newest] + [p.stat().st_mtime for p in snapshots] + ([paths.summary_json.stat().st_mtime] if finished else []))
    optuna_study, source = _optuna_study(paths, cfg, rows)
    try:
        uri, uri_error = trusted_tracking_uri(name, record.get("tracking_uri"), tracking_uri), None
    except ConfigError as e:  # a study.json must not pick where the user's credentials go
        uri, uri_error = None, str(e)
    data = StudyData(name=name, paths=paths, record=record, cfg=cfg, rows=rows, summary=summary, finished=finished,
                     evaluations=evaluations, trial_spans=spans, start_time=start_time, data_as_of=data_as_of or time.time(),
                     optuna_study=optuna_study, optuna_source=source, tracking_uri=uri)
    if read_mlflow:
        data.parent_status, data.mlflow_error = (None, uri_error) if uri_error else mlflow_parent_status(uri, record.get("parent_run_id"))
    return data
