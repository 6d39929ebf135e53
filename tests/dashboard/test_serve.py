"""``shoplens dashboard``: the launcher's command line and environment."""

from __future__ import annotations

from typer.testing import CliRunner

from dashboard.serve import APP, DASHBOARD_DIR, command, environment
from services.cli import app


def test_environment_makes_local_paths_absolute_and_keeps_s3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = environment("lake", {"SHOPLENS_WORK_DIR": "w", "PATH": "/bin"})
    assert env["SHOPLENS_LAKE"] == str(tmp_path / "lake") and env["SHOPLENS_WORK_DIR"] == str(tmp_path / "w")
    assert env["PATH"] == "/bin"
    assert environment("s3://b/lake", {})["SHOPLENS_LAKE"] == "s3://b/lake"
    assert environment(None, {"SHOPLENS_LAKE": "s3://x/y"})["SHOPLENS_LAKE"] == "s3://x/y"


def test_command_runs_the_app_on_the_given_port():
    cmd = command(8765, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(APP)
    assert cmd[cmd.index("--server.port") + 1] == "8765" and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert (DASHBOARD_DIR / ".streamlit" / "config.toml").exists()  # applies because the server runs from there


def test_cli_dashboard_passes_lake_port_and_address(monkeypatch):
    calls = []
    monkeypatch.setattr("dashboard.serve.serve", lambda lake, port, address: calls.append((lake, port, address)) or 0)
    result = CliRunner().invoke(app, ["dashboard", "--lake", "/data/lake", "--port", "9000"])
    assert result.exit_code == 0, result.output
    assert calls == [("/data/lake", 9000, "127.0.0.1")]
