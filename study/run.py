"""``python -m study.run``: one command runs a whole LoRA hyperparameter study.

Config → checks (before Ray starts) → space → Tuner (Optuna TPE + ASHA, or their fallbacks)
→ MLflow tracking → summary and the best adapter logged and registered.

    python -m study.run --config study/configs/sst2-quick.yaml
    python -m study.run --name NAME --resume
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.fs

from trainables.config import ConfigError

from .config import StudyConfig, load_study_config
from .console import LOG_NAME, console_logging, log_to_file, stderr_to_log
from .store import LOCAL_ROOT, StudyPaths, now_iso, read_study, study_paths, write_json

__all__ = ["main", "build_parser", "prepare", "Prepared"]

log = logging.getLogger("study.run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Run (or resume) a LoRA hyperparameter study: Ray Tune + Optuna TPE + ASHA, tracked in MLflow.",
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
}


class Prepared:
    """Everything validated and resolved in the driver; nothing has touched Ray yet."""

    def __init__(self, cfg: StudyConfig, paths: StudyPaths, resume: bool, n_train: int, record: dict[str, Any]):
        self.cfg, self.paths, self.resume, self.n_train, self.record = cfg, paths, resume, n_train, record

    @property
    def tracking_uri(self) -> str:
        return self.record["tracking_uri"]


def _absolutize(cfg: StudyConfig) -> StudyConfig:
    """Trials run in other working directories (and on other nodes): make local paths absolute."""
    data, model = dict(cfg.data), dict(cfg.model)
    base = cfg.base_trial()
    if os.path.exists(os.path.expanduser(base.data.path)):
        data["path"] = str(Path(base.data.path).expanduser().resolve())
    else:  # embedded-sst2 or a hub id: recorded by name (study.json), resolved wherever a trial runs
        data["path"] = base.data.path
    if os.path.isdir(os.path.expanduser(base.model.name)):
        model["name"] = str(Path(base.model.name).expanduser().resolve())
    return cfg.model_copy(update={"data": data, "model": model})


def _check_model_and_data(cfg: StudyConfig) -> int:
    """Load the data once (columns, labels, sizes) and check every target-module preset and
    ``lora.modules_to_save`` against the model's layers — on a meta-device model, so no weights
    are read."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from trainables.data import load_splits
    from trainables.model import apply_pooling, check_modules_to_save, check_target_modules, resolve_model_name

    base = cfg.base_trial()
    raw = load_splits(base.data)
    n_train = len(raw.train_texts)
    sizes = cfg.search["data.size"].values_to_check() if "data.size" in cfg.search and cfg.search["data.size"].kind == "choice" else [base.data.size]
    for s in sizes:
        n = type(base.data).model_validate({**base.data.model_dump(), "size": s}).size
        if isinstance(n, int) and n > n_train:
            where = "search.data.size" if "data.size" in cfg.search else "data.size"
            raise ConfigError(f"{where}: {n} is larger than the train split ({n_train} examples in {raw.source})")
    try:
        mcfg = AutoConfig.from_pretrained(resolve_model_name(base.model.name), num_labels=len(raw.label_names))
    except OSError as e:
        raise ConfigError(f"model.name={base.model.name!r}: cannot load ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(mcfg)
    targets = cfg.search["lora.target_modules"].values_to_check() if "lora.target_modules" in cfg.search else [base.lora.target_modules]
    for t in targets:
        lora = type(base.lora).model_validate({**base.lora.model_dump(), "target_modules": t})
        check_target_modules(model, lora.module_list())
    check_modules_to_save(model, base.lora.modules_to_save)
    for pooling in cfg.search["model.pooling"].values_to_check() if "model.pooling" in cfg.search else [base.model.pooling]:
        apply_pooling(model, pooling, base.model.name, base.lora.modules_to_save)
    return n_train


def prepare(args: argparse.Namespace) -> Prepared:
    """Validate everything that can be validated without a cluster. Raises ``ConfigError``."""
    flags = {key: getattr(args, a) for a, key in _FLAG_KEYS.items() if getattr(args, a) is not None}
    if args.resume:
        if not args.name:
            raise ConfigError("--resume needs --name NAME (the study to continue)")
        paths, record = read_study(args.name, args.storage)
        if args.config or args.set:
            log.warning("--resume continues the study with its stored config; --config/--set are ignored")
        cfg = StudyConfig.model_validate(record["config"])
        record["tracking_uri"] = args.tracking_uri or record["tracking_uri"]
        n_train = record.get("n_train", 0)
        return Prepared(cfg, paths, True, n_train, record)
    if not args.config:
        raise ConfigError("--config FILE is required (or --name NAME --resume to continue a study)")
    cfg = _absolutize(load_study_config(args.config, args.set, flags))
    name = args.name or cfg.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    paths = study_paths(name, cfg.storage.path)
    if paths.study_json.exists() or (not "://" in paths.storage and Path(paths.experiment, "tuner.pkl").exists()):
        raise ConfigError(
            f"study {name!r} already exists in {paths.local}: continue it with "
            f"`python -m study.run --name {name} --resume`, or pick another --name"
        )
    n_train = _check_model_and_data(cfg)
    tracking = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(paths.storage if '://' not in paths.storage else paths.local.parent) / 'mlflow.db'}"
    record = {"name": name, "config": cfg.model_dump(mode="json"), "storage": paths.storage, "tracking_uri": tracking,
              "n_train": n_train, "created": now_iso(), "config_file": str(args.config)}
    return Prepared(cfg, paths, False, n_train, record)


