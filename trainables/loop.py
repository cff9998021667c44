"""The shared LoRA trainable: one trial, data → model → loop, with or without Ray.

Entry points:
- ``train(config)``: a Ray Tune function trainable. Reports after every dev evaluation through
  ``ray.tune.report`` with an adapter-only checkpoint; when Tune restores the trial it resumes
  from ``ray.tune.get_checkpoint()`` exactly where it stopped (same data order, same RNG).
- ``run_trial(cfg, report=…)``: the same loop as a plain function (tests, benchmarks).
- ``python -m trainables.loop --config FILE [--set key=value …] [--out DIR] [--resume-from DIR]``.

Speed on CPU comes from two choices, both measured in ``benchmarks/trainable_speed.py``:
length-bucketed batches (``data.make_batches``: little padding) and ``FastDropout``
(``dropout.py``: dropout masks at a fifth of torch's CPU cost, ``train.fast_dropout``).

On a GPU a LoRA step of a small encoder is bound by host work (Python, kernel launches), not by
the GPU's math, so the loop never makes the host wait for the GPU: the training loss is summed
on the device and read once per report (not ``float(loss)`` per step), batches are collated into
pinned memory one step ahead and copied with ``non_blocking`` (a copy from pageable memory waits
for the GPU), gradient clipping and AdamW are fused multi-tensor kernels without host reads, and
``train.pad_multiple`` rounds batch widths so that ``train.compile`` sees few shapes. The one read
left inside a step is transformers' own check whether a padding mask has any padding at all
(``masking_utils``); it is skipped under ``torch.compile`` and CUDA-graph capture.

Reported metrics: ``accuracy``, ``f1`` (macro), ``eval_loss`` (on the held-out validation split when
``data.holdout_size`` is set, which then adds the dev split as ``dev_accuracy``, ``dev_f1``,
``dev_eval_loss``; else on dev), ``train_loss`` (mean since the last report), ``samples_seen`` (the fidelity ASHA schedules on), ``epoch``, ``trainable_params``,
``samples_per_s`` (training throughput since the last report, evaluation excluded),
``samples_total`` (what the trial sees if no scheduler stops it), and where the time went:
``setup_s`` (data + model load before the first step, this run of the trial), ``train_s`` and
``eval_s`` (training steps and dev evaluation since the last report), and ``time_unix`` (wall
clock at the end of the evaluation) — what ``benchmarks/overhead.py`` sets against a study's wall
time.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

if __name__ == "__main__":  # --help and bad arguments are answered before torch and transformers load (seconds)
    from trainables.cli import build_parser as _cli

    _cli().parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .cli import build_parser  # noqa: E402
from .config import ConfigError, TrialConfig, apply_overrides, load_yaml, parse_overrides  # noqa: E402
from .data import TokenizedSplit, TrialData, collate, make_batches, prepare_data  # noqa: E402
from .dropout import use_fast_dropout  # noqa: E402
from .model import build_model, load_tokenizer  # noqa: E402
from .pooling import pooling_of  # noqa: E402

__all__ = [
    "train",
    "run_trial",
    "build_optimizer",
    "train_steps",
    "evaluate",
    "evaluate_splits",
    "scores",
    "predict_logits",
    "pad_multiple",
    "compiled_for_training",
    "COMPILE_OPTIONS",
    "save_checkpoint",
    "load_checkpoint",
    "TrainState",
    "Resume",
    "main",
]

Reporter = Callable[[dict[str, Any], str], None]  # (metrics, checkpoint_dir)
CHECKPOINT_META = "lora_study.json"
TRAINER_STATE = "trainer_state.pt"


@dataclass
class TrainState:
    """Where the loop is; with the seed this is all it takes to rebuild the data order."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples_seen: int = 0
    next_eval_at: int = 0  # samples; 0 = no scheduled evaluation left (only the end's, or per epoch)


