"""Wiring from settings to the objects a command needs (store, lake)."""

from __future__ import annotations

from services.core.lake import Lake
from services.core.settings import Settings
from services.core.storage import Store, make_minio_client, open_store


def open_location(settings: Settings, uri: str) -> Store:
    """The store at ``uri`` (a local path or ``s3://bucket/prefix`` on ``SHOPLENS_S3_ENDPOINT``)."""
    client = None
    if uri.startswith("s3://") and settings.s3_endpoint:
        client = make_minio_client(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value() if settings.s3_access_key else "",
            settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else "",
            secure=settings.s3_secure,
            region=settings.s3_region,
            timeout=settings.s3_timeout_seconds,
        )
    return open_store(uri, client, settings.s3_retry_seconds)


def open_lake(settings: Settings, lake_uri: str | None = None) -> Lake:
    """The lake at ``lake_uri`` (or ``SHOPLENS_LAKE``), on local disk or S3."""
    return Lake(open_location(settings, lake_uri or settings.lake), settings.work_dir,
                lease_seconds=settings.writer_lease_seconds, lease_wait_seconds=settings.writer_wait_seconds)
