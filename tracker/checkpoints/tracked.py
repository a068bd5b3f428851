"""Where tracked checkpoints live: the run's own MLflow artifact repository.

The repository is the one MLflow picks for the run's artifact URI, so the same code serves a
local directory, `mlflow-artifacts:` proxied through a tracking server, S3 and the rest.
Every write is confirmed by listing the folder afterwards: a checkpoint counts as stored only
when the store lists it with the right size, and as deleted only when it no longer lists it.
Retention relies on that (it never deletes anything not confirmed stored).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import get_uri_scheme

from tracker.store.errors import DeleteUnsupported, StoreError, StorePermissionError
from tracker.store.redact import redact
from tracker.store.retry import RetryPolicy, _Missing, call_with_retry

DEFAULT_FOLDER = "hype_checkpoints"
# `checkpoints/` is where mlflow.pytorch.autolog puts its own checkpoints; sharing it would let
# our retention delete theirs.
RESERVED_FOLDERS = frozenset({"checkpoints"})


@dataclass(frozen=True)
class StoredFile:
    name: str  # file name inside the folder
    size: int  # bytes, as listed by the store
    artifact_path: str  # "<folder>/<name>", relative to the run's artifact root
    uri: str  # where it is, for messages and tags; credentials scrubbed
    listing: dict = field(default_factory=dict, repr=False, compare=False)  # the confirming listing



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
            f"look up run {run_id} at {redact(client.tracking_uri)}",
            lambda: client.get_run(run_id),
            self.retry,
        )
        self.run_id = run_id
        self.artifact_uri = run.info.artifact_uri
        self.scheme = get_uri_scheme(self.artifact_uri) or "file"
        self._repo = get_artifact_repository(self.artifact_uri, tracking_uri=client.tracking_uri)

    @property
    def uri(self) -> str:
        return redact(f"{self.artifact_uri.rstrip('/')}/{self.folder}")

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
