"""Static checks of the cluster-deployment files under docker/ (no Docker engine needed).

Parses docker/compose.yaml (+ compose.gpu.yaml), docker/Dockerfile, docker/.env.example,
docker/README.md and docker/kuberay/raycluster.yaml with pyyaml / plain text, and checks the
`ray start` and `mlflow server` flags against the installed CLIs' --help output.

No __init__.py on purpose: the venv ships docker-py, and a package named `docker` would
shadow it.
"""

from __future__ import annotations

import configparser
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


# ======================================================================= compose: structure


def test_compose_files_parse():
    for path in (COMPOSE, COMPOSE_GPU):
        doc = _yaml(path)
        assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), path


@pytest.mark.parametrize("service", REQUIRED_SERVICES)
def test_required_service_exists(service):
    assert service in _services(), f"compose.yaml lacks service {service!r}"


@pytest.mark.parametrize("doc_name", ["compose.yaml", "compose.yaml+compose.gpu.yaml"])
def test_published_ports_bind_localhost(doc_name):
    doc = _compose() if doc_name == "compose.yaml" else _merged_gpu()
    for name, svc in _services(doc).items():
        for host_ip, published, target in _ports(svc):
            assert host_ip == "127.0.0.1", f"{name}: port {published}:{target} binds {host_ip!r}"


@pytest.mark.parametrize("service", REQUIRED_SERVICES)
def test_long_running_services_have_healthchecks(service):
    svc = _services()[service]
    if _is_one_shot(svc):
        pytest.skip(f"{service} is a one-shot job")
    hc = svc.get("healthcheck") or {}
    test = hc.get("test")
    assert test and not hc.get("disable"), f"{service} has no healthcheck"
    assert _tokens(test)[:1] != ["NONE"], f"{service} disables its healthcheck"


def test_named_volumes_declared():
    declared = set(_compose().get("volumes") or {})
    used = set()
    for name, svc in _services().items():
        for mount in _mounts(svc):
            if mount.get("type") == "volume" and mount.get("source"):
                used.add(mount["source"])
                assert mount["source"] in declared, f"{name}: volume {mount['source']} undeclared"
    assert {"postgres-data", "minio-data"} <= used
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_bind_mounted_repo_files_exist():
    for name, svc in _services().items():
        for mount in _mounts(svc):
            source = str(mount.get("source") or "")
            if mount.get("type") == "bind" and source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: bind source {source} missing"


@pytest.mark.parametrize("service", REQUIRED_SERVICES)
def test_depends_on_waits_for_health(service):
    services = _services()
    deps = services[service].get("depends_on") or {}
    assert isinstance(deps, dict), f"{service}: depends_on must use conditions"
    for dep, spec in deps.items():
        condition = (spec or {}).get("condition")
        if condition == "service_healthy":
            assert services[dep].get("healthcheck"), f"{service} waits on {dep} w/o healthcheck"
        elif condition == "service_completed_successfully":
            assert _is_one_shot(services[dep]), f"{dep} is not a one-shot job"
        else:
            pytest.fail(f"{service} -> {dep}: condition {condition!r}")


def test_startup_order():
    services = _services()
    expected = {
        ("ray-worker", "ray-head", "service_healthy"),
        ("mlflow", "postgres", "service_healthy"),
        ("mlflow", "minio-init", "service_completed_successfully"),
        ("minio-init", "minio", "service_healthy"),
    }
    for service, dep, condition in expected:
        assert services[service]["depends_on"][dep]["condition"] == condition


# =========================================================================== compose: Ray


def test_head_command():
    tokens = _tokens(_services()["ray-head"]["command"])
    flags = _flags(tokens[2:])
    assert tokens[:2] == ["ray", "start"]
    assert "--head" in flags and "--block" in flags
    assert flags.get("--dashboard-host") == "0.0.0.0"
    assert flags.get("--ray-client-server-port", "10001") == "10001"
    assert flags.get("--dashboard-port", "8265") == "8265"
    published = {target for _, _, target in _ports(_services()["ray-head"])}
    assert {str(p) for p in HEAD_PORTS} <= published


