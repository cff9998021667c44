"""Static checks of docker/Dockerfile (+ Dockerfile.dockerignore): base images per variant, install
order, non-root users, no data copied in, and agreement with the compose build targets and versions."""

from __future__ import annotations

import re

import pytest

from tests.docker.files import (
    DOCKER,
    DOCKERFILE,
    DOCKERIGNORE,
    KUBERAY,
    _chain_instrs,
    _compose_builds,
    _copy_sources,
    _dockerfile,
    _services,
    _stage_chain,
    _yaml,
)

# ============================================================================= Dockerfile


RUNTIME_VARIANTS = {
    "cpu": ("python:3.11", "-slim", re.compile(r"/whl/cpu$")),
    "gpu": ("nvidia/cuda:", "runtime", re.compile(r"/whl/cu\d+$")),
}


@pytest.mark.parametrize("variant", sorted(RUNTIME_VARIANTS))
def test_runtime_base_image(variant):
    prefix, marker, _ = RUNTIME_VARIANTS[variant]
    base = _stage_chain("runtime", {"VARIANT": variant})[0]["external_base"]
    assert base.startswith(prefix) and marker in base, base


@pytest.mark.parametrize("variant", sorted(RUNTIME_VARIANTS))
def test_torch_installed_from_index_before_project(variant):
    _, _, index_re = RUNTIME_VARIANTS[variant]
    instrs = _chain_instrs(_stage_chain("runtime", {"VARIANT": variant}), {"VARIANT": variant})
    runs = [(i, rest) for i, (kw, rest) in enumerate(instrs) if kw == "RUN"]
    torch = [
        (i, r)
        for i, r in runs
        if re.search(r"pip install[^&;|]*\btorch\b[^&;|]*--index-url", r)
    ]
    project = [(i, r) for i, r in runs if re.search(r"pip install[^&;|]*\s(\.|/app)(\s|$)", r)]
    deps = [(i, r) for i, r in runs if re.search(r"pip install[^&;|]*\s-r\s", r)]
    assert torch, "no `pip install torch --index-url ...`"
    assert project, "the project is never pip-installed"
    assert torch[0][0] < project[0][0] and all(torch[0][0] < i for i, _ in deps)
    index = re.search(r"--index-url\s+\"?([^\s\"]+)", torch[0][1]).group(1)
    assert index_re.search(index), f"{variant}: torch index {index}"


def test_pyproject_copied_before_sources():
    instrs = _chain_instrs(_stage_chain("runtime", {}), {})
    copies = [(i, _copy_sources(rest)) for i, (kw, rest) in enumerate(instrs) if kw == "COPY"]
    pyproject = [i for i, src in copies if src == ["pyproject.toml"]]
    everything = [i for i, src in copies if "." in src]
    assert pyproject and everything and pyproject[0] < everything[0]


@pytest.mark.parametrize("target", ["runtime", "mlflow-server"])
def test_images_run_as_non_root(target):
    instrs = _chain_instrs(_stage_chain(target, {}), {})
    users = [rest for kw, rest in instrs if kw == "USER"]
    assert users, f"{target}: no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"{target}: USER {users[-1]}"
    assert any(kw == "RUN" and f"--uid {user}" in rest for kw, rest in instrs), "uid not fixed"


def test_dockerfile_copies_no_data():
    _, stages = _dockerfile()
    for stage in stages:
        for keyword, rest in stage["instrs"]:
            if keyword == "ADD":
                pytest.fail(f"use COPY, not ADD: {rest}")
            if keyword == "COPY":
                for src in _copy_sources(rest):
                    assert not re.search(r"(^|/)data(/|$)|sst2|\.tsv$|\.env$", src), src
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "*", "Dockerfile.dockerignore should start as a whitelist (`*`)"
    for pattern in patterns:
        if pattern.startswith("!"):
            assert not re.search(r"data|sst2|\.tsv|\.env|studies|mlruns", pattern), pattern


def test_compose_build_targets_exist():
    global_args, stages = _dockerfile()
    names = {s["name"] for s in stages}
    declared_args = set(global_args) | {a for s in stages for a in s["args"]}
    for where, build in _compose_builds():
        assert build.get("target") in names, f"{where}: target {build.get('target')}"
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert set(build.get("args") or {}) <= declared_args, where


def test_versions_agree():
    global_args, stages = _dockerfile()
    stage_args = {k: v for s in stages for k, v in s["args"].items() if v}
    mlflow = _services()["mlflow"]
    assert mlflow["build"]["args"]["MLFLOW_VERSION"] == stage_args["MLFLOW_VERSION"]
    assert mlflow["image"].endswith(":" + stage_args["MLFLOW_VERSION"])
    if KUBERAY.exists():
        assert str(_yaml(KUBERAY)["spec"]["rayVersion"]) == stage_args["RAY_VERSION"]
