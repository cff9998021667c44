"""Shared constants and helpers of the static checks of the cluster-deployment files under docker/
(no Docker engine needed): the paths, YAML and compose parsing (services, env, ports, mounts,
the GPU override merged in), ``${VAR}`` interpolation, the Dockerfile's stages and instructions,
and the options of the installed ``ray start`` / ``mlflow server`` CLIs.

The checks are split per file they check: test_compose.py, test_dockerfile.py,
test_cli_references.py (modules and CLI flags the files name) and test_readme_kuberay.py.

No __init__.py in tests/docker on purpose: the venv ships docker-py, and a package named
`docker` would shadow it; the test modules import this one as ``tests.docker.files``.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
ENV_EXAMPLE = DOCKER / ".env.example"
README = DOCKER / "README.md"
KUBERAY = DOCKER / "kuberay" / "raycluster.yaml"

REQUIRED_SERVICES = ("ray-head", "ray-worker", "mlflow", "postgres", "minio", "minio-init")
RAY_NODES = ("ray-head", "ray-worker")
HEAD_PORTS = (8265, 10001)  # dashboard/job API, Ray Client
RESULTS_MOUNT = "/shared/ray_results"
PROJECT_PACKAGES = ("study", "trainables", "dashboards", "benchmarks")
# third-party modules that may appear as `python -m X` in these files
EXTERNAL_MODULES = frozenset({"pip", "venv", "pytest"})
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
KNOWN_DEFAULT_SECRETS = frozenset({"minioadmin", "password", "password1234", "changeme"})
TEXT_FILES = (COMPOSE, COMPOSE_GPU, DOCKERFILE, README, KUBERAY)


# --------------------------------------------------------------------------- helpers: YAML


@functools.cache
def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def _compose() -> dict:
    return _yaml(COMPOSE)


def _services(doc: dict | None = None) -> dict:
    return (doc or _compose()).get("services") or {}


def _merge(base, override):
    """Deep-merge mappings like `docker compose -f a -f b` does (enough for these checks)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


@functools.cache
def _merged_gpu() -> dict:
    return _merge(_compose(), _yaml(COMPOSE_GPU))


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else str(v) for k, v in env.items()}


def _tokens(cmd) -> list[str]:
    if cmd is None:
        return []
    return list(map(str, cmd)) if isinstance(cmd, list) else shlex.split(cmd)


def _flags(tokens: list[str]) -> dict[str, str | None]:
    """`--a=1 --b 2 --c` -> {'--a': '1', '--b': '2', '--c': None}."""
    flags: dict[str, str | None] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            if "=" in tok:
                key, value = tok.split("=", 1)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                key, value = tok, tokens[i + 1]
                i += 1
            else:
                key, value = tok, None
            flags[key] = value
        i += 1
    return flags


def _ports(svc: dict) -> list[tuple[str | None, str, str]]:
    """(host_ip, published, target) for every `ports:` entry."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), str(entry.get("published")), str(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append((None, parts[0], parts[1]))
        else:
            out.append((None, "", parts[0]))
    return out


def _mounts(svc: dict) -> list[dict]:
    """Volumes normalised to long syntax dicts (type/source/target/read_only)."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            out.append(entry)
            continue
        parts = str(entry).split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        is_path = source is not None and source[:1] in ("/", ".", "~", "$")
        out.append(
            {
                "type": "bind" if is_path else "volume",
                "source": source,
                "target": target,
                "read_only": len(parts) > 2 and "ro" in parts[2].split(","),
            }
        )
    return out


def _is_one_shot(svc: dict) -> bool:
    return str(svc.get("restart", "no")) == "no"


# ------------------------------------------------------------- helpers: ${VAR} interpolation

