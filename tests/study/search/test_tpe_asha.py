"""study.search (tpe + asha): ASHA-stopped trials reach Optuna as PRUNED, across Tuner.restore too.

The Tuner tests run the toy trainable of ``tests.study.harness``, whose ranking at every rung and
whose ground truth (pruned iff stopped before its own natural end) are known.
"""

from __future__ import annotations

import math
import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.search_generator import SearchGenerator

from study.search.asha import SchedulerStateCallback, make_scheduler
from study.search.journal import get_optuna_study, load_optuna_study, read_optuna_journal, save_optuna_study
from study.search.tpe import PrunedFeedbackOptunaSearch, make_searcher
from tests.study.harness import MAX_T, POINTS, SPACE, InterruptOnce, final_results, make_tuner, resume, was_pruned

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


def test_the_journal_leaves_out_trials_queued_and_never_asked_for(tmp_path):
    """The learning-rate prior queues its start-up draws; those a study never reached are not trials."""
    import optuna

    study = optuna.create_study(study_name="q", direction="maximize")
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 0.7})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study.tell(trial, 0.9)
    study.set_user_attr("note", "kept")
    saved = read_optuna_journal(save_optuna_study(study, tmp_path / "j.log"))
    assert [t.state for t in saved.trials] == [optuna.trial.TrialState.COMPLETE] and saved.trials[0].params == {"x": 0.5}
    assert saved.user_attrs == {"note": "kept"}


def test_rewriting_the_journal_says_nothing_in_the_study_log(tmp_path):
    """Every save rewrites the file and so "creates" its study again: Optuna's INFO line about that
    would fill study.log with one line per finished trial. Its warnings still pass; the level is restored."""
    import logging

    import optuna

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    journal_log = logging.getLogger("optuna.storages.journal._storage")
    journal_log.addHandler(handler)
    try:
        study = optuna.create_study(study_name="quiet", direction="maximize")
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}), 0.5)
        for _ in range(2):
            save_optuna_study(study, tmp_path / "j.log")
        assert [r.getMessage() for r in seen] == []
        assert logging.getLogger("optuna.storages.journal").level == logging.NOTSET
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "other.log"))).create_new_study(
            [optuna.study.StudyDirection.MAXIMIZE], "loud")
        assert any("loud" in r.getMessage() for r in seen)  # the handler sees Optuna's line outside a save
    finally:
        journal_log.removeHandler(handler)
