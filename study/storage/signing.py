"""Ray's pickled study state, signed with a key only this user holds, and checked before ``--resume``.

Why: ``Tuner.restore`` unpickles ``tuner.pkl`` and the searcher, callback and experiment state
files, and unpickling runs code. A study directory can come from anywhere (a copy, a shared
mount, a download), so ``--resume`` unpickles only files this user's driver wrote: each state file
is signed with an HMAC-SHA256 whose key lives in the user's config directory
(``$XDG_CONFIG_HOME/lora-study/hmac.key``, default ``~/.config``; created 0600 on first use) and
never in the study. ``python -m study.run --resume --trust`` accepts a study from elsewhere on the
user's word (and signs it, so later resumes need no flag).

How: the driver's storage writes go through :class:`~study.storage.atomic_fs.AtomicLocalFS`,
which calls :func:`mac_for` for every file it writes and :func:`record` before the file is renamed
into place. Signatures are lines ``<name> <hex mac>`` appended to ``.lora-study.sig`` in the
experiment directory; a file is trusted when the line for its current content is there. Appending
before the rename keeps both versions valid across a crash at any point; :func:`adopt` rewrites the
file with only the current versions when a driver starts.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import pickletools
import re
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

__all__ = ["key_path", "load_key", "is_state_file", "start_signing", "stop_signing", "mac_for", "record", "adopt",
           "untrusted_state", "unreadable_state", "SIGNATURES"]

#: Beside Ray's state files in the experiment directory (Ray neither reads nor copies it).
SIGNATURES = ".lora-study.sig"
_KEY_BYTES = 32
#: Ray's state files as ``Tuner.restore`` finds them: pickles (``tuner.pkl``, ``searcher-state-*``,
#: ``callback-states-*``) and JSON holding pickles (``experiment_state-*``, ``search_gen_state-*``).
_STATE = re.compile(r"[^/]+\.pkl|[^/]*state-[^/]*\.json")

_active: dict[str, Any] = {}  # "roots": the dirs being signed, "key": the key, "written": (signature file, line)
_lock = threading.Lock()
#: Past this size the signature file is compacted (a long study rewrites its state thousands of times).
_COMPACT_AT = 256 * 1024


def key_path() -> Path:
    """Where the user's signing key lives (``$XDG_CONFIG_HOME`` respected)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "lora-study" / "hmac.key"


