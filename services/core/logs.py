"""One logging set-up for every entrypoint: text for a person at a terminal, JSON lines for machines.

``SHOPLENS_LOG_FORMAT`` is ``auto`` (the default), ``text`` or ``json``. ``auto`` means text when the
log stream is a terminal and JSON lines otherwise (a pipe, a file, a container's log collector: the
stack ships them to ELK and also sets ``json`` explicitly). Why stderr by default: a CLI's stdout
carries its ``--json`` result, which scripts parse. The stack's services set
``SHOPLENS_LOG_STREAM=stdout``, where container log collectors expect them.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False
FORMATS = ("auto", "text", "json")


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``text`` or ``json``: ``auto`` is text on a terminal, JSON anywhere else."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"SHOPLENS_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(level: str = "INFO", fmt: str = "auto", stream=None) -> None:
    """Configure the root logger once; later calls only change the level.

    ``stream`` is a file object, or "stdout"/"stderr" (default stderr); ``fmt`` see :func:`resolve_format`.
    """
    global _CONFIGURED
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _CONFIGURED:
        return
    if stream is None or isinstance(stream, str):
        stream = sys.stdout if stream == "stdout" else sys.stderr
    handler = logging.StreamHandler(stream)
    if resolve_format(fmt, stream) == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "@timestamp", "levelname": "level", "name": "logger"},
                static_fields={"service": "shoplens"},
            )
        )
    else:
        # a person reads the time and the message; the logger's name is noise at a terminal
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    root.handlers[:] = [handler]
    for noisy in ("py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _CONFIGURED = True


def reaches_as_text(logger: logging.Logger, level: int, stream: TextIO) -> bool:
    """Whether a record of ``level`` from ``logger`` is written to ``stream`` as text (not as a JSON line).

    A message that must reach a person (the demo-key warning) is printed beside the log only when the
    log does not already show it to them; Python's last-resort handler (no handler configured) counts.
    """
    if not logger.isEnabledFor(level):
        return False
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if not handlers and logging.lastResort is not None:
        handlers = [logging.lastResort]
    return any(isinstance(h, logging.StreamHandler) and h.stream is stream and level >= h.level
               and not isinstance(h.formatter, JsonFormatter) for h in handlers)  # fmt: skip
