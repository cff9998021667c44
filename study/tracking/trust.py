"""Where the user's MLflow credentials may go.

Why: MLflow attaches the user's credentials to every request, so a tracking URI taken from a study
directory (a ``study.json``, a tracking store, an artifact location) could send them to a server of
the directory's choosing. Credentials go only to a server the user names: the tracking URI they
pass or set, and artifact locations on that same server.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from trainables.config import ConfigError

__all__ = ["is_local_tracking_uri", "tracking_credentials_set", "trusted_tracking_uri", "credential_origin",
           "check_artifact_uri", "check_run_artifacts", "check_experiment_artifacts"]


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


#: Schemes whose artifact repositories attach the user's MLflow credentials to their requests
#: (``HttpArtifactRepository`` and the ``mlflow-artifacts`` proxy built on it).
_CREDENTIAL_SCHEMES = {"http": 80, "https": 443, "mlflow-artifacts": 80}


def credential_origin(uri: str | None) -> str | None:
    """``host:port`` that MLflow sends the user's credentials to when it uses ``uri`` (a tracking
    URI or an artifact location); ``None`` when it sends them nowhere (a local store or path, an
    ``mlflow-artifacts:/`` path proxied by the tracking server itself, a cloud bucket)."""
    parsed = urlparse(uri or "")
    if parsed.scheme not in _CREDENTIAL_SCHEMES or not parsed.hostname:
        return None
    try:
        port = parsed.port or _CREDENTIAL_SCHEMES[parsed.scheme]
    except ValueError:  # a port that is not a number: refuse rather than guess
        return f"{parsed.hostname.lower()}:?"
    return f"{parsed.hostname.lower()}:{port}"


def check_artifact_uri(artifact_uri: str | None, tracking_uri: str, what: str) -> None:
    """Refuse (one-line ``ConfigError``) an artifact location that would receive the user's MLflow
    credentials although it is not on the tracking server in use (itself named by the user, see
    :func:`trusted_tracking_uri`). A tracking store (a sqlite file in a study directory, a shared
    server) chooses its experiments' and runs' artifact locations, so they are checked like any
    other URI taken from a study directory."""
    origin = credential_origin(artifact_uri)
    if origin is None or not tracking_credentials_set():
        return
    if not is_local_tracking_uri(tracking_uri) and origin == credential_origin(tracking_uri):
        return
    raise ConfigError(f"{what} keeps its MLflow artifacts at {artifact_uri}, a server you did not name; your MLflow credentials "
                      f"go only to the tracking server you name (here {tracking_uri}), so nothing is sent there")


def check_run_artifacts(client: Any, run_id: str, tracking_uri: str) -> None:
    """:func:`check_artifact_uri` for a run's artifact location and its experiment's (models
    logged under the run go to the experiment's)."""
    run = client.get_run(run_id)
    check_artifact_uri(run.info.artifact_uri, tracking_uri, f"run {run_id}")
    experiment = client.get_experiment(run.info.experiment_id)
    check_artifact_uri(experiment.artifact_location, tracking_uri, f"MLflow experiment {experiment.name!r}")


def check_experiment_artifacts(client: Any, experiment_name: str, tracking_uri: str) -> None:
    """:func:`check_artifact_uri` for an existing experiment (nothing to check before it exists:
    the study creates it with a location of its own)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        check_artifact_uri(experiment.artifact_location, tracking_uri, f"MLflow experiment {experiment_name!r}")
