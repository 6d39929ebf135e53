"""One logging set-up for every entrypoint: JSON lines on stdout (shipped to ELK by the stack)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False


def configure_logging(level: str = "INFO", fmt: str = "json", stream=None) -> None:
    """Configure the root logger once; later calls only change the level."""
    global _CONFIGURED
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "@timestamp", "levelname": "level", "name": "logger"},
                static_fields={"service": "shoplens"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers[:] = [handler]
    for noisy in ("py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _CONFIGURED = True
