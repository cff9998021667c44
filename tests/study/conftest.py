"""Fixtures shared by the study tests: a local Ray for the in-process Tuner tests, and the tiny
study's best trial exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def exported(tiny_study, tmp_path_factory) -> Path:
    """The tiny study's best trial exported with ``--merge`` (shared by the export, predict and
    evaluate tests: one export per session)."""
    from study.deploy import export

    name, home = tiny_study
    out = tmp_path_factory.mktemp("export") / "best"
    assert export.main(["--study", name, "--storage", str(home), "--out", str(out), "--merge"]) == 0
    return out
