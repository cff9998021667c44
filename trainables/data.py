"""Data for one trial: load → label ids → stratified subset → cached tokens → length-bucketed batches.

Why this shape:
- A study runs the same corpus through hundreds of trials. Tokenizing 67k SST-2 sentences per
  trial would waste seconds each, so token ids are cached on disk, keyed by a hash of the texts,
  the tokenizer and ``max_length`` (content-addressed: an edited file can never hit a stale cache).
- Random batches of short and long sentences waste most of a CPU's work on padding (66% on SST-2
  with MiniLM, measured). Batches are built from length-sorted chunks of a shuffled order, then
  shuffled, so each batch holds texts of similar length while training order stays random.
- "8000 samples" must mean the same 8000 sentences in every trial, so the subset is stratified by
  label and seeded by ``data.seed``, independent of the trial's own seed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import ConfigError, DataSection, resolve_data_path, size_count
from .hub import check_hub_name, looks_like_hub_id

__all__ = [
    "DataError",
    "RawSplits",
    "TokenizedSplit",
    "TrialData",
    "load_splits",
    "subset_indices",
    "tokenize_cached",
    "make_batches",
    "collate",
    "padded_width",
    "padding_efficiency",
    "prepare_data",
    "read_table",
    "find_split",
    "TABLE_FORMATS",
    "LABELLED_FORMATS",
    "split_frames",
    "load_test",
]

#: Table formats by suffix → whether the format holds columns (texts and labels). The one list
#: that reading, split discovery and error messages consult; a ``.txt`` file is one text per line.
TABLE_FORMATS: dict[str, bool] = {".tsv": True, ".csv": True, ".parquet": True, ".jsonl": True, ".json": True, ".txt": False}
#: The formats a labelled split (train, dev, a test file) can be in.
LABELLED_FORMATS = tuple(s for s, columns in TABLE_FORMATS.items() if columns)


class DataError(ConfigError):
    """Bad input data, reported as one line naming the file or column."""


@dataclass
class RawSplits:
    train_texts: list[str]
    train_labels: np.ndarray  # int64 ids
    dev_texts: list[str]
    dev_labels: np.ndarray
    label_names: list[str]  # id -> name
    source: str  # where the data came from (for error messages and provenance)
    val_texts: list[str] | None = None  # data.holdout_size examples carved out of train
    val_labels: np.ndarray | None = None
    dropped_empty: int = 0  # rows without a text that data.drop_empty dropped, over all files read
    label_keys: list[str] | None = None  # id -> the label as the files spell it (before data.label_names)


@dataclass
class TokenizedSplit:
    ids: list[np.ndarray]  # one int32 array per text, no padding
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TrialData:
    train: TokenizedSplit
    dev: TokenizedSplit
    label_names: list[str]
    pad_id: int
    val: TokenizedSplit | None = None  # the held-out validation split (data.holdout_size), if any
    dropped_empty: int = 0  # see RawSplits


# --------------------------------------------------------------------------- loading


def read_table(path: Path, text_column: str | None = None) -> Any:
    """Read a tsv/csv/parquet/jsonl/json file into a pandas DataFrame (TSV read verbatim: SST-2 has
    unbalanced quotes, so quoting is off). A bare ``.txt`` file is one text per line."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(TABLE_FORMATS)})")
    _check_unique_columns(path, suffix)
    readers = {
        ".tsv": lambda: pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False),
        ".csv": lambda: pd.read_csv(path, keep_default_na=False),
        ".parquet": lambda: pd.read_parquet(path),
        ".jsonl": lambda: pd.read_json(path, lines=True),
        ".json": lambda: pd.read_json(path),
        ".txt": lambda: pd.DataFrame({text_column or "text": [ln.rstrip("\n") for ln in path.read_text().splitlines() if ln.strip()]}),
    }
    try:
        return readers[suffix]()
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None


