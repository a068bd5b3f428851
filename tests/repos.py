"""Artifact repositories for tests of stores that cannot delete."""

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository


class NoDeleteRepository(ArtifactRepository):
    """A real repository over a local directory (URI `<scheme>:<path>`) that stores and lists
    but keeps MLflow's base delete_artifacts, which does nothing at all."""

    def __init__(self, artifact_uri, tracking_uri=None, registry_uri=None):
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self._local = LocalArtifactRepository(artifact_uri.split(":", 1)[1])

    def log_artifact(self, local_file, artifact_path=None):
        self._local.log_artifact(local_file, artifact_path)

    def log_artifacts(self, local_dir, artifact_path=None):
        self._local.log_artifacts(local_dir, artifact_path)

    def list_artifacts(self, path=None):
        return self._local.list_artifacts(path)

    def _download_file(self, remote_file_path, local_path):
        self._local._download_file(remote_file_path, local_path)
