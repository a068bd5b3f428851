"""hype's command line: a thin click group. Each subcommand lives in commands/<name>.py."""

import os
import sys

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
    # Redirected (`make train > log 2>&1`), stdout would reach the file in 8 KB blocks: each line
    # now lands when it is said, in order with stderr's progress lines and MLflow's messages.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    cli()
