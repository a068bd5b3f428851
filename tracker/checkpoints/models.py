"""Each retained checkpoint as an MLflow LoggedModel: what the UI's Models tables list.

MLflow 3's way to browse deep-learning checkpoints: one LoggedModel per checkpoint, with its
``step``, the epoch's metrics linked through ``model_id``, the run's outputs listing it, and
``delete_logged_model`` hiding it once retention deletes the checkpoint. The model's own
artifacts are two small files that let `mlflow models serve -m models:/<id>` load it
(tracker.serving.checkpoint_files); the weights are the run's ``hype_checkpoints/<name>`` file
(its tag ``hype.artifact`` says where), so nothing is stored twice and the one lifecycle
(inventory -> policies -> deleter) still owns the file. A model costs four small requests per
checkpoint (create with its tags, its files, finalize, outputs); the epoch's metrics are linked
to it in the request that logs them anyway; the run's code zip costs one more, once per process.

The best mark: a checkpoint that is early stopping's best when saved is created marked (free, in
the create request). Earlier bests are unmarked when the run ends or resumes (``clear_stale_best``),
not each time the best moves: most of them are deleted by retention first, and an unmark per new
best was 4 ms of SQLite or 20 ms of an MLflow server's and the client's CPU, beside the ranks.

Lifecycle of a model (on the uploader's thread, never the training thread): created PENDING once
its checkpoint's bytes are durable and before they are renamed into place (``begin``), READY
once the checkpoint is confirmed stored (``complete``), deleted with it. A kill in between
leaves a PENDING model, or a model whose file is gone; ``sync`` (resume) replaces or deletes
those by the run's inventory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import LoggedModelOutput, Metric
from mlflow.tracking import MlflowClient

from tracker import layout
from tracker.serving.checkpoint_files import write_code_zip, write_model_files
from tracker.store.errors import StoreError, StorePermissionError
from tracker.store.retry import RetryPolicy, call_with_retry

KIND_TAG, KIND = "hype.kind", "checkpoint"  # tells checkpoint models from the final model
EPOCH_TAG = "hype.epoch"
ARTIFACT_TAG = "hype.artifact"  # runs:/<run_id>/hype_checkpoints/<name>: where the weights are
SIZE_TAG = "hype.size_bytes"
SHA_TAG = "hype.sha256"
BEST_TAG = "hype.best"  # "true" on the run's best checkpoint (early stopping's best), else "false"
# MLflow 3.17's UI shows no model tags, but it shows a model's description (this tag) on its page.
NOTE_TAG = "mlflow.note.content"
# While the run trains, an earlier best keeps this note until the run ends (clear_stale_best).
BEST_NOTE = "**Best checkpoint** of its run (early stopping's best when it was saved)."


def artifact_uri(run_id: str, name: str) -> str:
    return f"runs:/{run_id}/{layout.CHECKPOINT_FOLDER}/{name}"


def linked(metrics: list, model_id: str | None) -> list:
    """The epoch's Metric rows, linked to its checkpoint's model (the Models table's columns)."""
    if model_id is None:
        return list(metrics)
    return [Metric(x.key, x.value, x.timestamp, x.step, model_id=model_id) for x in metrics]


def model_name(checkpoint_name: str) -> str:
    """The model's name in the UI: the checkpoint's, without ``.pth``."""
    return checkpoint_name.removesuffix(".pth")


@dataclass
class CheckpointModels:
    """The checkpoint models of one run. ``by_epoch`` is read from the store once and then kept
    up to date by this object's own writes (the trainer is the only writer while it runs)."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    _known: dict[int, tuple[str, str]] | None = field(default=None, repr=False)  # epoch -> (id, status)
    _marked: set[int] = field(default_factory=set, repr=False)  # epochs whose model says best "true"
    _code_stored: bool = field(default=False, repr=False)  # the run's hype_code.zip, once per process

    def _call(self, what: str, fn):
        return call_with_retry(f"{what} (run {self.run_id})", fn, self.retry)

    def by_epoch(self) -> dict[int, tuple[str, str]]:
        """{epoch: (model_id, status)} of the run's checkpoint models that are not deleted."""
        if self._known is None:
            found, token = {}, None
            while True:
                page = self._call("list checkpoint models", lambda t=token: self.client.search_logged_models(
                    [self.experiment_id], page_token=t, filter_string=(
                        f"source_run_id = '{self.run_id}' AND tags.`{KIND_TAG}` = '{KIND}'")))
                for m in page:
                    try:
                        epoch = int(m.tags.get(EPOCH_TAG, ""))
                    except ValueError:
                        continue  # an edited tag: not ours to judge, never deleted by epoch
                    found[epoch] = (m.model_id, str(m.status))
                    if m.tags.get(BEST_TAG) == "true":
                        self._marked.add(epoch)
                token = page.token
                if not token:
                    break
            self._known = found
        return self._known

    def log(self, name: str, epoch: int, *, size: int, sha256: str | None, best: bool,
            metrics: list | None = None) -> str:
        """The model of a checkpoint confirmed stored (resume's sync): created with its tags,
        linked to the epoch's metrics (MLflow stores an identical Metric row once, so the run's
        history is not doubled), READY, and listed in the run's outputs."""
        model = self.begin(name, epoch, size=size, sha256=sha256, best=best)
        if metrics:
            self._call("link the epoch's metrics to its model",
                       lambda: self.client.log_batch(self.run_id, metrics=linked(metrics, model.model_id)))
        self.complete(model, name, epoch)
        return model.model_id

    def begin(self, name: str, epoch: int, *, size: int, sha256: str | None, best: bool):
        """Create the model of a checkpoint about to be stored: PENDING, with all its tags. The
        trainer links the epoch's metrics to it in the request that logs them (one request, not
        two) and completes it once the checkpoint is confirmed stored."""
        if epoch in self.by_epoch():  # a resumed run trains this epoch again: the old model goes
            self.delete(epoch)
        tags = {KIND_TAG: KIND, EPOCH_TAG: str(epoch), ARTIFACT_TAG: artifact_uri(self.run_id, name),
                SIZE_TAG: str(size), BEST_TAG: str(best).lower(), **({SHA_TAG: sha256} if sha256 else {}),
                **({NOTE_TAG: BEST_NOTE} if best else {})}
        m = self._call(f"create the model of {name}", lambda: self.client.create_logged_model(
            self.experiment_id, name=model_name(name), source_run_id=self.run_id, model_type="checkpoint",
            tags=tags))
        self.by_epoch()[epoch] = (m.model_id, "PENDING")
        if best:
            self._marked.add(epoch)
        return m

    def complete(self, model, name: str, epoch: int) -> None:
        """Its files stored, READY, and listed in the run's outputs (its checkpoint is stored)."""
        self._store_files(model, name, epoch)
        self._call("finalize a checkpoint model",
                   lambda: self.client.finalize_logged_model(model.model_id, "READY"))
        self._call("list a checkpoint model in the run's outputs", lambda: self.client.log_outputs(
            self.run_id, [LoggedModelOutput(model.model_id, epoch)]))
        self.by_epoch()[epoch] = (model.model_id, "READY")

    def _store_files(self, model, name: str, epoch: int) -> None:
        """The files `mlflow models serve` loads the model by, and the run's code before the first.
        Straight to the model's artifact location (client.log_model_artifacts would get the model
        again to learn it: one more request per checkpoint)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with tempfile.TemporaryDirectory(prefix="hype-model-") as tmp:
            if not self._code_stored:
                code = write_code_zip(Path(tmp))
                self._call("store the run's code (hype_code.zip)",
                           lambda: self.client.log_artifact(self.run_id, str(code)))
                self._code_stored = True
            files = write_model_files(Path(tmp) / "model", weights_uri=artifact_uri(self.run_id, name),
                                      run_id=self.run_id, epoch=epoch)
            repo = get_artifact_repository(model.artifact_location, tracking_uri=self.client.tracking_uri)
            self._call(f"store the model files of {name}", lambda: repo.log_artifacts(str(files)))

    def clear_stale_best(self, best: int | None) -> int:
        """Unmark the models of earlier bests still listed (the run ends or resumes, and ``best``
        is its best epoch now): one request each, at most the retained count. Returns how many."""
        known = self.by_epoch()
        stale = sorted(e for e in self._marked if e != best and e in known)
        until = f"until epoch {best}" if best is not None else "before"
        for epoch in stale:
            self._call("unmark an earlier best", lambda e=epoch, u=until: self.client.set_logged_model_tags(
                known[e][0], {BEST_TAG: "false", NOTE_TAG: f"Was the best checkpoint of its run {u}."}))
            self._marked.discard(epoch)
        return len(stale)

    def delete(self, epoch: int) -> bool:
        """Delete the model of ``epoch`` (hidden from the UI from then on); False if there is none."""
        entry = self.by_epoch().pop(epoch, None)
        if entry is None:
            return False
        try:
            self._call("delete a checkpoint model", lambda: self.client.delete_logged_model(entry[0]))
        except StorePermissionError as e:
            self.by_epoch()[epoch] = entry
            # Basic auth lets EDIT create models but gates deleting them on MANAGE, as for artifacts.
            raise StorePermissionError(f"{e}; deleting checkpoint models (and artifacts) through an MLflow "
                                       "server with authentication needs MANAGE permission on the "
                                       "experiment", status=e.status) from None
        except StoreError:
            self.by_epoch()[epoch] = entry
            raise
        self._marked.discard(epoch)
        return True

    def sync(self, retained: dict[int, tuple[str, int, str | None]], best: int | None,
             metrics_at=None) -> list[str]:
        """Make the models match the retained checkpoints {epoch: (name, size, sha256)}: delete
        models without one, replace PENDING ones, create the missing ones, each linked to its
        epoch's metrics (``metrics_at(epoch)``: the store's rows). Returns what it did."""
        done = []
        for epoch in sorted(set(self.by_epoch()) - set(retained)):
            self.delete(epoch)
            done.append(f"deleted the model of epoch {epoch} (its checkpoint is gone)")
        for epoch, (name, size, sha) in sorted(retained.items()):
            status = self.by_epoch().get(epoch, (None, None))[1]
            if status == "READY":
                continue
            self.log(name, epoch, size=size, sha256=sha, best=epoch == best,  # a PENDING one is replaced
                     metrics=metrics_at(epoch) if metrics_at is not None else None)
            done.append(f"{'replaced the unfinished' if status else 'created the'} model of {name}")
        if cleared := self.clear_stale_best(best):
            done.append(f"unmarked {cleared} earlier best(s)")
        return done
