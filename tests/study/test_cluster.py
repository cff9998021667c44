"""A study on a real two-node Ray cluster, and a worker node dying mid-study.

Both nodes run on this machine: ``ray start --head`` and ``ray start --address`` with one CPU
each, each with its own ``--temp-dir`` (so neither touches ``/tmp/ray``, and other Ray users'
``ray.init()`` never discovers this cluster), free ports for everything, token authentication
with a token generated for this test and passed as ``RAY_AUTH_TOKEN`` (``~/.ray/auth_token`` is
left alone), and a shared storage dir. Each ``ray start`` runs in its own session; teardown
SIGKILLs exactly those sessions (never ``ray stop``, which would stop every Ray on the machine).

Which node ran a result: Tune results carry ``pid`` but both nodes share one IP and hostname, so
the pid is looked up in the nodes' log dirs: every Ray worker writes
``<temp-dir>/session_*/logs/python-core-worker-<worker id>_<pid>.log``, whose first lines name
its ``node_id``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_study_args
from tests.study.drivers import (
    free_port,
    kill_session,
    session_members,
    start_study,
    tail,
    trial_results,
    verify_study,
    wait_for,
)

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"  # the venv's CLI


class Node:
    def __init__(self, name: str, temp_dir: str, sid: int):
        self.name, self.temp_dir, self.sid = name, temp_dir, sid

    def node_id_of(self, pid: int) -> str | None:
        """The Ray node id of worker process ``pid`` if it ran on this node."""
        for log in Path(self.temp_dir).glob(f"session_*/logs/python-core-worker-*_{pid}.log"):
            m = re.search(r"node_id=([0-9a-f]+)", log.read_text(errors="replace")[:20000])
            if m:
                return m.group(1)
        return None

    def raylet_pid(self) -> int:
        pids = [p for p in session_members(self.sid) if Path(f"/proc/{p}/comm").read_text().strip() == "raylet"]
        assert len(pids) == 1, f"{self.name}: raylets {pids}"
        return pids[0]


def _ports() -> list[str]:
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


def _ray_start(name: str, args: list[str], env: dict[str, str], nodes: list[Node]) -> Node:
    temp_dir = tempfile.mkdtemp(prefix=f"lsray-{name}-", dir="/tmp")  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen([RAY, "start", *args, "--num-cpus", "1", "--temp-dir", temp_dir, "--disable-usage-stats", *_ports()],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    node = Node(name, temp_dir, proc.pid)
    nodes.append(node)  # torn down even if the start fails half-way
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"ray start ({name}) failed:\n{out[-3000:]}"
    assert session_members(proc.pid), f"{name}: no Ray processes left after `ray start`"
    return node


@pytest.fixture
def two_nodes():
    """(address, env for drivers, head, worker); both nodes killed (by session) afterwards."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port, nodes = free_port(), []
    try:
        t0 = time.monotonic()
        head = _ray_start("head", ["--head", "--port", str(port), "--include-dashboard=false", "--dashboard-port", str(free_port())],
                          env, nodes)
        worker = _ray_start("worker", ["--address", f"127.0.0.1:{port}"], env, nodes)
        print(f"\n[cluster] head + worker node up in {time.monotonic() - t0:.1f}s")
        yield f"127.0.0.1:{port}", env, head, worker
    finally:
        for node in nodes:
            kill_session(node.sid)
            shutil.rmtree(node.temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_study_on_two_nodes_survives_losing_the_worker_node(tmp_path, tiny_bert, sst2_small, two_nodes):
    """A study joins the cluster (``--address``, 1 CPU per trial, 2 at a time) and runs trials on
    both nodes (two distinct Ray node ids). The worker node dies (SIGKILL to its raylet, then to
    every process it started) while one of its trials is at most half-way: that trial is rescheduled on the head node from its last
    checkpoint (samples_seen continues) and the study completes with every trial finished."""
    address, env, head, worker = two_nodes
    n, name, home, log = 4, "cluster", tmp_path / "studies", tmp_path / "cluster.log"
    home.mkdir()
    args = tiny_study_args(name, home, tiny_bert, sst2_small, n, [
        "--set", "train.epochs=5", "--set", "asha.enabled=false", "--set", "search.data.size.choice=[600]",
        "--address", address, "--cpus-per-trial", "1", "--max-concurrent", "2"])
    t0 = time.monotonic()
    proc = start_study(args, home, log, env=env)
    try:
        def on_worker_node():
            for tid, rows in trial_results(home / name).items():
                if len(rows) >= 2 and not rows[-1]["done"] and rows[-1]["samples_seen"] <= rows[-1]["samples_total"] // 2 \
                        and worker.node_id_of(rows[-1]["pid"]):
                    return tid, rows[-1]
            return None

        victim, last = wait_for(on_worker_node, proc, log, 300, "a trial running on the worker node", poll=0.05)
        # the node dies: its raylet first, then everything else it ran (its trial workers would
        # otherwise keep training and reporting to the driver directly until they notice)
        raylet = worker.raylet_pid()
        os.kill(raylet, signal.SIGKILL)
        killed_procs = kill_session(worker.sid)
        killed_at, t_kill = last["samples_seen"], time.monotonic()
        rc = proc.wait(timeout=400)
        assert rc == 0, tail(log)
    finally:
        kill_session(proc.pid)
    wall = time.monotonic() - t0

    fig = verify_study(home, name, n, exact_metrics=True)
    assert fig["summary"]["trials"]["completed"] == n

    placed = {}  # trial id -> [(samples_seen, "head"/"worker", node id)]
    for tid, rows in fig["results"].items():
        placed[tid] = []
        for r in rows:
            h, w = head.node_id_of(r["pid"]), worker.node_id_of(r["pid"])
            assert bool(h) != bool(w), f"pid {r['pid']} of trial {tid} found on {'both' if h else 'neither'} node(s)"
            placed[tid].append((r["samples_seen"], "head" if h else "worker", h or w))
    node_ids = {kind: {nid for rows in placed.values() for _, k, nid in rows if k == kind} for kind in ("head", "worker")}
    assert len(node_ids["head"]) == 1 and len(node_ids["worker"]) == 1, node_ids
    assert node_ids["head"] != node_ids["worker"], "trials ran on one Ray node only"

    # the victim: on the worker until the kill, then on the head, continuing from its checkpoint
    rows, where = fig["results"][victim], [k for _, k, _ in placed[victim]]
    assert where[0] == "worker" and where[-1] == "head", where
    switch = where.index("head")
    assert "worker" not in where[switch:], where
    assert rows[switch]["iterations_since_restore"] == 1
    # from a checkpoint, not from the start: past the kill, or (a report that raced the kill, whose
    # checkpoint Ray had not registered) one evaluation point reported again with the same numbers
    resumed, before = rows[switch]["samples_seen"], [r["samples_seen"] for r in rows[:switch]]
    assert resumed > before[0] and (resumed > killed_at or resumed in before), [r["samples_seen"] for r in rows]
    assert rows[-1]["samples_seen"] == rows[-1]["samples_total"]
    from ray.tune import ExperimentAnalysis

    failures = {t.trial_id: t.num_failures for t in ExperimentAnalysis(str(home / name)).trials}
    assert failures[victim] == 1, failures
    print(f"[cluster] node ids head {node_ids['head'].pop()[:12]} worker {node_ids['worker'].pop()[:12]}; placement "
          f"{ {tid: sorted(set(k for _, k, _ in p)) for tid, p in placed.items()} }; worker node killed (raylet {raylet} + "
          f"{killed_procs - 1} more processes) with trial {victim} at {killed_at} samples; it resumed on the head at {rows[switch]['samples_seen']}; study ended "
          f"{time.monotonic() - t_kill:.0f}s after the kill; study wall {wall:.0f}s; failures {failures}")
