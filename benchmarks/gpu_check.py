"""One command that measures how the trainable uses a GPU and writes the results as one JSON.

Run it on the GPU machine, from the repository root. Where lora-study is installed (a CUDA build of
torch: ``TORCH_INDEX=https://download.pytorch.org/whl/cu126 TORCH_SPEC=torch bash .ci/setup.sh``)::

    LORA_STUDY_DATA=trainables/datasets/sst2 .venv/bin/python -m benchmarks.gpu_check --mps --out gpu_check.json

SST-2 comes from ``$LORA_STUDY_DATA`` (else ``../shared/data/sst2``), the model is the installed
embedded MiniLM, and the packages are the installed ones.

A GPU machine that has only torch, transformers and PEFT, and no network, can run it too. First,
on a machine with the project's ``.venv`` and access to a package index, build a self-contained
folder (about 60 MiB; sizes in ``.gpucheck/manifest.json``)::

    .venv/bin/python -m benchmarks.gpu_check --prepare --data DIR      # → .gpucheck/ (git-ignored)

It holds the embedded MiniLM as fp16, xz-compressed (41 MB instead of 91 MB; turned back into
fp32 on the GPU machine, so the GPU trains the same weights up to fp16 rounding), its tokenizer,
SST-2 (GLUE's ``train.tsv``/``dev.tsv`` from ``--data``), and ``site.tar.xz``: the packages such a
machine lacks (pydantic, jsonschema) and a stripped Ray for its Python (``--python-version``; see
``strip_ray``: no Java jars, dashboard web client, RLlib, Serve or LLM code, binaries without
symbol tables), as one solid xz archive: Ray's three native binaries share most of their code,
which a 128 MiB dictionary finds. Copy the checkout with ``.gpucheck/`` to the GPU machine and
run there::

    python3 -m benchmarks.gpu_check --mps --out gpu_check.json

Whatever ``--carry`` (default ``.gpucheck``) holds is used; what it lacks comes from the
installed packages and data.

Sections, each timed, each failing on its own (``status``: ok / failed / timeout / skipped, with
the error), in this order, within ``--budget-s`` (default 450 s: no section starts later, and
each has a cap, so the whole run stays under 8 minutes):

- ``environment``: GPU, driver, CUDA, package versions, where the packages and the model came from.
- ``correctness``: the seed-002 recipe on 4,000 SST-2 sentences, seeds 0–2, on CUDA (bf16) and on
  the machine's CPU (fp32), run side by side: dev accuracy and loss curves, and whether the CUDA
  mean is within ``--tolerance`` points of the CPU mean (872 dev sentences put ±1.1 points of
  noise on each run; seeds move it about as much).
- ``speed_minilm`` / ``speed_bert_base``: ``benchmarks/trainable_speed.py --device cuda`` (the
  trainable vs the HF Trainer in bf16, random and length-grouped batches) for the MiniLM shape
  (8,000 samples) and a bert-base shape (random weights from ``BertConfig()``, 4,000 samples).
- ``many_trials``: 1, 4 and 8 trial processes sharing the GPU (4,000 samples and 2 CPU threads
  each, warmed up, then started together behind a barrier): samples/s of all together over their
  common training window, and with ``--mps`` the 4-process run again under CUDA MPS (a daemon of
  its own in a temp directory, stopped afterwards; nothing of the GPU's settings changes).
- ``ray_study``: a Ray Tune run of ``trainables.loop.train`` with ``{"gpu": 0.25}`` per trial, 4
  trials under ASHA: did they share the GPU at once, their accuracy and throughput.
- ``compile``: the trainable with ``train.compile=true`` (``torch.compile(mode="reduce-overhead")``),
  its first 50 steps (compilation) untimed, measured last because it is the slowest and the least
  certain.

The JSON is rewritten after every section, so a run cut short keeps what it measured; its
``goals`` set the results against the targets (6,000 samples/s for one MiniLM trial, 3,000 for
bert-base, four trials at 4x one trial's throughput, the same learning curve as on CPU).
``--device cpu --quick`` runs the same plumbing end to end on a tiny model in about a minute.
``--only`` / ``--skip`` pick sections for a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BenchmarkError, now_iso, sst2_dir, write_json  # noqa: E402  (stdlib only)

__all__ = ["main", "prepare", "strip_ray", "SECTIONS", "CARRY", "DEVICE_LIMIT_BYTES"]

CARRY = ROOT / ".gpucheck"
WORK = Path(tempfile.gettempdir()) / "lora-gpu-check"
SECTIONS = ("environment", "correctness", "speed_minilm", "speed_bert_base", "many_trials", "ray_study", "compile")
#: What one device call carries: the working tree plus carried paths (the device tool's limit).
DEVICE_LIMIT_BYTES = 64 * 2**20
#: Packages the GPU image lacks, at the versions this checkout's .venv runs: pydantic for the
#: trainable's config, jsonschema (+ its parts) for Ray, typing-extensions as new as pydantic needs.
CARRIED_PACKAGES = ("ray", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
                    "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")
#: Parts of the Ray wheel a Tune study never loads (sizes measured in ``manifest.json``).
#: ``ray.data`` stays: ``ray.air`` (which Tune's function trainable imports) imports it.
RAY_UNUSED = ("jars", "dashboard/client", "rllib", "serve", "llm", "workflow", "cpp", "tests")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MINILM_FP16 = "model.fp16.safetensors.xz"
RECIPE = ROOT / "trainables" / "configs" / "seed-002.yaml"


# --------------------------------------------------------------------------- prepare (here)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else (path.stat().st_size if path.exists() else 0)


def strip_ray(site: Path) -> dict[str, Any]:
    """Remove what a Tune study does not load from an installed Ray (``RAY_UNUSED``: Java jars,
    the dashboard's web client, RLlib, Serve, LLM) and the symbol tables of its native
    binaries (``strip --strip-unneeded``: debugging only); returns the sizes before and after."""
    ray = site / "ray"
    before = _dir_bytes(ray)
    removed = {}
    for part in RAY_UNUSED:
        target = ray / part
        if target.exists():
            removed[part] = _dir_bytes(target)
            shutil.rmtree(target)
    stripped = []
    strip = shutil.which("strip")
    if strip:
        for f in list(ray.rglob("*.so")) + [ray / "core/src/ray/gcs/gcs_server", ray / "core/src/ray/raylet/raylet"]:
            if f.is_file() and subprocess.run([strip, "--strip-unneeded", str(f)], capture_output=True).returncode == 0:
                stripped.append(str(f.relative_to(site)))
    return {"bytes_before": before, "bytes_after": _dir_bytes(ray), "removed": removed, "symbols_stripped": len(stripped),
            "strip_tool": strip}


def _install_packages(stage: Path, python_version: str, names: tuple[str, ...]) -> dict[str, str]:
    pins = {}
    for name in names:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise BenchmarkError(f"{name} is not installed here: run `bash .ci/setup.sh` first") from None
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--only-binary=:all:",
           "--target", str(stage), "--python-version", python_version, "--implementation", "cp",
           *[a for p in PLATFORMS for a in ("--platform", p)], *[f"{n}=={v}" for n, v in pins.items()]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f"pip could not fetch the packages for Python {python_version}: {proc.stderr.strip().splitlines()[-1:]}")
    return pins


def _write_xz(src: Path, archive: Path) -> None:
    """A solid tar.xz with a 128 MiB dictionary: Ray's raylet, gcs_server and _raylet.so link the
    same libraries (gRPC, protobuf, abseil), so one archive stores that code about once."""
    import lzma

    filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 128 * 2**20}]
    with lzma.open(archive, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for item in sorted(src.iterdir()):
            tar.add(item, arcname=item.name)


def _minilm_fp16(out: Path) -> dict[str, Any]:
    """The embedded MiniLM's files, with its fp32 weights stored as fp16 safetensors, xz-compressed
    (``MINILM_FP16``: fp16 halves the 91 MB, xz takes another ~9% off the exponent bits)."""
    import lzma

    import torch
    from safetensors.torch import load_file, save

    from trainables.model import resolve_model_name

    src = Path(resolve_model_name("embedded-minilm"))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors", "README.md", "data_config.json", ".gitattributes"))
    weights = load_file(str(src / "model.safetensors"))
    raw = save({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
               metadata={"format": "pt", "lora_study": "fp16 copy for the GPU check; restore to fp32 before loading"})
    (out / MINILM_FP16).write_bytes(lzma.compress(raw, preset=3))
    return {"fp32_bytes": (src / "model.safetensors").stat().st_size, "fp16_bytes": len(raw),
            "fp16_xz_bytes": (out / MINILM_FP16).stat().st_size}


def _tree_bytes() -> int:
    """Bytes of the files that travel with a device call besides the carry folder (tracked and
    untracked-but-not-ignored files)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def prepare(carry: Path, python_version: str = "3.12", with_site: bool = True, data: str | None = None) -> dict[str, Any]:
    """Build the carry folder: fp16 MiniLM + tokenizer, SST-2, and (``with_site``) ``site.tar.xz``
    with the packages the GPU image lacks for ``python_version``; writes ``manifest.json``."""
    carry.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"created": now_iso(), "python_version": python_version}
    manifest["minilm"] = _minilm_fp16(carry / "minilm")
    sst2 = sst2_dir(data)
    with tempfile.TemporaryDirectory(prefix="gpucheck-sst2-") as tmp:
        for name in ("train.tsv", "dev.tsv"):
            shutil.copyfile(sst2 / name, Path(tmp) / name)
        _write_xz(Path(tmp), carry / "sst2.tar.xz")
    manifest["sst2_xz_bytes"] = (carry / "sst2.tar.xz").stat().st_size
    if with_site:
        with tempfile.TemporaryDirectory(prefix="gpucheck-site-") as tmp:
            stage = Path(tmp) / "site"
            manifest["packages"] = _install_packages(stage, python_version, CARRIED_PACKAGES)
            manifest["ray_strip"] = strip_ray(stage)
            manifest["site_bytes_unpacked"] = _dir_bytes(stage)
            _write_xz(stage, carry / "site.tar.xz")
        manifest["site_xz_bytes"] = (carry / "site.tar.xz").stat().st_size
    elif (carry / "site.tar.xz").exists():
        (carry / "site.tar.xz").unlink()
    manifest["carry_bytes"] = _dir_bytes(carry)
    manifest["tree_bytes"] = _tree_bytes()
    manifest["total_bytes"] = manifest["carry_bytes"] + manifest["tree_bytes"]
    manifest["fits_device_call"] = manifest["total_bytes"] <= DEVICE_LIMIT_BYTES
    write_json(carry / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- the device side: setup


class Env:
    """Where things are for this run: the model, the data, the Python path for subprocesses."""

    def __init__(self, carry: Path, quick: bool, device: str, work: Path = WORK):
        self.carry, self.quick, self.device = carry, quick, device
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.notes: dict[str, Any] = {}
        self.site = self._unpack_site()
        self.model = self._restore_minilm()
        self.data = self._unpack("sst2") or str(sst2_dir())
        self.env = {**os.environ, "LORA_STUDY_CACHE": str(self.work / "cache"), "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": os.pathsep.join(p for p in (self.site, str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if quick:
            self.model = self._tiny_model()

    def _unpack(self, name: str) -> str | None:
        """``CARRY/NAME.tar.xz`` unpacked to ``WORK/NAME`` (once per archive); None if not carried."""
        archive = self.carry / f"{name}.tar.xz"
        if not archive.is_file():
            return None
        target = self.work / name
        stamp = target / ".from"
        key = f"{archive.stat().st_size}:{archive.stat().st_mtime_ns}"
        if not (stamp.is_file() and stamp.read_text() == key):
            t0 = time.perf_counter()
            shutil.rmtree(target, ignore_errors=True)
            with tarfile.open(archive, "r:xz") as tar:
                if hasattr(tarfile, "tar_filter"):  # Python >= 3.12 (and 3.11.4+): keep the links inside target
                    tar.extractall(target, filter="tar")
                else:  # pragma: no cover
                    tar.extractall(target)
            stamp.write_text(key)
            self.notes[f"{name}_unpack_s"] = round(time.perf_counter() - t0, 2)
        return str(target)

    def _unpack_site(self) -> str | None:
        site = self._unpack("site")
        if site is None:
            self.notes["site"] = "no site.tar.xz in the carry folder: using the packages installed here"
        else:
            sys.path.insert(0, site)
        return site

    def _restore_minilm(self) -> str:
        src = self.carry / "minilm"
        if not (src / MINILM_FP16).is_file():
            return "embedded-minilm"
        import lzma

        import torch
        from safetensors.torch import load, save_file

        out = self.work / "minilm"
        if not (out / "model.safetensors").is_file():
            t0 = time.perf_counter()
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(src, out, ignore=shutil.ignore_patterns(MINILM_FP16))
            weights = load(lzma.decompress((src / MINILM_FP16).read_bytes()))
            save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()},
                      str(out / "model.safetensors"), metadata={"format": "pt"})
            self.notes["minilm_restore_s"] = round(time.perf_counter() - t0, 2)
        return str(out)

    def _tiny_model(self) -> str:
        """A 2-layer, 32-wide random BERT with the MiniLM tokenizer: the quick plumbing run."""
        out = self.work / "tiny-bert"
        if not (out / "config.json").is_file():
            import torch
            from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
            from transformers.utils import logging as hf_logging

            from trainables.model import resolve_model_name

            hf_logging.disable_progress_bar()
            tok = AutoTokenizer.from_pretrained(resolve_model_name(self.model))
            torch.manual_seed(0)
            cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)
            BertForSequenceClassification(cfg).save_pretrained(out)
            tok.save_pretrained(out)
        return str(out)

    def run(self, args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``python ARGS`` from the repository root with this run's environment."""
        return subprocess.run([sys.executable, *args], cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=max(1.0, timeout))


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


def _trial_config(env: Env, **over: Any) -> dict[str, Any]:
    from trainables.config import apply_overrides, flatten, load_yaml

    base = apply_overrides(load_yaml(RECIPE), {"model.name": env.model, "data.path": env.data, "train.device": env.device,
                                               "train.eval_every_samples": None, **over})
    return flatten(base)


# --------------------------------------------------------------------------- workers (subprocesses)


def _worker_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one trial from ``spec["config"]``; with ``spec["go"]`` first warm up (a few steps on the
    same device), say ``ready`` and wait for the go file, so that N workers train together."""
    from trainables.config import TrialConfig
    from trainables.loop import run_trial

    runs = []
    if spec.get("go"):
        warm = {**spec["config"], "data.size": min(256, int(spec["config"].get("data.size") or 256)), "data.dev_size": 32}
        run_trial(TrialConfig.from_dict(warm))
        Path(spec["ready"]).write_text("ready")
        deadline = time.time() + spec.get("wait_s", 300)
        while not Path(spec["go"]).exists():
            if time.time() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.02)
    for seed in spec.get("seeds", [None]):
        cfg = dict(spec["config"]) if seed is None else {**spec["config"], "train.seed": seed, "data.seed": 0}
        t0 = time.time()
        history = run_trial(TrialConfig.from_dict(cfg))
        first, last = history[0], history[-1]
        train_s = sum(h["train_s"] for h in history)
        runs.append({"seed": seed, "curve": [{k: h.get(k) for k in ("samples_seen", "accuracy", "eval_loss", "train_loss")}
                                             for h in history],
                     "accuracy": last["accuracy"], "samples": last["samples_seen"], "train_s": train_s,
                     "samples_per_s": last["samples_seen"] / train_s, "setup_s": last["setup_s"],
                     "train_start_unix": first["time_unix"] - first["eval_s"] - first["train_s"],
                     "train_end_unix": last["time_unix"] - last["eval_s"], "wall_s": time.time() - t0})
    return {"runs": runs}


def _worker_ray(spec: dict[str, Any]) -> dict[str, Any]:
    """A tiny Ray Tune study of the shared trainable with fractional GPUs (no Optuna/MLflow: the
    GPU image has neither; ``study.run`` adds them around the same Tuner)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from trainables.loop import train

    gpus = spec["gpus_per_trial"]
    for attempt in range(3):  # Ray gives its raylet 30 s to start: a busy CPU can need a second try
        try:
            ray.init(num_cpus=spec["cpus"], num_gpus=1 if gpus else 0, include_dashboard=False, log_to_driver=False)
            break
        except Exception as e:  # Ray raises a bare Exception for "timed out during startup"
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
    try:
        t0 = time.time()
        trainable = tune.with_resources(train, {"cpu": spec["cpus_per_trial"], "gpu": gpus})
        space = {**spec["config"], "train.lr": tune.grid_search(spec["lrs"])}
        scheduler = ASHAScheduler(time_attr="samples_seen", grace_period=spec["grace"], max_t=spec["max_t"], reduction_factor=2)
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(metric="accuracy", mode="max", scheduler=scheduler),
                           run_config=tune.RunConfig(name="gpu-check", storage_path=spec["storage"], verbose=0))
        grid = tuner.fit()
        wall = time.time() - t0
        trials = []
        for r in grid:
            df = r.metrics_dataframe
            rows = [] if df is None else df.to_dict("records")
            first, last = (rows[0], rows[-1]) if rows else ({}, r.metrics or {})
            start = first.get("time_unix", 0) - first.get("eval_s", 0) - first.get("train_s", 0) - first.get("setup_s", 0)
            trials.append({"lr": r.config.get("train.lr"), "error": str(r.error)[:300] if r.error else None,
                           "accuracy": last.get("accuracy"), "samples_seen": last.get("samples_seen"),
                           "train_s": sum(x.get("train_s", 0) for x in rows), "start_unix": start, "end_unix": last.get("time_unix")})
    finally:
        ray.shutdown()
    done = [t for t in trials if t["end_unix"]]
    events = sorted([(t["start_unix"], 1) for t in done] + [(t["end_unix"], -1) for t in done])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    samples = sum(t["samples_seen"] or 0 for t in done)
    span = (max(t["end_unix"] for t in done) - min(t["start_unix"] for t in done)) if done else 0.0
    return {"ray": ray.__version__, "ray_from": str(Path(ray.__file__).parent), "trials": trials, "wall_s": wall,
            "gpus_per_trial": gpus, "max_concurrent_trials": peak, "errors": sum(t["error"] is not None for t in trials),
            "samples_per_s_together": samples / span if span else None}


def _worker_environment(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib.util

    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "cpus": len(os.sched_getaffinity(0))}
    dists = {"sklearn": "scikit-learn"}
    for name in ("transformers", "peft", "ray", "pydantic", "datasets", "optuna", "mlflow", "safetensors", "sklearn"):
        found = importlib.util.find_spec(name)  # where it would be imported from; no import (ray, mlflow: seconds)
        try:
            info[name] = metadata.version(dists.get(name, name)) if found else None
        except metadata.PackageNotFoundError:
            info[name] = "?"
        if found and name in ("ray", "pydantic"):
            info[f"{name}_from"] = str(Path(found.origin).parent)
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    return info


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "trial": _worker_trial, "ray": _worker_ray, "environment": _worker_environment}