_INTERP = re.compile(
    r"\$\$"  # escaped dollar: literal, not interpolated
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _interpolations(text: str) -> list[tuple[str, str | None]]:
    """(name, operator) of every compose interpolation in `text`; `$$` is skipped."""
    found = []
    for m in _INTERP.finditer(text):
        if m.group(0) == "$$":
            continue
        found.append((m.group("name") or m.group("bare"), m.group("op")))
    return found


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _walk_strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _walk_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_strings(v)
    elif isinstance(node, str):
        yield node


# ---------------------------------------------------------------- helpers: Dockerfile parsing


@functools.cache
def _dockerfile() -> tuple[dict[str, str], list[dict]]:
    """(global ARG defaults, stages); each stage: name, base, args, instrs [(KEYWORD, rest)]."""
    lines: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments (also inside continuations) and blank lines
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            stages.append({"base": m.group(1), "name": m.group(2), "args": {}, "instrs": []})
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                global_args[name] = default
        else:
            stages[-1]["instrs"].append((keyword, rest))
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                stages[-1]["args"][name] = default or global_args.get(name, "")
    return global_args, stages


def _subst(text: str, values: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text
    )


def _stage_chain(target: str, build_args: dict[str, str]) -> list[dict]:
    """Stages from the external base image down to `target`, resolving FROM ${ARG}."""
    global_args, stages = _dockerfile()
    by_name = {s["name"]: s for s in stages if s["name"]}
    values = {**global_args, **build_args}
    chain = []
    stage = by_name[target]
    while True:
        chain.insert(0, stage)
        parent = _subst(stage["base"], values)
        if parent not in by_name:
            chain[0] = {**chain[0], "external_base": parent}
            return chain
        stage = by_name[parent]


def _chain_instrs(chain: list[dict], build_args: dict[str, str]) -> list[tuple[str, str]]:
    """Instructions of the chain with ARG/ENV values substituted."""
    global_args, _ = _dockerfile()
    values = {**global_args}
    out = []
    for stage in chain:
        values.update({k: v for k, v in stage["args"].items()})
        values.update({k: v for k, v in build_args.items() if k in stage["args"]})
        for keyword, rest in stage["instrs"]:
            rest = _subst(rest, values)
            if keyword == "ENV":
                for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", rest):
                    values[key] = value.strip('"')
            out.append((keyword, rest))
    return out


def _copy_sources(rest: str) -> list[str]:
    parts = [p for p in shlex.split(rest) if not p.startswith("--")]
    return parts[:-1]


def _compose_builds() -> list[tuple[str, dict]]:
    builds = []
    for doc_name, doc in (("compose.yaml", _compose()), ("compose.gpu.yaml", _merged_gpu())):
        for name, svc in _services(doc).items():
            if isinstance(svc.get("build"), dict):
                builds.append((f"{doc_name}:{name}", svc["build"]))
    return builds


# ---------------------------------------------------------------- helpers: CLI --help options


def _cli(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` CLI not found next to {sys.executable} or on PATH")
    return found


@functools.cache
def _cli_options(*argv: str) -> frozenset[str]:
    proc = subprocess.run(
        [_cli(argv[0]), *argv[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    options: set[str] = set()
    # click lists options two spaces in: "  -h, --host HOST", "  --serve-artifacts / --no-..."
    for m in re.finditer(r"^  (?:-\w, )?(--[\w-]+)(?: / (--[\w-]+))?", proc.stdout, re.M):
        options.update(o for o in m.groups() if o)
    assert options, proc.stdout[:2000]
    return frozenset(options)


def _ray_start_flags() -> list[tuple[str, str]]:
    found = []
    for doc_name, doc in (("compose.yaml", _compose()), ("compose.gpu.yaml", _merged_gpu())):
        for name, svc in _services(doc).items():
            tokens = _tokens(svc.get("command"))
            if tokens[:2] == ["ray", "start"]:
                found += [(f"{doc_name}:{name}", f) for f in _flags(tokens[2:])]
    if KUBERAY.exists():
        spec = _yaml(KUBERAY)["spec"]
        groups = [("head", spec["headGroupSpec"])] + [
            (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
        ]
        for group, g in groups:
            found += [(f"kuberay:{group}", f"--{k}") for k in g.get("rayStartParams") or {}]
    return sorted(set(found))


def _mlflow_server_flags() -> list[tuple[str, str]]:
    found = []
    for name, svc in _services().items():
        tokens = _tokens(svc.get("command"))
        if tokens[:2] == ["mlflow", "server"]:
            found += [(name, f) for f in _flags(tokens[2:])]
    return sorted(set(found))


def _python_m_modules() -> list[tuple[str, str]]:
    pattern = re.compile(r"\bpython(?:3(?:\.\d+)?)?[\"',\s]+-m[\"',\s]+([A-Za-z_][\w.]*)")
    found = set()
    for path in TEXT_FILES:
        if path.exists():
            for module in pattern.findall(path.read_text()):
                found.add((path.relative_to(REPO).as_posix(), module))
    return sorted(found)
