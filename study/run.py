"""``python -m study.run``: one command runs a whole LoRA hyperparameter study.

Config → checks (before Ray starts) → space → Tuner (Optuna TPE + ASHA, or their fallbacks)
→ MLflow tracking → summary and the best adapter logged and registered.

    python -m study.run --config study/configs/sst2-quick.yaml
    python -m study.run --name NAME --resume    # only state your key signed; --trust: docs/trust.md
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.fs

from trainables import ConfigError

from .config import StudyConfig, flat_params, load_study_config
from .console.ctrl_c import CtrlC
from .console.logs import LOG_NAME, console_logging, log_to_file, stderr_to_log
from .refit.prepare import add_refit, check_fits, widest_trial
from .refit.runner import STAGES
from .refit.ship import refit_and_register, ship
from .storage.resumable import check_key, check_state, resume_storage, sign_state
from .storage.studies import LOCAL_ROOT, StudyPaths, check_not_running, is_remote, lock_study, now_iso, read_study, study_paths, write_json
from .tracking.trust import is_local_tracking_uri, trusted_tracking_uri

__all__ = ["main", "build_parser", "prepare", "Prepared", "EXIT_OK", "EXIT_FAULT", "EXIT_INPUT", "EXIT_TRACKING", "EXIT_INTERRUPTED"]

#: Exit codes: finished; stopped by a fault (disk full) with its state intact, resumable; bad input
#: (nothing started); finished, but MLflow did not get everything (``--resume`` delivers it);
#: interrupted (Ctrl-C or unfinished trials), resumable.
EXIT_OK, EXIT_FAULT, EXIT_INPUT, EXIT_TRACKING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("study.run")


def build_parser() -> argparse.ArgumentParser:
    from .search.registry import DEFAULT_SEARCHER, SEARCHERS

    searchers = "\n".join(f"  {n}{' (default)' if n == DEFAULT_SEARCHER else ''}: {e.summary}" for n, e in SEARCHERS.items())
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Run (or resume) a LoRA hyperparameter study: Ray Tune + Optuna TPE + ASHA, tracked in MLflow.",
        epilog=f"searchers (--set study.searcher=NAME):\n{searchers}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="study YAML (e.g. study/configs/sst2-quick.yaml); not needed with --resume")
    p.add_argument("--name", help="study name (default: the config's `name`, else file stem + timestamp)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' (a `ray start` cluster on this node) or 'ray://host:10001'; default: a local Ray on this machine")
    p.add_argument("--num-samples", type=int, help="trials to run in total (study.num_samples)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (study.max_concurrent)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial, also its torch threads (resources.cpus_per_trial)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed e.g. 0.25 (resources.gpus_per_trial)")
    p.add_argument("--storage", help="Ray storage: local dir, shared mount or s3://… — multi-node clusters need shared storage (storage.path)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: sqlite under the storage dir)")
    p.add_argument("--time-budget-s", type=float, help="stop the study after this many seconds (study.time_budget_s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted study --name from its storage")
    p.add_argument("--trust", action="store_true", help="with --resume: unpickle the study's Ray state although your key did not sign it "
                   "(a study copied from another machine or user, or saved before signing); see docs/trust.md")
    p.add_argument("--refit", action="store_const", const=True, default=None,
                   help="after the search, train the pick again on all the data and ship it if it is better on validation "
                        "(refit.enabled); with --resume, adds a refit to a finished study")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key, e.g. --set data.path=reviews.csv --set search.lora.r.choice=[4,8]")
    return p


_FLAG_KEYS = {
    "num_samples": "study.num_samples",
    "max_concurrent": "study.max_concurrent",
    "cpus_per_trial": "resources.cpus_per_trial",
    "gpus_per_trial": "resources.gpus_per_trial",
    "storage": "storage.path",
    "tracking_uri": "mlflow.tracking_uri",
    "time_budget_s": "study.time_budget_s",
    "refit": "refit.enabled",
}


class Prepared:
    """Everything validated and resolved in the driver; nothing has touched Ray yet. Holds the
    study's lock (``lock``) for the rest of the driver's life."""

    def __init__(self, cfg: StudyConfig, paths: StudyPaths, resume: bool, n_train: int, record: dict[str, Any],
                 lock: Any = None):
        self.cfg, self.paths, self.resume, self.n_train, self.record, self.lock = cfg, paths, resume, n_train, record, lock
        # what execute() has started so far (so that a Ctrl-C at any point can close it)
        self.parent: str | None = None
        self.started_ray, self.t0, self.log_path = False, None, None
        self.progress_before: dict[str, tuple[Any, Any]] = {}  # each stored trial's progress when fit started

    @property
    def tracking_uri(self) -> str:
        return self.record["tracking_uri"]


def _absolutize(cfg: StudyConfig) -> StudyConfig:
    """Trials run in other working directories (and on other nodes): make local paths absolute.
    ``embedded-sst2`` and hub ids stay names (``study.json`` records them; each machine resolves them)."""
    data, model = cfg.data, cfg.model
    if os.path.exists(os.path.expanduser(data.path)):
        data = data.model_copy(update={"path": str(Path(data.path).expanduser().resolve())})
    if data.test_path and os.path.exists(os.path.expanduser(data.test_path)):
        data = data.model_copy(update={"test_path": str(Path(data.test_path).expanduser().resolve())})
    if os.path.isdir(os.path.expanduser(model.name)):
        model = model.model_copy(update={"name": str(Path(model.name).expanduser().resolve())})
    return cfg.model_copy(update={"data": data, "model": model})


def _preflight(cfg: StudyConfig) -> tuple[int, int]:
    """Every trial the study may run can start (:func:`trainables.preflight`); the train split's
    size and the rows ``data.drop_empty`` dropped (said once here, on the console)."""
    from trainables import preflight

    n_train, dropped = preflight(cfg.trial, {key: dist.values_to_check() for key, dist in cfg.search.items()})
    if dropped:
        log.warning("data.drop_empty: %d rows with an empty or missing %r dropped from %s", dropped, cfg.data.text_column, cfg.data.path)
    return n_train, dropped


def prepare(args: argparse.Namespace) -> Prepared:
    """Validate everything that can be validated without a cluster and take the study's lock.
    Raises ``ConfigError``."""
    flags = {key: getattr(args, a) for a, key in _FLAG_KEYS.items() if getattr(args, a) is not None}
    if args.resume:
        return _prepare_resume(args, flags)
    if not args.config:
        raise ConfigError("--config FILE is required (or --name NAME --resume to continue a study)")
    cfg = _absolutize(load_study_config(args.config, args.set, flags))
    name = args.name or cfg.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = study_paths(name, cfg.storage.path)  # validates the name
    lock = lock_study(paths)  # before the existence check: two drivers cannot both pass it
    try:
        if paths.study_json.exists() or (not is_remote(paths.storage) and Path(paths.experiment, "tuner.pkl").exists()):
            raise ConfigError(
                f"study {name!r} already exists in {paths.local}: continue it with "
                f"`python -m study.run --name {name} --resume`, or pick another --name"
            )
        check_key(paths)
        n_train, dropped = _preflight(cfg)
        if cfg.refit.enabled:
            check_fits(cfg, widest_trial(cfg), args.address)
        tracking = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(paths.storage if not is_remote(paths.storage) else paths.local.parent) / 'mlflow.db'}"
        _check_tracking(tracking, cfg.mlflow.experiment or name)
    except BaseException:
        lock.close()
        raise
    record = {"name": name, "config": cfg.model_dump(mode="json"), "storage": paths.storage, "tracking_uri": tracking,
              "n_train": n_train, "created": now_iso(), "config_file": str(args.config)}
    if cfg.data.drop_empty:
        record["data_dropped_empty"] = dropped
    return Prepared(cfg, paths, False, n_train, record, lock)


def _prepare_resume(args: argparse.Namespace, flags: dict[str, Any]) -> Prepared:
    """``--resume``: the stored config, the stored storage (checked, see :func:`study.storage.resumable.resume_storage`),
    a tracking URI the user's credentials may go to, and the lock."""
    if not args.name:
        raise ConfigError("--resume needs --name NAME (the study to continue)")
    try:
        paths, record = read_study(args.name, args.storage)  # validates the name
    except ConfigError:
        check_not_running(study_paths(args.name, args.storage))  # starting: locked, no study.json yet
        raise
    paths = resume_storage(paths, record, args.storage)
    lock = lock_study(paths)
    try:
        if args.config or args.set:
            log.warning("--resume continues the study with its stored config; --config/--set are ignored")
        cfg = StudyConfig.from_record(record, paths.study_json)
        _check_resume_flags({k: v for k, v in flags.items() if k != "refit.enabled"}, cfg)
        saved = check_state(paths, args.trust, STAGES)
        check_key(paths)
        if args.refit:
            cfg = add_refit(paths, record, cfg, args.address)
        record["tracking_uri"] = trusted_tracking_uri(paths.name, record.get("tracking_uri"), args.tracking_uri)
        _check_tracking(record["tracking_uri"], cfg.mlflow.experiment or paths.name)
    except BaseException:
        lock.close()
        raise
    return Prepared(cfg, paths, saved, record.get("n_train", 0), record, lock)


