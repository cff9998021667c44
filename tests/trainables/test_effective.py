"""``TrialConfig.effective``: the values a trial trains with where its config only says how to
derive them, and the loop training exactly those."""

from __future__ import annotations

import pytest

from trainables.config import TrialConfig

#: (config, n_train, keys a study varies, expected effective values: a subset of what comes back)
CASES = [
    ({"lora.r": 4, "lora.alpha_multiple": 4}, None, (),
     {"lora.alpha": 16.0, "lora.target_modules": ["query", "value"], "lora.target_modules_preset": "qv"}),
    ({"lora.r": 8, "lora.alpha": 32, "lora.target_modules": ["query", "key"]}, None, (),
     {"lora.alpha": 32.0, "lora.target_modules": ["query", "key"]}),
    ({"lora.r": 16, "lora.alpha_multiple": 0.5, "lora.target_modules": "all"}, None, (),
     {"lora.alpha": 8.0, "lora.target_modules_preset": "all",
      "lora.target_modules": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]}),
    # data.size all → the split; 2 epochs of 1000 at batch 32: 32 steps each (the last one short)
    ({"data.size": "all", "train.epochs": 2, "train.batch_size": 32, "train.warmup_ratio": 0.1}, 1000, (),
     {"data.size": 1000, "train.steps_per_epoch": 32, "train.total_steps": 64, "train.warmup_steps": 6}),
    # a fraction → a count (kept beside); half an epoch takes full batches
    ({"data.size": 0.25, "train.epochs": 0.5, "train.batch_size": 16, "train.warmup_ratio": 0.0}, 1000, (),
     {"data.size": 250, "data.size_fraction": 0.25, "train.steps_per_epoch": 16, "train.total_steps": 8, "train.warmup_steps": 0}),
    # the config every trial of a study starts from: what a searched key changes is not its value
    ({"lora.r": 8, "lora.alpha_multiple": 2, "data.size": 500}, 1000, ("lora.r",),
     {"lora.target_modules": ["query", "value"], "data.size": 500, "train.total_steps": 16}),
    ({"lora.r": 8, "lora.alpha": 16}, 1000, ("lora.r", "train.batch_size"),
     {"lora.alpha": 16.0, "data.size": 1000}),
    ({"data.size": 500}, 1000, ("data.holdout_size",), {"lora.alpha": 16.0}),
]


@pytest.mark.parametrize("config,n_train,varied,expected", CASES, ids=[str(c[0]) + str(c[2]) for c in CASES])
def test_effective_values(config, n_train, varied, expected):
    got = TrialConfig.from_dict(config).effective(n_train, varied)
    assert {k: got.get(k) for k in expected} == expected


def test_left_out_when_derived_from_a_varied_key():
    got = TrialConfig.from_dict({"lora.r": 8, "lora.alpha_multiple": 2}).effective(1000, ["lora.alpha_multiple"])
    assert "lora.alpha" not in got
    got = TrialConfig.from_dict({"data.size": 500}).effective(1000, ["data.size"])
    assert not {"data.size", "train.total_steps", "train.warmup_steps"} & set(got)
    assert "lora.target_modules" not in TrialConfig().effective(1000, ["lora.target_modules"])


def test_the_trial_trains_the_effective_values(tiny_bert, sst2_small):
    """A real (tiny) trial: PEFT gets the effective alpha and modules, the loop runs the effective
    steps and warms up for the effective warmup steps, and a fractional epoch ends at the samples
    the trial announced (its short batch may fall inside the partial epoch)."""
    from trainables.loop import build_optimizer, make_plan, run_trial
    from trainables.model import build_model

    cfg = TrialConfig.from_dict({"model.name": str(tiny_bert), "data.path": str(sst2_small), "data.size": 0.5,
                                 "data.dev_size": 50, "lora.r": 4, "lora.alpha_multiple": 2, "lora.target_modules": "qkv",
                                 "train.batch_size": 64, "train.epochs": 1.5, "train.warmup_ratio": 0.2})
    eff = cfg.effective(600)
    assert eff["data.size"] == 300 and eff["lora.alpha"] == 8.0
    history = run_trial(cfg)
    assert history[-1]["step"] == eff["train.total_steps"] == 8
    assert history[-1]["samples_seen"] == history[-1]["samples_total"] > 300
    model = build_model(cfg.model.name, cfg.lora, ["negative", "positive"])
    peft = model.peft_config["default"]
    assert peft.lora_alpha == eff["lora.alpha"] and sorted(peft.target_modules) == sorted(eff["lora.target_modules"])
    plan = make_plan(cfg, eff["data.size"])
    _, scheduler = build_optimizer(model, cfg, plan)
    lrs = [scheduler.lr_lambda(s) if hasattr(scheduler, "lr_lambda") else scheduler.lr_lambdas[0](s) for s in range(4)]
    warm = eff["train.warmup_steps"]
    assert warm == 2 and lrs[warm - 1] < 1.0 and lrs[warm] == pytest.approx(1.0)