def _run_worker(env: Env, kind: str, spec: dict[str, Any], timeout: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=env.work))
    (d / "spec.json").write_text(json.dumps(spec))
    proc = env.run(["-m", "benchmarks.gpu_check", "--worker", kind, "--spec", str(d / "spec.json"), "--result", str(d / "out.json")],
                   timeout, extra_env)
    if proc.returncode != 0 or not (d / "out.json").is_file():
        raise RuntimeError(f"{kind} worker exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    return json.loads((d / "out.json").read_text())


def _start_worker(env: Env, kind: str, spec: dict[str, Any], extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=env.work))
    (d / "spec.json").write_text(json.dumps(spec))
    log = open(d / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check", "--worker", kind, "--spec", str(d / "spec.json"),
                             "--result", str(d / "out.json")], cwd=ROOT, env={**env.env, **(extra_env or {})},
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, d


def _collect(proc: subprocess.Popen, d: Path, timeout: float) -> dict[str, Any]:
    try:
        proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"worker in {d.name} ran past {timeout:.0f} s") from None
    if proc.returncode != 0 or not (d / "out.json").is_file():
        raise RuntimeError(f"worker exited {proc.returncode}: {_tail((d / 'log.txt').read_text())}")
    return json.loads((d / "out.json").read_text())