#: Flags a resumed study cannot take: Ray restores the trial count, concurrency and resources from
#: its own pickled state (``SearchGenerator`` total, ``tuner.pkl``), whatever the Tuner is told.
_FIXED_ON_RESUME = ("study.num_samples", "study.max_concurrent", "resources.cpus_per_trial",
                    "resources.gpus_per_trial", "study.time_budget_s")


def _check_resume_flags(flags: dict[str, Any], cfg: StudyConfig) -> None:
    """A flag that would change the study on ``--resume`` is refused (it could not be honoured)."""
    stored = flat_params(cfg)
    for key in _FIXED_ON_RESUME:
        if key in flags and flags[key] != stored.get(key):
            flag = "--" + next(a for a, k in _FLAG_KEYS.items() if k == key).replace("_", "-")
            raise ConfigError(f"{flag} {flags[key]}: a resumed study keeps its stored {key}={stored.get(key)} "
                              f"(Ray restores it from the study's own state); drop {flag}, or start a new study")


def _check_tracking(uri: str, experiment: str) -> None:
    """The store answers, and the study's experiment (if it exists) keeps its artifacts where the
    user's credentials may go (:func:`~study.tracking.trust.check_artifact_uri`)."""
    from .tracking.server import check_tracking, client
    from .tracking.trust import check_experiment_artifacts

    check_tracking(uri)
    check_experiment_artifacts(client(uri), experiment, uri)


