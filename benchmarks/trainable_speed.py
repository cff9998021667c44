"""Training throughput of our LoRA trainable against the stock Hugging Face ``Trainer``.

Three runs in one process on the same data (a stratified subset of the SST-2 train split, the
same token ids), the same model and LoRA config (trainables/configs/seed-002.yaml: MiniLM-L6-H384,
r=8, alpha=16, dropout 0.1 on query+value, batch 32, max_length 128, linear warmup 6 %, grad clip 1.0)
and the same number of torch threads:

(a) ``hf_trainer``          stock ``transformers.Trainer`` + PEFT, ``DataCollatorWithPadding``, random
                            batches (``RandomSampler``) over a ``datasets.Dataset`` of the token ids;
(b) ``hf_trainer_grouped``  the same with ``train_sampling_strategy="group_by_length"``
                            (``LengthGroupedSampler``; ``group_by_length=True`` before transformers 5);
(c) ``ours``                ``trainables.loop.run_trial``: cached token ids, length-bucketed batches,
                            and on CPU ``FastDropout`` (``trainables/dropout.py``: the same inverted
                            dropout with masks drawn 4 elements per random number).

The PEFT model is built by ``trainables.model.build_model`` for all three (identical model, head
initialised from the same seed); (a) and (b) train it as built, with ``torch.nn.Dropout``.

What is timed: training steps only, over one full epoch of the subset, so every method processes
exactly the same samples and differs only in batching (padding) and per-step overhead: ordering
the epoch (sampler / ``make_batches``), fetching and collating each batch, forward, backward,
gradient clipping, optimizer and scheduler step. samples/s = samples / seconds. Not timed: imports,
tokenization, model load, Trainer/optimizer setup, evaluation, saving. For (a)/(b) a
``TrainerCallback`` reads the clock at ``on_train_begin`` and at every ``on_step_end`` (after a CUDA
synchronize on GPU); (c) uses ``run_trial``'s own ``samples_per_s`` (measured around its training
steps, evaluation excluded). One-time costs (thread pools, allocator, first kernels) are paid by
an untimed warm-up of a few training steps on a throwaway copy of the model before the first run.

``--warmup-steps k`` instead times steps k+1..end. That is *not* the default because it skews the
comparison: the runs then skip different batches (the Trainer's ``LengthGroupedSampler`` puts the
longest batch first on purpose, so it would land in the untimed part), and ours has to evaluate
every ``k × batch`` samples to split its timing (a 32-sentence dev slice, untimed). The full-epoch
throughput is recorded per run either way (``samples_per_s_epoch``).

Usage::

    python benchmarks/trainable_speed.py                       # CPU, all usable cores, 3200 samples
    python benchmarks/trainable_speed.py --json /tmp/speed.json --repeats 3
    python benchmarks/trainable_speed.py --model bert-base-random --device cuda --samples 32000
    python benchmarks/trainable_speed.py --device cuda --methods ours --set train.compile=true

On CUDA the Trainer's clock is read after a ``torch.cuda.synchronize()`` only where it is used
(train begin, the end of step ``--warmup-steps``, the last step): a sync after every step would
slow the Trainer down by more than it costs it on its own. Without the ``datasets`` package (as
on a bare GPU image) the Trainer reads the same token ids from a list of dicts instead of a
``datasets.Dataset`` (recorded as ``hf_dataset`` in the JSON).

``--json FILE`` writes ``{"ours", "hf_trainer", "hf_trainer_grouped"}`` (samples/s, median over
repeats) and ``"padding_efficiency"`` (real tokens / padded tokens of our batches), plus the
padding efficiency of the Trainer's batches, per-run details, config, hardware and date.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `trainables` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    BenchmarkError,
    busy_note,
    load_average,
    run_benchmark,
    run_metadata,
    sst2_dir,
    usable_cpus,
)

RECIPE = ROOT / "trainables" / "configs" / "seed-002.yaml"
RANDOM_BERT = "bert-base-random"
DEV_SIZE = 32  # ours evaluates between timed intervals; keep that (untimed) work small
METHODS = ("hf_trainer", "hf_trainer_grouped", "ours")
LABELS = {
    "hf_trainer": "(a) HF Trainer, random batches",
    "hf_trainer_grouped": "(b) HF Trainer, group_by_length",
    "ours": "(c) ours (run_trial, length buckets)",
}


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/trainable_speed.py",
        description="Training samples/s: our trainable vs the stock HF Trainer (random and length-grouped batches).",
    )
    ap.add_argument("--model", default="embedded-minilm",
                    help=f"embedded-minilm (default), {RANDOM_BERT} (random-init bert-base from BertConfig(), "
                         f"for GPU runs), or a local model directory")
    ap.add_argument("--tokenizer", default="embedded-minilm",
                    help=f"where {RANDOM_BERT} takes its (uncased WordPiece) tokenizer from: embedded-minilm or a model directory")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all three)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: bf16 autocast for ours, bf16=True for the Trainer")
    ap.add_argument("--samples", type=int, default=3200, help="training samples (stratified SST-2 subset, one epoch)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="exclude each run's first k steps from timing (default 0: time the whole epoch; "
                         "k > 0 skews the comparison, see the module docstring)")
    ap.add_argument("--repeats", type=int, default=1, help="run (a), (b), (c) this many times, interleaved; report medians")
    ap.add_argument("--data", default=None, help="SST-2 directory (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the recipe, e.g. train.fast_dropout=false or train.bucket_chunk=256 "
                         "(lora.*/train.lr apply to all three runs; train.* loop settings only shape ours)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--verbose", action="store_true", help="show library warnings and per-interval logs")
    args = ap.parse_args(argv)
    for name in ("samples", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_steps < 0:
        ap.error("--warmup-steps must be >= 0")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        ap.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    args.methods = [m for m in METHODS if m in args.methods]
    return args


def make_random_bert(directory: Path, tokenizer: str = "embedded-minilm") -> str:
    """bert-base-shaped ``BertForSequenceClassification`` from ``BertConfig()`` with random weights,
    saved with the MiniLM tokenizer (same uncased WordPiece vocab); speed does not depend on weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trainables.model import resolve_model_name

    tok = AutoTokenizer.from_pretrained(resolve_model_name(tokenizer))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=2)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def trial_config(args: argparse.Namespace, model_name: str, data_path: Path, threads: int, eval_every: int | None):
    """The seed-002 recipe with the benchmark's data, size, batch, threads and device."""
    from trainables.config import TrialConfig, apply_overrides, load_yaml, parse_overrides

    over = {
        **parse_overrides(args.set),
        "model.name": model_name,
        "data.path": str(data_path),
        "data.size": args.samples,
        "data.dev_size": DEV_SIZE,
        "train.epochs": 1,
        "train.batch_size": args.batch_size,
        "train.threads": threads,
        "train.device": args.device,
        "train.eval_every_samples": eval_every,
    }
    return TrialConfig.from_dict(apply_overrides(load_yaml(RECIPE), over))


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def process_warmup(cfg: Any, data: Any, device: str, steps: int = 4) -> None:
    """A few untimed training steps on a throwaway copy of the model, so that one-time costs of the
    process (thread pool start, allocator growth, first oneDNN/cuBLAS kernels) hit no measured run."""
    import torch

    from trainables.data import collate, make_batches
    from trainables.model import build_model

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, cfg.lora, data.label_names, cfg.model.pooling, cfg.model.dropout).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    batches = make_batches(data.train.lengths, cfg.train.batch_size, cfg.train.seed + 1, 0, cfg.train.bucket_chunk)
    for idx in batches[:steps]:
        batch = {k: v.to(device) for k, v in collate(data.train, idx, data.pad_id).items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    del model, opt
    _free(device)


# --------------------------------------------------------------------------- (a), (b): HF Trainer


class _RecordingCollator:
    """Wraps ``DataCollatorWithPadding``; records each batch's size and real/padded token counts
    (one ``attention_mask.sum()`` per batch), so padding efficiency is measured, not simulated."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.sizes: list[int] = []
        self.real = 0
        self.padded = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.sizes.append(int(mask.shape[0]))
        self.real += int(mask.sum())
        self.padded += int(mask.numel())
        return batch


def _step_timer(warmup: int, device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Clock at train begin (or at the end of step ``warmup`` if > 0) and at the end of the last step."""

        def __init__(self) -> None:
            self.t_begin = self.t0 = self.t_last = None
            self.steps = 0
            self.threads = None

        def on_train_begin(self, args, state, control, **kwargs):
            import torch

            self.threads = torch.get_num_threads()
            _sync(device)
            self.t_begin = time.perf_counter()
            if warmup == 0:
                self.t0 = self.t_begin

        def on_step_end(self, args, state, control, **kwargs):
            self.steps = state.global_step
            if state.global_step != warmup and state.global_step != state.max_steps:
                return  # the clock is read only where it is used: no extra sync per step on CUDA
            _sync(device)
            now = time.perf_counter()
            if state.global_step == warmup:
                self.t0 = now
            self.t_last = now

    return StepTimer()


def _training_args(args: argparse.Namespace, cfg: Any, out_dir: str, grouped: bool):
    """Stock TrainingArguments with evaluation, saving, logging and progress bars off."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw: dict[str, Any] = dict(
        output_dir=out_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=cfg.train.lr,
        lr_scheduler_type="linear",
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm or 0.0,
        seed=cfg.train.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        label_names=["labels"],
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",
    )
    # transformers 5 replaced warmup_ratio with a float warmup_steps, and group_by_length with
    # train_sampling_strategy; keep the older spellings working for transformers 4.x.
    if "warmup_ratio" in fields:
        kw["warmup_ratio"] = cfg.train.warmup_ratio
    else:
        kw["warmup_steps"] = cfg.train.warmup_ratio
    if "train_sampling_strategy" in fields:
        kw["train_sampling_strategy"] = "group_by_length" if grouped else "random"
    else:
        kw["group_by_length"] = grouped
    return TrainingArguments(**kw)


def hf_dataset(data: Any) -> tuple[Any, str]:
    """The token ids as the Trainer's train dataset: a ``datasets.Dataset`` (the stock recipe),
    or where ``datasets`` is not installed the same rows as a list of dicts; and which it is.
    No `length` column: the Trainer's remove_unused_columns drops it before building the
    sampler, so LengthGroupedSampler computes lengths from input_ids at setup (untimed) either way."""
    rows = {"input_ids": [x.tolist() for x in data.train.ids], "labels": data.train.labels.tolist()}
    try:
        import datasets
    except ImportError:
        return [{"input_ids": i, "labels": y} for i, y in zip(rows["input_ids"], rows["labels"])], "list"
    return datasets.Dataset.from_dict(rows), "datasets"


def measure_hf(args: argparse.Namespace, cfg: Any, data: Any, tokenizer: Any, warmup: int, grouped: bool) -> dict[str, Any]:
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    from trainables.model import build_model

    ds, ds_kind = hf_dataset(data)  # pre-tokenized ids: the same arrays ours trains on
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, cfg.lora, data.label_names, cfg.model.pooling, cfg.model.dropout)
    collator = _RecordingCollator(DataCollatorWithPadding(tokenizer))
    timer = _step_timer(warmup, args.device)
    with tempfile.TemporaryDirectory(prefix="hf-trainer-bench-") as out_dir:
        trainer = Trainer(
            model=model,
            args=_training_args(args, cfg, out_dir, grouped),
            train_dataset=ds,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # it would print the end-of-training metrics dict
        trainer.train()
        try:  # which sampler the Trainer picked (private API: informational only)
            sampler = type(trainer._get_train_sampler()).__name__
        except Exception:
            sampler = None
        optim = str(getattr(trainer.args.optim, "value", trainer.args.optim))
    del trainer, model
    _free(args.device)
    timed_samples = sum(collator.sizes[warmup:])
    seconds = timer.t_last - timer.t0
    return {
        "samples_per_s": timed_samples / seconds,
        "timed_samples": timed_samples,
        "timed_seconds": seconds,
        "steps": timer.steps,
        "samples_per_s_epoch": sum(collator.sizes) / (timer.t_last - timer.t_begin),
        "padding_efficiency": collator.real / collator.padded,
        "threads": timer.threads,
        "sampler": sampler,
        "optim": optim,
        "hf_dataset": ds_kind,
    }


# --------------------------------------------------------------------------- (c): ours


def measure_ours(args: argparse.Namespace, model_name: str, data_path: Path, threads: int, warmup: int) -> dict[str, Any]:
    import torch

    from trainables.loop import run_trial

    cfg = trial_config(args, model_name, data_path, threads, warmup * args.batch_size if warmup else None)
    history = run_trial(cfg, report=None, log=print if args.verbose else None)
    used_threads = torch.get_num_threads()
    _free(args.device)
    seen = [0] + [h["samples_seen"] for h in history]
    spans = [(seen[i + 1] - seen[i], (seen[i + 1] - seen[i]) / h["samples_per_s"]) for i, h in enumerate(history)]
    timed = spans[1:] if warmup and len(spans) > 1 else spans
    timed_samples, seconds = sum(n for n, _ in timed), sum(s for _, s in timed)
    return {
        "samples_per_s": timed_samples / seconds,
        "timed_samples": timed_samples,
        "timed_seconds": seconds,
        "steps": history[-1]["step"],
        "samples_per_s_epoch": seen[-1] / sum(s for _, s in spans),
        "threads": used_threads,
        "final_train_loss": history[-1]["train_loss"],
    }


def rounded_padding_efficiency(lengths: Any, batches: list[Any], multiple: int) -> float:
    """Real tokens / padded tokens of ``batches`` padded as the trainable pads them (widths
    rounded up to ``multiple``, ``train.pad_multiple``)."""
    from trainables.data import padded_width

    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(padded_width(int(lengths[b].max()), multiple) * len(b) for b in batches)
    return real / padded if padded else 1.0


# --------------------------------------------------------------------------- report


def _model_label(name: str) -> str:
    return {"embedded-minilm": "MiniLM-L6-H384", RANDOM_BERT: "BERT-base (random init)"}.get(name, name)


def summary_line(res: dict[str, Any]) -> str:
    c, hw = res["config"], res["hardware"]
    where = hw.get("gpu") if c["device"] == "cuda" else f"{hw['cpu']}, {c['threads']} thread(s)"
    head = (f"Training throughput on {where} ({_model_label(c['model'])} + LoRA r={c['lora']['r']} on "
            f"{'+'.join(c['lora']['target_modules'])}, batch {c['batch_size']}, {c['samples']} SST-2 samples): ")
    if set(c["methods"]) != set(METHODS):
        return head + "; ".join(f"{m} {res[m]:.1f} samples/s" for m in c["methods"]) + "."
    return head + (
        f"ours {res['ours']:.1f} samples/s = {res['ratio_vs_hf_trainer']:.2f}x the stock HF Trainer "
        f"({res['hf_trainer']:.1f}) and {res['ratio_vs_hf_trainer_grouped']:.2f}x the Trainer with "
        f"group_by_length ({res['hf_trainer_grouped']:.1f}); padding efficiency {res['padding_efficiency']:.2f} "
        f"vs {res['padding_efficiency_random']:.2f} with random batches."
    )


def print_table(res: dict[str, Any]) -> None:
    pad = {"hf_trainer": res.get("padding_efficiency_random"), "hf_trainer_grouped": res.get("padding_efficiency_grouped"),
           "ours": res["padding_efficiency"]}
    c = res["config"]
    print()
    print(f"{_model_label(c['model'])} + LoRA, batch {c['batch_size']}, {c['samples']} samples, device {c['device']}, "
          f"{c['threads']} thread(s), {c['repeats']} repeat(s) (median)")
    span = "the whole epoch" if not c["warmup_steps"] else f"steps {c['warmup_steps'] + 1}..{c['steps']}"
    print(f"timed: {span} (training steps only; no model load, no evaluation), after an untimed warm-up")
    print(f"{'method':<40}{'samples/s':>11}{'ours / x':>10}{'padding eff.':>14}")
    for m in c["methods"]:
        ratio = "" if m == "ours" or "ours" not in res else f"{res['ours'] / res[m]:.2f}x"
        eff = "" if m != "ours" and pad[m] is None else f"{pad[m]:.3f}"
        print(f"{LABELS[m]:<40}{res[m]:>11.1f}{ratio:>10}{eff:>14}")
    if c["repeats"] > 1:
        for m in c["methods"]:
            runs = ", ".join(f"{r['samples_per_s']:.1f}" for r in res["runs"][m])
            print(f"  {m} runs: {runs}")
    if res.get("load_note"):
        print(res["load_note"])
    print()


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda but no CUDA device is visible")
    data_path = sst2_dir(args.data)
    threads = args.threads or usable_cpus()
    torch.set_num_threads(threads)
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)

    from trainables.data import make_batches, prepare_data
    from trainables.loop import pad_multiple
    from trainables.model import load_tokenizer

    loads = [load_average()]
    meta = run_metadata()
    with tempfile.TemporaryDirectory(prefix="bert-base-random-") as tmp:
        model_name = make_random_bert(Path(tmp), args.tokenizer) if args.model == RANDOM_BERT else args.model
        cfg = trial_config(args, model_name, data_path, threads, None)
        tokenizer = load_tokenizer(cfg.model.name)
        data = prepare_data(cfg.data, tokenizer)
        n = len(data.train)
        steps = math.ceil(n / args.batch_size)
        warmup = min(args.warmup_steps, steps - 1)
        lengths = data.train.lengths
        ours_batches = make_batches(lengths, args.batch_size, cfg.train.seed, 0, cfg.train.bucket_chunk)
        process_warmup(cfg, data, args.device)

        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
        for rep in range(args.repeats):
            for m in args.methods:
                if m == "ours":
                    r = measure_ours(args, model_name, data_path, threads, warmup)
                else:
                    r = measure_hf(args, cfg, data, tokenizer, warmup, grouped=m == "hf_trainer_grouped")
                r["load_after"] = load_average()
                loads.append(r["load_after"])
                runs[m].append(r)
                print(f"[{rep + 1}/{args.repeats}] {m:<20} {r['samples_per_s']:8.1f} samples/s "
                      f"({r['timed_samples']} samples in {r['timed_seconds']:.1f} s, {r['threads']} threads, "
                      f"load {r['load_after']})", flush=True)

    med = {m: statistics.median(r["samples_per_s"] for r in runs[m]) for m in args.methods}
    multiple = pad_multiple(cfg, torch.device(args.device))
    res: dict[str, Any] = {
        **med,
        "padding_efficiency": rounded_padding_efficiency(lengths, ours_batches, multiple),
        **{f"padding_efficiency_{kind}": statistics.median(r["padding_efficiency"] for r in runs[m])
           for m, kind in (("hf_trainer", "random"), ("hf_trainer_grouped", "grouped")) if m in runs},
        **{f"ratio_vs_{m}": med["ours"] / med[m] for m in ("hf_trainer", "hf_trainer_grouped") if m in med and "ours" in med},
        "timed": (f"training steps {warmup + 1}..{steps} of one epoch over {n} samples (epoch ordering, batch "
                  f"fetch + collate, forward, backward, clip, optimizer + scheduler step), after an untimed "
                  f"{'process warm-up' if not warmup else f'process warm-up and {warmup} untimed steps per run'}; "
                  f"not timed: tokenization, model load, trainer setup, evaluation, saving"),
        "config": {
            "model": args.model,
            "recipe": str(RECIPE.relative_to(ROOT)),
            "device": args.device,
            "samples": n,
            "batch_size": args.batch_size,
            "steps": steps,
            "warmup_steps": warmup,
            "repeats": args.repeats,
            "threads": threads,
            "max_length": cfg.data.max_length,
            "lr": cfg.train.lr,
            "warmup_ratio": cfg.train.warmup_ratio,
            "max_grad_norm": cfg.train.max_grad_norm,
            "bucket_chunk": cfg.train.bucket_chunk,
            "fast_dropout": cfg.train.fast_dropout,
            "pad_multiple": multiple,
            "compile": cfg.train.compile,
            "methods": args.methods,
            "pooling": cfg.model.pooling,
            "overrides": args.set,
            "lora": {"r": cfg.lora.r, "alpha": cfg.lora.effective_alpha(), "dropout": cfg.lora.dropout,
                     "target_modules": cfg.lora.module_list()},
            "data": str(data_path),
            "mean_tokens": float(np.mean(lengths)),
            "hf_optim": next((r[0]["optim"] for m, r in runs.items() if m != "ours"), None),
        },
        "runs": runs,
        **{k: meta[k] for k in ("date", "hardware", "software", "git", "command")},
        "load_average": loads,
        "load_note": busy_note(loads, usable_cpus(), threads) if args.device == "cpu" else None,
    }
    return res


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(parse_args(argv), run, summary_line, table=print_table)


if __name__ == "__main__":
    sys.exit(main())
