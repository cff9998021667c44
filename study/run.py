"""``python -m study.run``: one command runs a whole LoRA hyperparameter study.

Config → checks (before Ray starts) → space → Tuner (Optuna TPE + ASHA, or their fallbacks)
→ MLflow tracking → summary and the best adapter logged and registered.

    python -m study.run --config study/configs/sst2-quick.yaml
    python -m study.run --name NAME --resume
"""

from __future__ import annotations

import argparse
import contextlib
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
from .console.logs import LOG_NAME, console_logging, log_to_file, stderr_to_log
from .storage.studies import LOCAL_ROOT, StudyPaths, is_remote, lock_study, now_iso, read_study, study_paths, write_json
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


def _preflight(cfg: StudyConfig) -> int:
    """Every trial the study may run can start (:func:`trainables.preflight`); the train split's size."""
    from trainables import preflight

    return preflight(cfg.trial, {key: dist.values_to_check() for key, dist in cfg.search.items()})


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
        n_train = _preflight(cfg)
        if cfg.refit.enabled:
            _check_refit_fits(cfg, _widest_trial(cfg), args.address)
        tracking = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(paths.storage if not is_remote(paths.storage) else paths.local.parent) / 'mlflow.db'}"
        _check_tracking(tracking)
    except BaseException:
        lock.close()
        raise
    record = {"name": name, "config": cfg.model_dump(mode="json"), "storage": paths.storage, "tracking_uri": tracking,
              "n_train": n_train, "created": now_iso(), "config_file": str(args.config)}
    return Prepared(cfg, paths, False, n_train, record, lock)


def _prepare_resume(args: argparse.Namespace, flags: dict[str, Any]) -> Prepared:
    """``--resume``: the stored config, the stored storage (checked, see :func:`_resume_storage`),
    a tracking URI the user's credentials may go to, and the lock."""
    if not args.name:
        raise ConfigError("--resume needs --name NAME (the study to continue)")
    paths, record = read_study(args.name, args.storage)  # validates the name
    paths = _resume_storage(paths, record, args.storage)
    lock = lock_study(paths)
    try:
        if args.config or args.set:
            log.warning("--resume continues the study with its stored config; --config/--set are ignored")
        cfg = StudyConfig.from_record(record, paths.study_json)
        _check_resume_flags({k: v for k, v in flags.items() if k != "refit.enabled"}, cfg)
        if args.refit:
            cfg = _add_refit(paths, record, cfg, args.address)
        record["tracking_uri"] = trusted_tracking_uri(paths.name, record.get("tracking_uri"), args.tracking_uri)
        _check_tracking(record["tracking_uri"])
    except BaseException:
        lock.close()
        raise
    return Prepared(cfg, paths, True, record.get("n_train", 0), record, lock)


def _widest_trial(cfg: StudyConfig) -> Any:
    """The study's base trial config with the largest batch size and text length its search can
    take: what a refit needs most memory for, before the search has picked anything."""
    flat = cfg.trial.to_flat()
    for key in ("train.batch_size", "data.max_length"):
        if key in cfg.search:
            flat[key] = max(v for v in cfg.search[key].values_to_check())
    from trainables.config import TrialConfig

    return TrialConfig.from_dict(flat)


def _check_refit_fits(cfg: StudyConfig, trial: Any, address: str | None) -> None:
    from .refit.runner import check_refit_fits

    check_refit_fits(cfg, trial, local=not address)


def _add_refit(paths: StudyPaths, record: dict[str, Any], cfg: StudyConfig, address: str | None) -> StudyConfig:
    """``--resume --refit``: the study's config with ``refit.enabled`` (recorded in ``study.json``,
    so a crash during the refit resumes it), after checking there is a finished trial to refit and
    that its refit fits in memory."""
    from trainables.config import TrialConfig

    pick = _finished_pick(paths, record, cfg)
    cfg = cfg.model_copy(update={"refit": cfg.refit.model_copy(update={"enabled": True})})
    _check_refit_fits(cfg, TrialConfig.from_dict(pick["config"]), address)
    record["config"] = cfg.model_dump(mode="json")
    return cfg