# --------------------------------------------------------------------------- execution


def _trainable(prep: Prepared) -> tuple[Any, Any]:
    """The trial function with its resources, and the storage filesystem Ray writes through."""
    from ray import tune

    from trainables import train

    from .storage.atomic_fs import AtomicLocalFS

    res = prep.cfg.resources
    trainable = tune.with_resources(train, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    return trainable, None if is_remote(prep.paths.storage) else pyarrow.fs.PyFileSystem(AtomicLocalFS())


def _restore(prep: Prepared) -> Any:
    """Ray's own restore of the study's Tuner (its state checked in :func:`study.storage.resumable.check_state`)."""
    from ray import tune

    trainable, storage_fs = _trainable(prep)
    return tune.Tuner.restore(prep.paths.experiment, trainable, resume_unfinished=True, restart_errored=True,
                              storage_filesystem=storage_fs)


def _tuner(prep: Prepared, parent_run_id: str):
    """Build the Tuner of a new study with searcher, scheduler, callbacks; (tuner, scheduler)."""
    from ray import tune

    from .console.progress import ProgressView
    from .search.journal import OptunaJournalCallback
    from .search.registry import build_search
    from .search.space import param_space, seed_names
    from .storage.atomic_fs import DiskFullWatch
    from .storage.repair import RepairCheckpointRecords
    from .tracking.tracker import MLflowTracker

    cfg = prep.cfg
    res = cfg.resources
    trainable, storage_fs = _trainable(prep)
    threads = {"train.threads": max(1, int(res.cpus_per_trial))}
    plan = build_search(cfg, prep.n_train)
    search_alg, scheduler, callbacks = plan.searcher, plan.scheduler, list(plan.callbacks)
    fixed = {k: v for k, v in param_space(cfg, threads).items() if k not in cfg.search}
    metric, mode = cfg.study.metric, cfg.study.mode
    callbacks.insert(0, DiskFullWatch(prep.paths.storage))
    if plan.journal:
        callbacks.append(OptunaJournalCallback(search_alg, prep.paths.journal, study_name=prep.paths.name, metric=metric))
    pruned_signal = scheduler if hasattr(scheduler, "was_pruned") else None
    callbacks.append(MLflowTracker(prep.tracking_uri, parent_run_id, pruned_signal=pruned_signal, searched=sorted(cfg.search),
                                   n_train=cfg.shared_n_train(prep.n_train), experiment_path=prep.paths.experiment,
                                   searcher=search_alg if plan.journal else None, log_datasets=True))
    callbacks.append(ProgressView(sorted(cfg.search), metric, mode, pruned_signal=pruned_signal, num_samples=cfg.study.num_samples,
                                  time_budget_s=cfg.study.time_budget_s, seeds=seed_names(cfg)))
    callbacks.append(RepairCheckpointRecords())
    tune_config = tune.TuneConfig(
        search_alg=search_alg, scheduler=scheduler, num_samples=cfg.study.num_samples,
        time_budget_s=cfg.study.time_budget_s, reuse_actors=True, trial_dirname_creator=_trial_dirname,
        **({} if scheduler is not None else {"metric": metric, "mode": mode}),
    )
    run_config = tune.RunConfig(
        name=prep.paths.name,
        storage_path=prep.paths.storage,
        storage_filesystem=storage_fs,
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.storage.checkpoints_to_keep,
                                                checkpoint_score_attribute=metric, checkpoint_score_order=mode),
        failure_config=tune.FailureConfig(max_failures=cfg.study.max_failures),
        verbose=0,  # ProgressView prints the progress: Ray's tables never show the searched values
    )
    return tune.Tuner(trainable, param_space=fixed, tune_config=tune_config, run_config=run_config), scheduler