def _header(path: Path, suffix: str) -> list[str]:
    """Column names exactly as the file spells them (pandas renames a repeated ``label`` to
    ``label.1`` and would silently read the first one)."""
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first = f.readline()
    if suffix == ".tsv":
        return first.rstrip("\r\n").split("\t")
    if suffix == ".csv":
        return next(csv.reader([first]), [])
    if suffix == ".jsonl" and first.strip():
        import json

        try:
            return [k for k, _ in json.loads(first, object_pairs_hook=lambda pairs: pairs)]
        except (ValueError, TypeError):
            return []  # not one object per line: pandas reports it below
    return []


def _check_unique_columns(path: Path, suffix: str) -> None:
    try:
        names = _header(path, suffix)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DataError(f"{path}: duplicate column names {dups} (columns: {', '.join(names)}); rename them")


def find_split(directory: Path, names: Sequence[str]) -> Path | None:
    """The first ``<name><suffix>`` in ``directory`` for ``names`` in order, in a labelled format."""
    for name in names:
        for ext in LABELLED_FORMATS:
            p = directory / f"{name}{ext}"
            if p.is_file():
                return p
    return None


#: Label cells that mean "no label" (pandas' NA spellings, minus "None", which can name a class).
_NA_LABELS = {"", "nan", "-nan", "na", "n/a", "#n/a", "null", "<na>"}


def _rows(idx: list[int]) -> str:
    """``rows 3, 17, 42, …`` (data rows counted from 1, the header not included)."""
    head = ", ".join(str(i + 1) for i in idx[:5])
    return f"row{'s' if len(idx) > 1 else ''} {head}{', …' if len(idx) > 5 else ''}"


def _missing_text(t: Any) -> bool:
    if isinstance(t, str):
        return not t.strip()
    return t is None or (isinstance(t, float) and t != t) or _is_na(t)


