"""Retention after each stored checkpoint: the lifecycle's plan under the run's policies (plus
early stopping's best and the checkpoint a resume started from), carried out by the one deleter,
and said. Mixed into TrackedTraining; runs on the uploader's thread when there is one."""

from __future__ import annotations

from tracker import layout
from tracker.fmt import human_bytes, say
from tracker.policy.retention import Protect
from tracker.store.errors import StorePermissionError, StoreUnavailable, TrackingError


class RetentionPass:
    def policies(self, snap=None) -> list:
        """The run's retention policies, plus early stopping's best and the resumed-from epoch;
        ``snap`` (a callbacks.Snapshot): as they were when that checkpoint's epoch ended."""
        p = snap or self.progress
        stop_state = p.stop_state
        out = self.tconfig.policies(p.values)
        if self.tconfig.keep is not None and self.tconfig.keep_best and stop_state.best_epoch is not None:
            out.append(Protect(frozenset({stop_state.best_epoch}),
                               f"best ({self.tconfig.monitor}={stop_state.best:.6g})"))
        if p.resumed_from is not None:
            out.append(Protect(frozenset({p.resumed_from})))
        return out

    def apply_retention(self, *, listing: dict | None = None, saved: str | None = None,
                        confirm: bool = False, snap=None) -> None:
        """One pass of the lifecycle; ``listing`` is the tracked folder as the upload just saw it."""
        ck = self.ctx.checkpoints
        plan = ck.plan(self.policies(snap), listing=listing, values=(snap or self.progress).values)
        if self.retention_blocked:
            self.progress.retained = plan.inventory.records()
            return
        if saved is not None:
            limit = "all" if self.tconfig.keep is None else self.tconfig.retention.describe()
            say(f"Checkpoint saved: {saved} (keeping {len(plan.kept)}: {limit})")
        applied = ck.apply(plan, confirm=confirm)
        for d in applied.deletions:
            self.freed_bytes += d.freed
            if d.status == "failed":
                say(f"WARNING: could not delete {d.item.name}: {d.error}; it is kept")
            elif d.local.startswith("not ours"):
                say(f"WARNING: {d.item.name}: {d.local}")
            else:
                say(f"Deleted old checkpoint: {d.item.name} ({d.where}, {human_bytes(d.freed)} freed; "
                    f"{d.reason})")
            if d.tracked.startswith("kept: the store cannot") and not self.delete_warned:
                say("WARNING: the artifact store cannot delete; tracked checkpoints are kept, "
                    "local copies are deleted")
                self.delete_warned = True
        self.progress.retained = applied.retained
        if isinstance(applied.error, StorePermissionError):
            self.retention_blocked = True
            say(f"ERROR: retention cannot delete tracked checkpoints: {applied.error}. This run keeps "
                "every checkpoint, locally and in the store; free them later with: "
                f"python cli.py cleanup --run-id {self.run_id}")
            self._call(self.client.set_tag, self.run_id, layout.TAG_RETENTION_ERROR,
                       "permission denied: deleting artifacts needs MANAGE")
        elif isinstance(applied.error, StoreUnavailable):
            raise TrackingError(f"{applied.error}. Nothing was deleted locally; resume with: "
                                f"python cli.py train --resume {self.run_id}") from None

    def confirm_pending_deletes(self) -> None:
        """At the end of the run no upload follows: one more pass, with its own listing, so that
        a tracked delete the last upload did not confirm is confirmed (or done again)."""
        self.apply_retention(confirm=True)
