"""Which pseudonymization key may write a lake (issue 28): the lake records a one-way fingerprint of the
key it was written with, another key is refused in one line, short keys and the public demo key outside
demo mode are refused, and demo mode says so in the log and on the console."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import services.core.settings as settings_module
from services.core.catalog import KEY_FINGERPRINT, RUNS
from services.core.lake import key_fingerprint
from services.core.settings import DEMO_PSEUDONYM_KEY, DEMO_WARNING, ConfigError, Settings
from services.jobs.ingest import ingest_files
from tests.conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[3]
OTHER_KEY = b"another-key-of-at-least-32-bytes-0123456789"


def test_the_lake_records_a_fingerprint_not_the_key_and_refuses_another_key(local_lake, key, rees46_sample):
    local_lake.bind_key(key)
    local_lake.bind_key(key)  # the same key again is fine
    recorded = local_lake.store.read_bytes(KEY_FINGERPRINT).decode()
    assert key_fingerprint(key) in recorded and key.decode() not in recorded and key.hex() not in recorded
    assert key_fingerprint(key) != key_fingerprint(OTHER_KEY)
    # refused before anything is read or written (no Spark is given: it would fail if reached)
    with pytest.raises(ConfigError) as err:
        ingest_files(lambda: None, local_lake, [rees46_sample], OTHER_KEY)
    assert "another pseudonymization key" in str(err.value) and "\n" not in str(err.value)
    assert OTHER_KEY.decode() not in str(err.value) and key.decode() not in str(err.value)
    assert local_lake.store.list(RUNS) == []


def test_a_demo_lake_names_the_demo_key_when_refusing_a_real_one(local_lake):
    local_lake.bind_key(DEMO_PSEUDONYM_KEY.encode())
    with pytest.raises(ConfigError, match="written with another pseudonymization key \\(the public demo key\\)"):
        local_lake.bind_key(OTHER_KEY)


@pytest.mark.parametrize(("env", "message"), [
    ({"pseudonym_key": "x" * 31}, "31 bytes; use at least 32"),
    ({"pseudonym_key": DEMO_PSEUDONYM_KEY}, "is the public demo key"),
    ({}, "SHOPLENS_PSEUDONYM_KEY is not set"),
])
def test_keys_that_protect_nothing_are_refused(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        _ = Settings(lake=str(tmp_path), **env).key_bytes


def test_demo_mode_warns_in_the_log_and_on_the_console_once(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(settings_module, "_demo_warned", [])
    caplog.set_level(logging.WARNING, "shoplens.settings")
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        settings = Settings(lake=str(tmp_path), demo=True)
        assert settings.key_bytes == DEMO_PSEUDONYM_KEY.encode() == settings.key_bytes
    assert raised == []  # our message, not a Python UserWarning with a file path
    assert [r.getMessage() for r in caplog.records] == [DEMO_WARNING]
    assert capsys.readouterr().err == f"shoplens: warning: {DEMO_WARNING}\n"
    assert Settings(lake=str(tmp_path), demo=True, pseudonym_key=TEST_KEY).key_bytes == TEST_KEY.encode()



@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_demo_warning_reaches_the_console_once_in_either_log_format(tmp_path, monkeypatch, capsys, fmt):
    """Text logs on the console already show the warning: no second line; JSON logs are for machines: one printed line."""
    from services.core import logs

    root = logging.getLogger()
    monkeypatch.setattr(settings_module, "_demo_warned", [])
    monkeypatch.setattr(root, "handlers", [])  # configure_logging fills a fresh list; the test's handlers return after
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(logs, "_CONFIGURED", False)
    logs.configure_logging("WARNING", fmt, sys.stderr)  # what the CLI does with SHOPLENS_LOG_FORMAT=<fmt>
    _ = Settings(lake=str(tmp_path), demo=True).key_bytes
    lines = [ln for ln in capsys.readouterr().err.splitlines() if DEMO_WARNING in ln]
    if fmt == "text":
        assert len(lines) == 1 and lines[0].endswith(f"WARNING {DEMO_WARNING}")
    else:
        assert len(lines) == 2 and lines[1] == f"shoplens: warning: {DEMO_WARNING}"
        assert json.loads(lines[0])["message"] == DEMO_WARNING

@pytest.mark.slow
def test_the_cli_refuses_another_key_in_one_line(local_lake, key, rees46_sample, tmp_path):
    local_lake.bind_key(key)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPLENS_LAKE": local_lake.store.uri,
           "SHOPLENS_WORK_DIR": str(tmp_path / "cli-work"), "SHOPLENS_PSEUDONYM_KEY": OTHER_KEY.decode(),
           "SHOPLENS_SPARK_MASTER": "local[1]"}  # fmt: skip
    env.pop("SHOPLENS_DEMO", None)
    done = subprocess.run([sys.executable, "-m", "services", "ingest", str(rees46_sample)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("shoplens: error: ")
    assert "another pseudonymization key" in done.stderr and "Traceback" not in done.stderr
    assert local_lake.store.list(RUNS) == []
