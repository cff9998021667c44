"""The refit's trials on Ray Tune, as real trials: resources, checkpoints, MLflow runs, resume.

Two small Tune experiments inside the study's own experiment directory:

- ``refit-check`` (only with more than one ``refit.lr_factors``): one trial per learning rate,
  each the refit's full configuration, stopped when it reaches the check point
  (``refit.check_fraction`` of the refit's samples) by Tune's ``stop`` criterion;
- ``refit``: one trial at the chosen rate, which continues from that candidate's checkpoint
  (``trainables.train``'s ``start_from``) to the end of the schedule.

Why Tune and not a plain call: the refit is the longest trial of a study, so it gets what any
trial gets: the study's resources (all of them, since nothing else runs then), checkpoints at
each evaluation, a restart from the last one when its process dies (``study.max_failures``), and
after a crash of the driver ``--resume`` restores whichever experiment was running
(``Tuner.restore``), exactly as for the search. Each trial has its own MLflow run under the
study's parent run, named ``refit of <pick> · <trial> lr=… n=… ep=…`` and tagged
``lora_study.role=refit``, ``lora_study.refit_of``; the console prints the same one-line events.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs

from trainables.config import TrialConfig

from ..storage.studies import is_remote
from .plan import LABEL_KEYS, RefitPlan, check_memory, choose, make_plan

if TYPE_CHECKING:
    from ..config import StudyConfig
    from ..storage.studies import StudyPaths

__all__ = ["run_refit", "refit_resources", "check_refit_fits", "machine_memory", "CHECK", "REFIT", "STAGES", "REFIT_OF_TAG"]

log = logging.getLogger(__name__)

CHECK, REFIT = "refit-check", "refit"
#: The refit's stages, each an experiment of its own inside the study's (their state is signed and checked like the search's).
STAGES = (CHECK, REFIT)
REFIT_OF_TAG = "lora_study.refit_of"


class StoppedAtCheck:
    """The ``pruned_signal`` of the check's trials: every one of them ends at the check point."""

    def was_pruned(self, trial_id: str) -> bool:
        return True


def refit_resources(cfg: StudyConfig) -> dict[str, float]:
    """What the refit's one trial asks Ray for: the CPUs all the study's concurrent trials had
    (nothing else runs during the refit; capped at the largest node, where one trial must fit) and
    one GPU at most (the trainable uses one device; fractions of one are kept)."""
    import ray

    res, n = cfg.resources, cfg.study.max_concurrent
    nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")] if ray.is_initialized() else []
    cpus = res.cpus_per_trial * n
    if nodes:
        cpus = max(res.cpus_per_trial, min(cpus, max(nodes)))
    g = res.gpus_per_trial
    gpus = 0.0 if g == 0 else (g if g >= 1 else min(1.0, g * n))
    return {"cpu": cpus, "gpu": gpus}


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


@dataclass(frozen=True)
class _Refit:
    """What every stage of one refit shares."""

    cfg: StudyConfig
    paths: StudyPaths
    tracking_uri: str
    parent: str
    plan: RefitPlan
    resources: dict[str, float]
    n_split: int
    """The train split's size (resolves ``data.size`` to the count a refit trains on)."""

    def stage_dir(self, stage: str) -> str:
        return f"{self.paths.experiment.rstrip('/')}/{stage}"


def _callbacks(r: _Refit, stage: str) -> list[Any]:
    from ..console.progress import ProgressView
    from ..storage.atomic_fs import DiskFullWatch
    from ..storage.repair import RepairCheckpointRecords
    from ..tracking.tracker import MLflowTracker

    checking, pick = stage == CHECK, r.plan.pick_id
    signal = StoppedAtCheck() if checking else None
    word = "lr check of" if checking else "refit of"
    return [
        DiskFullWatch(r.paths.storage),
        MLflowTracker(r.tracking_uri, r.parent, pruned_signal=signal, searched=list(LABEL_KEYS), role="refit",
                      name_prefix=f"{word} {pick} · ", pruned_state="checked", tags={REFIT_OF_TAG: pick, "lora_study.refit_stage": stage},
                      n_train=r.n_split, experiment_path=r.stage_dir(stage), log_datasets=True),
        ProgressView(list(LABEL_KEYS), r.cfg.study.metric, r.cfg.study.mode, pruned_signal=signal, prefix=f"{word} {pick}: ",
                     pruned_word="checked", show_best=False),
        RepairCheckpointRecords(),
    ]


def _tuner(r: _Refit, stage: str, param_space: dict[str, Any], start_from: str | None) -> Any:
    """The stage's Tuner, restored when the stage already ran (a resumed study)."""
    from ray import tune

    from trainables import train

    from ..storage.atomic_fs import AtomicLocalFS

    fn = tune.with_parameters(train, start_from=start_from) if start_from else train
    trainable = tune.with_resources(fn, r.resources)
    storage_fs = None if is_remote(r.paths.storage) else pyarrow.fs.PyFileSystem(AtomicLocalFS())
    if tune.Tuner.can_restore(r.stage_dir(stage), storage_filesystem=storage_fs):
        return tune.Tuner.restore(r.stage_dir(stage), trainable, resume_unfinished=True, restart_errored=True, storage_filesystem=storage_fs)
    study = r.cfg.study
    keep = tune.CheckpointConfig(num_to_keep=1) if stage == CHECK else tune.CheckpointConfig(
        num_to_keep=r.cfg.storage.checkpoints_to_keep, checkpoint_score_attribute=study.metric, checkpoint_score_order=study.mode)
    run_config = tune.RunConfig(
        name=stage, storage_path=r.paths.experiment, storage_filesystem=storage_fs, callbacks=_callbacks(r, stage),
        checkpoint_config=keep, failure_config=tune.FailureConfig(max_failures=study.max_failures),
        stop={"samples_seen": r.plan.check_at} if stage == CHECK else None, verbose=0)
    tune_config = tune.TuneConfig(num_samples=1, reuse_actors=stage == CHECK, trial_dirname_creator=_trial_dirname)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _fit_stage(r: _Refit, stage: str, param_space: dict[str, Any], start_from: str | None = None) -> list[dict[str, Any]] | None:
    """Run (or finish) one stage; its trials as ``summary.trial_rows`` rows, ``None`` when interrupted."""
    from ..tracking.summary import trial_rows

    tuner = _tuner(r, stage, param_space, start_from)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return None
    rows = trial_rows(r.stage_dir(stage), r.cfg.study.metric, r.cfg.study.mode, list(LABEL_KEYS))
    return None if any(row["state"] == "unfinished" for row in rows) else rows


