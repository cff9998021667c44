"""study.search (tpe + asha): ASHA-stopped trials reach Optuna as PRUNED, across Tuner.restore too.

The toy trainable is pure Python: accuracy = x * s / (s + 20) at s = samples_seen, so the
ranking at every ASHA rung is the ranking by ``x`` and the ground truth is known: a trial
was pruned iff it stopped before its own natural end (``n_reports * 10`` samples).
Trials run one at a time (``max_concurrent=1``) so rung decisions are deterministic.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.search_generator import SearchGenerator

from study.search.asha import SchedulerStateCallback, make_scheduler
from study.search.journal import get_optuna_study, load_optuna_study, save_optuna_study
from study.search.tpe import PrunedFeedbackOptunaSearch, make_searcher

MAX_T = 80
SPACE = {"x": tune.uniform(0.0, 1.0), "n_reports": tune.choice([3, 8])}
# A: full budget (ASHA's own STOP at max_t), B: strongest but finishes naturally at 30 < max_t,
# C: fails once (restore test) -- the rest are TPE suggestions, mostly pruned by A and B.
POINTS = [{"x": 0.9, "n_reports": 8}, {"x": 1.0, "n_reports": 3}, {"x": 0.95, "n_reports": 8}]


def accuracy(x: float, samples: int) -> float:
    return x * samples / (samples + 20)


def toy_trainable(config: dict) -> None:
    """Reports ``n_reports`` times (10 samples each), checkpointing every report."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "i").read_text())
    fail_mark = Path(config["mark_dir"], f"failed_{config['x']}")
    for i in range(start + 1, config["n_reports"] + 1):
        if config["x"] == config.get("fail_once_x") and i == 3 and not fail_mark.exists():
            fail_mark.touch()
            raise RuntimeError("injected failure")
        samples = i * 10
        acc = accuracy(config["x"], samples)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "i").write_text(str(i))
            tune.report(
                {"accuracy": acc, "f1": acc, "eval_loss": 1 - acc, "samples_seen": samples, "epoch": i / 8},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


class InterruptOnce(tune.Callback):
    """Ctrl-C-like stop after ``after`` results (SIGUSR1 is Tune's graceful-stop signal).

    The marker file keeps the copy restored from ``tuner.pkl`` from firing again.
    """

    def __init__(self, marker: Path, after: int) -> None:
        self.marker, self.after, self.seen = str(marker), after, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.after and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_tuner(tmp_path: Path, searcher, scheduler, num_samples: int, callbacks=(), fail_once_x=None):
    return tune.Tuner(
        toy_trainable,
        param_space={"mark_dir": str(tmp_path), "fail_once_x": fail_once_x},
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=num_samples, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            name="exp",
            verbose=0,
            callbacks=[SchedulerStateCallback(scheduler), *callbacks],
        ),
    )


def final_results(grid) -> dict[str, dict]:
    """trial_id -> {config, samples (reported series), acc (series)} from a ResultGrid."""
    out = {}
    for r in grid:
        df = r.metrics_dataframe
        out[r.metrics["trial_id"]] = {
            "config": r.config,
            "samples": [int(s) for s in df["samples_seen"]] if df is not None else [],
            "acc": list(df["accuracy"]) if df is not None else [],
            "error": r.error,
        }
    return out


def resume(path: str) -> dict[str, dict]:
    """``Tuner.restore`` the way the study runner does, run to the end, return final_results."""
    tuner = tune.Tuner.restore(path, toy_trainable, resume_unfinished=True, restart_errored=True)
    return final_results(tuner.fit())


def was_pruned(info: dict) -> bool:
    """Ground truth: stopped before its own natural end."""
    return bool(info["samples"]) and info["samples"][-1] < info["config"]["n_reports"] * 10


# --------------------------------------------------------------------------------------------
# Unit level: no Tuner


