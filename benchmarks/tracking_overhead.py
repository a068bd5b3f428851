"""What tracking costs per epoch on the noun closure (targets: SQLite <= +1.5%, a local server <= +3%).

    .venv/bin/python benchmarks/tracking_overhead.py              # SQLite, then a local mlflow server
    .venv/bin/python benchmarks/tracking_overhead.py --checkpoint-mb 200 --no-sqlite --epochs 3 --rounds 1
                                                                  # ~200 MB checkpoints (dim from N)

Checkpoints are stored off the training thread by default (--upload-queue 2; with as many
workers as cores the uploader runs at the idle scheduling class, and checkpoints that only newest
N would keep are replaced while it waits for a core); --upload-queue 0 measures the synchronous
path in the same way. Each tracked run says how many checkpoints it stored, how many of them
before training ended, and how many were replaced.

A tracked epoch logs its metrics, reads the monitored value back for early stopping (monitor
`loss`, so that happens every epoch: the most tracking an epoch can do), saves the checkpoint
(temporary file, fsync, rename), uploads it as an artifact, confirms it and deletes the one that
fell out of the newest --keep, in the store and locally. An untracked epoch is hype.train.train
with no callbacks. Both train Poincaré dim 10 with the noun settings (lr 1.0, batch 50,
50 negatives, --workers processes), after burn-in (burn-in epochs are slower and not the point).

With as many workers as cores the uploader is also paced to 2% of a core (TrackerConfig.upload_duty;
--no-pace turns that off): the checkpoints in between are replaced, so a paced run stores fewer.
The whole-run comparison by the ranks' time lost is then the fair figure: their extra wait for a
core and sleep at the collectives (schedstat), plus rank 0's time in the callbacks, per rank, as
shares of each run's own wall (so the host's slow phases, which move the wall ratio between runs
by several %, do not enter). The interleaved blocks hand a tracked block's queued work to the
next, untracked one.

Two figures per store, because this machine is shared and its load drifts:
- ratio: median tracked epoch wall time / median untracked epoch wall time, the untracked and
  tracked runs alternating (--rounds pairs, and one more untracked run at the end);
- share: inside the tracked run, seconds spent in the tracking callbacks / seconds training.
  Both halves come from the same epochs, so load drift cancels; this is the better estimate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.epoch_clock import Blocks, Sampled  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

TARGETS = {"SQLite (embedded)": 0.015, "mlflow server (proxied)": 0.03}
BIG_TARGET = 0.10  # a ~200 MB checkpoint per epoch, once an epoch is longer than one upload


def untracked(graph, config, skip):
    """(epoch walls, Sampled.shares) of a run with no callbacks but the clock."""
    from hype.train import train

    s = Sampled(skip=skip)
    train(graph, config, callbacks=s, progress=False)
    return s.epoch_walls(skip), s.shares()


def run_tracked(graph, config, uri, workdir: Path, keep: int, upload_queue: int | None, name: str,
                clock, options: dict | None = None):
    """One tracked run (monitor `loss`: the most tracking an epoch can do), its epochs timed by
    ``clock(tracker)``; its end waits for the queued checkpoints, as a run's end does.
    Returns (tracker, clock, bytes written before training ended, seconds the end waited)."""
    from hype.train import train
    from tracker.store.open import open_tracking_store, tune_sqlite_commits
    from tracker.training.callbacks import TrackerConfig
    from tracker.training.session import start_run

    tune_sqlite_commits()
    client = open_tracking_store(uri)
    tconfig = TrackerConfig(model_name=name, keep=keep, monitor="loss", patience=10**6,
                            checkpoint_root=workdir / "checkpoints", log_pyfunc=False,
                            upload_queue=upload_queue, disk_margin=0, **(options or {}))
    tr, state = start_run(client, uri, graph, config, tconfig, experiment="tracking-overhead",
                          run_name=name)
    s = clock(tr)
    train(graph, config, state=state, callbacks=s, progress=False)
    written_in_training = tr.written_bytes
    t0 = time.perf_counter()
    tr.drain()
    tr.stop_uploads()
    drain_s = time.perf_counter() - t0
    client.set_terminated(tr.run_id, "FINISHED")
    return tr, s, written_in_training, drain_s


def tracked(graph, config, uri, workdir: Path, keep: int, skip: int, upload_queue: int | None,
            options: dict | None = None):
    tr, s, written_in_training, drain_s = run_tracked(graph, config, uri, workdir, keep, upload_queue,
                                                      "bench", lambda inner: Sampled(inner, skip), options)
    left = len(list(tr.local_dir.glob("bench_epoch*.pth")))  # newest `keep` + perhaps the best
    assert left <= keep + 1, f"retention left {left} local checkpoints"
    stored = len(s.train_s) - tr.replaced
    per_checkpoint = tr.written_bytes / max(stored, 1)
    queue = tr.uploads
    print(f"  tracked run: {stored} of {len(s.train_s)} checkpoints stored "
          f"({round(written_in_training / per_checkpoint) if per_checkpoint else 0} before training "
          f"ended, {tr.replaced} replaced), drain {drain_s:.2f} s"
          + (f", uploader at {queue.priority}, {queue.lag_waits} wait(s) for the store's lag, "
             f"{queue.waited_s:.2f} s waited" if queue else ", synchronous"), flush=True)
    walls = s.epoch_walls(skip)
    # Conservative: what was still queued at the end is charged to the timed epochs.
    walls = [w + drain_s / len(walls) for w in walls]
    train_s = sum(s.train_s[skip:-1])
    callback_s = sum(s.callback_s[skip:-1])
    return walls, callback_s / train_s, per_checkpoint, s.shares(), drain_s  # size of one stored


def interleaved(graph, config, uri, workdir: Path, args) -> tuple[float, int, dict[str, float]]:
    """Median tracked epoch / median untracked epoch - 1 within one tracked run, the checkpoints
    replaced, and how long the ranks waited for a core (Blocks.waited)."""
    epochs = args.skip + 2 * args.blocks * args.block + 1
    config = replace(config, epochs=epochs, eval_every=epochs)
    tr, s, _, _ = run_tracked(graph, config, uri, workdir, args.keep, args.upload_queue, "blocks",
                              lambda inner: Blocks(inner, args.skip, args.block), options(args))
    on, off = s.split()
    return statistics.median(on) / statistics.median(off) - 1, tr.replaced, s.waited()


def options(args) -> dict:
    """TrackerConfig fields the flags change from what `cli.py train` uses."""
    if args.no_pace:
        return {"upload_duty": None}
    return {} if args.upload_duty is None else {"upload_duty": args.upload_duty}


def measure(label, graph, config, uri, workdir, args) -> dict:
    plain, walls, shares, runs = [], [], [], {"tracked": [], "untracked": []}
    medians: dict[str, list[float]] = {"tracked": [], "untracked": []}  # each run's median epoch
    drains = []
    for _ in range(args.rounds):  # alternate, so that drifting load hits both alike
        w, sh = untracked(graph, config, args.skip)
        plain += w
        medians["untracked"].append(statistics.median(w))
        runs["untracked"].append(sh)
        w, share, ckpt_bytes, sh, drain_s = tracked(graph, config, uri, workdir, args.keep, args.skip,
                                                    args.upload_queue, options(args))
        walls += w
        medians["tracked"].append(statistics.median(w))
        shares.append(share)
        runs["tracked"].append(sh)
        drains.append(drain_s)
    w, sh = untracked(graph, config, args.skip)
    plain += w
    medians["untracked"].append(statistics.median(w))
    runs["untracked"].append(sh)
    mean = {k: {f: statistics.mean(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    timed_wall = sum(walls) / max(args.rounds, 1)
    # of ranks x wall: neither on a core nor waiting for one
    asleep = {k: args.workers - v["ran"] - v["wait"] for k, v in mean.items()}
    print(f"{label:<28} between runs: ranks waiting for a core {100 * mean['tracked']['wait']:.1f}% of "
          f"tracked epochs, {100 * mean['untracked']['wait']:.1f}% of untracked: "
          f"{100 * (mean['tracked']['wait'] - mean['untracked']['wait']):+.1f}% (the end's wait for the "
          f"queue, {statistics.mean(drains):.2f} s, would add at most "
          f"{100 * statistics.mean(drains) / timed_wall:.1f}%); CPU beside the ranks "
          f"{100 * mean['tracked']['other']:.1f}% / {100 * mean['untracked']['other']:.1f}%; "
          f"the ranks asleep (a collective, the GIL) {100 * asleep['tracked']:.1f}% / "
          f"{100 * asleep['untracked']:.1f}%", flush=True)
    # A rank held up by d (waiting for a core, or rank 0 in the callbacks) makes the others sleep
    # d at the next collective, so the epoch grows by the ranks' extra wait + sleep + rank 0's
    # callbacks over their number. Unlike the wall ratio between runs, shares of each run's own
    # wall do not move with the host's slow phases; what it misses is the ranks doing the same
    # work slower on their core (caches the uploader evicts): the interleaved blocks see that.
    target = BIG_TARGET if args.checkpoint_mb else TARGETS[label]
    share = statistics.median(shares)
    lost = (mean["tracked"]["wait"] - mean["untracked"]["wait"]
            + asleep["tracked"] - asleep["untracked"] + share) / args.workers
    print(f"{'':<28} so tracking took {100 * lost:+.1f}% of each rank's time  target <= "
          f"{100 * target:.1f}%: {'PASS' if lost <= target else 'FAIL'}", flush=True)
    base = statistics.median(plain)
    med = statistics.median(walls)
    ratio = med / base - 1
    print(f"{'':<28} each run's median epoch, in order: " + ", ".join(
        f"{k} {' '.join(f'{m:.3f}' for m in v)} s" for k, v in medians.items())
          + " (the spread among one kind is the noise in the ratio below)", flush=True)
    inter = None
    if args.blocks:
        inter, replaced, waited = interleaved(graph, config, uri, workdir, args)
        print(f"{label:<28} interleaved in one run ({args.blocks} x {args.block} tracked epochs, as "
              f"many untracked): ratio {100 * inter:+5.1f}%  ({replaced} checkpoints replaced)  "
              f"target <= {100 * target:.1f}%: {'PASS' if inter <= target else 'FAIL'}", flush=True)
        print(f"{'':<28} ranks waiting for a core: {100 * waited['tracked_wait']:.1f}% of tracked "
              f"epochs, {100 * waited['untracked_wait']:.1f}% of untracked (the difference, "
              f"{100 * (waited['tracked_wait'] - waited['untracked_wait']):+.1f}%, is what tracking took "
              f"from the ranks); VM steal {100 * waited['tracked_steal']:.1f}% / "
              f"{100 * waited['untracked_steal']:.1f}%", flush=True)
        print(f"{'':29}CPU time beside the ranks: {100 * waited['tracked_other']:.1f}% of tracked "
              f"epochs, {100 * waited['untracked_other']:.1f}% of untracked; kernel time (the ranks' "
              f"system calls included) {100 * waited['tracked_kernel']:.1f}% / "
              f"{100 * waited['untracked_kernel']:.1f}%", flush=True)
    from tracker.training.config import TrackerConfig

    bound = TrackerConfig(upload_queue=args.upload_queue).upload_bound()
    row = {"store": label, "untracked_s": base, "tracked_s": med, "overhead_ratio": ratio,
           "interleaved_ratio": inter, **({"ranks_waited": waited} if args.blocks else {}),
           "between_runs_waited": mean, "rank_time_lost": lost,
           "overhead_share": share, "checkpoint_mb": ckpt_bytes / 2**20,
           "loadavg": os.getloadavg()[0], "upload_queue": bound}
    # The ratio is the figure: with the uploader, the training thread's share is only the
    # hand-over, while the uploads compete for the same cores.
    print(f"{label:<28} untracked {base:6.2f} s  tracked {med:6.2f} s  ratio {100 * ratio:+5.1f}%  "
          f"training-thread callbacks/training {100 * share:4.1f}%  ({row['checkpoint_mb']:.1f} MB "
          f"checkpoints, upload queue {bound}, load {row['loadavg']:.2f})  target <= "
          f"{100 * target:.1f}%: {'PASS' if ratio <= target else 'FAIL'}", flush=True)
    return row



def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=ROOT / "data" / "noun_closure.csv")
    p.add_argument("--epochs", type=int, default=8, help="timed epochs per run")
    p.add_argument("--skip", type=int, default=2, help="first epochs not timed (compile, no delete yet)")
    p.add_argument("--rounds", type=int, default=2, help="untracked/tracked pairs per store")
    p.add_argument("--blocks", type=int, default=6,
                   help="also one run of this many tracked blocks alternating with untracked ones (0: off)")
    p.add_argument("--block", type=int, default=4, help="epochs per block of --blocks")
    p.add_argument("--keep", type=int, default=2, help="--keep-checkpoints of the tracked run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--no-server", action="store_true", help="only the SQLite store")
    p.add_argument("--no-sqlite", action="store_true", help="only the server")
    p.add_argument("--upload-queue", type=int, default=None,
                   help="0: the synchronous path [default: as train, 2; the uploader yields the cores "
                   "when the workers take them all]")
    p.add_argument("--no-pace", action="store_true",
                   help="the uploader starts each job as soon as it can (TrackerConfig.upload_duty None), "
                   "instead of pacing itself to 2%% of a core when the ranks take every core")
    p.add_argument("--upload-duty", type=float, default=None,
                   help="the pace's share of one core (TrackerConfig.upload_duty) [default: train's]")
    p.add_argument("--server-idle", action="store_true",
                   help="run the local server at the idle scheduling class (chrt --idle), as a "
                   "tracking server beside training on the same cores may be")
    p.add_argument("--checkpoint-mb", type=float, default=0,
                   help="choose dim so that a checkpoint is about this size (e.g. 200)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = p.parse_args(argv)
    if args.blocks and args.skip < 1:
        p.error("--blocks needs --skip >= 1 (the tracker's first epoch starts the clock)")

    from nouns import CLOSURE, ensure_closure

    if args.dataset == CLOSURE:
        ensure_closure(CLOSURE)
    from hype.config import TrainConfig
    from hype.data import load_edge_csv

    graph = load_edge_csv(args.dataset)
    if args.checkpoint_mb:  # (N, dim) float64 is the bulk of a checkpoint
        args.dim = max(2, int(args.checkpoint_mb * 2**20 / (8 * graph.num_nodes)))
    epochs = args.skip + args.epochs + 1  # + the last epoch, which evaluates
    config = TrainConfig(dim=args.dim, lr=1.0, batch_size=50, negs=50, burnin=0, epochs=epochs,
                         eval_every=epochs, eval_sample=100, workers=args.workers)
    print(f"{graph.num_nodes:,} nodes, {graph.num_edges:,} edges, dim {args.dim}; {args.epochs} timed "
          f"epochs per run, {args.workers} workers, keep {args.keep}; {os.cpu_count()} CPUs "
          f"({cpu_model()})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        db = tmp / "sqlite" / "mlflow.db"
        db.parent.mkdir()
        if not args.no_sqlite:
            rows.append(measure("SQLite (embedded)", graph, config, f"sqlite:///{db}", tmp / "sqlite", args))
        if not args.no_server:
            from tests.servers import mlflow_server

            with mlflow_server(tmp / "server") as server:
                label = "mlflow server (proxied)"
                if args.server_idle:
                    from benchmarks.epoch_clock import idle_group

                    print(f"server at the idle scheduling class: {idle_group(server.pgid)} threads",
                          flush=True)
                rows.append(measure(label, graph, config, server.url, tmp / "server", args))
    return rows


if __name__ == "__main__":
    main()
