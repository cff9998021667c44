"""Test-only fault injection for subprocess studies (``tests/study/test_resume_faults.py``).

Put this directory first on ``PYTHONPATH`` and set ``LORA_STUDY_TEST_ENOSPC_FLAG`` to a file
path: while that file exists, every write to study storage through ``study.storage.atomic_fs`` (in the
driver and in Ray's workers, which inherit the environment) writes part of its buffer and then
fails with ENOSPC, as on a full disk. The patch is applied when ``study.storage.atomic_fs`` is first
imported, so Ray's own helper processes never import the study code because of it.
"""

import errno
import importlib.abc
import importlib.util
import os
import sys

_FLAG = os.environ.get("LORA_STUDY_TEST_ENOSPC_FLAG")


def _write(fd, buf):
    if _FLAG and os.path.exists(_FLAG):
        if len(buf) > 1:
            os.write(fd, bytes(buf[: len(buf) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return os.write(fd, buf)


class _PatchAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name != "study.storage.atomic_fs":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None:
            return None
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        module._write = _write


if _FLAG:
    sys.meta_path.insert(0, _PatchAfterImport())