def _finished_pick(paths: StudyPaths, record: dict[str, Any], cfg: StudyConfig) -> dict[str, Any]:
    """The trial a refit would train again: ``summary.json``'s best, else the best finished trial
    on disk; a one-line ``ConfigError`` when the study has none."""
    from .tracking.summary import summarize

    try:
        best = json.loads(paths.summary_json.read_text()).get("best") if paths.summary_json.is_file() else None
    except (OSError, json.JSONDecodeError):
        best = None
    if not best:
        try:
            summary = summarize(paths, record)
            best = summary["best"] if summary["trials"]["completed"] + summary["trials"]["pruned"] else None
        except ConfigError:  # no Ray experiment state yet
            best = None
    if not best or not best.get("config"):
        raise ConfigError(f"--refit: study {paths.name!r} has no finished trial to refit; finish its search first with "
                          f"`python -m study.run --name {paths.name} --resume`")
    return best


def _resume_storage(paths: StudyPaths, record: dict[str, Any], given: str | None) -> StudyPaths:
    """Where ``--resume`` restores Ray's experiment from (and so unpickles ``tuner.pkl`` from).

    A local study is resumed where its ``study.json`` was found — never where the file says it
    lives — so a study directory cannot send ``--resume`` to unpickle files elsewhere (and a moved
    study resumes in its new place). A study on remote storage is resumed only from the storage
    the user names with ``--storage``."""
    stored = str(record.get("storage") or "")
    if not is_remote(stored):
        here = str(paths.local.parent)
        if stored and Path(stored) != Path(here):
            log.info("study %s was recorded under %s; resuming it where it is now, %s", paths.name, stored, here)
        record["storage"] = here
        return StudyPaths(paths.name, paths.local, here)
    if given != stored:
        raise ConfigError(f"study {paths.name!r} keeps its Ray experiment at {stored}: resume it with "
                          f"`python -m study.run --name {paths.name} --resume --storage {stored}`")
    return paths


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


def _check_tracking(uri: str) -> None:
    from .tracking.server import check_tracking

    check_tracking(uri)


# --------------------------------------------------------------------------- execution


