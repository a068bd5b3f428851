"""Where tracked checkpoints live: the run's own MLflow artifact repository.

The repository is the one MLflow picks for the run's artifact URI, so the same code serves a
local directory, `mlflow-artifacts:` proxied through a tracking server, S3 and the rest.
Every write is confirmed by listing the folder afterwards: a checkpoint counts as stored only
when the store lists it with the right size, and as deleted only when it no longer lists it.
Retention relies on that (it never deletes anything not confirmed stored).

Errors are one line, name the operation, the file and the store, and never carry credentials:
URLs lose their userinfo and signatures, and secrets from the environment are masked.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException, RestException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import get_uri_scheme

_log = logging.getLogger("hype.stores")

DEFAULT_FOLDER = "hype_checkpoints"
# `checkpoints/` is where mlflow.pytorch.autolog puts its own checkpoints; sharing it would let
# our retention delete theirs.
RESERVED_FOLDERS = frozenset({"checkpoints"})


class StoreError(RuntimeError):
    """A store operation failed, or its result could not be confirmed."""


class StorePermissionError(StoreError):
    """The store refused the operation (401/403); retrying would not help."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError):
    """Transient failures (connection errors, 5xx) outlasted the retry budget."""


class DeleteUnsupported(StoreError):
    """The artifact repository for this scheme cannot delete; callers turn this into a warning."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, bounded in total time.

    The bound covers our own attempts and sleeps: no attempt starts after `total_s`. One
    attempt is one call into MLflow, and MLflow's HTTP layer retries on its own first
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, about 4 minutes at worst). Set that variable
    low (e.g. 0) in processes that need `total_s` to be the whole story.
    """

    total_s: float = 60.0  # give up once this much time has passed since the first attempt
    first_delay_s: float = 0.5  # sleep before the 2nd attempt; doubles after each failure
    max_delay_s: float = 8.0  # cap on one sleep, so a long budget still polls regularly

    def __post_init__(self):
        for name in ("total_s", "first_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0 seconds, got {value!r}")


@dataclass(frozen=True)
class StoredFile:
    name: str  # file name inside the folder
    size: int  # bytes, as listed by the store
    artifact_path: str  # "<folder>/<name>", relative to the run's artifact root
    uri: str  # where it is, for messages and tags; credentials scrubbed
    listing: dict = field(default_factory=dict, repr=False, compare=False)  # the confirming listing


# --- scrubbing -------------------------------------------------------------------------------

_SECRET_ENV_VARS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SIGNED_QUERY = re.compile(
    r"([?&](?:X-Amz-[A-Za-z-]+|sig|signature|token|access_token|password)=)[^&\s]+",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]+")


def scrub(text: str) -> str:
    """Remove credentials from text meant for a message or a log: one line, no secrets."""
    text = _USERINFO.sub("", str(text))
    text = _SIGNED_QUERY.sub(r"\1***", text)
    text = _AUTH_HEADER.sub(r"\1 ***", text)
    for var in _SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:  # masking "a" would garble every message
            text = text.replace(secret, "***")
    return " ".join(text.split())


def _summary(exc: BaseException, limit: int = 300) -> str:
    text = scrub(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- classifying failures --------------------------------------------------------------------

PERMISSION, TRANSIENT, NOT_FOUND = "permission", "transient", "not_found"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_MLFLOW_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
)
_PERMISSION_MLFLOW_CODES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)  # requests
    if status is None and isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _classify_one(exc: BaseException) -> str | None:
    import requests

    if isinstance(exc, PermissionError):
        return PERMISSION
    if isinstance(exc, FileNotFoundError):
        return NOT_FOUND
    status = _http_status(exc)
    if status in (401, 403):
        return PERMISSION
    if status == 404:
        return NOT_FOUND
    if status in _TRANSIENT_STATUS:
        return TRANSIENT
    if isinstance(exc, MlflowException):
        if exc.error_code in _PERMISSION_MLFLOW_CODES:
            return PERMISSION
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return NOT_FOUND
        # A server that answered with an error body; a bare MlflowException with the default
        # INTERNAL_ERROR code is how MLflow wraps everything, so look at its cause instead.
        if isinstance(exc, RestException) and exc.error_code in _TRANSIENT_MLFLOW_CODES:
            return TRANSIENT
    if isinstance(
        exc,
        # RetryError: MLflow's own retries on 5xx ran out; ConnectionError covers refused,
        # reset and DNS failures.
        requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
        | ConnectionError | TimeoutError,
    ):
        return TRANSIENT
    return None