def _score_at(row: dict[str, Any], at: int, metric: str) -> dict[str, Any] | None:
    """The trial's evaluation at the check point (its first at or past ``at`` samples)."""
    return next((h for h in row["history"] if h.get("samples_seen", 0) >= at and h.get(metric) is not None), None)


def _candidate(r: _Refit, row: dict[str, Any]) -> dict[str, Any]:
    """One learning rate of the check: its score at the check point and its checkpoint there."""
    lr, metric = float(row["config"]["train.lr"]), r.cfg.study.metric
    at = _score_at(row, r.plan.check_at, metric) if row["state"] != "failed" else None
    return {"trial_id": row["trial_id"], "lr": lr, "factor": min(r.plan.factors, key=lambda f: abs(r.plan.lr * f - lr)),
            "score": at.get(metric) if at and row["checkpoint"] else None, "samples_seen": (at or {}).get("samples_seen"),
            "dev_accuracy": (at or {}).get("dev_accuracy"), "checkpoint": row["checkpoint"], "time_total_s": row.get("time_total_s")}


def _check(r: _Refit) -> dict[str, Any] | None:
    """The learning-rate check: each candidate trained to the check point; which one goes on."""
    from ray import tune

    space = {**r.plan.config, "train.lr": tune.grid_search([r.plan.lr * f for f in r.plan.factors])}
    rows = _fit_stage(r, CHECK, space)
    if rows is None:
        return None
    cands = sorted((_candidate(r, row) for row in rows), key=lambda c: -c["factor"])
    try:
        factor = choose([(c["factor"], c["score"]) for c in cands], r.cfg.study.mode)
    except ValueError:  # every candidate failed: nothing to continue
        factor = None
    return {"at": r.plan.check_at, "metric": r.cfg.study.metric, "candidates": cands, "factor": factor}


def run_refit(cfg: StudyConfig, paths: StudyPaths, tracking_uri: str, parent: str, pick: dict[str, Any],
              n_split: int) -> dict[str, Any]:
    """Refit ``pick`` (``summary.json``'s best) on a train split of ``n_split`` sentences; returns
    the summary's ``refit`` entry: ``state`` (``completed``, ``failed``, or ``unfinished`` when
    interrupted: resumable), the plan, the check, and the refit trial's scores and checkpoint."""
    resources = refit_resources(cfg)
    plan = make_plan(pick, cfg.refit, n_split, max(1, int(resources["cpu"])))
    r = _Refit(cfg, paths, tracking_uri, parent, plan, resources, n_split)
    entry: dict[str, Any] = {"of": plan.pick_id, "state": "unfinished", "plan": plan.to_json(), "resources": resources,
                             "epochs": plan.config["train.epochs"], "data_size": plan.config["data.size"]}
    factor, start_from = plan.factors[0], None
    if plan.checked:
        check = _check(r)
        if check is None:
            return entry
        entry["check"] = check
        if check["factor"] is None:
            log.warning("every learning rate of the refit's check failed; the pick stays the shipped model")
            return {**entry, "state": "failed"}
        factor = check["factor"]
        start_from = next(c["checkpoint"] for c in check["candidates"] if c["factor"] == factor)
    rows = _fit_stage(r, REFIT, plan.candidate(factor), start_from)
    if rows is None:
        return entry
    row = rows[0]
    if row["state"] == "failed":
        log.warning("the refit's trial %s failed; the pick stays the shipped model", row["trial_id"])
    entry.update(state=row["state"], trial_id=row["trial_id"], lr=plan.lr * factor, lr_factor=factor,
                 checkpoint=row["checkpoint"], config=row["config"], last=row["last"], time_total_s=row.get("time_total_s"),
                 **row["best"])
    return entry


# --------------------------------------------------------------------------- before Ray: will it fit


def machine_memory() -> int | None:
    """Bytes of memory this machine gives its processes: physical memory, or the cgroup's limit
    when lower (a container); ``None`` when unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def check_refit_fits(cfg: StudyConfig, trial: TrialConfig, local: bool) -> None:
    """One line, before Ray starts, when one refit trial of ``trial`` (the pick's config, or the
    study's base config before there is a pick) cannot fit in this machine's memory. Checked only
    when the trials run here (``local``): a cluster's nodes are not this machine. On a GPU the
    activations and optimizer state live in device memory, so only the host's part is checked."""
    from trainables import memory_estimate

    if not local:
        log.info("refit memory not checked: the trials run on a cluster")
        return
    trial = trial.model_copy(update={"data": trial.data.model_copy(update={"size": cfg.refit.data_size})})
    estimate = memory_estimate(trial)
    needed = estimate.total if cfg.resources.gpus_per_trial == 0 else estimate.total - estimate.activations - estimate.optimizer
    check_memory(needed, machine_memory(), estimate.describe(),
                 "train on fewer sentences (--set refit.data_size=N), a smaller train.batch_size or data.max_length, "
                 "or set refit.enabled=false")
