"""`python cli.py serve`: any retained checkpoint (or a final model) behind `mlflow models serve`.

A checkpoint's LoggedModel holds no pyfunc of its own (its weights are the run's checkpoint
file; see tracker.checkpoints.models), so this command makes one in a temporary folder from
the checkpoint, the same model code as the final model's, and serves that folder with
`mlflow models serve` in this environment. The folder is removed when the server stops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click


@click.command(short_help="Serve a checkpoint (URI, or --run-id/--epoch) with mlflow models serve.")
@click.argument("model_uri", required=False)
@click.option("--run-id", default=None, help="The run whose checkpoint (--epoch) or final model to serve.")
@click.option("--epoch", type=int, default=None,
              help="With --run-id: a retained epoch [default: the final model].")
@click.option("--tracking-uri", default=None,
              help="[default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the model server listens on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=int, default=5001, show_default=True, help="Port the model server listens on.")
def serve(model_uri, run_id, epoch, tracking_uri, host, port):
    """Serve MODEL_URI (models:/<id> from `cli.py checkpoints`, or runs:/<run>/hype_checkpoints/
    <name>.pth) or --run-id R [--epoch E] over HTTP: POST /invocations with columns (u, v) for
    distances or (node, k) for nearest nodes, as for the final model."""
    from commands.export import fetch_checkpoint
    from tracker.serving.log import save_pyfunc

    if (model_uri is None) == (run_id is None):
        raise click.UsageError("give either MODEL_URI or --run-id (not both)")
    if epoch is not None and run_id is None:
        raise click.UsageError("--epoch needs --run-id")

    with tempfile.TemporaryDirectory(prefix="hype-serve-") as tmp:
        ckpt_path, source, _ = fetch_checkpoint(model_uri, run_id, epoch, tracking_uri, Path(tmp))
        model_dir = Path(tmp) / "model"
        save_pyfunc(model_dir, ckpt_path)
        click.echo(f"Serving {source} on http://{host}:{port}/invocations", err=True)
        cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", str(model_dir),
               "--env-manager", "local", "--host", host, "--port", str(port)]
        if not Path(cmd[0]).exists():
            cmd[0] = shutil.which("mlflow") or "mlflow"
        try:
            code = subprocess.call(cmd)
        except KeyboardInterrupt:
            code = 130
    sys.exit(code)
