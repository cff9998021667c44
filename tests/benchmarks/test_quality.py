"""benchmarks/quality.py: seeds in, every seed's own trial result out (JSON), bad input in one line."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality
from benchmarks.common import BenchmarkError

SEEDS = [("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("0,3,7", [0, 3, 7]), ("1-2,5", [1, 2, 5])]


@pytest.mark.parametrize("text,seeds", SEEDS)
def test_parse_seeds(text, seeds):
    assert quality.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a-b", "0-2,1", "3-1"])
def test_bad_seeds(text):
    with pytest.raises(BenchmarkError, match="--seeds"):
        quality.parse_seeds(text)


def tiny_args(tiny_bert, sst2_small, out):
    return ["--seeds", "0,1", "--data", str(sst2_small), "--json", str(out), "--goal", "0.5",
            "--set", f"model.name={tiny_bert}", "--set", "data.size=64", "--set", "data.dev_size=64",
            "--set", "data.max_length=32", "--set", "train.threads=1", "--set", "train.eval_every_samples=32"]


def test_each_seed_is_its_own_trial(tiny_bert, sst2_small, tmp_path, capsys):
    """The JSON holds what run_trial gives for each seed (not a copy of one run)."""
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides
    from trainables.loop import run_trial

    out = tmp_path / "q.json"
    args = tiny_args(tiny_bert, sst2_small, out)
    assert quality.main(args) == 0
    res = json.loads(out.read_text())
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    for run in res["runs"]:
        cfg = TrialConfig.from_dict(apply_overrides(load_yaml(quality.RECIPE), {
            **parse_overrides(sets), "data.path": str(sst2_small), "train.seed": run["seed"]}))
        history = run_trial(cfg)
        assert run["accuracy"] == history[-1]["accuracy"]
        assert [c["samples_seen"] for c in run["curve"]] == [32, 64]
    accs = [r["accuracy"] for r in res["runs"]]
    assert res["complete"] is True and res["seeds"] == [0, 1] and res["accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
    assert res["accuracy"]["at_goal"] == sum(a >= 0.5 for a in accs)
    assert res["config"]["overrides"] == sets and res["date"] and res["hardware"]["usable_cpus"] >= 1
    assert "mean" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("extra,expected", [
    (["--set", "train.seed=3"], "use --seeds"),
    (["--set", "lora.r=0"], "lora.r"),
    (["--seeds", "x"], "--seeds"),
])
def test_bad_input_is_one_line(extra, expected, tiny_bert, sst2_small, tmp_path, capsys):
    assert quality.main(tiny_args(tiny_bert, sst2_small, tmp_path / "q.json") + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "q.json").exists()


def test_an_interrupted_run_keeps_the_seeds_it_finished(tiny_bert, sst2_small, tmp_path, monkeypatch):
    """A crash (or Ctrl-C) in seed 2 of 2 leaves seed 1's result on disk, marked incomplete."""
    import trainables.loop

    real, calls = trainables.loop.run_trial, []

    def crashing(cfg, **kw):
        calls.append(cfg.train.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(trainables.loop, "run_trial", crashing)
    out = tmp_path / "q.json"
    with pytest.raises(KeyboardInterrupt):
        quality.main(tiny_args(tiny_bert, sst2_small, out))
    res = json.loads(out.read_text())
    assert calls == [0, 1] and res["complete"] is False
    assert [r["seed"] for r in res["runs"]] == [0] and res["accuracy"]["mean"] == res["runs"][0]["accuracy"]
