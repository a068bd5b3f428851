"""hype's command line: a thin click group. Each subcommand lives in commands/<name>.py."""

import click

from commands import register


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """hype: hyperbolic embeddings of taxonomies, every run tracked in MLflow."""


register(cli)

if __name__ == "__main__":
    cli()