def test_worker_joins_head():
    head = _flags(_tokens(_services()["ray-head"]["command"])[2:])
    tokens = _tokens(_services()["ray-worker"]["command"])
    flags = _flags(tokens[2:])
    assert tokens[:2] == ["ray", "start"] and "--block" in flags and "--head" not in flags
    assert flags.get("--address") == f"ray-head:{head.get('--port') or '6379'}"


def test_worker_is_scalable():
    worker = _services()["ray-worker"]
    assert "container_name" not in worker, "container_name prevents --scale"
    assert not worker.get("ports"), "published ports collide when scaled"
    assert "replicas" not in (worker.get("deploy") or {}), "let --scale decide"


@pytest.mark.parametrize("doc_name", ["compose.yaml", "compose.yaml+compose.gpu.yaml"])
@pytest.mark.parametrize("node", RAY_NODES)
def test_ray_token_auth_reaches_node(doc_name, node):
    doc = _compose() if doc_name == "compose.yaml" else _merged_gpu()
    env = _env(_services(doc)[node])
    assert env.get("RAY_AUTH_MODE") == "token"
    interp = _interpolations(env.get("RAY_AUTH_TOKEN") or "")
    assert [name for name, _ in interp] == ["RAY_AUTH_TOKEN"], env.get("RAY_AUTH_TOKEN")
    assert interp[0][1] not in ("-", ":-"), "the token must not have a default"


@pytest.mark.parametrize("node", RAY_NODES)
def test_ray_nodes_share_results_volume(node):
    mounts = [m for m in _mounts(_services()[node]) if m.get("target") == RESULTS_MOUNT]
    assert len(mounts) == 1 and mounts[0]["type"] == "volume", f"{node}: {mounts}"
    head = [m for m in _mounts(_services()["ray-head"]) if m.get("target") == RESULTS_MOUNT]
    assert mounts[0]["source"] == head[0]["source"]


@pytest.mark.parametrize("node", RAY_NODES)
def test_data_mounted_read_only(node):
    svc = _services()[node]
    data_dir = _env(svc).get("LORA_STUDY_DATA")
    assert data_dir, f"{node}: LORA_STUDY_DATA not set"
    mounts = [m for m in _mounts(svc) if m.get("target") == data_dir]
    assert len(mounts) == 1, f"{node}: nothing mounted at {data_dir}"
    assert mounts[0].get("read_only") in (True, "true"), f"{node}: data mount is writable"


@pytest.mark.parametrize("node", RAY_NODES)
def test_ray_nodes_reach_mlflow(node):
    env = _env(_services()[node])
    assert env.get("MLFLOW_TRACKING_URI") == "http://mlflow:5000"
    assert env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD")


@pytest.mark.parametrize("doc_name", ["compose.yaml", "compose.yaml+compose.gpu.yaml"])
def test_ray_nodes_run_the_same_image(doc_name):
    # Ray refuses nodes whose Python patch version or Ray version differ
    doc = _compose() if doc_name == "compose.yaml" else _merged_gpu()
    head, worker = (_services(doc)[n] for n in RAY_NODES)
    assert head["image"] == worker["image"]
    assert head.get("build") == worker.get("build")


# ============================================================================ compose: GPU


def test_base_compose_needs_no_gpu():
    for name, svc in _services().items():
        reservations = ((svc.get("deploy") or {}).get("resources") or {}).get("reservations")
        assert not (reservations or {}).get("devices"), f"{name} reserves devices"
        assert "gpus" not in svc and "runtime" not in svc, name