def _trial_dirname(trial: Any) -> str:
    """Short trial dirs (Ray's default spells out every config key and overflows path limits)."""
    return f"trial_{trial.trial_id}"


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started Ray (and the
    study should shut it down, see :func:`_shutdown_ray`)."""
    import ray

    if ray.is_initialized():
        return False
    # configure_logging=False: Ray's driver logs go to the study log (study.console), not stderr;
    # trial workers log WARNING and above only (their INFO was "Checkpoint successfully created"
    # once per evaluation, forwarded to the driver's stderr) and keep quiet when told to exit.
    env = {"env_vars": {"RAY_LOGGER_LEVEL": "warning"}, "worker_process_setup_hook": "study.console.logs.worker_setup"}
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # worker lines Ray forwards: no ANSI colour codes
    quiet: dict[str, Any] = {"configure_logging": False, "runtime_env": env}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(include_dashboard=False, log_to_driver=True, **quiet)
    return True


def _shutdown_ray(started: bool, log_path: Path) -> None:
    """Stop the Ray this study started as soon as the trials are done, while whatever the
    workers still write on their way out (forwarded to this process's stderr) goes to the
    study log — not after the summary, on the terminal, from Ray's exit hook."""
    import ray

    if started and ray.is_initialized():
        with stderr_to_log(log_path), contextlib.redirect_stdout(sys.stderr):
            ray.shutdown()


def execute(prep: Prepared, address: str | None, ctrl_c: CtrlC | None = None) -> int:
    """Run the prepared study to its end; a Ctrl-C at any point stops it, resumable."""
    ctrl_c = ctrl_c or CtrlC()
    try:
        return _execute(prep, address, ctrl_c)
    except KeyboardInterrupt:
        return _stop_interrupted(prep)


def _execute(prep: Prepared, address: str | None, ctrl_c: CtrlC) -> int:
    from .storage.atomic_fs import DiskFullError

    _environment()
    prep.log_path = log_to_file(prep.paths.local / LOG_NAME)
    sign_state(prep.paths, prep.resume, STAGES)
    restored = _restore_or_say(prep) if prep.resume else None  # before MLflow: a failed restore changes nothing there
    if prep.resume and restored is None:
        return EXIT_INPUT
    rc = _open_study(prep)
    if rc is not None:
        return rc
    from .console.progress import ProgressView
    from .tracking.runs import system_metrics

    prep.started_ray = _init_ray(address)
    ctrl_c.checkpoint()  # a Ctrl-C swallowed while Ray started (see CtrlC) stops the study here
    prep.t0 = time.time()
    ProgressView.clock_zero = time.monotonic()  # the refit's lines go on with the search's clock
    prep.record.setdefault("fit_started_unix", prep.t0)  # the study's time zero (benchmarks read it)
    prep.progress_before = _trial_progress(prep.paths.experiment)
    tuner = restored or _tuner(prep, prep.parent)[0]
    ctrl_c.checkpoint()
    ctrl_c.in_fit = True
    try:
        with system_metrics(prep.tracking_uri, prep.parent, resume=prep.resume):
            results = tuner.fit()
    except DiskFullError as e:
        _stop_ray(prep)
        return _stop_on_full_disk(prep, prep.parent, e)
    finally:
        ctrl_c.in_fit = False
    _count_wall_time(prep)
    try:
        return _close_study(prep, results, ctrl_c)
    finally:
        _stop_ray(prep)


def _environment() -> None:
    from .tracking.server import configure_mlflow_http

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # snapshots per report are intended: nothing lost on a crash
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0 the legacy output prints nothing; the new one still boxes the experiment
    configure_mlflow_http()


def _open_study(prep: Prepared) -> int | None:
    """The MLflow parent run, ``study.json`` and the header; an exit code if the study cannot start."""
    from .console.labels import legend
    from .tracking.runs import start_parent_run
    from .tracking.server import tracking_problem
    from .tracking.tracker import use_destination

    cfg, paths = prep.cfg, prep.paths
    experiment = cfg.mlflow.experiment or paths.name
    try:  # a study that stopped before its trials started reopens its parent run too
        prep.parent = start_parent_run(prep.tracking_uri, experiment, paths.name, _parent_params(prep),
                                       tags={"lora_study.config_file": prep.record.get("config_file", "")},
                                       resume=prep.resume or bool(prep.record.get("parent_run_id")))
    except Exception as e:  # checked in prepare(); the server can still go away in between
        print(f"error: {tracking_problem(prep.tracking_uri, e)}", file=sys.stderr)
        return EXIT_INPUT
    prep.record.update(parent_run_id=prep.parent, experiment=experiment, started=[*prep.record.get("started", []), now_iso()])
    try:
        write_json(paths.study_json, prep.record)
    except OSError as e:
        return _stop_on_full_disk(prep, prep.parent, e)
    print(f"study {paths.name}: {cfg.study.num_samples} trials, {cfg.study.max_concurrent} at a time, best {cfg.study.metric} wins"
          + (" (resumed)" if prep.resume else ""), flush=True)
    print(f"  searching {legend(sorted(cfg.search))}" if cfg.search else "  nothing searched", flush=True)
    print(f"  results  {paths.experiment}\n  watch    tail -f {prep.log_path}", flush=True)
    runs, report = _where_to_look(prep, prep.parent)
    print(f"  MLflow   {runs}\n  report   {report}   (also while the study runs)\n", flush=True)
    use_destination(prep.tracking_uri, prep.parent)  # trial runs go where the user says now, never where tuner.pkl says
    return None


def _count_wall_time(prep: Prepared) -> None:
    """Add the search's time in this session to the study's wall time when trials ran in it:
    resuming a finished study runs nothing and leaves its wall time as it was."""
    if prep.t0 is not None:
        if _trial_progress(prep.paths.experiment) != prep.progress_before:
            prep.record["wall_s"] = time.time() - prep.t0 + float(prep.record.get("wall_s", 0.0))
        prep.t0 = None


def _stop_ray(prep: Prepared) -> None:
    """Stop the Ray this study started (its search time counted first)."""
    _count_wall_time(prep)
    _shutdown_ray(prep.started_ray, prep.log_path)
    prep.started_ray = False


def _stop_interrupted(prep: Prepared) -> int:
    """Ctrl-C outside Tune's graceful stop: the study as it is on storage, its parent run KILLED,
    ``study.json`` written (so ``--resume`` finds it even before the trials started), one line.
    A second Ctrl-C cuts this short: storage is consistent at every moment."""
    from .tracking.runs import finish_parent_run

    try:
        _stop_ray(prep)
        write_json(prep.paths.study_json, prep.record)
        if prep.parent:
            finish_parent_run(prep.tracking_uri, prep.parent, status="KILLED", summary={"interrupted": True}, timeout_s=5.0)
    except (KeyboardInterrupt, OSError):
        pass
    print(f"\nstudy {prep.paths.name} interrupted; resume with:\n  {_resume_command(prep)}", flush=True)
    return EXIT_INTERRUPTED


def _close_study(prep: Prepared, results: Any, ctrl_c: CtrlC) -> int:
    """The end of the search: interrupted (resume command), or the summary, the registered best
    adapter, the refit (``refit.enabled``), the shipped model's test score and the closed parent
    run. Ray still runs for the refit; :func:`_execute` stops it."""
    from .storage.atomic_fs import DiskFullError
    from .tracking.queue import undelivered_operations
    from .tracking.runs import finish_parent_run
    from .tracking.summary import print_summary, summarize

    paths, parent, cfg = prep.paths, prep.parent, prep.cfg
    try:
        write_json(paths.study_json, prep.record)
    except OSError as e:
        return _stop_on_full_disk(prep, parent, e)
    summary = summarize(paths, prep.record, results)
    if ctrl_c.caught or summary["trials"]["unfinished"] > 0:
        return _interrupted(prep, parent)
    previous = _read_summary(paths)
    if summary.get("best"):
        with stderr_to_log(prep.log_path):  # MLflow prints "Successfully registered model …" straight to stderr
            summary["registered_model"] = _register_best(prep, parent, summary)
    if cfg.refit.enabled and summary.get("best"):
        t1 = time.time()
        ctrl_c.in_fit = True  # a Ctrl-C asks the refit's Tune for its graceful stop, as in the search
        try:
            stopped = refit_and_register(cfg, paths, prep.tracking_uri, parent, summary, previous, prep.n_train, prep.log_path)
        except DiskFullError as e:
            stopped = e
        finally:
            ctrl_c.in_fit = False
        prep.record["wall_s"] = float(prep.record.get("wall_s", 0.0)) + time.time() - t1
        if stopped is None and ctrl_c.caught:
            stopped = True
        if stopped is not None:
            return _stop_on_full_disk(prep, parent, stopped) if isinstance(stopped, OSError) else _interrupted(prep, parent)
    _stop_ray(prep)
    summary["wall_s"] = round(float(prep.record.get("wall_s", 0.0)), 1)
    ship(cfg, prep.tracking_uri, summary, previous)
    undelivered = undelivered_operations(parent)
    try:
        write_json(paths.study_json, prep.record)
        write_json(paths.summary_json, summary)
    except OSError as e:
        return _stop_on_full_disk(prep, parent, e)
    _describe_best(prep, parent, summary)
    closed = finish_parent_run(prep.tracking_uri, parent, status="FINISHED", summary=_parent_summary(summary),
                               timeout_s=5.0 if undelivered else 60.0)
    print_summary(summary)
    _print_next_steps(prep, parent, summary.get("registered_model"))
    refit = summary.get("refit") or {}
    missing = ([f"{undelivered} operations (trial runs, metrics) not delivered"] if undelivered else []) \
        + (["the best adapter not registered"] if summary.get("best") and not summary.get("registered_model") else []) \
        + (["the refit not registered"] if (refit.get("verdict") or {}).get("replaces") and not refit.get("registered_model") else []) \
        + ([f"parent run {parent} not closed"] if not closed else [])
    if missing:
        print(f"error: MLflow at {prep.tracking_uri}: {'; '.join(missing)}. The results are complete in "
              f"{paths.experiment}; when MLflow is reachable, run `{_resume_command(prep)}` to deliver them", file=sys.stderr, flush=True)
        return EXIT_TRACKING
    return EXIT_OK


def _restore_or_say(prep: Prepared) -> Any:
    """The restored Tuner, or ``None`` after one line saying why Ray could not restore it."""
    try:
        return _restore(prep)
    except Exception as e:  # a pickle that does not load (the state itself was checked for damage)
        name, msg = prep.paths.name, (str(e).strip().splitlines() or [""])[0][:200]
        print(f"error: Ray cannot restore study {name!r} from {prep.paths.experiment} ({type(e).__name__}: {msg}); "
              f"start the study again under a new --name (its results so far stay readable: "
              f"`python -m dashboards.report --study {name}`)", file=sys.stderr, flush=True)
        return None


def _interrupted(prep: Prepared, parent: str) -> int:
    """Stopped after the search started (Ctrl-C, unfinished trials, a refit cut short): the study
    as it is on storage, its parent run KILLED, the resume command."""
    from .tracking.runs import finish_parent_run

    with contextlib.suppress(OSError):  # the previous study.json stays (atomic write)
        write_json(prep.paths.study_json, prep.record)
    finish_parent_run(prep.tracking_uri, parent, status="KILLED", summary={"interrupted": True})
    print(f"\nstudy {prep.paths.name} interrupted; resume with:\n  {_resume_command(prep)}", flush=True)
    return EXIT_INTERRUPTED


def _read_summary(paths: StudyPaths) -> dict[str, Any]:
    """The ``summary.json`` a study had before this driver (``{}``: none): what a resumed study
    already registered and scored, so that it does neither twice."""
    try:
        return json.loads(paths.summary_json.read_text()) if paths.summary_json.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _register_best(prep: Prepared, parent: str, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Log and register the best adapter; a checkpoint the registry holds already (``--resume`` of
    a finished study, moved or not) is found there by study, trial and checkpoint name
    (:func:`study.deploy.registry.log_best_adapter`), not registered again."""
    from .deploy.registry import log_best_adapter

    try:
        return log_best_adapter(prep.tracking_uri, parent, summary, prep.cfg.mlflow.registered_model or f"lora-study-{prep.paths.name}", prep.paths)
    except Exception as e:  # the study's results stand even if the registry is unreachable
        log.error("could not log/register the best adapter: %s", (str(e).splitlines() or [type(e).__name__])[0][:300])
        return None


def _resume_command(prep: Prepared) -> str:
    """The command that continues this study (with the storage and tracking URI it needs)."""
    cmd = f"python -m study.run --name {prep.paths.name} --resume"
    if prep.paths.storage != str(LOCAL_ROOT.resolve()):
        cmd += f" --storage {prep.paths.storage}"
    if not is_local_tracking_uri(prep.tracking_uri):
        cmd += f" --tracking-uri {prep.tracking_uri}"
    return cmd


def _stop_on_full_disk(prep: Prepared, parent: str, err: OSError) -> int:
    """The study stopped on a full disk: one line saying where, how much room, and what to run."""
    from .storage.atomic_fs import is_enospc
    from .tracking.runs import finish_parent_run

    if not is_enospc(err):
        raise err
    try:
        write_json(prep.paths.study_json, prep.record)
    except OSError:
        pass  # the previous study.json stays (atomic write)
    finish_parent_run(prep.tracking_uri, parent, status="KILLED", summary={"interrupted": True}, timeout_s=2.0)
    where = str(err) if "disk full" in str(err) else f"disk full under {prep.paths.storage} ({err.strerror})"
    print(f"error: {where}; the study stopped and its stored state is intact. Free space, then continue it with "
          f"`{_resume_command(prep)}`", file=sys.stderr, flush=True)
    return EXIT_FAULT


def _describe_best(prep: Prepared, parent: str, summary: dict[str, Any]) -> None:
    """The best trial's values and a link to its run on the parent run (a warning if MLflow fails)."""
    from .tracking.runs import describe_best

    if not summary.get("best"):
        return
    try:
        describe_best(prep.tracking_uri, parent, summary["best"], sorted(prep.cfg.search), prep.cfg.study.metric,
                      prep.cfg.shared_n_train(prep.n_train), summary=summary)
    except Exception as e:  # bookkeeping only: the study's results stand
        log.warning("could not record the best trial on the MLflow parent run: %s", e)


def _trial_progress(experiment: str) -> dict[str, tuple[Any, Any]]:
    """Each stored trial's status and training iteration (``{}`` before Ray stored any): what
    changes when trials run."""
    from .storage.trials import read_trials

    try:
        return {t.trial_id: (t.status, t.last_result.get("training_iteration")) for t in read_trials(experiment, with_results=False)}
    except ConfigError:
        return {}


def _where_to_look(prep: Prepared, parent: str) -> tuple[str, str]:
    """How to open the study's MLflow runs table (the command for a local store, and the page
    with its experiment id) and the command that writes the HTML report."""
    uri, name = prep.tracking_uri, prep.paths.name
    try:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(uri).get_run(parent).info.experiment_id
    except Exception:  # MLflow unreachable now: the command still tells where to look
        experiment_id = None
    runs = f"#/experiments/{experiment_id}/runs" if experiment_id else ""
    if is_local_tracking_uri(uri):
        table = f".venv/bin/mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{runs}"
    else:
        table = f"{uri.rstrip('/')}/{runs}"
    report = f".venv/bin/python -m dashboards.report --study {name}" + (
        "" if prep.paths.storage == str(LOCAL_ROOT.resolve()) else f" --storage {prep.paths.storage}")
    return table, report


def _print_next_steps(prep: Prepared, parent: str, registered: dict[str, Any] | None = None) -> None:
    """Where to look next: the MLflow runs table, the HTML report and, with a registered model,
    the command that serves its ``@best`` version."""
    table, report = _where_to_look(prep, parent)
    print(f"\nruns table: {table}\nreport:     {report}", flush=True)
    if registered:
        print(f"serve:      MLFLOW_TRACKING_URI={prep.tracking_uri} PATH=.venv/bin:$PATH mlflow models serve "
              f"-m models:/{registered['name']}@best --env-manager local --port 5001", flush=True)


def _parent_params(prep: Prepared) -> dict[str, str]:
    """The parent run's params: the study config, and the rows ``data.drop_empty`` dropped."""
    from .tracking.runs import study_params

    params = study_params(prep.cfg, prep.n_train)
    if "data_dropped_empty" in prep.record:
        params["data.dropped_empty"] = str(prep.record["data_dropped_empty"])
    return params


def _parent_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The parent run's closing metrics (``summary.<key>``) and tags (``lora_study.summary.<key>``):
    the pick, the refit beside it, which one ships, and the test score (or "no test set")."""
    best, refit, test = summary.get("best") or {}, summary.get("refit") or {}, summary.get("test") or {}
    out = {"best_accuracy": best.get("accuracy"), "best_f1": best.get("f1"), "best_trial": best.get("trial_id"),
           "trials_completed": summary["trials"]["completed"], "trials_pruned": summary["trials"]["pruned"],
           "trials_failed": summary["trials"]["failed"], "wall_s": summary["wall_s"],
           "shipped": (summary.get("shipped") or {}).get("model")}
    if best.get("dev_accuracy") is not None:
        out["best_dev_accuracy"] = best["dev_accuracy"]
    if refit:
        out.update(refit_state=refit.get("state"), refit_trial=refit.get("trial_id"), refit_accuracy=refit.get("accuracy"),
                   refit_f1=refit.get("f1"), refit_dev_accuracy=refit.get("dev_accuracy"), refit_lr=refit.get("lr"),
                   refit_verdict=(refit.get("verdict") or {}).get("reason"))
    if summary.get("test") is not None:
        out.update({"test_set": test.get("path") or test.get("note")},
                   **{f"test_{k}": test.get(k) for k in ("accuracy", "f1", "eval_loss", "n")})
    return {k: v for k, v in out.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    ctrl_c = CtrlC().install()
    console_logging()  # own warnings on stderr, one line each; libraries: the study log (execute)
    args = build_parser().parse_args(argv)
    try:
        prep = prepare(args)
    except KeyboardInterrupt:
        again = " ".join(["python -m study.run --name", str(args.name), "--resume", *(["--storage", args.storage] if args.storage else []),
                          *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else [])])
        print("\ninterrupted before the study started; nothing was written" + (f": resume it with `{again}`" if args.resume else ""),
              flush=True)
        return EXIT_INTERRUPTED
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:  # a write before the study starts (lock, caches, the tracking store) on a full disk
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = e.strerror if str(e.strerror).startswith("disk full") else f"disk full writing {e.filename or 'a file'} ({e.strerror})"
        print(f"error: {where}: nothing was started; free some space, then run the command again", file=sys.stderr)
        return EXIT_FAULT
    return execute(prep, args.address, ctrl_c)


if __name__ == "__main__":
    sys.exit(main())