def test_budget_stop_is_not_a_prune_and_the_mark_reaches_the_wrapped_searcher():
    sched = make_scheduler(grace_period=10, reduction_factor=2, max_t=20)
    searcher = make_searcher(SPACE, seed=0, max_concurrent=2)
    controller = SimpleNamespace(search_alg=SearchGenerator(searcher))  # as Tune wraps it
    good, bad = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="bad")
    for t in (good, bad):
        sched.on_trial_add(controller, t)
    res = lambda s, acc: {"samples_seen": s, "accuracy": acc}  # noqa: E731

    assert sched.on_trial_result(controller, good, res(10, 0.8)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(controller, bad, res(10, 0.1)) == TrialScheduler.STOP
    assert sched.on_trial_result(controller, good, res(20, 0.9)) == TrialScheduler.STOP  # max_t

    assert sched.was_pruned("bad") and not sched.was_pruned("good")
    base = searcher.searcher
    assert isinstance(searcher, ConcurrencyLimiter) and isinstance(base, PrunedFeedbackOptunaSearch)
    assert base._pruned_trial_ids == {"bad"}


def test_state_mapping_without_tuner():
    searcher = make_searcher(SPACE, seed=0)
    study = get_optuna_study(searcher)
    cfg = {t: searcher.suggest(t) for t in ("done", "pruned", "error", "nan", "noresult")}

    def result(t, s, acc):
        return {"accuracy": acc, "samples_seen": s, **{f"config/{k}": v for k, v in cfg[t].items()}}

    for t in ("done", "pruned", "nan"):
        searcher.on_trial_result(t, result(t, 10, 0.5))
    searcher.on_trial_result("done", result("done", 20, 0.7))
    searcher.on_trial_result("done", result("done", 10, 0.6))  # re-reported step (resume): ignored
    searcher.mark_pruned("pruned")

    searcher.on_trial_complete("done", result("done", 30, 0.65))  # last value, not best (0.7)
    searcher.on_trial_complete("pruned", result("pruned", 20, 0.3))  # the STOP result itself
    searcher.on_trial_complete("error", error=True)
    searcher.on_trial_complete("nan", result("nan", 20, math.nan))
    searcher.on_trial_complete("noresult")

    # A trial Tune re-created with a new id (restart_errored): registered, same params.
    searcher.on_trial_result("restarted", result("error", 10, 0.4))
    searcher.on_trial_complete("restarted", result("error", 20, 0.45))

    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert by_id["done"].state == TrialState.COMPLETE and by_id["done"].value == 0.65
    assert by_id["done"].intermediate_values == {10: 0.5, 20: 0.7, 30: 0.65}
    assert by_id["pruned"].state == TrialState.PRUNED
    assert by_id["pruned"].intermediate_values == {10: 0.5, 20: 0.3}
    assert by_id["error"].state == TrialState.FAIL
    assert by_id["nan"].state == TrialState.FAIL
    assert by_id["noresult"].state == TrialState.FAIL
    assert by_id["restarted"].state == TrialState.COMPLETE
    assert by_id["restarted"].params == by_id["error"].params

    # Marks and the study survive Ray's searcher checkpoint (pickle of __dict__).
    searcher.mark_pruned("x")
    path = Path(tempfile.mkdtemp()) / "s.pkl"
    searcher.save(str(path))
    restored = PrunedFeedbackOptunaSearch()
    restored.restore(str(path))
    assert "x" in restored._pruned_trial_ids
    assert len(get_optuna_study(restored).trials) == len(study.trials)


def test_scheduler_state_survives_pickle_and_callback_roundtrip():
    sched = make_scheduler(grace_period=10, reduction_factor=2, max_t=80)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(3)]
    for i, t in enumerate(trials):
        sched.on_trial_add(None, t)
        sched.on_trial_result(None, t, {"samples_seen": 10, "accuracy": [0.5, 1.0, 0.0][i]})
    assert sched.pruned_trial_ids == {"t2"}

    # tuner.pkl pickles scheduler and callbacks together: the callback keeps pointing at it.
    cb = SchedulerStateCallback(sched)
    sched2, cb2 = pickle.loads(pickle.dumps((sched, cb)))
    assert cb2.scheduler is sched2

    state = pickle.loads(pickle.dumps(cb.get_state()))  # what callback-states-*.pkl holds
    fresh = make_scheduler(grace_period=10, reduction_factor=2, max_t=80)
    SchedulerStateCallback(fresh).set_state(state)
    assert fresh.get_state()["rungs"] == sched.get_state()["rungs"]
    assert fresh.was_pruned("t2") and fresh._num_stopped == 1
    # The restored rung records cut a newcomer that would pass an empty rung.
    newcomer = SimpleNamespace(trial_id="late")
    fresh.on_trial_add(None, newcomer)
    assert fresh.on_trial_result(None, newcomer, {"samples_seen": 10, "accuracy": 0.1}) == "STOP"


