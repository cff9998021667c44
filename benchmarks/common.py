"""Small helpers shared by the benchmark scripts: where the data is, what machine ran, JSON output.

Every benchmark result should say on what it was measured (CPU/GPU, cores actually usable, load
at the time, library versions, commit), because a samples/s figure means nothing without it:
``run_metadata()`` collects that, ``write_json()`` stores a result atomically.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "BenchmarkError",
    "sst2_dir",
    "usable_cpus",
    "load_average",
    "hardware_info",
    "software_info",
    "git_info",
    "now_iso",
    "run_metadata",
    "busy_note",
    "write_json",
    "run_benchmark",
]

#: Repository root (benchmarks/ is one level below it).
ROOT = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """A setup problem reported as one line (missing data, no GPU …), not a traceback."""


def sst2_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """SST-2 directory: ``path``, else ``$LORA_STUDY_DATA``, else ``../shared/data/sst2`` next to the
    repository root (not the working directory). Raises ``BenchmarkError`` if it has no train split."""
    raw = path or os.environ.get("LORA_STUDY_DATA") or ROOT.parent / "shared" / "data" / "sst2"
    d = Path(os.path.expanduser(str(raw))).resolve()
    if not any((d / f"train{ext}").is_file() for ext in (".tsv", ".csv", ".parquet", ".jsonl")):
        raise BenchmarkError(
            f"SST-2 not found at {d}: expected train.tsv and dev.tsv (GLUE SST-2, sentence<TAB>label with a "
            f"header row). Put them there, set LORA_STUDY_DATA=/path/to/sst2, or pass --data /path/to/sst2."
        )
    return d


def usable_cpus() -> int:
    """CPUs this process may run on (affinity/cgroup cpuset), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info() -> dict[str, Any]:
    """CPU model and core counts, memory, torch threads, and the GPU if one is visible."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover
        pass
    return info


def software_info(packages: tuple[str, ...] = ("torch", "transformers", "peft", "accelerate", "datasets")) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict[str, Any]:
    """Commit of the working tree and whether it had uncommitted changes (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def run_metadata() -> dict[str, Any]:
    """``{"date", "hardware", "software", "git", "command"}`` for a result file."""
    return {
        "date": now_iso(),
        "hardware": hardware_info(),
        "software": software_info(),
        "git": git_info(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def busy_note(loads: list[list[float] | None], cpus: int, own_threads: int = 0) -> str | None:
    """A warning line when other work competed for the CPU: the highest 1-minute load average seen,
    minus this process's own busy threads, exceeded half a core (rough: the load average lags by
    about a minute). On a shared machine, timings taken then are contended and should say so."""
    ones = [la[0] for la in loads if la]
    if not ones:
        return None
    others = max(ones) - own_threads
    if others > 0.5:
        return (f"note: load average reached {max(ones):.1f} on {cpus} usable CPU(s) while this benchmark used "
                f"{own_threads} thread(s): about {others:.1f} CPU(s) of other work competed, so absolute "
                f"samples/s are contended")
    return None


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN/inf become null), atomically; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, p)
    return p


def run_benchmark(args: Any, run: Any, summary: Any, table: Any = None) -> int:
    """The end of every benchmark's ``main()``: ``res = run(args)``; a ``BenchmarkError`` or a
    config/data error of the trainable is one ``error:`` line (exit 2), never a traceback; then
    ``table(res)``, the JSON file (``--json``) and the one-line ``summary(res)``."""
    from trainables.config import ConfigError

    try:
        res = run(args)
    except (BenchmarkError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if table is not None:
        table(res)
    if getattr(args, "json", None):
        print(f"wrote {write_json(args.json, res)}")
    print(summary(res))
    return 0
