"""The GPU check's plumbing on CPU: every section end to end on a tiny model, the carry folder's
fp16 MiniLM restored to fp32, Ray's stripping, and one-line errors. GPU numbers are not asserted
here (no GPU in CI); the check itself records them when a session has one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import SECTIONS, strip_ray

ROOT = Path(__file__).resolve().parents[2]


def _run(args, env_extra=None, timeout=3600):  # generous: CI's 2 cores may be busy
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quick_cpu_check_runs_every_section(sst2, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _run(["--device", "cpu", "--quick", "--out", str(out), "--carry", str(tmp_path / "no-carry"),
                 "--work", str(tmp_path / "w")], {"LORA_STUDY_DATA": str(sst2)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert list(sections) == list(SECTIONS)
    assert {k: v["status"] for k, v in sections.items()} == dict.fromkeys(SECTIONS, "ok"), \
        {k: v.get("error") for k, v in sections.items()}
    env = sections["environment"]["result"]
    assert env["cuda_available"] in (False, True) and env["pydantic"] and env["carry"] is None
    corr = sections["correctness"]["result"]
    assert corr["passed"] is True and len(corr["runs"]["cpu"]) == len(corr["runs"]["device"]) == 1
    assert [p["samples_seen"] for p in corr["runs"]["device"][0]["curve"]] == [32, 64]
    for name in ("speed_minilm", "speed_bert_base"):
        res = sections[name]["result"]
        assert all(res[m] > 0 for m in ("ours", "hf_trainer", "hf_trainer_grouped")), res
    many = sections["many_trials"]["result"]
    assert [r["processes"] for r in many["runs"]] == [1, 2]
    assert all(r["samples_per_s_together"] > 0 and len(r["samples_per_s_each"]) == r["processes"] for r in many["runs"])
    assert many["runs"][0]["x_one_process"] == pytest.approx(1.0)
    ray = sections["ray_study"]["result"]
    assert len(ray["trials"]) == 2 and ray["errors"] == 0 and ray["max_concurrent_trials"] >= 1
    assert all(t["accuracy"] is not None for t in ray["trials"])
    assert "skipped" in sections["compile"]["result"]  # CUDA only
    assert set(report["goals"]) == {"minilm_one_trial_samples_per_s", "bert_base_one_trial_samples_per_s",
                                    "four_trials_x_one", "same_learning_curve"}
    assert "gpu_check (cpu, quick" in proc.stdout


@pytest.mark.slow  # xz of the 45 MB fp16 MiniLM
def test_carried_fp16_minilm_is_restored_to_fp32(sst2, tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainables.model import resolve_model_name

    carry = tmp_path / "carry"
    proc = _run(["--prepare", "--no-site", "--carry", str(carry), "--data", str(sst2)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = json.loads((carry / "manifest.json").read_text())
    assert manifest["minilm"]["fp16_bytes"] < 0.51 * manifest["minilm"]["fp32_bytes"]
    assert manifest["minilm"]["fp16_xz_bytes"] < manifest["minilm"]["fp16_bytes"]
    assert not (carry / "minilm" / "model.safetensors").exists() and (carry / "minilm" / "1_Pooling").is_dir()
    assert manifest["sst2_xz_bytes"] < 0.5 * (sst2 / "train.tsv").stat().st_size and not (carry / "site.tar.xz").exists()

    out, work = tmp_path / "check.json", tmp_path / "work"
    proc = _run(["--device", "cpu", "--quick", "--only", "environment", "--carry", str(carry), "--work", str(work),
                 "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    env = json.loads(out.read_text())["sections"]["environment"]["result"]
    assert env["data"] == str(work / "sst2") and env["carry"]["minilm"] == manifest["minilm"]
    assert (work / "sst2" / "train.tsv").read_bytes() == (sst2 / "train.tsv").read_bytes()
    restored = load_file(str(work / "minilm" / "model.safetensors"))
    original = load_file(str(Path(resolve_model_name("embedded-minilm")) / "model.safetensors"))
    assert restored.keys() == original.keys()
    for k, v in original.items():
        assert restored[k].dtype == v.dtype
        if v.is_floating_point():  # fp16 rounding only: relative error below 2^-11
            torch.testing.assert_close(restored[k], v, rtol=2**-10, atol=1e-7)


def test_strip_ray_drops_unused_parts_and_keeps_tune(tmp_path):
    site = tmp_path / "site"
    for part in ("jars", "rllib", "serve", "data", "dashboard/client/build", "tune", "train", "dashboard/modules"):
        (site / "ray" / part).mkdir(parents=True)
        (site / "ray" / part / "x.py").write_text("x = 1\n" * 100)
    report = strip_ray(site)
    assert set(report["removed"]) == {"jars", "rllib", "serve", "dashboard/client"}
    assert (site / "ray" / "tune" / "x.py").is_file() and (site / "ray" / "dashboard" / "modules").is_dir()
    assert (site / "ray" / "data").is_dir()  # ray.air imports it
    assert report["bytes_after"] < report["bytes_before"]


def test_no_cuda_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "x.json"
    proc = _run(["--quick", "--only", "environment", "--carry", str(tmp_path / "none"), "--work", str(tmp_path / "w"),
                 "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --device cuda but torch") and "Traceback" not in proc.stderr
    assert json.loads(out.read_text())["sections"]["environment"]["status"] == "failed"


@pytest.mark.parametrize("args, needle", [(["--only", "bogus", "--out", "x.json"], "unknown section"),
                                          (["--device", "cpu"], "--out FILE is required")])
def test_bad_arguments_are_one_line(args, needle):
    proc = _run(args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