# --------------------------------------------------------------------------------------------
# With a real Tuner


def run_study(tmp_path: Path, pruned_feedback: bool):
    sched = make_scheduler(grace_period=10, reduction_factor=2, max_t=MAX_T)
    searcher = make_searcher(
        SPACE, seed=3, points_to_evaluate=POINTS[:2], max_concurrent=1, pruned_feedback=pruned_feedback
    )
    grid = make_tuner(tmp_path, searcher, sched, num_samples=7).fit()
    return sched, searcher, final_results(grid)


def test_asha_stopped_trials_are_pruned_in_optuna(ray_local, tmp_path):
    sched, searcher, results = run_study(tmp_path, pruned_feedback=True)
    study = get_optuna_study(searcher)
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}

    assert set(by_id) == set(results)
    assert len(sched.pruned_trial_ids) >= 2, "the toy study must make ASHA stop trials"
    assert sched.pruned_trial_ids == {tid for tid, info in results.items() if was_pruned(info)}
    for tid, info in results.items():
        ot = by_id[tid]
        assert ot.intermediate_values == dict(zip(info["samples"], info["acc"]))  # step = samples_seen
        if tid in sched.pruned_trial_ids:
            assert ot.state == TrialState.PRUNED
        else:
            assert ot.state == TrialState.COMPLETE and ot.value == info["acc"][-1]

    # B finished naturally below max_t and is still COMPLETE (samples_seen < max_t is no prune test).
    (b,) = [t for t in results if results[t]["config"]["x"] == 1.0]
    assert results[b]["samples"][-1] == 30 < MAX_T and by_id[b].state == TrialState.COMPLETE

    # Persisted copies hold the same trials.
    journal = save_optuna_study(searcher, tmp_path / "optuna.journal", study_name="toy")
    save_optuna_study(study, journal, study_name="toy")  # re-saving replaces the file
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    copies = [optuna.load_study(study_name="toy", storage=storage), load_optuna_study(tmp_path / "ray" / "exp")]
    for copy in copies:
        assert [(t.state, t.value, t.intermediate_values, t.user_attrs) for t in copy.trials] == [
            (t.state, t.value, t.intermediate_values, t.user_attrs) for t in study.trials
        ]


def test_stock_optuna_search_reports_pruned_trials_as_complete(ray_local, tmp_path):
    """The flaw being fixed: stock OptunaSearch tells Optuna COMPLETE with low-fidelity values."""
    sched, searcher, results = run_study(tmp_path, pruned_feedback=False)
    assert type(searcher.searcher) is OptunaSearch
    study = get_optuna_study(searcher)
    assert sched.pruned_trial_ids
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == len(results) and all(t.state == TrialState.COMPLETE for t in finished)
    low_fidelity_values = {results[tid]["acc"][-1] for tid in sched.pruned_trial_ids}
    assert low_fidelity_values <= {t.value for t in finished}


