"""Every ``python -m`` module, ``ray start`` flag and ``mlflow server`` flag that the docker files
name exists (modules in the repo, flags in the installed CLIs' ``--help``)."""

from __future__ import annotations

import pytest

from tests.docker.files import (
    EXTERNAL_MODULES,
    PROJECT_PACKAGES,
    REPO,
    _cli_options,
    _mlflow_server_flags,
    _python_m_modules,
    _ray_start_flags,
)

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
