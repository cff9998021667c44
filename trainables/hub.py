"""Is a name that is not a local path worth trying on the Hugging Face hub?

``data.path`` and ``model.name`` take a local path or a hub id. A mistyped relative path
(``data/sst2x``, ``models/minilm``) looks like a hub id, and trying it costs 26-30 s offline:
``huggingface_hub`` retries the network five times with backoff before transformers or
``datasets`` give up. This decides in well under a second instead: a name whose first component
is a local directory is a local path that does not exist; a name already in the local hub cache
is fine; otherwise one metadata request (no retries) says whether the repo exists, or that the
hub cannot be reached.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError

__all__ = ["check_hub_name", "looks_like_hub_id"]

_TIMEOUT_S = 10.0


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` or ``name``: not absolute, not ``./``-, ``../``- or ``~``-relative, no file suffix."""
    return bool(name) and not name.startswith((".", "/", "~")) and not Path(name).suffix and name.count("/") <= 1


def _cached(name: str, repo_type: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{name.replace('/', '--')}").is_dir()


def check_hub_name(name: str, key: str, repo_type: str = "model") -> None:
    """Raise a one-line ``ConfigError`` unless ``name`` (not an existing local path) can be a
    reachable hub ``repo_type`` ("model" or "dataset") id; returns at once for a cached one."""
    here = Path(os.path.expanduser(name)).resolve()
    parts = Path(name).parts
    if not looks_like_hub_id(name) or (len(parts) > 1 and Path(parts[0]).is_dir()):
        raise ConfigError(f"{key}={name!r}: cannot load: no such file or directory ({here})")
    if _cached(name, repo_type):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConfigError(f"{key}={name!r}: cannot load: no such local path ({here}), and HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        HfApi().repo_info(name, repo_type=repo_type, timeout=_TIMEOUT_S)
    except GatedRepoError:  # exists; access is the loader's business
        return
    except (RepositoryNotFoundError, HFValidationError):
        raise ConfigError(f"{key}={name!r}: cannot load: no such local path ({here}) and no such {repo_type} on the Hugging Face hub") from None
    except Exception as e:  # offline, DNS, proxy, timeout
        msg = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"{key}={name!r}: cannot load: no such local path ({here}), and the Hugging Face hub is unreachable "
                          f"({type(e).__name__}: {msg})") from None
