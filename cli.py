"""hype's command line: a thin click group. Each subcommand lives in commands/<name>.py."""

import os

import click

# MLflow draws a progress bar for every download, even of one small checkpoint: it would break
# our one-line errors and the plain lines of a log file. A user may still turn it back on.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from commands import register


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """hype: hyperbolic embeddings of taxonomies, every run tracked in MLflow."""


register(cli)

if __name__ == "__main__":
    cli()
