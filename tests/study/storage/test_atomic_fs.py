"""``study.storage.atomic_fs``: a write that runs out of space fails at once and never replaces a good file.

Before: writing 4 MB with 2 MB free replaced a good file with a 2,093,056-byte one and
raised nothing. Here the full disk is a real tmpfs when this process may mount one, else the raw
write is replaced by one that writes part of its buffer and then fails with ENOSPC (what a
nearly full disk does).
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import types
from pathlib import Path

import pyarrow
import pyarrow.fs
import pytest

from study.storage import atomic_fs
from study.storage.atomic_fs import AtomicLocalFS, DiskFullError, DiskFullWatch, disk_full_events

GOOD = b"good old version\n" * 1000


def _partial_then_enospc(fd: int, buf) -> int:
    """A nearly full disk: the first call writes half, the next one fails."""
    if getattr(_partial_then_enospc, "wrote", False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _partial_then_enospc.wrote = True
    return os.write(fd, bytes(buf[: max(1, len(buf) // 2)]))


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """(dir, how): a 2 MiB tmpfs if mounting works here, else a dir whose writes through
    AtomicLocalFS hit the partial-write-then-ENOSPC fault."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        _partial_then_enospc.wrote = False
        monkeypatch.setattr(atomic_fs, "_write", _partial_then_enospc)
    try:
        yield d, "tmpfs" if mounted else "injected"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk_write_raises_and_keeps_the_old_file(small_disk):
    d, how = small_disk
    target = d / "experiment_state.json"
    target.write_bytes(GOOD)  # 17 KB: fits either way
    fs = pyarrow.fs.PyFileSystem(AtomicLocalFS())
    before = len(disk_full_events())
    with pytest.raises(OSError) as err:  # 4 MiB into 2 MiB (or into the injected fault)
        with fs.open_output_stream(str(target)) as out:
            for _ in range(64):
                out.write(b"x" * 65536)
    assert err.value.errno == errno.ENOSPC or "disk full" in str(err.value), (how, err.value)
    assert target.read_bytes() == GOOD, f"{how}: the good file was replaced ({target.stat().st_size} bytes)"
    assert sorted(p.name for p in d.iterdir()) == ["experiment_state.json"], f"{how}: temp file left behind"
    events = disk_full_events()[before:]
    assert len(events) == 1 and str(target) in events[0] and "MiB free" in events[0], events


def test_full_disk_copy_file_removes_its_temp(tmp_path, monkeypatch):
    src, dest = tmp_path / "src.json", tmp_path / "dest.json"
    src.write_bytes(GOOD)
    dest.write_bytes(b"old")

    class FullLocal:
        def copy_file(self, a, b):
            Path(b).write_bytes(b"torn")
            raise OSError(errno.ENOSPC, "No space left on device")

    handler = AtomicLocalFS()
    handler.fs = FullLocal()
    with pytest.raises(DiskFullError, match="disk full writing .*dest.json"):
        handler.copy_file(str(src), str(dest))
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["dest.json", "src.json"]


def test_a_good_write_replaces_atomically(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    fs = pyarrow.fs.PyFileSystem(AtomicLocalFS())
    with fs.open_output_stream(str(target)) as out:
        out.write(GOOD)
        assert target.read_bytes() == b"old"  # not in place until closed
    assert target.read_bytes() == GOOD and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_watch_stops_on_driver_and_trial_disk_full(tmp_path):
    watch = DiskFullWatch(str(tmp_path))
    watch.setup()
    watch.on_step_begin(0, [])  # nothing new: no stop
    atomic_fs._disk_full(str(tmp_path / "x.json"))  # what a failed background sync records
    with pytest.raises(DiskFullError, match="disk full writing .*x.json"):
        watch.on_step_end(1, [])
    err = tmp_path / "error.txt"
    err.write_text("Failure # 1 (occurred at now)\nRayTaskError(OSError): ray::train() ...\n"
                   f"study.storage.atomic_fs.DiskFullError: disk full writing {tmp_path}/trial_1/checkpoint_000002/adapter_model.safetensors (0.0 MiB free of 40.0 MiB)\n")
    trial = types.SimpleNamespace(error_file=str(err))
    watch.on_trial_recover(2, [], trial)  # noted; raising here would reach Ray's failure handler
    with pytest.raises(DiskFullError, match="checkpoint_000002/adapter_model.safetensors"):
        watch.on_step_end(2, [])
    err.write_text("Failure # 1 (occurred at now)\nValueError: something else\n")
    watch.on_trial_error(3, [], trial)  # another error: Ray's business
    watch.on_step_end(3, [])
    assert pickle.loads(pickle.dumps(DiskFullError("disk full writing x"))).strerror == "disk full writing x"
