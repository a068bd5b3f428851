"""Click subcommands. Each module owns one command (or group); register() wires them into cli."""

import importlib

import click

# module name -> attribute holding its click command or group
_COMMANDS = {
    "data": "data",
    "train": "train",
    "cleanup": "cleanup",
    "export": "export",
    "evaluate": "evaluate",
    "ui": "ui",
    "checkpoints": "checkpoints",
    "serve": "serve",
}


def register(group: click.Group) -> None:
    for module, attr in _COMMANDS.items():
        group.add_command(getattr(importlib.import_module(f"commands.{module}"), attr))