# --------------------------------------------------------------------------- sections


class NoDevice(BenchmarkError):
    """The device asked for is not there: nothing else can run (exit 2, one line)."""


def section_environment(env: Env, left: float) -> dict[str, Any]:
    info = _run_worker(env, "environment", {}, left)
    if env.device == "cuda" and not info.get("cuda_available"):
        raise NoDevice(f"--device cuda but torch {info.get('torch')} sees no CUDA device (use --device cpu --quick to check the plumbing)")
    manifest = env.carry / "manifest.json"
    return {**info, "carry": json.loads(manifest.read_text()) if manifest.is_file() else None, "setup": env.notes,
            "model": env.model, "data": env.data}


def section_correctness(env: Env, left: float, tolerance: float) -> dict[str, Any]:
    size = 64 if env.quick else 4000
    seeds = [0] if env.quick else [0, 1, 2]
    points = [32, 64] if env.quick else [1000, 2000, 4000]
    base = _trial_config(env, **{"data.size": size, "train.eval_at_samples": points})
    cpus = len(os.sched_getaffinity(0))
    cpu_threads = max(1, cpus - 4) if env.device == "cuda" else 1
    cpu = _start_worker(env, "trial", {"config": {**base, "train.device": "cpu", "train.threads": cpu_threads}, "seeds": seeds})
    dev = _start_worker(env, "trial", {"config": {**base, "train.device": env.device, "train.threads": 2}, "seeds": seeds})
    res_dev = _collect(*dev, timeout=left)
    res_cpu = _collect(*cpu, timeout=max(1.0, left))
    acc = {name: [r["accuracy"] for r in res["runs"]] for name, res in (("cpu", res_cpu), ("device", res_dev))}
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    gap = 100 * (mean["device"] - mean["cpu"])
    return {"samples": size, "seeds": seeds, "recipe": str(RECIPE.relative_to(ROOT)), "device": env.device,
            "accuracy": acc, "mean_accuracy": mean, "gap_points": gap, "tolerance_points": tolerance,
            "passed": abs(gap) <= tolerance, "cpu_threads": cpu_threads,
            "runs": {"cpu": res_cpu["runs"], "device": res_dev["runs"]}}


