"""All configuration, read once from the environment (documented in .env.example)."""

from __future__ import annotations

import logging
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.logs import reaches_as_text

#: Used only in demo mode, so that a first run works without set-up; never for real data.
DEMO_PSEUDONYM_KEY = "shoplens-demo-key-do-not-use-for-real-data"
#: A shorter pseudonymization key is refused: HMAC-SHA256 is only as strong as a key's entropy.
MIN_KEY_BYTES = 32
DEMO_WARNING = "DEMO MODE: pseudonymizing with the public demo key; user keys are NOT protected"
_KEY_HINT = "(python -c 'import secrets;print(secrets.token_hex(32))')"

log = logging.getLogger("shoplens.settings")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


class Settings(BaseSettings):
    """shoplens settings; every field maps to ``SHOPLENS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SHOPLENS_", extra="ignore")

    lake: str = Field("./data/lake", description="Lake root: a local path or s3://bucket/prefix")
    work_dir: Path = Field(Path("./data/work"), description="Local scratch space for staging and caches")
    pseudonym_key: SecretStr | None = Field(None, description="Secret key for HMAC pseudonymization")
    demo: bool = Field(False, description="Allow running without a key, with a public demo key")

    spark_master: str = Field("local[*]", description="Spark master URL")
    spark_driver_memory: str = Field("4g", description="Spark driver memory")
    spark_executor_memory: str = Field("2g", description="Spark executor memory (cluster mode)")
    jvm_archive: Path | None = Field(None, description="The driver JVM's class-data-sharing archive (default: "
                                     "beside pyspark in this Python environment; services/core/jvm_archive.py)")
    spark_auth_secret: SecretStr | None = Field(None, description="Shared secret of a standalone cluster's "
                                                "RPC authentication (spark.authenticate), with RPC encryption")
    spark_s3a: bool = Field(False, description="Configure Spark's s3a:// connector for the S3 endpoint (needs the jars)")

    s3_endpoint: str | None = Field(None, description="host:port of the S3/MinIO server")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False
    s3_region: str | None = None

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto (text on a terminal, JSON lines otherwise), json or text")
    log_stream: Literal["stdout", "stderr"] = Field("stderr", description="Where logs go (stdout in the stack)")
    spark_console: bool = Field(False, description="Let Spark's own log reach the console (`--verbose`); "
                                "otherwise it goes to <work_dir>/logs/spark.log")
    pushgateway_url: str | None = Field(None, description="host:port of the Prometheus Pushgateway")

    ingest_max_line_bytes: int = Field(1 << 20, ge=1024, description="A longer line refuses its input file")
    ingest_max_decompressed_bytes: int = Field(64 << 30, ge=1, description="More decompressed data refuses the file")
    ingest_max_expansion: float = Field(100.0, gt=1, description="A gzip expanding more than this many times its "
                                        "size (beyond 256 MiB) is refused as a decompression bomb")
    writer_lease_seconds: float = Field(60.0, gt=0, description="A writer's lease on the lake expires this long "
                                        "after its holder stops renewing it (it died)")
    writer_wait_seconds: float = Field(0.0, ge=0, description="How long a second writer waits for the lease "
                                       "before refusing (the watcher retries on its next pass)")
    incoming: str | None = Field(None, description="Where new event files are dropped, e.g. s3://incoming/")
    quarantine_files: str | None = Field(
        None, description="Where the watcher moves rejected files (default: <incoming>/_failed/)"
    )
    poll_seconds: float = Field(5.0, description="How often the watcher lists the incoming location")
    settle_seconds: float = Field(5.0, description="How long a new file must stay unchanged before it is taken")
    retrain_new_runs: int = Field(1, description="Retrain after this many new ingestion runs (0 = never)")
    retrain_age_days: float = Field(7.0, description="Retrain when the model is this many days old (0 = never)")
    metrics_port: int = Field(9108, description="Port long-running services serve /metrics on")
    warehouse_url: str = Field(
        "sqlite:///./data/shoplens.db", description="SQLAlchemy URL of the SQL warehouse results are published to"
    )
    erasure_max_age_hours: float = Field(24.0, ge=0, description="The pipeline's `erasure` stage carries out "
                                         "pending erasure requests once the oldest has waited this long")
    retention_versions: int = Field(3, ge=1, description="Versions kept per versioned dataset (the current one included)")
    retention_event_days: int | None = Field(None, ge=1, description="Delete events older than this (default: keep all)")
    retention_processed_days: int | None = Field(30, ge=0, description="Delete processed raw files older than this")
    retention_rejected_days: int | None = Field(30, ge=0, description="Delete rejected raw files older than this")
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes of `shoplens api` (one core each)")
    clv_horizon_months: int = Field(12, ge=1, description="Lifetime value horizon in months (30-day months)")
    clv_monthly_discount: float = Field(0.01, ge=0, lt=1, description="Monthly discount rate of lifetime value")
    api_key: SecretStr | None = Field(
        None, description="Bearer token the scoring API requires (no default: `shoplens api` refuses to start "
        "without one, also in demo mode)",
    )  # fmt: skip
    api_max_body_bytes: int = Field(5_000_000, ge=1024, description="Largest request body the scoring API reads "
                                    "(bigger ones get 413 while they stream, before any decoding)")  # fmt: skip
    s3_timeout_seconds: float = Field(10.0, gt=0, description="Connect and read timeout of one S3 request")
    s3_retry_seconds: float = Field(30.0, gt=0, description="Longest time one S3 call keeps retrying before it fails")

    @property
    def key_bytes(self) -> bytes:
        """The pseudonymization key; in demo mode without a key, the public demo key (with a warning).

        Refused: no key outside demo mode, the public demo key outside demo mode, a key under
        MIN_KEY_BYTES. Which key a lake was written with is checked by Lake.bind_key.
        """
        if self.pseudonym_key is not None:
            key = self.pseudonym_key.get_secret_value().encode("utf-8")
            if key == DEMO_PSEUDONYM_KEY.encode("utf-8"):
                if not self.demo:
                    raise ConfigError("SHOPLENS_PSEUDONYM_KEY is the public demo key: set a secret of your own "
                                      f"{_KEY_HINT}, or SHOPLENS_DEMO=1 for a demo")
                _warn_demo()
            elif len(key) < MIN_KEY_BYTES:
                raise ConfigError(f"SHOPLENS_PSEUDONYM_KEY is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                                  f"random bytes {_KEY_HINT}")
            return key
        if not self.demo:
            raise ConfigError(f"SHOPLENS_PSEUDONYM_KEY is not set: set a long random secret {_KEY_HINT}, "
                              "or SHOPLENS_DEMO=1 to try shoplens")
        _warn_demo()
        return DEMO_PSEUDONYM_KEY.encode("utf-8")


_demo_warned: list[bool] = []


def _warn_demo() -> None:
    """Say once per process, in the log (which may go to ELK) and on the console, that keys are public.

    The console line is printed only when the log does not already show the warning there as text.
    """
    if _demo_warned:
        return
    _demo_warned.append(True)
    log.warning(DEMO_WARNING, extra={"demo": True})
    if not reaches_as_text(log, logging.WARNING, sys.stderr):
        print(f"shoplens: warning: {DEMO_WARNING}", file=sys.stderr)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build :class:`Settings` directly instead)."""
    return Settings()