@dataclass
class Resume:
    """A checkpoint read into memory (the directory may be temporary)."""

    adapter: dict[str, torch.Tensor]
    trainer: dict[str, Any]


@dataclass
class Plan:
    steps_per_epoch: int
    total_steps: int
    eval_every: int | None  # samples; None = at each epoch end
    total_samples: int  # what the trial sees if nothing stops it (a scheduler stop shows as less)
    eval_at: tuple[int, ...] = ()  # extra evaluation points (samples)
    warmup_steps: int = 0

    @property
    def scheduled(self) -> bool:
        """Evaluations by samples seen (else: at each epoch's end)."""
        return self.eval_every is not None or bool(self.eval_at)

    def next_eval(self, seen: int) -> int:
        """The first scheduled evaluation point after ``seen`` samples (0: none left)."""
        points = [p for p in self.eval_at if p > seen]
        if self.eval_every is not None:
            points.append((seen // self.eval_every + 1) * self.eval_every)
        return min(points, default=0)


# --------------------------------------------------------------------------- setup


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def pad_multiple(cfg: TrialConfig, device: torch.device) -> int:
    """``train.pad_multiple`` resolved for ``device`` (``auto``: 16 on CUDA, 1 elsewhere)."""
    value = cfg.train.pad_multiple
    if value == "auto":
        return 16 if device.type == "cuda" else 1
    return int(value)


#: ``torch.compile`` arguments for ``train.compile`` (a module constant so that tests can trace
#: with ``backend="eager"`` instead of paying for Inductor's C++/Triton compilation).
COMPILE_OPTIONS: dict[str, Any] = {"mode": "reduce-overhead"}


def compiled_for_training(model: torch.nn.Module, cfg: TrialConfig) -> torch.nn.Module:
    """The module the training steps call: ``model`` itself, or with ``train.compile`` a
    ``torch.compile`` wrapper around it that shares its parameters (evaluation, checkpoints and
    exports keep using ``model``, so they never see the wrapper's renamed state dict)."""
    return torch.compile(model, **COMPILE_OPTIONS) if cfg.train.compile else model


def build_optimizer(model: torch.nn.Module, cfg: TrialConfig, plan: Plan):
    """AdamW over the trainable parameters only, linear warmup then linear decay.

    The fused kernel (CPU and CUDA) updates all ~30 LoRA/head tensors in one call instead of a
    Python loop of small ops per tensor — the same choice as the HF Trainer's default
    ``adamw_torch_fused``; devices without it fall back to the plain implementation."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
    except RuntimeError:  # pragma: no cover - a device without the fused kernel
        optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    return optimizer, scheduler


def make_plan(cfg: TrialConfig, n_train: int, lengths: np.ndarray | None = None) -> Plan:
    """The schedule (``TrainSection.steps``: what MLflow shows as the trial's steps) and its
    evaluation points. ``total_samples`` counts the batches of a fractional last epoch as the
    trial draws them (``lengths``: the train split's token counts, which set the batch order; the
    epoch's one short batch can be among them); without ``lengths`` they count as full batches."""
    steps = cfg.train.steps(n_train)
    full, rest = divmod(steps.total_steps, steps.steps_per_epoch)
    if rest and lengths is not None:
        partial = sum(len(b) for b in make_batches(lengths, cfg.train.batch_size, cfg.train.seed, full, cfg.train.bucket_chunk)[:rest])
    else:
        partial = rest * cfg.train.batch_size
    return Plan(steps.steps_per_epoch, steps.total_steps, cfg.train.eval_every_samples, full * n_train + partial,
                tuple(cfg.train.eval_at_samples or ()), steps.warmup_steps)


# --------------------------------------------------------------------------- loop


def _schedule(lengths: np.ndarray, cfg: TrialConfig, state: TrainState, steps: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """``(epoch, batch in epoch, batches in epoch, example indices)`` of the next ``steps`` steps
    from ``state`` on. Reads ``state`` without changing it; each epoch's order is built when reached."""
    epoch, i = state.epoch, state.batch_in_epoch
    batches = make_batches(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.train.bucket_chunk)
    for _ in range(steps):
        if i == len(batches):
            epoch, i = epoch + 1, 0
            batches = make_batches(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.train.bucket_chunk)
        yield epoch, i, len(batches), batches[i]
        i += 1


def _one_ahead(items: Iterator[Any], load: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """``(item, load(item))`` pairs, with the next item loaded before the current one is handed
    out: batch k+1 is collated (into pinned memory) and its copy queued before step k is launched,
    so on CUDA it is on the device when step k+1 starts, with nothing to wait for. On CPU it is
    the same work in another order. A loop stopped at an evaluation point wastes one collate."""
    it = iter(items)
    current = next(it, None)
    if current is None:
        return
    loaded = load(current)
    for item in it:
        upcoming = load(item)
        yield current, loaded
        current, loaded = item, upcoming
    yield current, loaded


def _batch_loader(split: TokenizedSplit, pad_id: int, multiple: int, device: torch.device) -> Callable[[np.ndarray], dict[str, torch.Tensor]]:
    """Example indices → a padded batch on ``device`` (pinned + ``non_blocking`` on CUDA)."""
    cuda = device.type == "cuda"

    def load(idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch = collate(split, idx, pad_id, multiple, pin_memory=cuda)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    return load


def train_steps(model, optimizer, scheduler, data: TrialData, state: TrainState, plan: Plan, cfg: TrialConfig, device) -> torch.Tensor:
    """Train until the next evaluation point (or the end); returns the mean training loss of
    these steps as a 0-dim float64 tensor on ``device`` (NaN if no step ran).

    Nothing in here reads a value back from the GPU: the loss is summed on the device, so the
    host keeps queueing kernels ahead of it (reading it is the caller's one sync per report)."""
    model.train()
    amp = device.type == "cuda"
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    steps = 0
    schedule = _schedule(data.train.lengths, cfg, state, plan.total_steps - state.step)
    load = _batch_loader(data.train, data.pad_id, pad_multiple(cfg, device), device)
    for (epoch, i, n_batches, idx), batch in _one_ahead(schedule, lambda item: load(item[3])):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(**batch).loss
        loss.backward()
        if cfg.train.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        steps += 1
        state.step += 1
        state.samples_seen += len(idx)
        epoch_done = i + 1 == n_batches
        state.epoch, state.batch_in_epoch = (epoch + 1, 0) if epoch_done else (epoch, i + 1)
        if not plan.scheduled and epoch_done:
            break
        if state.next_eval_at and state.samples_seen >= state.next_eval_at:
            break
    state.next_eval_at = plan.next_eval(state.samples_seen)
    return loss_sum / steps if steps else torch.tensor(float("nan"), dtype=torch.float64)


@torch.inference_mode()
def predict_logits(model, split: TokenizedSplit, pad_id: int, batch_size: int, device, pad_multiple: int = 1) -> np.ndarray:
    """Logits for every example, computed in length order (little padding), returned in input
    order; read back from the device once, after the last batch."""
    model.eval()
    order = np.argsort(split.lengths, kind="stable")
    amp = device.type == "cuda"
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    load = _batch_loader(split, pad_id, pad_multiple, device)
    parts = []
    for _, batch in _one_ahead(iter(chunks), load):
        batch.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            parts.append(model(**batch).logits.float())
    out = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    if parts:
        out[order] = torch.cat(parts).cpu().numpy()
    return out


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy of ``logits`` against label ids: what a trial
    reports, and what a study's test score is."""
    from sklearn.metrics import accuracy_score, f1_score

    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    preds = logits.argmax(-1)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1": float(f1_score(labels, preds, average="macro")),
        "eval_loss": float(loss),
    }


def evaluate(model, split: TokenizedSplit, pad_id: int, batch_size: int, device, pad_multiple: int = 1) -> dict[str, float]:
    """Dev accuracy, macro-F1 and mean cross-entropy."""
    return scores(predict_logits(model, split, pad_id, batch_size, device, pad_multiple), split.labels)


def evaluate_splits(model, data: TrialData, batch_size: int, device, pad_multiple: int = 1) -> dict[str, float]:
    """The metrics a trial reports: on the held-out validation split (with the dev split beside
    it as ``dev_*``) when ``data.holdout_size`` made one, else on dev."""
    if data.val is None:
        return evaluate(model, data.dev, data.pad_id, batch_size, device, pad_multiple)
    metrics = evaluate(model, data.val, data.pad_id, batch_size, device, pad_multiple)
    dev = evaluate(model, data.dev, data.pad_id, batch_size, device, pad_multiple)
    metrics.update({f"dev_{k}": v for k, v in dev.items()})
    return metrics


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str | Path, model, optimizer, scheduler, state: TrainState, cfg: TrialConfig,
                    label_names: list[str], metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Adapter + head (PEFT format) and the loop state; never the frozen base weights."""
    d = Path(directory)
    model.save_pretrained(d)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
         "state": asdict(state), "history": history},
        d / TRAINER_STATE,
    )
    meta = {"format": 1, "config": cfg.model_dump(), "label_names": label_names, "metrics": metrics,
            "pooling": pooling_of(model)}  # what model.pooling resolved to: loaders must pool the same way
    (d / CHECKPOINT_META).write_text(json.dumps(meta, indent=1, default=str))


def load_checkpoint(directory: str | Path) -> Resume:
    """Read a checkpoint into memory; a missing or torn one is a one-line ``ConfigError``."""
    from safetensors.torch import load_file

    d = Path(directory)
    adapter_file, trainer_file = d / "adapter_model.safetensors", d / TRAINER_STATE
    for f in (adapter_file, trainer_file):
        if not f.is_file():
            raise ConfigError(f"checkpoint {d}: missing {f.name}")
    try:
        return Resume(load_file(str(adapter_file)), torch.load(trainer_file, map_location="cpu", weights_only=True))
    except Exception as e:
        raise ConfigError(f"checkpoint {d}: unreadable ({type(e).__name__}: {e})") from None


def _restore(model, optimizer, scheduler, resume: Resume, device) -> tuple[TrainState, list[dict[str, Any]]]:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, {k: v.to(device) for k, v in resume.adapter.items()})
    optimizer.load_state_dict(resume.trainer["optimizer"])
    scheduler.load_state_dict(resume.trainer["scheduler"])
    torch.set_rng_state(resume.trainer["rng"]["torch"])
    if "cuda" in resume.trainer["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(resume.trainer["rng"]["cuda"])
    return TrainState(**resume.trainer["state"]), list(resume.trainer.get("history", []))


# --------------------------------------------------------------------------- the trial


def run_trial(cfg: TrialConfig, report: Reporter | None = None, resume: Resume | None = None,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train and evaluate one configuration; calls ``report(metrics, checkpoint_dir)`` at every
    evaluation. Returns the history of reported metrics."""
    t_setup = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    tokenizer = load_tokenizer(cfg.model.name)
    data = prepare_data(cfg.data, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, cfg.lora, data.label_names, cfg.model.pooling, cfg.model.dropout).to(device)
    if cfg.train.fast_dropout and device.type == "cpu":
        use_fast_dropout(model)  # CPU dropout masks were 16% of a step (see trainables/dropout.py)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = make_plan(cfg, len(data.train), data.train.lengths)
    optimizer, scheduler = build_optimizer(model, cfg, plan)
    state, history = TrainState(next_eval_at=plan.next_eval(0)), []
    if resume is not None:
        state, history = _restore(model, optimizer, scheduler, resume, device)
    if log:
        log(f"{len(data.train)} train / " + (f"{len(data.val)} validation / " if data.val is not None else "") + f"{len(data.dev)} dev examples"
            + (f" ({data.dropped_empty} rows without a text dropped, data.drop_empty)" if cfg.data.drop_empty else "") + f", labels {data.label_names}; "
            f"{trainable:,} trainable params; {pooling_of(model)} pooling; {plan.total_steps} steps"
            + (f"; resuming at step {state.step}" if resume else ""))
    step_model = compiled_for_training(model, cfg)
    multiple = pad_multiple(cfg, device)
    setup_s = time.perf_counter() - t_setup
    while state.step < plan.total_steps:
        t0, seen0 = time.perf_counter(), state.samples_seen
        train_loss = float(train_steps(step_model, optimizer, scheduler, data, state, plan, cfg, device))  # waits for the GPU
        train_s = time.perf_counter() - t0
        metrics = evaluate_splits(model, data, cfg.train.eval_batch_size, device, multiple)
        eval_s = time.perf_counter() - t0 - train_s
        metrics.update(
            train_loss=train_loss,
            samples_seen=state.samples_seen,
            epoch=state.samples_seen / len(data.train),
            trainable_params=trainable,
            samples_per_s=(state.samples_seen - seen0) / max(train_s, 1e-9),
            step=state.step,
            samples_total=plan.total_samples,
            setup_s=setup_s,
            train_s=train_s,
            eval_s=eval_s,
            time_unix=time.time(),
            **({"data_dropped_empty": data.dropped_empty} if cfg.data.drop_empty else {}),
        )
        history.append(metrics)
        if log:
            log(f"step {state.step}/{plan.total_steps} samples {state.samples_seen} epoch {metrics['epoch']:.2f} "
                f"train_loss {metrics['train_loss']:.4f} eval_loss {metrics['eval_loss']:.4f} "
                f"acc {metrics['accuracy']:.4f} f1 {metrics['f1']:.4f}"
                + (f" dev_acc {metrics['dev_accuracy']:.4f}" if "dev_accuracy" in metrics else "")
                + f" ({metrics['samples_per_s']:.0f} samples/s)")
        if report is not None:
            with tempfile.TemporaryDirectory(prefix="lora-ckpt-") as d:
                save_checkpoint(d, model, optimizer, scheduler, state, cfg, data.label_names, metrics, history)
                report(metrics, d)
    return history


def train(config: dict[str, Any], start_from: str | None = None) -> None:
    """Ray Tune function trainable (dotted or nested config keys, see ``TrialConfig``).

    ``start_from`` (``tune.with_parameters(train, start_from=PATH)``): a checkpoint, reported by
    another trial of the same config, to continue from when Tune has none for this trial. Why: a
    study's refit trains a few learning rates for a short prefix of the same schedule and then
    continues the best one, which is that candidate's checkpoint taken up by a new trial; once
    the new trial has checkpoints of its own (a restore after a crash), they win."""
    from ray import tune

    cfg = TrialConfig.from_dict(config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and start_from:
        checkpoint = tune.Checkpoint(start_from)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_checkpoint(d)

    def report(metrics: dict[str, Any], ckpt_dir: str) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))

    run_trial(cfg, report=report, resume=resume)


# --------------------------------------------------------------------------- CLI


def _copy_checkpoint(src: str, out: Path) -> None:
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the previous checkpoint stays intact until the new one is complete


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        raw = load_yaml(args.config) if args.config else {}
        cfg = TrialConfig.from_dict(apply_overrides(raw, parse_overrides(args.set)))
        resume = load_checkpoint(args.resume_from) if args.resume_from else None
        out = Path(args.out) if args.out else None

        def report(metrics: dict[str, Any], ckpt_dir: str) -> None:
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                _copy_checkpoint(ckpt_dir, out / "last")

        history = run_trial(cfg, report=report, resume=resume, log=lambda m: print(m, flush=True))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(history, indent=1))
    final = history[-1] if history else {}
    print(json.dumps({k: final.get(k) for k in ("accuracy", "f1", "eval_loss", "samples_seen")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
