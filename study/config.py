"""Typed configuration of a study, validated once, in the driver, before Ray starts.

A study YAML reuses the trial's sections (``model``, ``data``, ``lora``, ``train``: the fixed values
every trial starts from, typed by ``trainables.config``) and adds how to search: ``search`` maps a
dotted trial key to a distribution, which replaces the fixed value. Everything else (ASHA, Optuna,
resources, storage, MLflow) has its own section. ``--set key=value`` works on any key of the file.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config import (
    TRAIN_SPLIT_KEYS,
    ConfigError,
    DataSection,
    LoraSection,
    ModelSection,
    TrainSection,
    TrialConfig,
    apply_overrides,
    flatten,
    format_validation_error,
    load_yaml,
    parse_overrides,
    parse_size,
)

from .search.registry import DEFAULT_SEARCHER, SEARCHERS

__all__ = ["StudyConfig", "RefitSection", "load_study_config", "flat_params", "effective_values", "Distribution", "DIST_KINDS"]

#: Searcher names that ``study.json`` files written before the registry recorded.
_RENAMED_SEARCHERS = {"lora-study": "pruned-tpe"}

#: Distribution spellings accepted under ``search:`` (``{loguniform: [1e-5, 5e-3]}``).
DIST_KINDS = ("choice", "uniform", "loguniform", "randint")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Section):
    """One search dimension: exactly one of the keys below."""

    choice: list[Any] | None = None
    """Categorical values, e.g. ``[4, 8, 16, 32]`` or ``[qv, qkv, attn, all]``."""
    uniform: tuple[float, float] | None = None
    """Uniform on ``[low, high]``."""
    loguniform: tuple[float, float] | None = None
    """Log-uniform on ``[low, high]`` (both > 0): learning rates."""
    randint: tuple[int, int] | None = None
    """Integer in ``[low, high)``."""

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        given = [k for k in DIST_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {list(DIST_KINDS)} (got {given or 'none'})")
        kind = given[0]
        if kind == "choice" and not self.choice:
            raise ValueError("choice needs at least one value")
        if kind in ("uniform", "loguniform", "randint"):
            lo, hi = getattr(self, kind)
            if not lo < hi:
                raise ValueError(f"{kind} needs low < high (got [{lo}, {hi}])")
            if kind == "loguniform" and lo <= 0:
                raise ValueError("loguniform needs low > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DIST_KINDS if getattr(self, k) is not None)

    def values_to_check(self) -> list[Any]:
        """Values that must each form a valid trial config (choices, or both bounds)."""
        v = getattr(self, self.kind)
        return list(v) if self.kind == "choice" else [v[0], v[1] - 1 if self.kind == "randint" else v[1]]


class StudySection(_Section):
    num_samples: int = Field(12, ge=1)
    """How many trials (configurations) to run in total."""
    max_concurrent: int = Field(2, ge=1)
    """Trials running at once (also bounded by cluster resources)."""
    metric: Literal["accuracy", "f1", "eval_loss"] = "accuracy"
    """Dev metric the search optimizes (and the best trial is chosen by)."""
    time_budget_s: float | None = Field(None, gt=0)
    """Stop starting/continuing trials after this many seconds of study wall time."""
    seed: int = 0
    """Seed of the search (Optuna's sampler); trials keep their own ``train.seed``."""
    searcher: str = DEFAULT_SEARCHER
    """How configurations are chosen: a name from ``study.search.registry.SEARCHERS`` (the default
    ``pruned-tpe``: TPE told which trials ASHA pruned; ``optuna``: stock Ray ``OptunaSearch``, what a
    bare Ray Tune + Optuna script does; ``random``; the candidates the search benchmark measures).
    ``python -m study.run --help`` lists every one with its paper."""
    seed_points: bool = True
    """Start with the two seed notebooks' configurations (r=4 α=16 lr=1e-4 q,v and r=8 α=16
    dropout 0.1 q,v) so the study can only beat the hand-picked recipes."""
    max_failures: int = Field(2, ge=0)
    """Restarts of a trial whose process died, each from its last checkpoint."""

    @field_validator("searcher")
    @classmethod
    def _known_searcher(cls, v: str) -> str:
        v = _RENAMED_SEARCHERS.get(v, v)
        if v not in SEARCHERS:
            raise ValueError(f"unknown searcher {v!r}; use one of {sorted(SEARCHERS)}")
        return v

    @property
    def mode(self) -> str:
        return "min" if self.metric == "eval_loss" else "max"


class AshaSection(_Section):
    """ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"): stops the
    worst 1 - 1/reduction_factor of trials at each rung, measured in training samples seen."""

    enabled: bool = True
    """Use ASHA early stopping (off = run every trial to the end, FIFO)."""
    grace_period: int = Field(2000, ge=1)
    """Samples every trial sees before it can be stopped (the first rung)."""
    reduction_factor: float = Field(3.0, gt=1)
    """Rung spacing and the share kept at each rung (1/reduction_factor)."""
    max_t: int | None = Field(None, ge=1)
    """Samples at which every trial stops; default: the most any configuration can see
    (largest data size × epochs)."""


class OptunaSection(_Section):
    """Settings of the ``pruned-tpe`` searcher (TPE, Bergstra et al. 2011, through Ray's ``OptunaSearch``)."""

    pruned_feedback: bool = True
    """Tell Optuna that ASHA-stopped trials were PRUNED (with their intermediate values) rather
    than COMPLETED at low fidelity, which would mislead TPE. Off = stock Ray behaviour."""


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(1, gt=0)
    """CPUs reserved per trial (also its torch thread count)."""
    gpus_per_trial: float = Field(0, ge=0)
    """GPUs per trial; fractions (0.25) pack several small trials on one GPU."""


class StorageSection(_Section):
    path: str | None = None
    """Where Ray keeps trials and checkpoints (default ``$LORA_STUDY_HOME`` or ``./studies``):
    a local dir, a shared mount or ``s3://…``
    (multi-node clusters need shared storage). Local study files (summary, MLflow store) go to
    ``./studies/<name>`` unless this is a local dir."""
    checkpoints_to_keep: int = Field(2, ge=1)
    """Checkpoints kept per trial (best by the study metric), bounding disk per study."""


class MlflowSection(_Section):
    tracking_uri: str | None = None
    """MLflow server (``http://…``); default: a sqlite store ``<storage>/mlflow.db`` shared by
    all local studies, so one ``mlflow ui`` shows them all."""
    experiment: str | None = None
    """Experiment name; default: the study name."""
    registered_model: str | None = None
    """Registry name for the best adapter; default ``lora-study-<study name>``."""


class RefitSection(_Section):
    """After the search, train the winning configuration again on all the training data, as one
    more trial, and ship it only if it beats the search's pick on the validation split
    (``docs/refit.md``). Why: a study searches small data sizes and short schedules to stay
    cheap, so its pick has seen little data; the model a study ships should see all of it."""

    enabled: bool = False
    """Run the refit at the end of the study (``--resume --refit`` adds one to a finished study)."""
    epochs: float | None = Field(None, gt=0, le=1000)
    """Passes over the refit's data; ``None``: the pick's own ``train.epochs``."""
    data_size: int | float | None = None
    """Training sentences of the refit: a count, a fraction of the train split, or ``None``/``all``
    (default) for the whole train split. A validation split (``data.holdout_size``) stays out
    of it, so the refit and the pick are compared on sentences neither trained on."""
    lr_factors: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.25])
    """The pick's learning rate times each factor is trained for the first ``check_fraction`` of
    the refit's own schedule (same data, epochs, warmup and decay); the best on the validation split
    continues to the end, the others stop. Why: a learning rate that wins a short schedule need
    not win a long one; longer horizons want smaller rates (Bjorck et al. 2024, "Scaling Optimal LR
    Across Token Horizons", arXiv:2409.19913), by an amount no rule predicts for a given model and
    task, so the refit measures it at its own length. ``[1]``: no check, the pick's rate as is."""
    check_fraction: float = Field(0.1, gt=0, lt=1)
    """Where in the refit's schedule the learning rates are compared (share of its samples).
    Why 0.1: it is past the warmup (``train.warmup_ratio`` 0.06), and it costs the refit
    ``(len(lr_factors) - 1) × 0.1`` more training (+20% for three factors); a shorter check favours
    small rates more (Wu et al. 2018, "Understanding Short-Horizon Bias in Stochastic
    Meta-Optimization"), a longer one costs more. The measurements are in ``docs/refit.md``."""
    evaluations: int = Field(6, ge=1, le=1000)
    """Evaluations (each a checkpoint a crash resumes from) spread evenly over the refit."""

    @field_validator("data_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v, "refit.data_size")

    @field_validator("lr_factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < f <= 10 for f in v) or len(set(v)) != len(v):
            raise ValueError("give distinct factors in (0, 10], e.g. [1, 0.5, 0.25]")
        return sorted(v, reverse=True)


class StudyConfig(_Section):
    """A whole study; see ``study/configs/*.yaml``."""

    name: str | None = None
    """Default study name (``--name`` wins); default: the config file's stem + a timestamp."""
    model: ModelSection = Field(default_factory=ModelSection)
    """The base model every trial fine-tunes (``trainables.config.ModelSection``)."""
    data: DataSection = Field(default_factory=DataSection)
    """The training data and its splits (``trainables.config.DataSection``)."""
    lora: LoraSection = Field(default_factory=LoraSection)
    """The LoRA adapter's fixed settings (``trainables.config.LoraSection``)."""
    train: TrainSection = Field(default_factory=TrainSection)
    """The training loop's fixed settings (``trainables.config.TrainSection``)."""
    search: dict[str, Distribution] = Field(default_factory=dict)
    """Dotted trial key → distribution; replaces that key's fixed value."""
    study: StudySection = Field(default_factory=StudySection)
    asha: AshaSection = Field(default_factory=AshaSection)
    optuna: OptunaSection = Field(default_factory=OptunaSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    refit: RefitSection = Field(default_factory=RefitSection)
    """What happens after the search: the pick trained again on all the data (off unless set)."""

    @field_validator("search", mode="before")
    @classmethod
    def _flat_search(cls, v: Any) -> Any:
        """Overrides arrive nested (``search.lora.r.choice``); re-flatten down to distributions."""
        if v is None or v == {}:  # `search:` with nothing under it (often: its keys lost their indent)
            raise ValueError("the block is empty: put at least one trial key under it, e.g. "
                             "`search: {train.lr: {loguniform: [1e-5, 5e-3]}}`, or remove it to run the fixed config")
        out: dict[str, Any] = {}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, dict) and node and not set(node) & set(DIST_KINDS):
                for k, sub in node.items():
                    walk(sub, f"{prefix}.{k}" if prefix else str(k))
            else:
                out[prefix] = node

        walk(v or {}, "")
        return out

    @property
    def trial(self) -> TrialConfig:
        """The fixed trial config every trial starts from (its sections were validated with the study)."""
        return TrialConfig(model=self.model, data=self.data, lora=self.lora, train=self.train)

    def shared_n_train(self, n_train: int | None) -> int | None:
        """The train split size every trial draws from (what the preflight measured), or ``None``
        when the search varies the split itself (``data.holdout_size``, ``data.path`` …)."""
        return None if set(self.search) & set(TRAIN_SPLIT_KEYS) or not n_train else int(n_train)

    @classmethod
    def from_record(cls, record: dict[str, Any], where: Any) -> "StudyConfig":
        """The config a ``study.json`` stored (``where``: the file, for the one-line error)."""
        try:
            return cls.model_validate(record["config"])
        except (KeyError, TypeError, ValidationError) as e:
            raise ConfigError(f"{where}: not a lora-study record ({type(e).__name__})") from None

    def check(self) -> None:
        """Cross-field checks: every search key is a trial key and every value it can take forms a
        valid trial config. Raises ``ConfigError`` naming ``search.<key>``."""
        base = self.trial.to_flat()
        for key, dist in self.search.items():
            if key not in base:
                raise ConfigError(f"invalid config: search.{key}: not a trial key (known: {', '.join(sorted(base))})")
            for value in dist.values_to_check():
                try:
                    TrialConfig.from_dict({**base, key: value})
                except ConfigError as e:
                    raise ConfigError(f"invalid config: search.{key}: value {value!r} is invalid ({e})") from None
        if "data.test_path" in self.search:
            raise ConfigError("invalid config: search.data.test_path: the test set is never searched (it scores the shipped model once)")
        if "lora.alpha" in self.search and "lora.alpha_multiple" in self.search:
            raise ConfigError("invalid config: search: give lora.alpha or lora.alpha_multiple, not both")


def load_study_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None,
                      extra: dict[str, Any] | None = None) -> StudyConfig:
    """YAML + ``--set`` overrides (+ CLI flags as dotted keys) → validated ``StudyConfig``."""
    raw = load_yaml(path) if path else {}
    given = parse_overrides(overrides)
    merged = apply_overrides(raw, {**given, **(extra or {})})
    try:
        cfg = StudyConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    cfg.check()
    searched = sorted(k for k in given if k in cfg.search)
    if searched:  # the space would silently overrule the value in every trial
        raise ConfigError(f"--set {searched[0]}: this key is searched (search.{searched[0]} in the config), so a fixed "
                          f"value would be ignored; change the search space, e.g. --set 'search.{searched[0]}=...'")
    return cfg


def flat_params(cfg: StudyConfig) -> dict[str, Any]:
    """The study config as dotted keys (for MLflow params of the parent run)."""
    return flatten(cfg.model_dump(mode="json"))


def effective_values(config: dict[str, Any], n_train: int | None) -> dict[str, Any]:
    """What a trial with this flat config trains with (``TrialConfig.effective``: the alpha, the
    module names, the data size and steps); ``{}`` for a config that is not a valid trial config."""
    try:
        return TrialConfig.from_dict(config).effective(n_train)
    except ConfigError:
        return {}
