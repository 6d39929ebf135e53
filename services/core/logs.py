"""One logging set-up for every entrypoint: JSON lines, shipped to ELK by the stack.

Why stderr by default: a CLI's stdout carries its ``--json`` result, which scripts parse. The stack's
services set ``SHOPLENS_LOG_STREAM=stdout``, where container log collectors expect them.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False


def configure_logging(level: str = "INFO", fmt: str = "json", stream=None) -> None:
    """Configure the root logger once; later calls only change the level.

    ``stream`` is a file object, or "stdout"/"stderr" (default stderr).
    """
    global _CONFIGURED
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _CONFIGURED:
        return
    if stream is None or isinstance(stream, str):
        stream = sys.stdout if stream == "stdout" else sys.stderr
    handler = logging.StreamHandler(stream)
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
