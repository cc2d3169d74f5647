"""The ``moeconnect`` command: one click group, one module per command family."""

from __future__ import annotations

import click

from .. import __version__
from .audit import audit
from .check import check
from .db import db
from .keys import key
from .records import log, sources
from .seed import seed
from .serve import serve
from .tokens import token
from .workspace import workspace

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moeconnect")
def cli() -> None:
    """moeconnect: MoEngage's Test Connection API and the credential system behind it."""


for command in (serve, workspace, key, token, db, seed, check, log, sources, audit):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="moeconnect")
