"""All configuration, read once from the environment (documented in .env.example)."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Used only in demo mode, so that a first run works without set-up; never for real data.
DEMO_PSEUDONYM_KEY = "shoplens-demo-key-do-not-use-for-real-data"


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
    spark_s3a: bool = Field(False, description="Configure Spark's s3a:// connector for the S3 endpoint (needs the jars)")

    s3_endpoint: str | None = Field(None, description="host:port of the S3/MinIO server")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False
    s3_region: str | None = None

    log_level: str = "INFO"
    log_format: str = Field("json", description="json or text")
    log_stream: Literal["stdout", "stderr"] = Field("stderr", description="Where logs go (stdout in the stack)")
    spark_console: bool = Field(False, description="Let Spark's own log reach the console (`--verbose`); "
                                "otherwise it goes to <work_dir>/logs/spark.log")
    pushgateway_url: str | None = Field(None, description="host:port of the Prometheus Pushgateway")

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
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes of `shoplens api` (one core each)")
    clv_horizon_months: int = Field(12, ge=1, description="Lifetime value horizon in months (30-day months)")
    clv_monthly_discount: float = Field(0.01, ge=0, lt=1, description="Monthly discount rate of lifetime value")
    api_key: SecretStr | None = Field(
        None, description="Bearer token the scoring API requires (no default: `shoplens api` refuses to start "
        "without one outside demo mode)",
    )  # fmt: skip

    @property
    def key_bytes(self) -> bytes:
        """The pseudonymization key; in demo mode without a key, the public demo key (with a warning)."""
        if self.pseudonym_key is not None:
            return self.pseudonym_key.get_secret_value().encode("utf-8")
        if not self.demo:
            raise ConfigError(
                "SHOPLENS_PSEUDONYM_KEY is not set: set a long random secret "
                "(python -c 'import secrets;print(secrets.token_hex(32))'), or SHOPLENS_DEMO=1 to try shoplens"
            )
        warnings.warn(
            "DEMO MODE: pseudonymizing with the public demo key; user keys are NOT protected",
            stacklevel=2,
        )
        return DEMO_PSEUDONYM_KEY.encode("utf-8")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build :class:`Settings` directly instead)."""
    return Settings()