def _speed(env: Env, left: float, model: str, samples: int, extra: list[str]) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="speed-", dir=env.work)) / "speed.json"
    args = ["-m", "benchmarks.trainable_speed", "--device", env.device, "--model", model, "--tokenizer", env.model,
            "--samples", str(samples), "--data", env.data, "--json", str(out), *extra]
    if env.quick:
        args += ["--threads", "1"]
    proc = env.run(args, left)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"trainable_speed exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    res = json.loads(out.read_text())
    keep = ("ours", "hf_trainer", "hf_trainer_grouped", "ratio_vs_hf_trainer", "ratio_vs_hf_trainer_grouped",
            "padding_efficiency", "padding_efficiency_random", "padding_efficiency_grouped", "config", "runs", "timed")
    return {k: res[k] for k in keep if k in res}


def section_speed_minilm(env: Env, left: float) -> dict[str, Any]:
    return _speed(env, left, env.model, 64 if env.quick else 8000, [])


def section_speed_bert_base(env: Env, left: float) -> dict[str, Any]:
    return _speed(env, left, env.model if env.quick else "bert-base-random", 64 if env.quick else 4000, [])


def _together(env: Env, n: int, cfg: dict[str, Any], left: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """N trial processes, warmed up, then started at once; samples/s over their common window."""
    go = Path(tempfile.mkdtemp(prefix="go-", dir=env.work)) / "go"
    workers = []
    for i in range(n):
        ready = go.parent / f"ready-{i}"
        workers.append((_start_worker(env, "trial", {"config": cfg, "go": str(go), "ready": str(ready), "wait_s": left}, extra_env), ready))
    deadline = time.time() + left
    try:
        while not all(r.exists() for _, r in workers):
            if time.time() > deadline or any(p.poll() is not None for (p, _), _ in workers):
                break
            time.sleep(0.05)
        go.write_text("go")
        runs = [_collect(p, d, timeout=max(1.0, deadline - time.time()))["runs"][0] for (p, d), _ in workers]
    finally:
        for (p, _), _ in workers:
            if p.poll() is None:
                p.kill()
    start, end = min(r["train_start_unix"] for r in runs), max(r["train_end_unix"] for r in runs)
    samples = sum(r["samples"] for r in runs)
    return {"processes": n, "samples_per_s_together": samples / (end - start), "window_s": end - start,
            "samples_per_s_each": [r["samples_per_s"] for r in runs]}


class MPS:
    """A CUDA MPS control daemon of this check's own (pipe and log directories under the work
    dir, so it cannot meet another one), stopped on exit. It changes no GPU setting."""

    def __init__(self, work: Path):
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(work / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(work / "mps-log")}
        self.binary = shutil.which("nvidia-cuda-mps-control")

    def __enter__(self) -> "MPS":
        if not self.binary:
            raise RuntimeError("nvidia-cuda-mps-control is not on PATH")
        for d in self.env.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        subprocess.run([self.binary, "-d"], env={**os.environ, **self.env}, check=True, timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        subprocess.run([self.binary], input="quit\n", text=True, env={**os.environ, **self.env}, timeout=30)


def section_many_trials(env: Env, left: float, use_mps: bool) -> dict[str, Any]:
    counts = [1, 2] if env.quick else [1, 4, 8]
    cfg = _trial_config(env, **{"data.size": 64 if env.quick else 4000, "data.dev_size": 64 if env.quick else 256,
                                "train.threads": 2})
    t_end = time.time() + left
    out: dict[str, Any] = {"samples_per_process": cfg["data.size"], "threads_per_process": 2, "runs": []}
    for n in counts:
        out["runs"].append(_together(env, n, cfg, t_end - time.time()))
    if use_mps:
        try:
            with MPS(env.work) as mps:
                out["mps_runs"] = [_together(env, counts[1], cfg, t_end - time.time(), mps.env)]  # the goal's 4 trials
        except Exception as e:  # MPS is optional: the plain runs above stand on their own
            out["mps_error"] = f"{type(e).__name__}: {e}"[:500]
    one = out["runs"][0]["samples_per_s_together"]
    for r in out["runs"] + out.get("mps_runs", []):
        r["x_one_process"] = r["samples_per_s_together"] / one
    return out


def section_ray_study(env: Env, left: float) -> dict[str, Any]:
    cuda = env.device == "cuda"
    size = 64 if env.quick else 4000
    spec = {"config": _trial_config(env, **{"data.size": size, "data.dev_size": 64 if env.quick else 256, "train.threads": 2,
                                            "train.eval_at_samples": [size // 4, size // 2]}),
            "lrs": [2e-3, 5e-3] if env.quick else [5e-4, 1e-3, 2e-3, 5e-3], "gpus_per_trial": 0.25 if cuda else 0,
            "cpus": min(len(os.sched_getaffinity(0)), 8) if cuda else 2, "cpus_per_trial": 2 if cuda else 1,
            "grace": size // 4, "max_t": size, "storage": str(Path(tempfile.mkdtemp(prefix="ray-", dir=env.work)))}
    return _run_worker(env, "ray", spec, left)


def section_compile(env: Env, left: float) -> dict[str, Any]:
    if env.device != "cuda":
        return {"skipped": "torch.compile(mode='reduce-overhead') is measured on CUDA only (CUDA graphs)"}
    return _speed(env, left, env.model, 8000, ["--methods", "ours", "--warmup-steps", "50", "--set", "train.compile=true"])


# --------------------------------------------------------------------------- driver


ESTIMATES_S = {"environment": 15, "correctness": 60, "speed_minilm": 50, "speed_bert_base": 60, "many_trials": 100,
               "ray_study": 50, "compile": 60}
#: --quick (the CPU tests): no budget, and a cap that only a hung section reaches, even on a busy machine.
QUICK_CAP_S = 1200
CAPS_S = {"environment": 120, "correctness": 150, "speed_minilm": 150, "speed_bert_base": 150, "many_trials": 200,
          "ray_study": 150, "compile": 200}


def goals(sections: dict[str, Any]) -> dict[str, Any]:
    """The GPU goals next to what this run measured (None where a section did not run)."""
    def result(name: str) -> dict[str, Any]:
        s = sections.get(name, {})
        return s.get("result") or {} if s.get("status") == "ok" else {}

    minilm, bert, many, comp = result("speed_minilm"), result("speed_bert_base"), result("many_trials"), result("compile")
    four = next((r for r in many.get("runs", []) if r["processes"] == 4), {})
    four_mps = next((r for r in many.get("mps_runs", []) if r["processes"] == 4), {})
    return {
        "minilm_one_trial_samples_per_s": {"goal": 6000, "eager": minilm.get("ours"), "compiled": comp.get("ours")},
        "bert_base_one_trial_samples_per_s": {"goal": 3000, "eager": bert.get("ours")},
        "four_trials_x_one": {"goal": 4.0, "plain": four.get("x_one_process"), "mps": four_mps.get("x_one_process")},
        "same_learning_curve": result("correctness").get("passed"),
    }


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    chosen = [s for s in SECTIONS if (not args.only or s in args.only) and s not in args.skip]
    report: dict[str, Any] = {"check": "lora-study gpu_check", "date": now_iso(), "command": " ".join(sys.argv),
                              "device": args.device, "quick": args.quick, "budget_s": args.budget_s, "sections": {}}
    write_json(args.out, report)
    try:
        env = Env(args.carry, args.quick, args.device, args.work)
    except Exception as e:  # a torn carry folder, a missing package: say so in the JSON too
        report["setup_error"] = f"{type(e).__name__}: {e}"[:2000]
        write_json(args.out, report)
        raise BenchmarkError(f"setting up from {args.carry} failed: {report['setup_error']}") from None
    calls: dict[str, Callable[[float], dict[str, Any]]] = {
        "environment": lambda left: section_environment(env, left),
        "correctness": lambda left: section_correctness(env, left, args.tolerance),
        "speed_minilm": lambda left: section_speed_minilm(env, left),
        "speed_bert_base": lambda left: section_speed_bert_base(env, left),
        "many_trials": lambda left: section_many_trials(env, left, args.mps),
        "ray_study": lambda left: section_ray_study(env, left),
        "compile": lambda left: section_compile(env, left),
    }
    for name in chosen:
        left = args.budget_s - (time.perf_counter() - t_start)
        entry: dict[str, Any]
        if not args.quick and left < ESTIMATES_S[name]:
            entry = {"status": "skipped", "reason": f"{left:.0f} s of the budget left, the section needs about {ESTIMATES_S[name]} s"}
        else:
            t0 = time.perf_counter()
            print(f"[gpu_check] {name} …", flush=True)
            try:
                entry = {"status": "ok", "result": calls[name](QUICK_CAP_S if args.quick else min(left, CAPS_S[name]))}
            except NoDevice as e:
                report["sections"][name] = {"status": "failed", "error": str(e)}
                write_json(args.out, report)
                raise
            except (TimeoutError, subprocess.TimeoutExpired) as e:
                entry = {"status": "timeout", "error": str(e)[:2000]}
            except Exception as e:  # one section's failure must not lose the others
                entry = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:3000],
                         "traceback": _tail(traceback.format_exc(), 2000)}
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']} s", flush=True)
        report["sections"][name] = entry
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        report["goals"] = goals(report["sections"])
        write_json(args.out, report)  # after every section: a run cut short keeps what it measured
    return report


def summary(report: dict[str, Any]) -> str:
    g = report["goals"]
    status = ", ".join(f"{k} {v['status']}" for k, v in report["sections"].items())

    def fmt(x: Any) -> str:
        return "—" if x is None else (f"{x:.0f}" if isinstance(x, float) and x > 20 else (f"{x:.2f}" if isinstance(x, float) else str(x)))

    return (f"gpu_check ({report['device']}{', quick' if report['quick'] else ''}, {report['elapsed_s']} s): {status}. "
            f"MiniLM ours {fmt(g['minilm_one_trial_samples_per_s']['eager'])} samples/s "
            f"(compiled {fmt(g['minilm_one_trial_samples_per_s']['compiled'])}; goal 6000), bert-base "
            f"{fmt(g['bert_base_one_trial_samples_per_s']['eager'])} (goal 3000), 4 trials "
            f"{fmt(g['four_trials_x_one']['plain'])}x one (MPS {fmt(g['four_trials_x_one']['mps'])}x; goal 4x), "
            f"same learning curve: {fmt(g['same_learning_curve'])}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="where the JSON goes (required unless --prepare)")
    ap.add_argument("--carry", type=Path, default=CARRY, help="folder built by --prepare with the model, data and packages; used when present (default .gpucheck)")
    ap.add_argument("--work", type=Path, default=WORK, help=f"scratch directory (default {WORK})")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the plumbing only, e.g. with --device cpu")
    ap.add_argument("--budget-s", type=float, default=450.0, help="start no section past this many seconds (default 450)")
    ap.add_argument("--only", default="", help=f"comma-separated sections to run ({','.join(SECTIONS)})")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--mps", action="store_true", help="many_trials also under a CUDA MPS daemon of its own")
    ap.add_argument("--tolerance", type=float, default=2.5, help="correctness: |CUDA − CPU| mean dev accuracy, points (default 2.5)")
    ap.add_argument("--prepare", action="store_true", help="build the --carry folder on this machine, for a GPU machine without the dependencies or network (needs the project's .venv and a package index)")
    ap.add_argument("--python-version", default="3.12", help="--prepare: the GPU machine's Python version (default 3.12)")
    ap.add_argument("--no-site", action="store_true", help="--prepare: without site.tar.xz (no Ray, no pydantic)")
    ap.add_argument("--data", default=None, help="--prepare: directory with GLUE SST-2 train.tsv and dev.tsv (default $LORA_STUDY_DATA or ../shared/data/sst2)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for flag in ("only", "skip"):
        names = [s.strip() for s in getattr(args, flag).split(",") if s.strip()]
        unknown = [s for s in names if s not in SECTIONS]
        if unknown:
            ap.error(f"--{flag}: unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
        setattr(args, flag, names)
    if not args.prepare and not args.worker and not args.out:
        ap.error("--out FILE is required (or --prepare)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:  # a subprocess of run_check: the carried packages come through PYTHONPATH
        result = WORKERS[args.worker](json.loads(Path(args.spec).read_text()))
        write_json(args.result, result)
        return 0
    try:
        if args.prepare:
            m = prepare(args.carry, args.python_version, not args.no_site, args.data)
            print(json.dumps(m, indent=1))
            print(f"carry folder {args.carry}: {m['carry_bytes'] / 2**20:.1f} MiB + tree {m['tree_bytes'] / 2**20:.1f} MiB = "
                  f"{m['total_bytes'] / 2**20:.1f} MiB of the device call's {DEVICE_LIMIT_BYTES / 2**20:.0f} MiB"
                  + ("" if m["fits_device_call"] else " — TOO LARGE"))
            return 0 if m["fits_device_call"] else 2
        report = run_check(args)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