def test_gpu_override_reserves_nvidia_gpus():
    worker = _services(_merged_gpu())["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    # the CPU limits of the base file survive the merge
    assert worker["deploy"]["resources"]["limits"]
    for node in RAY_NODES:
        svc = _services(_merged_gpu())[node]
        assert svc["build"]["args"]["VARIANT"] == "gpu" and svc["image"].endswith(":gpu")


# ========================================================================= compose: MLflow


def _mlflow():
    svc = _services()["mlflow"]
    tokens = _tokens(svc["command"])
    assert tokens[:2] == ["mlflow", "server"]
    return svc, _flags(tokens[2:]), _env(svc)


def test_mlflow_backend_is_postgres():
    _, flags, env = _mlflow()
    assert flags["--backend-store-uri"].startswith("postgresql://")
    assert "postgres" in flags["--backend-store-uri"]


def test_mlflow_artifacts_go_to_s3():
    _, flags, env = _mlflow()
    if "--serve-artifacts" in flags:
        destination = flags.get("--artifacts-destination") or ""
    else:
        destination = flags.get("--default-artifact-root") or ""
    assert destination.startswith("s3://"), destination
    assert env.get("MLFLOW_S3_ENDPOINT_URL", "").startswith("http://minio:")
    bucket = destination[len("s3://") :].split("/")[0]
    init_script = " ".join(_tokens(_services()["minio-init"].get("command")))
    init_script += " ".join(_tokens(_services()["minio-init"].get("entrypoint")))
    assert "mc mb" in init_script
    # same bucket (literal or same variable) in the server flag and in minio-init
    names = {n for n, _ in _interpolations(bucket)}
    init_env = _env(_services()["minio-init"])
    assert names or bucket in init_script
    for name in names:
        assert name in init_env or name in init_script


def test_mlflow_basic_auth():
    svc, flags, env = _mlflow()
    assert flags.get("--app-name") == "basic-auth"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env.get(key), f"mlflow lacks {key}"
    config_path = env.get("MLFLOW_AUTH_CONFIG_PATH")
    assert config_path, "MLFLOW_AUTH_CONFIG_PATH not set"
    mount = next(m for m in _mounts(svc) if m.get("target") == config_path)
    ini = configparser.ConfigParser()
    assert ini.read(DOCKER / mount["source"]), mount["source"]
    assert ini["mlflow"]["default_permission"]
    assert ini["mlflow"]["database_uri"].startswith("postgresql://")
    assert "admin_password" not in ini["mlflow"], "the admin password belongs in docker/.env"


def test_mlflow_listens_on_all_interfaces_inside_container():
    _, flags, _ = _mlflow()
    assert flags.get("--host") == "0.0.0.0"
    allowed = (flags.get("--allowed-hosts") or "").split(",")
    assert "mlflow:5000" in allowed, "containers send Host: mlflow:5000"


# ======================================================================== compose: secrets


@pytest.mark.parametrize("service", REQUIRED_SERVICES)
def test_no_secret_literals_in_environment(service):
    for key, value in _env(_services()[service]).items():
        if not SECRET_NAME.search(key):
            continue
        m = re.fullmatch(r"\$\{(\w+)(:?[?][^}]*)?\}", value or "")
        assert m, f"{service}: {key} must be a ${{VAR}} / ${{VAR:?msg}} interpolation: {value!r}"


def test_no_secret_literals_anywhere_in_compose():
    for doc in (_compose(), _yaml(COMPOSE_GPU)):
        for text in _walk_strings(doc):
            for password in re.findall(r"://[^/\s:@]+:([^@\s/]+)@", text):
                assert password.startswith("$"), f"literal password in URL: {text}"
            assert text.strip().lower() not in KNOWN_DEFAULT_SECRETS, f"default secret: {text}"
            for name, op in _interpolations(text):
                if SECRET_NAME.search(name):
                    assert op not in ("-", ":-"), f"${{{name}}} has a default value"


def test_env_example_lists_every_required_variable():
    declared = set(_env_example())
    # parsed values only: comments are not interpolated
    text = "\n".join(_walk_strings([_compose(), _yaml(COMPOSE_GPU)]))
    used = {name for name, _ in _interpolations(text)}
    required = {name for name, op in _interpolations(text) if op not in ("-", ":-")}
    assert not required - declared, f"missing in .env.example: {sorted(required - declared)}"
    assert not declared - used, f"unused in compose: {sorted(declared - used)}"


def test_env_example_commits_no_secret_values():
    for key, value in _env_example().items():
        if SECRET_NAME.search(key) and not key.endswith("ACCESS_KEY"):
            assert value == "", f".env.example: {key} must be left empty"


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


# ====================================================== modules and CLI flags actually exist


@pytest.mark.parametrize(("source", "module"), _python_m_modules())
def test_python_m_module_exists(source, module):
    top = module.split(".")[0]
    if top in EXTERNAL_MODULES:
        return
    assert top in PROJECT_PACKAGES, f"{source}: unexpected `python -m {module}`"
    path = REPO.joinpath(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (
        f"{source} runs `python -m {module}` but {path.relative_to(REPO)}.py does not exist"
    )


def test_python_m_modules_found():
    modules = {m for _, m in _python_m_modules()}
    assert {"study.run", "study.export", "dashboards.report"} <= modules


@pytest.mark.parametrize(("source", "flag"), _ray_start_flags())
def test_ray_start_flag_exists(source, flag):
    assert flag in _cli_options("ray", "start"), f"{source}: `ray start {flag}` is unknown"


@pytest.mark.parametrize(("source", "flag"), _mlflow_server_flags())
def test_mlflow_server_flag_exists(source, flag):
    assert flag in _cli_options("mlflow", "server"), f"{source}: `mlflow server {flag}` unknown"


# ================================================================== README and KubeRay


@pytest.mark.parametrize(
    "snippet",
    [
        "docker build -f docker/Dockerfile",
        "cp docker/.env.example docker/.env",
        "--scale ray-worker=",
        "compose.gpu.yaml",
        "--address ray://127.0.0.1:10001",
        "--address auto",
        "ray job submit",
        "http://127.0.0.1:8265",
        "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "down -v",
        "InvalidAuthToken",
        "RAY_AUTH_MODE=token",
        "port is already allocated",
    ],
)
def test_readme_covers(snippet):
    assert snippet in README.read_text()


def test_kuberay_raycluster():
    doc = _yaml(KUBERAY)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]
    ]
    def gpus(container):
        return (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")

    gpu_groups = [name for name, pod in pods if any(gpus(c) for c in pod["containers"])]
    assert gpu_groups and "head" not in gpu_groups
    images = set()
    for name, pod in pods:
        for container in pod["containers"]:
            images.add(container["image"])
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"].get("value") == "token", name
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"].get("valueFrom", {}), name
    assert len(images) == 1, "head and workers must run the same image"


def test_mps_override_shares_the_daemon_with_the_worker():
    """compose.mps.yaml: the MPS control daemon and the Ray worker meet through one pipe
    directory (same volume, same CUDA_MPS_PIPE_DIRECTORY), the host IPC namespace and one uid."""
    mps_doc = _yaml(DOCKER / "compose.mps.yaml")
    merged = _merge(_merged_gpu(), mps_doc)
    mps, worker = _services(merged)["mps"], _services(merged)["ray-worker"]
    assert _tokens(mps["command"])[:2] == ["nvidia-cuda-mps-control", "-f"]
    pipe = _env(mps)["CUDA_MPS_PIPE_DIRECTORY"]
    assert _env(worker)["CUDA_MPS_PIPE_DIRECTORY"] == pipe
    mounts = lambda svc: {v["source"]: v["target"] for v in svc["volumes"] if isinstance(v, dict)}  # noqa: E731
    assert mounts(mps)["mps-pipe"] == mounts(worker)["mps-pipe"] == pipe
    assert mps["ipc"] == worker["ipc"] == "host"
    uid = re.search(r"ARG APP_UID=(\d+)", DOCKERFILE.read_text()).group(1)
    assert mps["user"].split(":")[0] == uid
    assert mps["image"] == worker["image"] == "lora-study:gpu"
    assert "mps-pipe" in mps_doc["volumes"]