def load_key(create: bool = False) -> bytes | None:
    """The user's key; created (0600, in a 0700 directory) when ``create`` and missing. ``None``:
    no key yet. A key others may read or write is refused: they could sign anything."""
    path = key_path()
    if not path.exists():
        if not create:
            return None
        _create_key(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.getuid():
        raise ConfigError(f"{path}: the study-signing key must be a file only you can read (mode 600, yours); "
                          f"fix it with `chmod 600 {path}`, or delete it (then studies signed with it need --trust)")
    key = path.read_bytes()
    if len(key) < _KEY_BYTES:
        raise ConfigError(f"{path}: the study-signing key is damaged ({len(key)} bytes); delete it "
                          f"(a new one is made; studies signed with the old one then need --trust)")
    return key


def _create_key(path: Path) -> None:
    """Write the key to a temp file, then link it into place: a second driver creating one at the
    same moment reads the winner's complete key, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(_KEY_BYTES))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def is_state_file(name: str) -> bool:
    return bool(_STATE.fullmatch(name))


def _new_mac(key: bytes, name: str) -> Any:
    """HMAC over the file's name and content (a signed file cannot pass as another state file)."""
    return hmac.new(key, name.encode() + b"\0", hashlib.sha256)


def start_signing(experiment: str, subdirs: tuple[str, ...] = ()) -> None:
    """From now on this process signs the state files it writes into ``experiment`` and into its
    ``subdirs`` (experiments of their own inside it, e.g. a refit's stages; the driver only: Ray's
    workers never write them)."""
    root = os.path.normpath(experiment)
    _active.update(roots={root, *(os.path.join(root, d) for d in subdirs)}, key=load_key(create=True), written=set())


def stop_signing() -> None:
    _active.clear()


def mac_for(path: str) -> Any:
    """A fresh HMAC to feed the bytes of ``path`` into, if this process signs that file; else ``None``."""
    roots = _active.get("roots") or ()
    head, name = os.path.split(os.path.normpath(path))
    if head not in roots or not is_state_file(name):
        return None
    return _new_mac(_active["key"], name)


def record(path: str, mac: Any) -> None:
    """Add the signature of ``path``'s new content (before it is renamed into place). Ray rewrites
    every state file at every snapshot, mostly unchanged: a signature already written is not
    written again, and a long file keeps only the last two per name (the current content and
    the one being renamed into place)."""
    head, name = os.path.split(os.path.normpath(path))
    line = f"{name} {mac.hexdigest()}\n"
    sig = os.path.join(head, SIGNATURES)
    with _lock:
        if (sig, line) in _active.setdefault("written", set()):
            return
        fd = os.open(sig, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.write(fd, line.encode()) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        _active["written"].add((sig, line))
        if size > _COMPACT_AT:
            _compact(Path(sig))


def _compact(sig: Path) -> None:
    last: dict[str, list[str]] = {}
    for line in sig.read_text(errors="replace").splitlines():
        name = line.split(" ", 1)[0]
        last[name] = [*[x for x in last.get(name, []) if x != line], line][-2:]
    kept = [f"{x}\n" for lines in last.values() for x in lines]
    _replace(sig, "".join(kept))
    _active["written"] = {w for w in _active.get("written", set()) if w[0] != str(sig)} | {(str(sig), x) for x in kept}


def _replace(sig: Path, text: str) -> None:
    tmp = sig.with_name(f"{sig.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, sig)


def _file_mac(key: bytes, path: Path) -> str:
    mac = _new_mac(key, path.name)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            mac.update(chunk)
    return mac.hexdigest()


def _state_files(experiment: str) -> list[Path]:
    d = Path(experiment)
    return sorted(p for p in d.iterdir() if p.is_file() and is_state_file(p.name)) if d.is_dir() else []


def _signatures(experiment: str) -> set[tuple[str, str]]:
    try:
        text = (Path(experiment) / SIGNATURES).read_text(errors="replace")
    except OSError:
        return set()
    return {tuple(line.split(" ", 1)) for line in text.splitlines() if " " in line}  # type: ignore[misc]


def untrusted_state(experiment: str) -> list[tuple[str, str]]:
    """(file name, why) for each state file in ``experiment`` that this user's key did not sign:
    ``"unsigned"`` (no signature for it: written elsewhere, or before signing existed) or
    ``"changed"`` (signed, but its content changed since: edited, truncated, replaced)."""
    key = load_key()
    signed = _signatures(experiment) if key else set()
    names = {name for name, _ in signed}
    out = []
    for path in _state_files(experiment):
        if key is None or path.name not in names:
            out.append((path.name, "unsigned"))
        elif (path.name, _file_mac(key, path)) not in signed:
            out.append((path.name, "changed"))
    return out


def unreadable_state(experiment: str) -> tuple[str, str] | None:
    """(file name, why) for the first raw pickle in ``experiment`` that is cut short or is not a
    pickle at all, found by walking its opcodes (``pickletools``): nothing in it runs."""
    for path in _state_files(experiment):
        if not path.name.endswith(".pkl"):
            continue
        try:
            data = path.read_bytes()
            if not data:
                return path.name, "empty"
            for _ in pickletools.genops(data):
                pass
        except Exception as e:  # ValueError/EOFError from genops: truncated or not a pickle
            return path.name, (str(e).splitlines() or [type(e).__name__])[0][:120]
    return None


def adopt(experiment: str) -> None:
    """Sign the state files ``experiment`` holds now (checked, or trusted with ``--trust``), and only
    them: later resumes need no flag, and the signature file does not grow without bound."""
    key = load_key(create=True)
    _replace(Path(experiment) / SIGNATURES, "".join(f"{p.name} {_file_mac(key, p)}\n" for p in _state_files(experiment)))
