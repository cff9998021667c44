"""Static checks of docker/compose.yaml (+ compose.gpu.yaml, compose.mps.yaml) and docker/.env.example:
services and start order, the Ray nodes, the GPU and MPS overrides, MLflow, and no committed secrets."""

from __future__ import annotations

import configparser
import re

import pytest

from tests.docker.files import (
    COMPOSE,
    COMPOSE_GPU,
    DOCKER,
    DOCKERFILE,
    HEAD_PORTS,
    KNOWN_DEFAULT_SECRETS,
    RAY_NODES,
    REQUIRED_SERVICES,
    RESULTS_MOUNT,
    SECRET_NAME,
    _compose,
    _env,
    _env_example,
    _flags,
    _interpolations,
    _is_one_shot,
    _merge,
    _merged_gpu,
    _mounts,
    _ports,
    _services,
    _tokens,
    _walk_strings,
    _yaml,
)

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


# ========================================================================== compose: MPS


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