def _missing_label(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in _NA_LABELS
    return v is None or (isinstance(v, (float, np.floating)) and v != v) or _is_na(v)


def _is_na(v: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # list-like cells
        return False


def _drop_rows(values: list[Any], rows: list[int]) -> list[Any]:
    skip = set(rows)
    return [v for i, v in enumerate(values) if i not in skip]


def _columns(df: Any, cfg: DataSection, where: str) -> tuple[list[str], list[Any], int]:
    """Texts and raw labels of one split, and how many rows ``data.drop_empty`` dropped. Refused,
    one line naming file, column and row count: empty or missing texts (they would train on the
    string "nan" or nothing) unless ``data.drop_empty``, and missing labels (a NaN label would
    become a class of its own). Texts longer than ``_max_chars(cfg)`` are cut."""
    for col in (cfg.text_column, cfg.label_column):
        if col not in df.columns:
            raise DataError(
                f"{where}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                f"set data.text_column / data.label_column"
            )
    if len(df) == 0:
        raise DataError(f"{where}: split is empty")
    raw_texts, labels = df[cfg.text_column].tolist(), df[cfg.label_column].tolist()
    bad = [i for i, t in enumerate(raw_texts) if _missing_text(t)]
    if bad and not cfg.drop_empty:
        raise DataError(f"{where}: column {cfg.text_column!r} has {len(bad)} empty or missing texts of {len(df)} "
                        f"({_rows(bad)}); remove those rows or fill them in, or set data.drop_empty=true to drop them")
    dropped = len(bad)
    if bad:
        if dropped == len(df):
            raise DataError(f"{where}: column {cfg.text_column!r} has no text in any of its {len(df)} rows; check data.text_column")
        raw_texts, labels = _drop_rows(raw_texts, bad), _drop_rows(labels, bad)
        logging.getLogger(__name__).info("%s: dropped %d of %d rows with an empty or missing %r (%s; data.drop_empty)",
                                         where, dropped, len(df), cfg.text_column, _rows(bad))
    bad = [i for i, v in enumerate(labels) if _missing_label(v)]
    if bad:
        raise DataError(f"{where}: column {cfg.label_column!r} has {len(bad)} missing labels of {len(labels)} "
                        f"({_rows(bad)}); remove those rows or label them")
    limit = _max_chars(cfg)
    texts = [t if isinstance(t, str) else str(t) for t in raw_texts]
    cut = sum(len(t) > limit for t in texts)
    if cut:
        texts = [t[:limit] for t in texts]
        _warn_once(f"{where}: {cut} texts longer than {limit} characters cut to that length before tokenizing "
                   f"(data.max_length={cfg.max_length} tokens)")
    return texts, labels, dropped


#: Characters a token can stand for, at most: BERT's WordPiece turns any word longer than 100
#: characters into one [UNK] (``max_input_chars_per_word``).
CHARS_PER_TOKEN = 100


def _max_chars(cfg: DataSection) -> int:
    """Characters of a text that can reach its first ``data.max_length`` tokens (a bound, so the
    cut never changes what a trial sees, except past long runs of whitespace). Without it a 50 MB
    single-line text took 90 s and 7 GB to tokenize, in every trial process."""
    return CHARS_PER_TOKEN * cfg.max_length


def _load_hub(cfg: DataSection) -> tuple[Any, Any, str]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a hard dependency
        raise DataError(f"data.path={cfg.path!r} looks like a hub id but `datasets` is missing") from e
    try:
        ds = datasets.load_dataset(cfg.path, cfg.hub_config)
    except Exception as e:  # network / unknown id: one line, with how to fix it
        raise DataError(
            f"data.path={cfg.path!r}: not a local file/dir and not loadable from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). For offline use point "
            f"data.path (or $LORA_STUDY_DATA) at a directory with train.tsv and dev.tsv"
        ) from None
    dev_name = next((s for s in ("validation", "dev", "test") if s in ds), None)
    if "train" not in ds or dev_name is None:
        raise DataError(f"hub dataset {cfg.path!r}: needs a train and a validation split (has {list(ds)})")
    return ds["train"].to_pandas(), ds[dev_name].to_pandas(), f"hub:{cfg.path}/{cfg.hub_config or ''}"


def load_splits(cfg: DataSection) -> RawSplits:
    """Load train and dev texts with integer label ids; every input problem is a ``DataError``."""
    path = Path(os.path.expanduser(resolve_data_path(cfg.path)))
    if path.is_dir():
        train_p = find_split(path, ["train"])
        dev_p = find_split(path, ["dev", "validation", "valid", "val"])
        if train_p is None:
            raise DataError(f"{path}: no train.{{tsv,csv,parquet,jsonl}} in this directory")
        train_df = read_table(train_p)
        train_texts, train_raw, dropped = _columns(train_df, cfg, str(train_p))
        if dev_p is not None:
            dev_texts, dev_raw, dropped_dev = _columns(read_table(dev_p), cfg, str(dev_p))
            dropped += dropped_dev
        else:
            train_texts, train_raw, dev_texts, dev_raw = _carve_dev(train_texts, train_raw, cfg)
        source = str(path)
    elif path.is_file():
        train_texts, train_raw, dropped = _columns(read_table(path), cfg, str(path))
        train_texts, train_raw, dev_texts, dev_raw = _carve_dev(train_texts, train_raw, cfg)
        source = str(path)
    elif looks_like_hub_id(cfg.path):
        check_hub_name(cfg.path, "data.path", "dataset")  # a mistyped relative path fails here, fast
        train_df, dev_df, source = _load_hub(cfg)
        train_texts, train_raw, dropped = _columns(train_df, cfg, f"{source} train")
        dev_texts, dev_raw, dropped_dev = _columns(dev_df, cfg, f"{source} validation")
        dropped += dropped_dev
    else:
        raise DataError(
            f"data not found: {cfg.path} (resolved {path.resolve()}). Provide SST-2 as a directory with "
            f"train.tsv and dev.tsv (set LORA_STUDY_DATA=/path/to/sst2 or --set data.path=...), "
            f"or a hub id such as nyu-mll/glue with data.hub_config=sst2 when online"
        )
    names, train_ids = _label_ids(train_raw, cfg, source)
    index = {n: i for i, n in enumerate(names)}
    dev_ids = []
    for v in dev_raw:
        key = _label_key(v)
        if key not in index:
            raise DataError(f"{source}: dev label {v!r} never appears in train (train labels: {names})")
        dev_ids.append(index[key])
    if cfg.label_names is not None:
        if len(cfg.label_names) != len(names):
            raise DataError(f"data.label_names has {len(cfg.label_names)} names but the data has {len(names)} labels")
        names = list(cfg.label_names)
    dev_labels = np.asarray(dev_ids, dtype=np.int64)
    if cfg.dev_size is not None and cfg.dev_size < len(dev_texts):
        keep = subset_indices(dev_labels, cfg.dev_size, cfg.seed)
        dev_texts = [dev_texts[i] for i in keep]
        dev_labels = dev_labels[keep]
    raw = RawSplits(train_texts, train_ids, dev_texts, dev_labels, names, source, dropped_empty=dropped, label_keys=list(index))
    return _hold_out(raw, cfg) if cfg.holdout_size else raw


def load_test(cfg: DataSection, raw: RawSplits | None = None) -> tuple[list[str], np.ndarray, str]:
    """Texts and label ids of the ``data.test_path`` file, ids as the train split numbers them
    (``raw``: the train/dev splits already loaded, else they are read). Refused, one line: no such
    file, missing columns, texts or labels (the checks every split gets), and labels the train
    split does not have (a model cannot predict a class it never saw, and a renamed class would be
    scored as always wrong)."""
    if not cfg.test_path:
        raise DataError("data.test_path is not set")
    path = Path(os.path.expanduser(cfg.test_path))
    where = f"data.test_path={cfg.test_path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    texts, labels, _ = _columns(read_table(path), cfg, where)
    keys = (raw or load_splits(cfg)).label_keys or []
    index = {k: i for i, k in enumerate(keys)}
    found = [_label_key(v) for v in labels]
    unknown = sorted(set(found) - set(index))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not training labels (the train split has {keys}); "
                        f"the test file needs the same labels, in the same spelling")
    return texts, np.asarray([index[k] for k in found], dtype=np.int64), str(path.resolve())


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning about a data file, once per process: the driver reads the same files for its
    checks, its MLflow datasets and its refit, and the user needs to hear it once."""
    if message not in _warned:
        _warned.add(message)
        logging.getLogger(__name__).warning("%s", message)


def _hold_out(raw: RawSplits, cfg: DataSection) -> RawSplits:
    """Move ``data.holdout_size`` stratified train examples into the validation split; every
    training subset is then drawn from what is left, so none of them ever sees these."""
    n = len(raw.train_texts)
    if cfg.holdout_size > n - 2:
        raise DataError(f"data.holdout_size={cfg.holdout_size} leaves too little of the train split ({n} examples in {raw.source})")
    val = subset_indices(raw.train_labels, cfg.holdout_size, cfg.seed)
    rest = np.setdiff1d(np.arange(n), val)
    raw.val_texts = [raw.train_texts[i] for i in val]
    raw.val_labels = raw.train_labels[val]
    raw.train_texts = [raw.train_texts[i] for i in rest]
    raw.train_labels = raw.train_labels[rest]
    return raw


def _label_key(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return str(v)


def _label_ids(raw: list[Any], cfg: DataSection, source: str) -> tuple[list[str], np.ndarray]:
    """Map labels to ids 0..K-1: integer labels keep their order (0 stays 0), strings are sorted."""
    keys = [_label_key(v) for v in raw]
    uniq = sorted(set(keys))
    if all(k.lstrip("-").isdigit() for k in uniq):
        uniq = sorted(uniq, key=int)
    if len(uniq) < 2:
        raise DataError(f"{source}: column {cfg.label_column!r} has a single label value {uniq}; need at least 2")
    index = {k: i for i, k in enumerate(uniq)}
    return uniq, np.asarray([index[k] for k in keys], dtype=np.int64)


def _carve_dev(texts: list[str], raw: list[Any], cfg: DataSection):
    from sklearn.model_selection import train_test_split

    keys = [_label_key(v) for v in raw]
    idx = np.arange(len(texts))
    try:
        tr, dv = train_test_split(idx, test_size=cfg.dev_fraction, stratify=keys, random_state=cfg.seed)
    except ValueError:  # a class too rare to stratify: plain seeded split
        tr, dv = train_test_split(idx, test_size=cfg.dev_fraction, random_state=cfg.seed)
    tr, dv = np.sort(tr), np.sort(dv)
    return [texts[i] for i in tr], [raw[i] for i in tr], [texts[i] for i in dv], [raw[i] for i in dv]


def subset_indices(labels: np.ndarray, size: int | float | None, seed: int) -> np.ndarray:
    """Stratified, seeded subset of ``size`` examples (a count or a fraction); sorted indices."""
    n = len(labels)
    count = size_count(size, n)
    if count > n:
        raise DataError(f"data.size={size} is larger than the train split ({n} examples)")
    if count >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_classes = len(np.unique(labels))
    strat = labels if count >= n_classes and n - count >= n_classes else None
    keep, _ = train_test_split(idx, train_size=count, stratify=strat, random_state=seed)
    return np.sort(keep)


# --------------------------------------------------------------------------- tokens


def _cache_root(cfg_dir: str | None) -> Path:
    root = cfg_dir or os.environ.get("LORA_STUDY_CACHE") or os.path.join(Path.home(), ".cache", "lora-study")
    return Path(root) / "tokens"


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    vocab = tokenizer.get_vocab()
    h.update(str(len(vocab)).encode())
    for tok in sorted(vocab)[:: max(1, len(vocab) // 512)]:  # a sample of the vocab is enough
        h.update(f"{tok}:{vocab[tok]}".encode())
    h.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return h.hexdigest()[:16]


def tokenize_cached(texts: list[str], tokenizer: Any, max_length: int, cache_dir: str | None = None) -> list[np.ndarray]:
    """Token ids per text (special tokens added, truncated, unpadded), cached on disk by content."""
    h = hashlib.sha256()
    h.update(_tokenizer_fingerprint(tokenizer).encode())
    h.update(str(max_length).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    path = _cache_root(cache_dir) / f"{h.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                flat, offsets = z["flat"], z["offsets"]
            return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        except (OSError, ValueError, KeyError):
            pass  # a torn cache file (crash mid-write): rebuild it below
    ids: list[list[int]] = []
    for start in range(0, len(texts), 4096):
        enc = tokenizer(texts[start : start + 4096], truncation=True, max_length=max_length, add_special_tokens=True)
        ids.extend(enc["input_ids"])
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, flat=flat, offsets=offsets)
    os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(ids))]


# --------------------------------------------------------------------------- batches


def make_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, chunk_batches: int = 64) -> list[np.ndarray]:
    """Length-bucketed batches for one epoch: shuffle, sort within chunks, batch, shuffle batches.

    Deterministic in (seed, epoch), so a resumed trial rebuilds the exact same order and only
    needs to remember how many batches of the epoch it already took.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def padding_efficiency(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Real tokens / padded tokens over the given batches (1.0 = no padding at all)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return real / padded if padded else 1.0


def padded_width(longest: int, multiple: int = 1) -> int:
    """The width a batch is padded to: its longest text, rounded up to a multiple of ``multiple``.

    Why round at all: on a GPU each new input shape costs a new kernel choice and, for CUDA
    graphs or ``torch.compile``, a new capture or compile; widths rounded to a multiple of 8 or
    16 leave only a handful of shapes (and tensor cores prefer such sizes) for a little padding
    that the GPU computes for free while the step is bound by kernel launches. On a CPU every
    padded token is real work, so the trainable rounds only on CUDA (``train.pad_multiple``)."""
    return -(-longest // multiple) * multiple


def collate(split: TokenizedSplit, idx: np.ndarray, pad_id: int, pad_multiple: int = 1,
            pin_memory: bool = False) -> dict[str, Any]:
    """Pad a batch to its own longest text (rounded up to ``pad_multiple``); returns torch tensors.

    ``pin_memory`` puts them in page-locked host memory (needs CUDA): only from there can a
    ``non_blocking`` copy to the GPU run asynchronously — a copy from ordinary (pageable) memory
    first waits for everything queued on the GPU, a host-device sync per batch."""
    import torch

    seqs = [split.ids[i] for i in idx]
    width = padded_width(max(len(s) for s in seqs), pad_multiple)
    input_ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        input_ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(split.labels[idx]),
    }
    if pin_memory:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch


# --------------------------------------------------------------------------- one call


@lru_cache(maxsize=4)
def _raw_cached(cfg_json: str) -> RawSplits:
    return load_splits(DataSection.model_validate_json(cfg_json))


def prepare_data(cfg: DataSection, tokenizer: Any) -> TrialData:
    """Everything a trial needs from its data; memoized per process (Ray reuses trial actors)."""
    raw = _raw_cached(cfg.model_copy(update={"size": None}).model_dump_json())
    keep = subset_indices(raw.train_labels, cfg.size, cfg.seed)
    train_ids = tokenize_cached(raw.train_texts, tokenizer, cfg.max_length, cfg.cache_dir)
    dev_ids = tokenize_cached(raw.dev_texts, tokenizer, cfg.max_length, cfg.cache_dir)
    val = None
    if raw.val_texts is not None:
        val = TokenizedSplit(tokenize_cached(raw.val_texts, tokenizer, cfg.max_length, cfg.cache_dir), raw.val_labels)
    if len(set(raw.train_labels[keep].tolist())) < 2:
        raise DataError(f"data.size={cfg.size} leaves a single label in the train subset; use a larger size")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TrialData(
        train=TokenizedSplit([train_ids[i] for i in keep], raw.train_labels[keep]),
        dev=TokenizedSplit(dev_ids, raw.dev_labels),
        label_names=raw.label_names,
        pad_id=pad_id,
        val=val,
        dropped_empty=raw.dropped_empty,
    )


def split_frames(cfg: DataSection) -> tuple[str, dict[str, Any]]:
    """Where the data came from, and the examples a trial with data config ``cfg`` trains and is
    evaluated on as pandas frames (text and label name columns): ``train`` (its ``data.size``
    subset), ``validation`` (with ``data.holdout_size``) and ``dev``. Why: tracking describes the
    data each trial saw (MLflow dataset inputs) from the very rows the trial draws, not from a
    second reading of the config."""
    import pandas as pd

    raw = _raw_cached(cfg.model_copy(update={"size": None}).model_dump_json())
    names = np.asarray(raw.label_names, dtype=object)

    def frame(texts: list[str], labels: np.ndarray) -> Any:
        return pd.DataFrame({cfg.text_column: texts, cfg.label_column: names[labels]})

    keep = subset_indices(raw.train_labels, cfg.size, cfg.seed)
    frames = {"train": frame([raw.train_texts[i] for i in keep], raw.train_labels[keep])}
    if raw.val_texts is not None:
        frames["validation"] = frame(raw.val_texts, raw.val_labels)
    frames["dev"] = frame(raw.dev_texts, raw.dev_labels)
    return raw.source, frames
