"""How people see a trial: its id and searched values, short — ``abe404f9 r=4 a=4 lr=4.0e-3 qv n=2000``.

One naming for the console's progress view (``study.console.progress``), the MLflow run names
(``study.tracking.runs``) and the report's hover titles (``dashboards``), so a trial seen in one of
them is found in the others. Ray's own trial names (``train_abe404f9``) and its experiment tags
(``5_data_cache_dir=None,data_dev_fraction=0.1000,…``) never reach the searched values.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["short_values", "trial_label", "legend"]

#: Short names of searched keys, in the order a label shows them ("" = the value alone, e.g. ``qv``).
_SHORT: dict[str, str] = {
    "lora.r": "r",
    "lora.alpha": "alpha",
    "lora.alpha_multiple": "a",
    "train.lr": "lr",
    "lora.dropout": "do",
    "lora.target_modules": "",
    "data.size": "n",
    "train.epochs": "ep",
    "train.batch_size": "bs",
    "train.weight_decay": "wd",
    "train.warmup_ratio": "warmup",
    "model.dropout": "model_do",
    "model.pooling": "",
}


def _fmt_value(key: str, v: Any) -> str:
    if v is None:
        return "all" if key == "data.size" else "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            mantissa, exp = f"{v:.1e}".split("e")
            return f"{mantissa}e{int(exp)}"
        return f"{v:.2g}"
    return str(v)


def _order(keys: Iterable[str]) -> list[str]:
    known = [k for k in _SHORT if k in keys]
    return known + sorted(k for k in keys if k not in _SHORT)


def short_values(config: dict[str, Any], searched: Iterable[str]) -> str:
    """The searched values of a (flat) trial config, short: ``r=4 a=4 lr=4.0e-3 do=0.05 qv n=2000``."""
    parts = []
    for key in _order(list(searched)):
        name = _SHORT.get(key, key.rsplit(".", 1)[-1])
        value = _fmt_value(key, config.get(key))
        parts.append(f"{name}={value}" if name else value)
    return " ".join(parts)


def trial_label(trial_id: str, config: dict[str, Any], searched: Iterable[str]) -> str:
    """``<trial id> <searched values>``: how the console and MLflow name a trial."""
    values = short_values(config, searched)
    return f"{trial_id} {values}" if values else trial_id


def legend(searched: Iterable[str]) -> str:
    """What the short names stand for: ``r=lora.r a=lora.alpha_multiple lr=train.lr lora.target_modules``
    (a key shown by its value alone, such as the target-module preset, is named as it is)."""
    out = []
    for key in _order(list(searched)):
        name = _SHORT.get(key, key.rsplit(".", 1)[-1])
        out.append(f"{name}={key}" if name else key)
    return " ".join(out)
