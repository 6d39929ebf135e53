"""The ``shoplens`` command line: one entry point, one subcommand per stage."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from etl.contract import ContractError
from services.logs import configure_logging
from services.settings import ConfigError, get_settings
from services.storage import StorageError

app = typer.Typer(
    name="shoplens",
    help="Customer intelligence for e-commerce clickstreams: ingest, describe, segment, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("shoplens.cli")

LakeOption = Annotated[
    str | None,
    typer.Option(
        "--lake",
        help="Lake root: a local path or s3://bucket/prefix. Defaults to $SHOPLENS_LAKE, else ./data/lake.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]


def _emit(obj: object, as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(obj, default=str))
    else:
        typer.echo(human)


@app.callback()
def _setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def main() -> None:
    """Run the CLI; known failures exit 1 with a one-line reason instead of a traceback."""
    try:
        app()
    except (ContractError, ConfigError, StorageError, FileNotFoundError, ValueError) as err:
        typer.echo(f"shoplens: error: {err}", err=True)
        sys.exit(1)


__all__ = ["JsonOption", "LakeOption", "Path", "app", "main"]
