"""`python cli.py train`: train inside an MLflow run, with retention, early stopping and resume."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import click

from hype.config import AUTO_SAMPLE, BACKENDS, MANIFOLDS, SAMPLE_ABOVE_NODES, TrainConfig, auto_eval_sample
from hype.processes import launched_by_torchrun
from tracker.layout import PROJECT_ROOT

# What a run logs that early stopping and "best" can follow (the _sampled ones with --eval-sample).
MONITORS = ("map", "mean_rank", "loss", "map_sampled", "mean_rank_sampled")
DEFAULT_DATASET = PROJECT_ROOT / "data" / "mammal_closure.csv"
# --store-every-checkpoint from the environment too: for a team's runs, or a test suite whose
# retention checks count on every epoch's checkpoint being stored
STORE_EVERY_ENV = "HYPE_STORE_EVERY_CHECKPOINT"
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def _keep(ctx, param, value):
    if value is None:
        return 20
    if str(value).lower() in ("all", "0"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (give N >= 1, or 'all')") from None
    if n < 0:
        raise click.BadParameter(f"{n} is negative (give N >= 1, or 'all' / 0 to keep every checkpoint)")
    return n


_UNITS = {"": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}


def _size(ctx, param, value):
    text = str(value).strip().upper()
    digits = text.rstrip("KMGB")
    try:
        n = float(digits) * _UNITS[text[len(digits):]]
    except (ValueError, KeyError):
        raise click.BadParameter(f"{value!r} is not a size (e.g. 512MB, 2GB, 0)") from None
    if n < 0:
        raise click.BadParameter(f"{value!r} is negative")
    return int(n)


def _train_as_worker(world: int) -> None:
    from hype import distributed
    from hype.train import train_worker

    with distributed.open_group(world) as group:  # torchrun's group, closed however this ends
        train_worker(group)


def _count(ctx, param, value):
    if value < 0:
        raise click.BadParameter(f"{value} is negative (give K >= 1, or 0 to turn it off)")
    return value


def _given(ctx) -> dict:
    """The options this command line named (not defaults), for what a resume may change."""
    from click.core import ParameterSource

    out = {name: value for name, value in ctx.params.items()
           if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if out.pop("no_keep_best", False):
        out["keep_best"] = 0
    if out.pop("no_pyfunc", False):
        out["log_pyfunc"] = False
    return out


def _model_name(dataset: Path) -> str:
    stem = dataset.stem
    return stem[: -len("_closure")] if stem.endswith("_closure") else stem


@click.command()
@click.option("--dataset", type=click.Path(path_type=Path), default=None,
              help=f"Edge list CSV (id1,id2,weight). Default: {DEFAULT_DATASET.relative_to(PROJECT_ROOT)}.")
@click.option("--manifold", type=click.Choice(MANIFOLDS), default=_DEFAULTS["manifold"], show_default=True,
              help="Geometry: the Poincaré ball, the Lorentz hyperboloid (exported as a ball), or the "
                   "Euclidean baseline.")
@click.option("--dim", type=int, default=_DEFAULTS["dim"], show_default=True,
              help="Embedding dimension (Lorentz stores one coordinate more).")
@click.option("--lr", type=float, default=_DEFAULTS["lr"], show_default=True,
              help="Learning rate per batch, as in the original (per-edge step = lr / batch-size).")
@click.option("--negs", type=int, default=_DEFAULTS["negs"], show_default=True,
              help="Negatives per positive edge, drawn among the nodes u is not related to.")
@click.option("--batch-size", type=int, default=_DEFAULTS["batch_size"], show_default=True,
              help="Edges per batch, as in the original: it only scales the step (lr / batch-size).")
@click.option("--burnin", type=int, default=_DEFAULTS["burnin"], show_default=True,
              help="First N epochs at lr x --burnin-multiplier, negatives drawn by degree.")
@click.option("--burnin-multiplier", type=float, default=_DEFAULTS["burnin_multiplier"], show_default=True,
              help="Learning-rate factor during burn-in (0 < x <= 1).")
@click.option("--dampening", type=float, default=_DEFAULTS["dampening"], show_default=True,
              help="Burn-in negatives are drawn with probability ~ degree ** dampening (0 to 1).")
@click.option("--epochs", type=int, default=None,
              help=f"Maximum epochs (passes over the edges); early stopping may end sooner "
                   f"[default: {_DEFAULTS['epochs']}].")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True,
              help="Seeds the start, the edge order and the negatives: a run is reproducible for a seed "
                   "and a number of workers.")
@click.option("--eval-every", type=int, default=_DEFAULTS["eval_every"], show_default=True,
              help="Evaluate reconstruction (mean_rank, map) every N epochs, and at the last.")
@click.option("--eval-sample", type=int, default=None,
              help="During training, evaluate on N seeded nodes (logged as map_sampled, mean_rank_sampled); "
                   "the final model is evaluated exactly. 0: exact every time [default: 0, or "
                   f"{AUTO_SAMPLE:,} on graphs of more than {SAMPLE_ABOVE_NODES:,} nodes].")
@click.option("--backend", type=click.Choice(BACKENDS), default="numba", show_default=True,
              help="numba: the compiled per-edge kernel; torch: the batched autograd reference (slow).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Training processes (torch.distributed, gloo); under torchrun, its world size.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--experiment", default="hype", show_default=True,
              help="MLflow experiment of the new run (created if missing).")
@click.option("--run-name", default=None, help="The run's name in MLflow [default: MLflow's random name].")
@click.option("--model-name", default=None, help="Checkpoint prefix [default: from the dataset name].")
@click.option("--keep-checkpoints", "keep", callback=_keep, default=None,
              help="Keep the newest N epoch checkpoints (local + tracked); 'all' or 0 keeps every one. "
                   "[default: 20]")
@click.option("--keep-best", type=int, default=1, show_default=True, callback=_count, metavar="K",
              help="Also keep the K best checkpoints by --monitor (after burn-in); 0 turns it off.")
@click.option("--no-keep-best", is_flag=True, help="The same as --keep-best 0.")
@click.option("--keep-every", type=int, default=0, show_default=True, callback=_count, metavar="K",
              help="Also keep every K-th epoch's checkpoint (50: epochs 50, 100, ...); 0 turns it off.")
@click.option("--monitor", default=None,
              help="Metric for early stopping and 'best': map, mean_rank, loss, map_sampled, "
                   "mean_rank_sampled [default: map, or map_sampled when training evaluates a sample].")
@click.option("--mode", type=click.Choice(["max", "min"]), default=None,
              help="Direction of --monitor [default: inferred from its name].")
@click.option("--patience", type=int, default=6, show_default=True,
              help="Stop after N evaluations after burn-in without a new best --monitor: N epochs "
                   "with the default --eval-every 1.")
@click.option("--min-delta", type=float, default=0.0, show_default=True,
              help="A new best must beat the old one by more than this (in --monitor's units).")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None,
              help="Local checkpoint folder; a run writes under DIR/<run_id> [default: ./checkpoints].")
@click.option("--plot-every", type=int, default=0, show_default=True,
              help="Log the Poincaré-disk picture every K epochs (always at the end).")
@click.option("--disk-margin", callback=_size, default="256MB", show_default=True,
              help="Free space that must remain after the retained checkpoints (e.g. 1GB).")
@click.option("--force", is_flag=True, help="Start even if the retained checkpoints would not fit.")
@click.option("--upload-queue", type=click.IntRange(min=0), default=None, metavar="N",
              help="Checkpoints stored off the training thread, at most N waiting; 0 stores each one "
                   "before the next epoch [default: 2; with as many workers as cores the uploader "
                   "runs at the idle priority].")
@click.option("--store-every-checkpoint", "store_every", is_flag=True, envvar=STORE_EVERY_ENV,
              help="Store every epoch's checkpoint, training waiting for a slow store; by default a "
                   "waiting checkpoint that no policy but --keep-checkpoints keeps is replaced by "
                   f"the next one while every upload slot is taken (its metrics still go in). Also "
                   f"{STORE_EVERY_ENV}=1.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID",
              help="Continue this MLflow run from its newest retained checkpoint.")
@click.option("--from-epoch", type=int, default=None, metavar="E",
              help="With --resume: go on from this retained epoch; the run's later checkpoints are "
                   "deleted (those epochs are trained again).")
@click.option("--init-from", default=None, metavar="RUN_ID[:EPOCH]|FILE",
              help="Warm start a new run from another run's retained checkpoint (newest, or EPOCH) "
                   "or a checkpoint file; nodes are matched by name.")
@click.option("--no-pyfunc", is_flag=True, help="Do not log the final model as an MLflow model.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx, dataset, tracking_uri, experiment, run_name, model_name, keep, keep_best, no_keep_best,
          keep_every, monitor, mode,
          patience, min_delta, checkpoint_dir, plot_every, disk_margin, force, upload_queue, store_every,
          resume,
          from_epoch, init_from, no_pyfunc, quiet, epochs, **hp):
    """Train an embedding of a transitive closure, tracked as an MLflow run."""
    from hype.data import DataError, check_file, load_edge_csv

    needed = dataset or (None if resume else DEFAULT_DATASET)  # a resume reads the run's own
    other_rank = launched_by_torchrun() and os.environ["RANK"] != "0"  # gets it from rank 0
    if needed is not None and not other_rank:
        try:  # before torch and MLflow load (seconds): a mistyped path is reported at once
            check_file(needed)
        except DataError as e:
            raise click.ClickException(str(e)) from None
    from hype import distributed, warmup
    from tracker.store.errors import StoreError, TrackingError, TrackingUnavailable
    from tracker.store.redact import redact
    from tracker.store.uri import resolve_tracking_uri
    from tracker.training.callbacks import TrackerConfig
    from tracker.training.session import run_training

    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if hp["workers"] not in (1, world):
            raise click.BadParameter(f"{hp['workers']} differs from torchrun's world size {world}",
                                     param_hint="--workers")
        hp["workers"] = world
        if other_rank:  # rank 0 tracks; this rank gets everything else from it
            _train_as_worker(world)
            return
    try:
        uri = resolve_tracking_uri(tracking_uri)
        if redact(uri) != uri:  # user:password@ in the URI: MLflow prints it in its "View run" links
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if from_epoch is not None and not resume:
            raise click.BadParameter("needs --resume RUN_ID (to start a new run from a checkpoint, "
                                     "use --init-from RUN_ID:EPOCH)", param_hint="--from-epoch")
        if resume:
            if init_from:
                raise click.BadParameter("starts a new run; it cannot be combined with --resume (use "
                                         "--from-epoch E to go on from another epoch of the run)",
                                         param_hint="--init-from")
            graph = load_edge_csv(dataset) if dataset else None
            given = {k: v for k, v in _given(ctx).items() if k != "from_epoch"}
            outcome = run_training(uri=uri, graph=graph, config=None, tconfig=None, resume=resume,
                                   epochs=epochs, checkpoint_root=checkpoint_dir, progress=not quiet,
                                   force=force, disk_margin=disk_margin, given=given,
                                   from_epoch=from_epoch, upload_queue=upload_queue,
                                   store_every=store_every)
        else:
            dataset = dataset or DEFAULT_DATASET
            graph = load_edge_csv(dataset)
            if hp["eval_sample"] is None:
                hp["eval_sample"] = auto_eval_sample(graph.num_nodes)
            config = TrainConfig(epochs=_DEFAULTS["epochs"] if epochs is None else epochs, **hp)
            if monitor in (None, "auto"):
                monitor = "map_sampled" if config.eval_sample else "map"
            if monitor not in MONITORS:
                raise click.BadParameter(f"{monitor!r} is never logged by a run; choose from "
                                         f"{', '.join(MONITORS)}", param_hint="--monitor")
            if monitor.endswith("_sampled") and not config.eval_sample:
                raise click.BadParameter(f"{monitor} needs --eval-sample N", param_hint="--monitor")
            if monitor in ("map", "mean_rank") and config.eval_sample:
                raise click.BadParameter(f"with --eval-sample, training logs {monitor}_sampled; "
                                         f"monitor that (the exact {monitor} is computed at the end)",
                                         param_hint="--monitor")
            tconfig = TrackerConfig(
                model_name=model_name or _model_name(dataset), keep=keep,
                keep_best=0 if no_keep_best else keep_best, keep_every=keep_every,
                monitor=monitor, mode=mode, patience=patience, min_delta=min_delta,
                checkpoint_root=checkpoint_dir or TrackerConfig.checkpoint_root,
                plot_every=plot_every, log_pyfunc=not no_pyfunc, disk_margin=disk_margin, force=force,
                upload_queue=upload_queue, store_every=store_every)
            tconfig.stop_config(config.burnin)  # validates monitor/mode/patience up front
            # on a first run, the evaluator compiles in a helper while the store opens
            with warmup.evaluator_beside(config.manifold, config.backend):
                outcome = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig,
                                       experiment=experiment, run_name=run_name,
                                       progress=not quiet, init_from=init_from)
    except (DataError, TrackingError, TrackingUnavailable, StoreError, ValueError,
            distributed.WorkerStartError) as e:
        raise click.ClickException(str(e).splitlines()[0]) from None

    m = outcome.final_metrics
    click.echo(f"Final model (epoch {outcome.final_epoch}): "
               f"mean rank {m['final_mean_rank']:.3f}, MAP {m['final_map']:.3f}")
    click.echo(outcome.stop_reason or f"finished: ran all {outcome.epochs_run} epochs")
    click.echo(f"Training {outcome.train_seconds:.1f} s, of which tracking {outcome.tracking_seconds:.2f} s "
               f"on the training thread ({outcome.background_seconds:.2f} s more storing checkpoints beside "
               "it)")
    click.echo(f"Final model file: {outcome.final_path}")
    click.echo(f"Run: {outcome.run_id} (experiment {outcome.experiment_id}) in {redact(uri)}")
    if uri.startswith("sqlite:///"):
        from commands.ui import DEFAULT_PORT, HOST
        from tracker.layout import ui_link

        # MLflow 3.17 opens a fresh browser on its GenAI view whatever the experiment's tag says:
        # the link goes straight to the model-training view of this run.
        click.echo(f"Browse it: python cli.py ui (or: mlflow ui --backend-store-uri {uri}), then open "
                   f"{ui_link(f'http://{HOST}:{DEFAULT_PORT}', outcome.experiment_id, outcome.run_id)}")
