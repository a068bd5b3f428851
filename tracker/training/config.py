"""What the tracker adds to a training run's configuration, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hype import processes
from tracker.layout import PROJECT_ROOT
from tracker.policy import stopping
from tracker.policy.names import final_name, model_name_problem
from tracker.policy.retention import Policy, Retention


@dataclass(frozen=True)
class TrackerConfig:
    model_name: str = "model"  # file prefix: <model>_epoch0001.pth per epoch, <model>.pth final
    keep: int | None = 20  # newest epoch checkpoints kept per run (local and tracked); None keeps all
    keep_best: int = 1  # also keep the K best checkpoints by `monitor`; 0 turns it off
    keep_every: int = 0  # also keep every K-th epoch's checkpoint (50, 100, ...); 0 turns it off
    monitor: str = "map"  # metric for early stopping and "best": map, mean_rank, loss, map_sampled
    mode: str | None = None  # "max" or "min"; None infers it from the metric's name
    patience: int = 6  # evaluations after burn-in without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    checkpoint_root: Path = PROJECT_ROOT / "checkpoints"  # a run writes under <root>/<run_id>/
    plot_every: int = 0  # also log the Poincaré-disk picture every K epochs (0: only at the end)
    log_pyfunc: bool = True  # log the final embedding once as an MLflow (pyfunc) model
    disk_margin: int = 256 * 2**20  # bytes that must stay free after the retained checkpoints
    force: bool = False  # start even when the retained checkpoints would not fit
    # Checkpoints waiting for the uploader's thread (saving, upload, retention happen there); at
    # the bound training waits. 0: store each checkpoint on the training thread (synchronous).
    # None: 2. When the ranks take every core, the uploader yields them (the idle scheduling
    # class: tracker.training.uploader): at normal priority beside 2 busy ranks on 2 cores it
    # slowed each noun epoch by 20%, and the synchronous path cost 4.6-12.6% of it.
    upload_queue: int | None = None
    # At the bound, a waiting checkpoint that no policy but newest N keeps is replaced by the new
    # one (tracker.policy.supersede): training does not wait for checkpoints retention would
    # delete anyway. True: store every epoch's checkpoint, waiting at the bound instead.
    store_every: bool = False
    # The store may fall this many seconds behind training (its oldest unstored epoch's age) before
    # training waits for it: what bounds the lag of the UI's metrics when the uploader yields.
    max_lag_s: float = 30.0
    # When the ranks take every core, the uploader's share of one core: it starts a checkpoint's
    # job no sooner than the last job's cost / this after that one began (at most max_lag_s / 3),
    # and the checkpoints in between are replaced (tracker.training.uploader, "Paced"). What it
    # spends there the ranks lose: at 0.02 a noun run (a 60 ms job per 1.2-1.8 s epoch) stores
    # every 2nd-3rd checkpoint. None: no pace. Ignored with store_every or with a spare core.
    upload_duty: float | None = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.keep_best, bool):  # the old boolean form: True meant the one best
            object.__setattr__(self, "keep_best", int(self.keep_best))
        self.retention  # noqa: B018 - validates keep, keep_best, keep_every
        problem = model_name_problem(self.model_name)
        if problem is not None:
            raise ValueError(problem)
        final_name(self.model_name)  # "snap_epoch3" would make its final model read as a checkpoint
        q = self.upload_queue
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 0):
            raise ValueError(f"upload queue must be an integer >= 0 (0: synchronous), got {q!r}")
        d = self.upload_duty
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d <= 1):
            raise ValueError(f"upload_duty must be a share of one core in (0, 1], or None; got {d!r}")
        if not (isinstance(self.max_lag_s, int | float) and self.max_lag_s > 0):
            raise ValueError(f"max_lag_s must be a number of seconds > 0, got {self.max_lag_s!r}")

    def upload_bound(self) -> int:
        """The queue's bound (0: no uploader, the synchronous path)."""
        return 2 if self.upload_queue is None else self.upload_queue

    @staticmethod
    def uploader_yields(workers: int) -> bool:
        """Whether the ranks of a run with ``workers`` processes that run on this machine take
        every core of it (under torchrun, only its LOCAL_WORLD_SIZE are here)."""
        return processes.fill_cores(processes.ranks_on_this_host(workers), processes.usable_cores())

    @property
    def retention(self) -> Retention:
        return Retention(self.keep, self.keep_best, self.keep_every)

    @property
    def resolved_mode(self) -> str:
        return self.mode or stopping.infer_mode(self.monitor)

    def policies(self, values: dict | None = None) -> list[Policy]:
        """values: the monitored metric after burn-in, {epoch: value} (what best K ranks)."""
        return self.retention.policies(mode=self.resolved_mode, monitor=self.monitor,
                                       min_delta=self.min_delta, history=values or {})

    def stop_config(self, burnin: int) -> stopping.StopConfig:
        # evaluations at epochs <= burnin do not count: the lr is divided by 100 there
        return stopping.StopConfig(self.patience, self.min_delta, self.resolved_mode, burnin + 1)

    def params(self) -> dict:
        return {"model_name": self.model_name,
                "keep_checkpoints": "all" if self.keep is None else self.keep,
                "keep_best": self.keep_best, "keep_every": self.keep_every, "monitor": self.monitor,
                "mode": self.resolved_mode, "patience": self.patience,
                "min_delta": self.min_delta, "plot_every": self.plot_every,
                "log_pyfunc": self.log_pyfunc}

    @classmethod
    def from_params(cls, p: dict, tags: dict | None = None) -> TrackerConfig:
        """Rebuild from a run's (string) params, as ``params`` logged them; runs made before
        keep_best took a count logged "True"/"False"."""
        tags = tags or {}
        keep = p.get("keep_checkpoints", "20")
        best = p.get("keep_best", "1")
        return cls(
            model_name=p.get("model_name", tags.get("hype.model_name", "model")),
            keep=None if keep in ("all", "0", "None") else int(keep),
            keep_best={"True": 1, "False": 0}.get(best, None) if best in ("True", "False") else int(best),
            keep_every=int(p.get("keep_every", 0)),
            monitor=p.get("monitor", "map"), mode=p.get("mode"), patience=int(p.get("patience", 6)),
            min_delta=float(p.get("min_delta", 0.0)), plot_every=int(p.get("plot_every", 0)),
            log_pyfunc=p.get("log_pyfunc", "True") == "True")
