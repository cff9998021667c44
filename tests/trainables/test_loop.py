"""The training loop's GPU-minded parts, checked on CPU: no per-step host reads, batch k+1 made
before step k, rounded batch widths that leave the logits unchanged, ``train.compile`` plumbing."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainables import loop
from trainables.config import TrialConfig
from trainables.data import collate, padded_width, prepare_data
from trainables.loop import TrainState, build_optimizer, make_plan, pad_multiple, predict_logits, run_trial, train_steps
from trainables.model import build_model, load_tokenizer

#: aten ops that copy a value from a tensor into Python: on CUDA each one waits for the GPU.
HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default, torch.ops.aten.equal.default}


class CountHostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in HOST_READS
        return func(*args, **(kwargs or {}))


def tiny_cfg(model, data, **over):
    d = {"model.name": str(model), "data.path": str(data), "data.size": 96, "data.max_length": 48, "data.dev_size": 64,
         "train.epochs": 1, "train.batch_size": 16, "train.lr": 5e-3, "train.threads": 1, "lora.r": 4}
    d.update(over)
    return TrialConfig.from_dict(d)


def trial_parts(cfg):
    data = prepare_data(cfg.data, load_tokenizer(cfg.model.name))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, cfg.lora, data.label_names, cfg.model.pooling, cfg.model.dropout)
    plan = make_plan(cfg, len(data.train))
    optimizer, scheduler = build_optimizer(model, cfg, plan)
    return data, model, plan, optimizer, scheduler


@pytest.mark.parametrize("longest, multiple, width", [(13, 1, 13), (13, 8, 16), (16, 8, 16), (17, 16, 32), (1, 16, 16), (128, 16, 128)])
def test_padded_width(longest, multiple, width):
    assert padded_width(longest, multiple) == width


@pytest.mark.parametrize("setting, device, expected", [("auto", "cpu", 1), ("auto", "cuda", 16), (8, "cpu", 8), (1, "cuda", 1)])
def test_pad_multiple_resolves_per_device(tiny_bert, sst2_small, setting, device, expected):
    cfg = tiny_cfg(tiny_bert, sst2_small, **{"train.pad_multiple": setting})
    assert pad_multiple(cfg, torch.device(device)) == expected


def test_collate_rounds_width_and_masks_the_padding(tiny_bert, sst2_small):
    data = prepare_data(tiny_cfg(tiny_bert, sst2_small).data, load_tokenizer(str(tiny_bert)))
    idx = np.arange(5)
    plain, rounded = collate(data.train, idx, data.pad_id), collate(data.train, idx, data.pad_id, pad_multiple=16)
    longest = int(data.train.lengths[idx].max())
    assert plain["input_ids"].shape == (5, longest)
    assert rounded["input_ids"].shape[1] % 16 == 0 and rounded["input_ids"].shape[1] >= longest
    assert torch.equal(rounded["attention_mask"].sum(1), plain["attention_mask"].sum(1))  # only padding was added
    assert torch.equal(rounded["input_ids"][:, :longest], plain["input_ids"])
    assert (rounded["input_ids"][:, longest:] == data.pad_id).all()


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_st_bert"])  # [CLS] pooling and mean pooling
def test_extra_padding_leaves_logits_unchanged(request, sst2_small, model_fixture):
    model_dir = request.getfixturevalue(model_fixture)
    cfg = tiny_cfg(model_dir, sst2_small)
    data, model, *_ = trial_parts(cfg)
    cpu = torch.device("cpu")
    base = predict_logits(model, data.dev, data.pad_id, 16, cpu)
    for multiple in (8, 64):
        padded = predict_logits(model, data.dev, data.pad_id, 16, cpu, pad_multiple=multiple)
        np.testing.assert_allclose(padded, base, rtol=1e-5, atol=1e-5)


def test_rounded_widths_train_to_the_same_losses(tiny_bert, sst2_small):
    runs = [run_trial(tiny_cfg(tiny_bert, sst2_small, **{"train.pad_multiple": m, "lora.dropout": 0.0, "model.dropout": 0.0}))[-1] for m in (1, 16)]
    assert runs[0]["train_loss"] == pytest.approx(runs[1]["train_loss"], rel=1e-4)
    assert runs[0]["eval_loss"] == pytest.approx(runs[1]["eval_loss"], rel=1e-4)


class RecordLosses(torch.nn.Module):
    """Wraps a model and keeps each step's loss: the reference for the loop's on-device mean."""

    def __init__(self, model):
        super().__init__()
        self.model, self.losses = model, []

    def forward(self, **batch):
        out = self.model(**batch)
        self.losses.append(out.loss.detach().clone())
        return out


def test_train_loss_is_the_mean_of_the_step_losses(tiny_bert, sst2_small):
    cfg = tiny_cfg(tiny_bert, sst2_small, **{"train.eval_every_samples": 48})
    data, model, plan, optimizer, scheduler = trial_parts(cfg)
    state, rec = TrainState(next_eval_at=plan.next_eval(0)), RecordLosses(model)
    first = train_steps(rec, optimizer, scheduler, data, state, plan, cfg, torch.device("cpu"))
    assert state.step == 3 and len(rec.losses) == 3 and first.dtype == torch.float64
    assert float(first) == pytest.approx(float(torch.stack(rec.losses).double().mean()), rel=1e-12)
    second = train_steps(rec, optimizer, scheduler, data, state, plan, cfg, torch.device("cpu"))
    assert state.step == 6 and state.epoch == 1 and state.batch_in_epoch == 0
    assert float(second) == pytest.approx(float(torch.stack(rec.losses[3:]).double().mean()), rel=1e-12)


def test_training_steps_read_nothing_back_from_the_device(tiny_bert, sst2_small):
    """Every host read in ``train_steps`` is one the model itself makes (transformers checks each
    padding mask); the loop adds none per step, which on CUDA lets the host run ahead of the GPU."""
    cfg = tiny_cfg(tiny_bert, sst2_small)
    data, model, plan, optimizer, scheduler = trial_parts(cfg)
    cpu = torch.device("cpu")
    batch = collate(data.train, np.arange(16), data.pad_id)
    with CountHostReads() as model_reads:  # what one bare step costs: forward, backward, clip, optimizer
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    state = TrainState(next_eval_at=plan.next_eval(0))
    with CountHostReads() as loop_reads:
        mean_loss = train_steps(model, optimizer, scheduler, data, state, plan, cfg, cpu)
    assert state.step == 6
    assert loop_reads.count == state.step * model_reads.count, (loop_reads.count, model_reads.count)
    assert torch.isfinite(mean_loss)


def test_next_batch_is_made_before_the_current_one_is_used():
    log = []
    for item, loaded in loop._one_ahead(iter([1, 2, 3]), lambda x: log.append(("load", x)) or 10 * x):
        assert loaded == 10 * item
        log.append(("use", item))
    assert log == [("load", 1), ("load", 2), ("use", 1), ("load", 3), ("use", 2), ("use", 3)]
    assert list(loop._one_ahead(iter([]), lambda x: x)) == []


def test_compile_trains_through_the_wrapper_and_checkpoints_the_model(tiny_bert, sst2_small, monkeypatch):
    """``train.compile`` plumbing, traced by dynamo with the eager backend (Inductor's compile time
    and CUDA graphs are for the GPU check): same losses, and checkpoints hold the plain model's keys."""
    from trainables.loop import load_checkpoint

    monkeypatch.setattr(loop, "COMPILE_OPTIONS", {"backend": "eager"})
    over = {"lora.dropout": 0.0, "model.dropout": 0.0, "data.size": 48}
    plain = run_trial(tiny_cfg(tiny_bert, sst2_small, **over))[-1]
    ckpts = []
    compiled = run_trial(tiny_cfg(tiny_bert, sst2_small, **over, **{"train.compile": True}),
                         report=lambda m, d: ckpts.append(load_checkpoint(d)))[-1]
    assert compiled["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    assert compiled["eval_loss"] == pytest.approx(plain["eval_loss"], rel=1e-4)
    assert ckpts and not any("_orig_mod" in k for k in ckpts[-1].adapter)