def test_resume_after_interrupt_and_restart_errored(ray_local, tmp_path):
    sched = make_scheduler(grace_period=10, reduction_factor=2, max_t=MAX_T)
    searcher = make_searcher(SPACE, seed=3, points_to_evaluate=POINTS, max_concurrent=1)
    interrupt = InterruptOnce(tmp_path / "interrupted", after=4)  # A at samples_seen=40
    tuner = make_tuner(tmp_path, searcher, sched, num_samples=6, callbacks=[interrupt], fail_once_x=0.95)
    first = final_results(tuner.fit())
    assert len(first) == 1 and (tmp_path / "interrupted").exists()  # stopped inside trial A
    (a_id,) = first

    path = str(tmp_path / "ray" / "exp")
    second = resume(path)
    (c_id,) = [t for t, info in second.items() if info["error"] is not None]
    assert a_id in second and second[a_id]["samples"][-1] == MAX_T  # A resumed under its own id

    third = resume(path)
    (c2_id,) = set(third) - set(second)  # C re-created with a new id
    assert third[c2_id]["config"]["x"] == 0.95 and third[c2_id]["error"] is None

    study = load_optuna_study(path)
    ids = [t.user_attrs["ray_trial_id"] for t in study.trials]
    assert sorted(ids) == sorted(set(third) | {c_id}), "one Optuna trial per Ray trial id"
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert by_id[c_id].state == TrialState.FAIL
    assert by_id[c2_id].params == by_id[c_id].params
    assert sorted(by_id[a_id].intermediate_values) == list(range(10, MAX_T + 1, 10))
    for tid, info in third.items():
        expected = TrialState.PRUNED if was_pruned(info) else TrialState.COMPLETE
        assert by_id[tid].state == expected, (tid, info["samples"])
    assert any(was_pruned(info) for info in third.values())


# (stored history's samples_seen, checkpoints (samples_seen, exists), latest, status, expected latest after repair)
REPAIR_CASES = [
    ("history reaches latest", [100, 200, 300], [(100, True), (300, True)], 300, "PENDING", 300),
    ("latest ahead of history", [100, 200, 312], [(200, True), (500, True)], 500, "PENDING", 200),
    ("ahead, nothing older", [100, 200, 312], [(500, True)], 500, "PENDING", None),
    ("latest gone", [100, 200, 300, 400], [(200, True), (300, True), (400, False)], 400, "PENDING", 300),
    ("torn last row ignored", [100, 200, "torn"], [(200, True), (300, True)], 300, "PENDING", 200),
    ("no result.json", None, [(100, True)], 100, "PENDING", None),
    ("finished trials untouched", [100], [(100, True), (500, True)], 500, "TERMINATED", 500),
]


@pytest.mark.parametrize("case,rows,ckpts,latest,status,expected", REPAIR_CASES, ids=[c[0] for c in REPAIR_CASES])
def test_repair_resumes_only_from_checkpoints_the_history_reaches(case, rows, ckpts, latest, status, expected, tmp_path):
    """``RepairCheckpointRecords`` after a crash: the latest checkpoint must exist and must not be
    beyond the trial's stored ``result.json`` (else evaluations in between would never be stored)."""
    import json
    from types import SimpleNamespace as NS

    import pyarrow.fs
    from ray.tune import Checkpoint

    from study.storage.repair import RepairCheckpointRecords

    fs = pyarrow.fs.LocalFileSystem()
    records = {}
    for seen, exists in ckpts:
        d = tmp_path / f"checkpoint_{seen}"
        if exists:
            d.mkdir()
        records[seen] = NS(metrics={"samples_seen": seen, "training_iteration": seen // 100},
                           checkpoint=Checkpoint(str(d), filesystem=fs) if exists else NS(filesystem=fs, path=str(d)))
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    if rows is not None:
        (trial_dir / "result.json").write_text(
            "".join('{"samples_se' if r == "torn" else json.dumps({"samples_seen": r, "accuracy": 0.5}) + "\n" for r in rows))
    manager = NS(_latest_checkpoint_result=records[latest], _checkpoint_results=list(records.values()))
    # the history is read from storage (``trial.path``); the crashed run's session dir is gone
    trial = NS(trial_id="t1", status=status, path=str(trial_dir), local_path=str(tmp_path / "gone"),
               storage=NS(storage_filesystem=fs), run_metadata=NS(checkpoint_manager=manager))
    repair = RepairCheckpointRecords(verify=lambda d: None)  # empty dirs stand for intact checkpoints here
    repair.on_step_begin(0, [trial])
    got = manager._latest_checkpoint_result
    assert (got.metrics["samples_seen"] if got else None) == expected
    assert all(Path(r.checkpoint.path).exists() for r in manager._checkpoint_results)
    repair.on_step_begin(1, [trial])  # once per driver: later steps never touch a trial again
    assert manager._latest_checkpoint_result is got