def _tuner(prep: Prepared, parent_run_id: str):
    """Build (or restore) the Tuner with searcher, scheduler, callbacks."""
    from ray import tune

    from trainables import train

    from .console.progress import ProgressView
    from .search.journal import OptunaJournalCallback
    from .search.registry import build_search
    from .search.space import param_space
    from .storage.atomic_fs import AtomicLocalFS, DiskFullWatch
    from .storage.repair import RepairCheckpointRecords
    from .tracking.tracker import MLflowTracker

    cfg = prep.cfg
    res = cfg.resources
    trainable = tune.with_resources(train, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    storage_fs = None if is_remote(prep.paths.storage) else pyarrow.fs.PyFileSystem(AtomicLocalFS())
    if prep.resume:
        return tune.Tuner.restore(prep.paths.experiment, trainable, resume_unfinished=True, restart_errored=True,
                                  storage_filesystem=storage_fs), None
    threads = {"train.threads": max(1, int(res.cpus_per_trial))}
    plan = build_search(cfg, prep.n_train)
    search_alg, scheduler, callbacks = plan.searcher, plan.scheduler, list(plan.callbacks)
    fixed = {k: v for k, v in param_space(cfg, threads).items() if k not in cfg.search}
    metric, mode = cfg.study.metric, cfg.study.mode
    callbacks.insert(0, DiskFullWatch(prep.paths.storage))
    if plan.journal:
        callbacks.append(OptunaJournalCallback(search_alg, prep.paths.journal))
    pruned_signal = scheduler if hasattr(scheduler, "was_pruned") else None
    callbacks.append(MLflowTracker(prep.tracking_uri, parent_run_id, pruned_signal=pruned_signal, searched=sorted(cfg.search)))
    callbacks.append(ProgressView(sorted(cfg.search), metric, mode, pruned_signal=pruned_signal))
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
    env = {"env_vars": {"RAY_LOGGER_LEVEL": "warning"}, "worker_process_setup_hook": "study.console.logs.quiet_worker_exit"}
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


def execute(prep: Prepared, address: str | None) -> int:
    from .console.labels import legend
    from .console.progress import ProgressView
    from .storage.atomic_fs import DiskFullError
    from .tracking.queue import undelivered_operations
    from .tracking.runs import finish_parent_run, start_parent_run, study_params
    from .tracking.server import configure_mlflow_http, tracking_problem
    from .tracking.summary import print_summary, summarize

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # snapshots per report are intended: nothing lost on a crash
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0 the legacy output prints nothing; the new one still boxes the experiment
    configure_mlflow_http()
    cfg, paths = prep.cfg, prep.paths
    log_path = log_to_file(paths.local / LOG_NAME)
    experiment = cfg.mlflow.experiment or paths.name
    try:
        parent = start_parent_run(prep.tracking_uri, experiment, paths.name, study_params(cfg),
                                  tags={"lora_study.config_file": prep.record.get("config_file", "")}, resume=prep.resume)
    except Exception as e:  # checked in prepare(); the server can still go away in between
        print(f"error: {tracking_problem(prep.tracking_uri, e)}", file=sys.stderr)
        return EXIT_INPUT
    prep.record["parent_run_id"] = parent
    prep.record["experiment"] = experiment
    prep.record.setdefault("started", [])
    prep.record["started"] = list(prep.record["started"]) + [now_iso()]
    try:
        write_json(paths.study_json, prep.record)
    except OSError as e:
        return _stop_on_full_disk(prep, parent, e)
    print(f"study {paths.name}: {cfg.study.num_samples} trials, {cfg.study.max_concurrent} at a time, best {cfg.study.metric} wins"
          + (" (resumed)" if prep.resume else ""), flush=True)
    print(f"  searching {legend(sorted(cfg.search))}" if cfg.search else "  nothing searched", flush=True)
    print(f"  results {paths.experiment}\n  log     {log_path}\n  MLflow  {prep.tracking_uri} (experiment {experiment})\n", flush=True)
    started_ray = _init_ray(address)
    t0 = time.time()
    ProgressView.clock_zero = time.monotonic()  # the refit's lines go on with the search's clock
    prep.record.setdefault("fit_started_unix", t0)  # the study's time zero (benchmarks read it)
    tuner, _ = _tuner(prep, parent)
    interrupted = False
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        interrupted, results = True, None
    except DiskFullError as e:
        prep.record["wall_s"] = time.time() - t0 + float(prep.record.get("wall_s", 0.0))
        _shutdown_ray(started_ray, log_path)
        return _stop_on_full_disk(prep, parent, e)
    prep.record["wall_s"] = time.time() - t0 + float(prep.record.get("wall_s", 0.0))
    try:
        write_json(paths.study_json, prep.record)
    except OSError as e:
        _shutdown_ray(started_ray, log_path)
        return _stop_on_full_disk(prep, parent, e)
    summary = summarize(paths, prep.record, results)
    if interrupted or summary["trials"]["unfinished"] > 0:
        _shutdown_ray(started_ray, log_path)
        return _interrupted(prep, parent)
    previous = _read_summary(paths)
    if summary.get("best"):
        with stderr_to_log(log_path):  # MLflow prints "Successfully registered model …" straight to stderr
            summary["registered_model"] = _register_best(prep, parent, summary, previous)
    if cfg.refit.enabled and summary.get("best"):
        t1 = time.time()
        try:
            stopped = _refit(prep, parent, summary, previous, log_path)
        except DiskFullError as e:
            stopped = e
        prep.record["wall_s"] += time.time() - t1
        if stopped is not None:
            _shutdown_ray(started_ray, log_path)
            return _stop_on_full_disk(prep, parent, stopped) if isinstance(stopped, OSError) else _interrupted(prep, parent)
    _shutdown_ray(started_ray, log_path)
    summary["wall_s"] = round(float(prep.record["wall_s"]), 1)
    _ship(prep, summary, previous)
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
    _print_next_steps(prep, parent)
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


def _interrupted(prep: Prepared, parent: str) -> int:
    from .tracking.runs import finish_parent_run

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


def _refit(prep: Prepared, parent: str, summary: dict[str, Any], previous: dict[str, Any], log_path: Path) -> OSError | bool | None:
    """The refit of the pick (``study.refit``), its verdict and, when it wins, its registration.
    ``summary.json`` is written before it starts (the pick's registration is then on disk, and a
    crash during the refit cannot register the pick twice) and after its registration. Returns
    ``None`` when the refit finished (or failed), else why the study stops: an ``OSError`` (disk
    full) or ``True`` (interrupted; ``--resume`` continues the refit)."""
    from .refit.runner import run_refit
    from .refit.ship import decide, register_refit

    paths, cfg = prep.paths, prep.cfg
    try:
        write_json(paths.summary_json, {**summary, "refit": {"of": summary["best"]["trial_id"], "state": "running"}})
    except OSError as e:
        return e
    try:
        summary["refit"] = run_refit(cfg, paths, prep.tracking_uri, parent, summary["best"], prep.n_train)
    except KeyboardInterrupt:
        return True
    if summary["refit"]["state"] == "unfinished":
        return True
    decide(summary, cfg)
    if summary["refit"].get("verdict", {}).get("replaces"):
        name = cfg.mlflow.registered_model or f"lora-study-{paths.name}"
        with stderr_to_log(log_path):
            summary["refit"]["registered_model"] = register_refit(prep.tracking_uri, parent, summary, name, paths, previous)
        try:
            write_json(paths.summary_json, summary)
        except OSError as e:
            return e
    return None


def _ship(prep: Prepared, summary: dict[str, Any], previous: dict[str, Any]) -> None:
    """Which model the study ships (the refit when it won, else the pick), its registration, and
    its one score on the test set, also tagged on its registered version."""
    from .deploy.registry import tag_version
    from .refit.ship import decide, score_test

    shipped = decide(summary, prep.cfg)
    refit = summary.get("refit") or {}
    shipped["registered_model"] = refit.get("registered_model") if shipped["model"] == "refit" else summary.get("registered_model")
    summary["test"] = score_test(prep.cfg, summary, previous) if shipped.get("checkpoint") else None
    test = summary["test"]
    if test and shipped["registered_model"]:
        tags = {"test": test.get("note", "")} if not test.get("path") else \
            {f"test_{k}": test[k] for k in ("accuracy", "f1", "eval_loss", "n", "path") if test.get(k) is not None}
        try:
            tag_version(prep.tracking_uri, shipped["registered_model"], tags)
        except Exception as e:  # bookkeeping only: the score stands in summary.json and on the parent run
            log.warning("could not tag the shipped model version with its test score: %s", e)


def _register_best(prep: Prepared, parent: str, summary: dict[str, Any], before: dict[str, Any]) -> dict[str, Any] | None:
    """Log and register the best adapter — unless ``summary.json`` already names a registration
    of this same checkpoint (``--resume`` of a finished study must not add a duplicate version)."""
    from .deploy.registry import log_best_adapter

    reg, best_before = before.get("registered_model"), before.get("best") or {}
    if reg and best_before.get("trial_id") == summary["best"]["trial_id"] and best_before.get("checkpoint") == summary["best"]["checkpoint"]:
        log.info("best adapter already registered as %s; not registering it again", reg.get("uri"))
        return reg
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
        describe_best(prep.tracking_uri, parent, summary["best"], sorted(prep.cfg.search), prep.cfg.study.metric, summary=summary)
    except Exception as e:  # bookkeeping only: the study's results stand
        log.warning("could not record the best trial on the MLflow parent run: %s", e)


def _print_next_steps(prep: Prepared, parent: str) -> None:
    """Where to look next: the MLflow runs table (command and URL) and the HTML report."""
    uri, name = prep.tracking_uri, prep.paths.name
    try:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(uri).get_run(parent).info.experiment_id
    except Exception:  # MLflow unreachable now: the command still tells where to look
        experiment_id = None
    page = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs" if experiment_id else "http://127.0.0.1:5000"
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        print(f"\nruns table: .venv/bin/mlflow ui --backend-store-uri {uri}   then open {page}")
    else:
        print(f"\nruns table: {uri.rstrip('/')}/#/experiments/{experiment_id}/runs" if experiment_id else f"\nruns table: {uri}")
    print(f"report:     .venv/bin/python -m dashboards.report --study {name}"
          + ("" if prep.paths.storage == str(LOCAL_ROOT.resolve()) else f" --storage {prep.paths.storage}"), flush=True)


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
    console_logging()  # own warnings on stderr, one line each; libraries: the study log (execute)
    args = build_parser().parse_args(argv)
    try:
        prep = prepare(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    return execute(prep, args.address)


if __name__ == "__main__":
    sys.exit(main())
