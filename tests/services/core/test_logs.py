"""Log format: text for a person at a terminal, JSON lines for a pipe, ``SHOPLENS_LOG_FORMAT`` to choose.

Each case runs a fresh interpreter (logging is configured once per process) whose stderr is either a
real pseudo-terminal (``pty.openpty``) or a pipe, as the CLI's would be.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SNIPPET = (
    "import logging\n"
    "from services.core.logs import configure_logging\n"
    "from services.core.settings import get_settings\n"
    "s = get_settings()\n"
    "configure_logging(s.log_level, s.log_format, s.log_stream)\n"
    "logging.getLogger('shoplens.test').info('hello %s', 'there', extra={'stage': 'x'})\n"
)


def _stderr(fmt: str | None, tty: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SHOPLENS_LOG_FORMAT"}
    env["PYTHONPATH"] = str(REPO)
    if fmt is not None:
        env["SHOPLENS_LOG_FORMAT"] = fmt
    if not tty:
        done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, stderr=follower, stdout=subprocess.PIPE,
                              timeout=60)  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert done.returncode == 0
    return b"".join(chunks).decode()


def _is_json_line(text: str) -> bool:
    try:
        doc = json.loads(text.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return False
    return doc.get("message") == "hello there" and doc.get("level") == "INFO"


def test_auto_is_text_on_a_terminal() -> None:
    out = _stderr(None, tty=True)
    assert "hello there" in out and not _is_json_line(out)
    assert "INFO" in out and "{" not in out


def test_auto_is_json_lines_on_a_pipe() -> None:
    out = _stderr(None, tty=False)
    assert _is_json_line(out)
    assert json.loads(out.strip().splitlines()[-1])["stage"] == "x"


@pytest.mark.parametrize(("fmt", "tty", "json_expected"), [("json", True, True), ("text", False, False)])
def test_the_variable_overrides_the_terminal_test(fmt: str, tty: bool, json_expected: bool) -> None:
    out = _stderr(fmt, tty=tty)
    assert "hello there" in out
    assert _is_json_line(out) is json_expected


def test_an_unknown_format_is_a_clear_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPLENS_LOG_FORMAT": "yaml"}
    done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "log_format" in done.stderr