# --------------------------------------------------------------------------- execution


def _tuner(prep: Prepared, tracker_cls, parent_run_id: str):
    """Build (or restore) the Tuner with searcher, scheduler, callbacks."""
    from ray import tune

    from trainables.lora import train

    from . import searcher as S
    from .progress import ProgressView
    from .space import max_samples, param_space, seed_points
    from .tracking import MLflowTracker

    cfg = prep.cfg
    res = cfg.resources
    trainable = tune.with_resources(train, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    storage_fs = None if "://" in prep.paths.storage else pyarrow.fs.PyFileSystem(AtomicLocalFS())
    if prep.resume:
        return tune.Tuner.restore(prep.paths.experiment, trainable, resume_unfinished=True, restart_errored=True,
                                  storage_filesystem=storage_fs), None
    threads = {"train.threads": max(1, int(res.cpus_per_trial))}
    points = seed_points(cfg) if cfg.study.seed_points else []
    metric, mode = cfg.study.metric, cfg.study.mode
    scheduler = None
    callbacks: list[Any] = []
    if cfg.asha.enabled:
        max_t = cfg.asha.max_t or max_samples(cfg, prep.n_train)
        scheduler = S.make_scheduler(metric=metric, mode=mode, grace_period=min(cfg.asha.grace_period, max_t),
                                     reduction_factor=cfg.asha.reduction_factor, max_t=max_t)
        callbacks.append(S.SchedulerStateCallback(scheduler))
    if cfg.optuna.enabled and cfg.search:
        space = {k: v for k, v in param_space(cfg).items() if k in cfg.search}
        fixed = {k: v for k, v in param_space(cfg, threads).items() if k not in cfg.search}
        search_alg = S.make_searcher(space, metric, mode, seed=cfg.study.seed, points_to_evaluate=points or None,
                                     max_concurrent=cfg.study.max_concurrent, pruned_feedback=cfg.optuna.pruned_feedback)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        fixed = param_space(cfg, threads)
        search_alg = BasicVariantGenerator(points_to_evaluate=points or None, random_state=cfg.study.seed,
                                           max_concurrent=cfg.study.max_concurrent)
    callbacks.append(MLflowTracker(prep.tracking_uri, parent_run_id, pruned_signal=scheduler, searched=sorted(cfg.search)))
    callbacks.append(ProgressView(sorted(cfg.search), metric, mode, pruned_signal=scheduler))
    callbacks.append(S.RepairCheckpointRecords())
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


class AtomicLocalFS(pyarrow.fs.FileSystemHandler):
    """Local storage for Ray whose file writes are atomic: a temp file renamed into place on close.

    Ray 2.60 persists an experiment by copying its staging dir (in the Ray session dir) over the
    storage dir, rewriting ``experiment_state-*.json``, the searcher/callback state and every
    trial's ``result.json``/``progress.csv`` in place. A driver killed during such a copy leaves
    truncated files: an empty ``experiment_state`` makes ``Tuner.restore`` log "Failed to
    restore the run state" and start over with no trials (the study then "finishes" with only
    the trials suggested after the crash), a truncated ``result.json`` loses the trial's earlier
    results. Likewise a checkpoint Ray was deleting is left without some of its files. With this
    handler every file is either its old or its new version and a directory is deleted by first
    renaming it away. Use it as ``pyarrow.fs.PyFileSystem(AtomicLocalFS())``; it is pickled to the
    workers with the storage context, so they write checkpoint files the same way. A crash can
    leave hidden ``.NAME.tmp-*`` files or dirs behind; nothing reads them.
    """

    def __init__(self) -> None:
        self.fs = pyarrow.fs.LocalFileSystem()

    def get_type_name(self) -> str:
        return "atomic-local"

    def equals(self, other: Any) -> bool:
        return isinstance(other, AtomicLocalFS)

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> list:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        # rename first: a checkpoint Ray deletes is gone at once, never left half-deleted
        tmp = _tmp_name(path)
        os.rename(path, tmp)
        self.fs.delete_dir(tmp)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("AtomicLocalFS: refusing to delete the contents of /")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        tmp = _tmp_name(dest)
        self.fs.copy_file(src, tmp)
        os.replace(tmp, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow

        return pyarrow.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.fs.open_append_stream(path, metadata=metadata)


def _tmp_name(path: str) -> str:
    """A hidden sibling (never matches Ray's ``experiment_state-*.json`` & co.)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{time.monotonic_ns()}")


class _RenameOnClose(io.FileIO):
    def __init__(self, path: str) -> None:
        self._final, self._tmp = path, _tmp_name(path)
        super().__init__(self._tmp, "wb")

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.replace(self._tmp, self._final)


def _trial_dirname(trial: Any) -> str:
    """Short trial dirs (Ray's default spells out every config key and overflows path limits)."""
    return f"trial_{trial.trial_id}"


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    # configure_logging=False: Ray's driver logs go to the study log (study.console), not stderr;
    # trial workers log WARNING and above only (their INFO was "Checkpoint successfully created"
    # once per evaluation, forwarded to the driver's stderr).
    quiet = {"configure_logging": False, "runtime_env": {"env_vars": {"RAY_LOGGER_LEVEL": "warning"}}}
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, **quiet}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(**kwargs)


def execute(prep: Prepared, address: str | None) -> int:
    from .labels import legend
    from .report import summarize, print_summary
    from .tracking import MLflowTracker, configure_mlflow_http, finish_parent_run, start_parent_run, study_params

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # snapshots per report are intended: nothing lost on a crash
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0 the legacy output prints nothing; the new one still boxes the experiment
    configure_mlflow_http()
    cfg, paths = prep.cfg, prep.paths
    log_path = log_to_file(paths.local / LOG_NAME)
    experiment = cfg.mlflow.experiment or paths.name
    parent = start_parent_run(prep.tracking_uri, experiment, paths.name, study_params(cfg),
                              tags={"lora_study.config_file": prep.record.get("config_file", "")}, resume=prep.resume)
    prep.record["parent_run_id"] = parent
    prep.record["experiment"] = experiment
    prep.record.setdefault("started", [])
    prep.record["started"] = list(prep.record["started"]) + [now_iso()]
    write_json(paths.study_json, prep.record)
    print(f"study {paths.name}: {cfg.study.num_samples} trials, {cfg.study.max_concurrent} at a time, best {cfg.study.metric} wins"
          + (" (resumed)" if prep.resume else ""), flush=True)
    print(f"  searching {legend(sorted(cfg.search))}" if cfg.search else "  nothing searched", flush=True)
    print(f"  results {paths.experiment}\n  log     {log_path}\n  MLflow  {prep.tracking_uri} (experiment {experiment})\n", flush=True)
    _init_ray(address)
    t0 = time.time()
    prep.record.setdefault("fit_started_unix", t0)  # the study's time zero (benchmarks read it)
    tuner, _ = _tuner(prep, MLflowTracker, parent)
    interrupted = False
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        interrupted, results = True, None
    wall = time.time() - t0 + float(prep.record.get("wall_s", 0.0))
    prep.record["wall_s"] = wall
    write_json(paths.study_json, prep.record)
    summary = summarize(paths, prep.record, results)
    if interrupted or summary["trials"]["unfinished"] > 0:
        finish_parent_run(prep.tracking_uri, parent, status="KILLED", summary={"interrupted": True})
        print(f"\nstudy {paths.name} interrupted; resume with:\n  python -m study.run --name {paths.name} --resume"
              + ("" if paths.storage == str(LOCAL_ROOT.resolve()) else f" --storage {paths.storage}"), flush=True)
        return 130
    from .export import log_best_adapter

    if summary.get("best"):
        try:
            with stderr_to_log(log_path):  # MLflow prints "Successfully registered model …" straight to stderr
                summary["registered_model"] = log_best_adapter(prep.tracking_uri, parent, summary, cfg.mlflow.registered_model or f"lora-study-{paths.name}", paths)
        except Exception as e:  # the study's results stand even if the registry is unreachable
            log.error("could not log/register the best adapter: %s", e)
            summary["registered_model"] = None
    write_json(paths.summary_json, summary)
    _describe_best(prep, parent, summary)
    finish_parent_run(prep.tracking_uri, parent, status="FINISHED", summary=_parent_summary(summary))
    print_summary(summary)
    _print_next_steps(prep, parent)
    return 0


def _describe_best(prep: Prepared, parent: str, summary: dict[str, Any]) -> None:
    """The best trial's values and a link to its run on the parent run (a warning if MLflow fails)."""
    from .tracking import describe_best

    if not summary.get("best"):
        return
    try:
        describe_best(prep.tracking_uri, parent, summary["best"], sorted(prep.cfg.search), prep.cfg.study.metric)
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
    best = summary.get("best") or {}
    return {"best_accuracy": best.get("accuracy"), "best_f1": best.get("f1"), "best_trial": best.get("trial_id"),
            "trials_completed": summary["trials"]["completed"], "trials_pruned": summary["trials"]["pruned"],
            "trials_failed": summary["trials"]["failed"], "wall_s": summary["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    console_logging()  # own warnings on stderr, one line each; libraries: the study log (execute)
    args = build_parser().parse_args(argv)
    try:
        prep = prepare(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return execute(prep, args.address)


if __name__ == "__main__":
    sys.exit(main())
