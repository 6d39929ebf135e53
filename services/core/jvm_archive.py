"""Class-data sharing for the driver JVM: every shoplens command's Spark starts about 3 s sooner.

Why: each command is a short-lived process that starts a JVM, and loading and verifying Spark's
classes from its jars is most of that start. Java's dynamic CDS archives (JEP 350) record the classes
one run loaded; later JVMs map them from the archive instead of parsing the jars. On 2 cores the
session came up in 2.7 s instead of 4.8 s and its first Arrow job took 3.7 s instead of 5.0 s; for
ingestion of a few million events that is an eighth of the run.

An archive is valid for one JVM build and one classpath only, so it lives beside pyspark in the
Python environment, named after both. A JVM that cannot use it (another build, a changed classpath, a
damaged file) loads its classes from the jars as before and says so in spark.log: a stale or missing
archive costs speed, never a result. It is recorded once (``python -m services.core.jvm_archive``,
which setup_project.sh and the image build run) by a throwaway process whose JVM writes it on exit
under a temporary name; it is renamed into place only once a JVM has started with it. A damaged
archive would crash the JVM that maps it rather than be ignored, so each session checks it first
(:func:`usable`, a tenth of a second) and starts without it, with a warning, when it fails.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyspark

log = logging.getLogger("shoplens.spark")

#: How long recording may take (a JVM start, a few small jobs and the dump: ~15 s on 2 idle cores, but
#: over 300 s in an image build on a 2-core machine with a load average of 30).
RECORD_TIMEOUT_S = 900


def java_binary() -> Path | None:
    """The ``java`` pyspark starts: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return Path(found).resolve() if found and os.path.isfile(found) else None


def default_archive() -> Path | None:
    """``<python prefix>/share/shoplens/spark-<pyspark version>-<java build>.jsa``; None without Java."""
    java = java_binary()
    if java is None:
        return None
    stat = java.stat()
    build = hashlib.sha256(f"{java}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return Path(sys.prefix) / "share" / "shoplens" / f"spark-{pyspark.__version__}-{build}.jsa"


def usable(archive: Path) -> bool:
    """Whether a JVM starts with ``-XX:SharedArchiveFile=archive`` (~0.1 s).

    A JVM ignores an archive it cannot use (another build, another classpath, not an archive at all),
    but a damaged archive crashes it: a truncated one raises SIGBUS while its pointers are relocated
    (seen with OpenJDK 17). This starts a throwaway JVM with it to find out.
    """
    java = java_binary()
    if java is None or not archive.is_file():
        return False
    with tempfile.TemporaryDirectory() as scratch:  # where a crashing JVM writes its hs_err file
        done = subprocess.run([str(java), f"-XX:SharedArchiveFile={archive}", f"-XX:ErrorFile={scratch}/hs_err.log",
                               "-version"], capture_output=True, timeout=60)  # fmt: skip
    return done.returncode == 0


def sharing_option(archive: Path | None) -> str:
    """The JVM option that maps ``archive`` when it exists and is usable, else nothing (with a warning)."""
    if archive is None or not archive.is_file():
        return ""
    if not usable(archive):
        log.warning("the JVM class archive %s is damaged: Spark starts without it; record it again with "
                    "`python -m services.core.jvm_archive --force`", archive)  # fmt: skip
        return ""
    return f"-XX:SharedArchiveFile={archive}"


def build(archive: Path | None = None, force: bool = False) -> Path | None:
    """Record ``archive`` (default: :func:`default_archive`) unless it exists; returns it, None without Java.

    Raises ``RuntimeError`` with the recorder's last output lines when recording fails.
    """
    archive = archive or default_archive()
    if archive is None or (archive.is_file() and not force):
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(archive.with_name(f".{archive.name}.{os.getpid()}.tmp"))  # the recorder's JVM creates it at exit
    try:
        done = subprocess.run([sys.executable, "-m", "services.core.jvm_archive", "--record", tmp],
                              capture_output=True, text=True, timeout=RECORD_TIMEOUT_S)  # fmt: skip
        if done.returncode != 0 or not usable(Path(tmp)):
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"recording the JVM class archive failed (exit {done.returncode}): {tail}")
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return archive


def _record(tmp: str) -> None:
    """Run the kinds of Spark work shoplens does with ``-XX:ArchiveClassesAtExit``, then end the JVM.

    The JVM writes the archive as it exits; closing its stdin is how pyspark's gateway is told to exit,
    and waiting for it here means the parent sees the file only once it is written.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (
        SparkSession.builder.master("local[2]").appName("shoplens-jvm-archive")
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC -XX:ArchiveClassesAtExit={tmp}")
        .config("spark.sql.session.timeZone", "UTC").config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )  # fmt: skip
    rows = spark.sparkContext.parallelize([(i, f"k{i % 7}", float(i)) for i in range(2_000)], 4)
    df = spark.createDataFrame(rows, "n long, k string, x double")
    df = df.mapInArrow(lambda batches: iter(list(batches)), df.schema)
    df.repartition(4, "k").groupBy("k").agg(F.sum("n"), F.max("x"), F.countDistinct("n")).collect()
    with tempfile.TemporaryDirectory() as scratch:
        df.write.partitionBy("k").parquet(f"{scratch}/p")
        spark.read.parquet(f"{scratch}/p").where(F.col("n") > 3).toArrow()
    gateway = SparkContext._gateway
    spark.stop()
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=RECORD_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description="Record the driver JVM's class-data-sharing archive (once).")
    parser.add_argument("--force", action="store_true", help="record again even if the archive exists")
    parser.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)  # the throwaway recorder
    args = parser.parse_args()
    if args.record:
        _record(args.record)
        return
    archive = build(force=args.force)
    print(f"JVM class archive: {archive}" if archive else "no java found: no JVM class archive")


if __name__ == "__main__":
    main()
