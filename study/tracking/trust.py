"""Where the user's MLflow credentials may go.

Why: MLflow attaches the user's credentials to every request, so a tracking URI taken from a study
directory (a ``study.json``, a tracking store, an artifact location) could send them to a server of
the directory's choosing. Credentials go only to a server the user names.
"""

from __future__ import annotations

import os

from trainables.config import ConfigError

__all__ = ["is_local_tracking_uri", "tracking_credentials_set", "trusted_tracking_uri"]


def is_local_tracking_uri(uri: str | None) -> bool:
    """A tracking store on this machine (sqlite file, file store, bare path): nothing is sent anywhere."""
    return not uri or uri.startswith(("sqlite:", "file:")) or "://" not in uri


def tracking_credentials_set() -> bool:
    """Whether MLflow would attach credentials to its requests: a user/password (environment or
    ``~/.mlflow/credentials``), a token, an auth plugin, AWS SigV4 signing or a client certificate."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds("http://localhost")  # the host is not used, only required
    return any([creds.username, creds.password, creds.token, creds.auth, creds.aws_sigv4, creds.client_cert_path])


def trusted_tracking_uri(name: str, stored: str | None, given: str | None) -> str:
    """The MLflow URI to use for an existing study: ``given`` (``--tracking-uri``) when the user
    names one; else the one ``study.json`` records — unless MLflow credentials are set and that
    URI is a remote server the user did not name (``MLFLOW_TRACKING_URI``): a study directory must
    not be able to send the user's credentials to a server of its choosing. Raises ``ConfigError``
    (one line) asking for ``--tracking-uri`` then."""
    if given:
        return given
    if not stored:
        raise ConfigError(f"study {name!r} records no MLflow tracking URI; pass --tracking-uri")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env == stored or is_local_tracking_uri(stored) or not tracking_credentials_set():
        return stored
    said = f"MLFLOW_TRACKING_URI is {env}" if env else "you did not name it"
    raise ConfigError(f"study {name!r} records MLflow at {stored} but {said}; your MLflow credentials are only sent "
                      f"to a server you name: pass --tracking-uri {stored} (or the server you mean)")