def classify(exc: BaseException) -> str | None:
    """PERMISSION, TRANSIENT, NOT_FOUND or None (a plain failure), from exc and its causes.

    MLflow's HTTP client re-raises connection failures as a bare MlflowException inside an
    `except` block, so the real cause is only on __context__.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kind = _classify_one(exc)
        if kind is not None:
            return kind
        exc = exc.__cause__ or exc.__context__
    return None


class _Missing(Exception):
    """Internal: the store said the path does not exist."""


def call_with_retry(what: str, fn, policy: RetryPolicy, *, missing_ok: bool = False):
    """Run fn(); retry transient failures with backoff until policy.total_s has passed.

    `what` names the operation and target for messages. Permission errors are raised at once
    as StorePermissionError; with missing_ok, "not found" raises _Missing for the caller.
    Original exceptions are not chained: their text may hold credentials.
    """
    start = time.monotonic()
    delay = policy.first_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except StoreError:
            raise  # already ours, already worded
        except Exception as exc:
            kind = classify(exc)
            if kind == PERMISSION:
                raise StorePermissionError(
                    f"{what}: permission denied ({_summary(exc)})", status=_http_status(exc)
                ) from None
            if kind == NOT_FOUND and missing_ok:
                raise _Missing() from None
            if kind != TRANSIENT:
                raise StoreError(f"{what} failed: {_summary(exc)}") from None
            elapsed = time.monotonic() - start
            remaining = policy.total_s - elapsed
            if remaining <= 0:
                raise StoreUnavailable(
                    f"{what} still failing after {attempt} attempts over {elapsed:.1f} s "
                    f"(retry budget {policy.total_s:g} s): {_summary(exc)}"
                ) from None
            if attempt == 1:  # say it once, so that a long wait is not silent
                _log.warning("tracking store unreachable (%s): %s; retrying for up to %.0f s",
                             _summary(exc), what, remaining)
            # Jitter keeps several trainers that lost the same server from retrying in step.
            time.sleep(min(delay * random.uniform(0.8, 1.2), remaining))
            delay = min(delay * 2, policy.max_delay_s)


# --- the checkpoints folder of one run -------------------------------------------------------


def _check_folder(folder: str) -> str:
    clean = posixpath.normpath(folder.strip("/")) if folder else ""
    if not clean or clean in (".", "..") or clean.startswith("../"):
        raise ValueError(f"folder must be a relative path inside the run's artifacts, got {folder!r}")
    if clean.split("/")[0] in RESERVED_FOLDERS:
        raise ValueError(
            f"folder {folder!r} is reserved: mlflow.pytorch.autolog keeps its own checkpoints "
            f"under it; use another name such as {DEFAULT_FOLDER!r}"
        )
    return clean


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"expected a plain file name (no directories), got {name!r}")
    return name


_SERVER_SCHEMES = frozenset({"mlflow-artifacts", "http", "https"})


def _supports_delete(repo: ArtifactRepository) -> bool:
    # MLflow's base delete_artifacts does nothing at all; a repository that does not override
    # it would "delete" silently and leave the file in place.
    return type(repo).delete_artifacts is not ArtifactRepository.delete_artifacts


class TrackedCheckpoints:
    """The checkpoint files of one run, in `<run artifact root>/<folder>/`.

    Construction looks the run up once (with retries) to learn its artifact URI; every
    method then talks to that run's artifact repository only. `client` defaults to
    MlflowClient() for the current tracking URI; for `mlflow-artifacts:` runs its tracking
    URI is also the server the artifacts are proxied through.
    """

    def __init__(
        self,
        run_id: str,
        folder: str = DEFAULT_FOLDER,
        client: MlflowClient | None = None,
        retry: RetryPolicy | None = None,
    ):
        self.folder = _check_folder(folder)
        self.retry = retry or RetryPolicy()
        client = client or MlflowClient()
        run = call_with_retry(
            f"look up run {run_id} at {scrub(client.tracking_uri)}",
            lambda: client.get_run(run_id),
            self.retry,
        )
        self.run_id = run_id
        self.artifact_uri = run.info.artifact_uri
        self.scheme = get_uri_scheme(self.artifact_uri) or "file"
        self._repo = get_artifact_repository(self.artifact_uri, tracking_uri=client.tracking_uri)

    @property
    def uri(self) -> str:
        return scrub(f"{self.artifact_uri.rstrip('/')}/{self.folder}")

    def _call(self, op: str, target: str, fn, **kw):
        return call_with_retry(f"{op} {target!r} at {self.uri}", fn, self.retry, **kw)

    def list(self) -> dict[str, int]:
        """{file name: size in bytes} for the files directly in the folder."""
        infos = self._call("list", self.folder, lambda: self._repo.list_artifacts(self.folder))
        return {posixpath.basename(i.path): i.file_size for i in infos if not i.is_dir}

    def upload(self, local_path: str | os.PathLike) -> StoredFile:
        """Upload one file and confirm the store lists it with the same size."""
        path = Path(local_path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint to upload is not a file: {path}")
        name = _check_name(path.name)
        size = path.stat().st_size
        self._call("upload", name, lambda: self._repo.log_artifact(str(path), self.folder))
        listed = self.list()
        if listed.get(name) != size:
            seen = "not listed" if name not in listed else f"listed with {listed[name]} bytes"
            raise StoreError(
                f"upload of {name!r} to {self.uri} not confirmed: {seen}, local file has "
                f"{size} bytes"
            )
        return StoredFile(name, size, f"{self.folder}/{name}", f"{self.uri}/{name}", listed)

    def delete(self, name: str, *, confirm: bool = True) -> None:
        """Delete one file and confirm it is gone; a file already gone is fine.

        confirm=False skips the confirming listing: the caller checks the next listing it
        makes anyway (the trainer: the one that confirms the next upload), saving a request.
        """
        name = _check_name(name)
        if not _supports_delete(self._repo):
            raise DeleteUnsupported(
                f"cannot delete {name!r} from {self.uri}: the artifact repository for scheme "
                f"'{self.scheme}' ({type(self._repo).__name__}) does not implement "
                "delete_artifacts; the file was left in place"
            )
        try:
            self._call("delete", name, lambda: self._delete(name), missing_ok=True)
        except _Missing:
            pass  # already gone is what we wanted; the listing below still checks
        except StorePermissionError as exc:
            if self.scheme not in _SERVER_SCHEMES:
                raise
            # Basic auth lets EDIT log artifacts but gates deleting them on MANAGE, even in
            # the user's own runs: the likeliest cause, worth naming.
            raise StorePermissionError(
                f"{exc}; deleting artifacts through an MLflow server with authentication "
                "needs MANAGE permission on the experiment",
                status=exc.status,
            ) from None
        if confirm and name in self.list():
            raise StoreError(f"delete of {name!r} from {self.uri} not confirmed: still listed")

    def _delete(self, name: str) -> None:
        try:
            self._repo.delete_artifacts(f"{self.folder}/{name}")
        except NotImplementedError:
            raise DeleteUnsupported(
                f"cannot delete {name!r} from {self.uri}: the artifact repository for scheme "
                f"'{self.scheme}' ({type(self._repo).__name__}) says deleting is not implemented"
            ) from None

    def download(self, name: str, dst_dir: str | os.PathLike) -> Path:
        """Copy one stored file to dst_dir/name (replacing it); returns that path."""
        name = _check_name(name)
        dst = Path(dst_dir)
        dst.mkdir(parents=True, exist_ok=True)
        # MLflow recreates the folder structure under dst_path; download into a scratch dir
        # beside the target and move the file in, so a failed download leaves no partial file
        # under the final name.
        with tempfile.TemporaryDirectory(dir=dst, prefix=".download-") as scratch:
            local = self._call(
                "download",
                name,
                lambda: self._repo.download_artifacts(f"{self.folder}/{name}", dst_path=scratch),
            )
            target = dst / name
            os.replace(local, target)
        return target
