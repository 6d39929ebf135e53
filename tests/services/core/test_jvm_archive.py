"""The driver JVM's class-data-sharing archive, recorded and mapped by a real JVM.

Whether a JVM mapped the archive is read from the JVM itself: ``-Xlog:class+load`` names the source of
every class, and classes from a dynamic archive come from "shared objects file (top)".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.jvm_archive import build, default_archive, sharing_option, usable
from services.core.spark import driver_java_options

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
SESSION = (
    "import sys; from services.core.settings import Settings; from services.core.spark import get_spark; "
    "s = get_spark(Settings(jvm_archive=sys.argv[1], work_dir=sys.argv[2], spark_master='local[1]'), "
    "quick_start=sys.argv[3] == 'quick'); "
    "print(s.range(5).count()); "
    "print(s.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())"
)


def classes_from_the_archive(archive: Path, tmp: Path, start: str = "full") -> int:
    """Start a shoplens SparkSession with ``archive`` configured; count the classes it mapped from it.

    ``start="quick"`` asks for the quick-start session, whose JVM must run with the client compiler only.
    """
    logs = tmp / "class-logs"
    logs.mkdir(parents=True)
    env = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={logs}/jvm-%p.log"}
    done = subprocess.run([sys.executable, "-c", SESSION, str(archive), str(tmp / "work"), start], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    count, jvm_args = done.stdout.strip().splitlines()[-2:]
    assert count == "5"
    assert ("-XX:TieredStopAtLevel=1" in jvm_args) == (start == "quick"), jvm_args
    return sum(f.read_text().count("source: shared objects file (top)") for f in logs.iterdir())


def recorded_archive(tmp: Path) -> Path:
    """The archive the install recorded (setup_project.sh runs the recorder), else one recorded here.

    Recording takes a JVM run of its own, so the suite reuses the install's archive where there is one.
    """
    installed = default_archive()
    archive = installed if installed is not None and installed.is_file() else build(tmp / "spark.jsa")
    assert archive is not None and archive.stat().st_size > 10_000_000
    assert not [p.name for p in archive.parent.iterdir() if p.name.endswith(".tmp")]  # no recorder's file left
    return archive


def test_a_recorded_archive_is_mapped_and_a_damaged_one_only_costs_speed(tmp_path, caplog):
    archive = recorded_archive(tmp_path)
    recorded = archive.stat().st_mtime_ns
    assert build(archive) == archive and archive.stat().st_mtime_ns == recorded  # recorded once

    assert classes_from_the_archive(archive, tmp_path / "mapped") > 2_000
    assert classes_from_the_archive(archive, tmp_path / "quick", start="quick") > 2_000  # C1 only maps it too

    damaged = tmp_path / "damaged.jsa"
    damaged.write_bytes(archive.read_bytes()[:1_000_000])  # a JVM mapping this one crashes
    assert usable(archive) and not usable(damaged)
    assert f"-XX:SharedArchiveFile={archive}" in driver_java_options(archive).split()
    with caplog.at_level("WARNING", logger="shoplens.spark"):  # the session starts as without an archive
        assert driver_java_options(damaged) == driver_java_options(None) == "-Duser.timezone=UTC"
    assert "damaged" in caplog.text


def test_no_option_without_an_archive(tmp_path):
    assert sharing_option(None) == ""
    assert sharing_option(tmp_path / "absent.jsa") == ""
    assert not usable(tmp_path / "absent.jsa")
    default = default_archive()
    assert default is not None and default.is_relative_to(sys.prefix) and default.suffix == ".jsa"
