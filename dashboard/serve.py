"""Start the dashboard server: ``shoplens dashboard`` runs ``streamlit run dashboard/app.py``.

The server runs from ``dashboard/`` so ``dashboard/.streamlit/config.toml`` (theme, no tracebacks,
no usage statistics) applies; local lake and work paths are made absolute first so they keep
pointing at the same place.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from dashboard.uploads import LARGEST_UPLOAD_MB

DASHBOARD_DIR = Path(__file__).resolve().parent
APP = DASHBOARD_DIR / "app.py"
DEFAULT_PORT = 8501


def command(port: int = DEFAULT_PORT, address: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port), "--server.address", address, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(LARGEST_UPLOAD_MB),
    ]  # fmt: skip


def environment(lake: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``SHOPLENS_LAKE`` (from ``lake``) and the work dir, absolute if local."""
    env = dict(os.environ if base is None else base)
    if lake:
        env["SHOPLENS_LAKE"] = lake
    for name in ("SHOPLENS_LAKE", "SHOPLENS_WORK_DIR"):
        value = env.get(name)
        if value and "://" not in value:
            env[name] = str(Path(value).resolve())
    env.setdefault("SHOPLENS_LAKE", str(Path("data/lake").resolve()))
    env.setdefault("SHOPLENS_WORK_DIR", str(Path("data/work").resolve()))
    return env


def serve(lake: str | None = None, port: int = DEFAULT_PORT, address: str = "127.0.0.1") -> int:
    """Run the server in the foreground until interrupted; returns its exit code."""
    proc = subprocess.Popen(command(port, address), cwd=DASHBOARD_DIR, env=environment(lake))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
