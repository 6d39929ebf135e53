"""``shoplens retention-policy`` and the ``retention_policy`` stage: keep personal data no longer than the policy says.

The policy (settings, ``SHOPLENS_RETENTION_*``):

- ``retention_versions`` (default 3): versions kept per versioned dataset, the current one always
  among them (newest first by version id, which sorts by time). Fewer copies also means fewer for an
  erasure to rewrite.
- ``retention_event_days`` (default: keep all): events whose ``event_date`` is older are deleted,
  whole partitions at a time.
- ``retention_processed_days`` / ``retention_rejected_days`` (default 30): processed raw files
  (``<incoming>/_processed/``) and rejected raw files (the quarantine location) older than that, by
  the store's modification time.

The erasure ledger is the audit trail and is never touched. Deleting a version that is not current, an
events partition, or a raw file is invisible to every reader (pointers and committed runs name what is
read), so a crash midway leaves nothing half-visible and a rerun deletes the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.core.catalog import CURRENT_POINTER, EVENTS, VERSIONED
from services.core.lake import Lake
from services.jobs.erasure import Targets

log = logging.getLogger("shoplens.retention_policy")


@dataclass(frozen=True)
class Policy:
    """How long what is kept (``None`` days: keep all)."""

    versions: int = 3
    event_days: int | None = None
    processed_days: int | None = 30
    rejected_days: int | None = 30

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        return cls(settings.retention_versions, settings.retention_event_days, settings.retention_processed_days,
                   settings.retention_rejected_days)  # fmt: skip


def plan(lake: Lake, policy: Policy, targets: Targets | None = None, now: datetime | None = None) -> dict[str, list[str]]:
    """What the policy deletes now: store -> prefixes or keys (``raw/...`` ones in the raw stores)."""
    now = now or datetime.now(UTC)
    out: dict[str, list[str]] = {}
    for dataset in VERSIONED:
        current = lake.current_version(dataset)
        versions = sorted({k[len(dataset) + 1:].split("/", 1)[0] for k in lake.store.list(dataset)
                           if not k.endswith(f"/{CURRENT_POINTER}")}, reverse=True)  # fmt: skip
        keep = set(versions[: max(policy.versions, 1)]) | ({current} if current else set())
        old = [f"{dataset}/{v}" for v in versions if v not in keep]
        if old:
            out[dataset] = old
    if policy.event_days is not None:
        oldest = (now - timedelta(days=policy.event_days)).date()
        days = {k.split("event_date=", 1)[1][:10] for k in lake.store.list(EVENTS) if "event_date=" in k}
        old_days = sorted(d for d in days if date.fromisoformat(d) < oldest)
        if old_days:
            out[EVENTS] = [f"{EVENTS}/event_date={d}" for d in old_days]
    ages = {"raw/processed": policy.processed_days, "raw/rejected": policy.rejected_days}
    for loc in (targets or Targets()).raw:
        days_kept = ages.get(loc.name)
        if days_kept is None:
            continue
        cutoff = (now - timedelta(days=days_kept)).timestamp()
        old_files = [i.key for i in loc.store.list_info(loc.prefix) if i.modified < cutoff]
        if old_files:
            out[loc.name] = old_files
    return out


def retention_policy_due(lake: Lake, policy: Policy, targets: Targets | None = None) -> tuple[bool, str]:
    todo = plan(lake, policy, targets)
    if not todo:
        return False, "nothing past the retention policy"
    return True, f"{sum(len(v) for v in todo.values())} item(s) past the retention policy"


def apply_retention(lake: Lake, policy: Policy, targets: Targets | None = None, *, dry_run: bool = False,
                    now: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """Delete what :func:`plan` lists (or only say it, with ``dry_run``); a summary per store."""
    todo = plan(lake, policy, targets, now)
    raw = {loc.name: loc for loc in (targets or Targets()).raw}
    deleted: dict[str, int] = {}
    if not dry_run:
        for store, items in todo.items():
            for item in items:
                if store in raw:
                    deleted[store] = deleted.get(store, 0) + raw[store].store.delete_prefix(item)
                else:
                    deleted[store] = deleted.get(store, 0) + lake.store.delete_prefix(item)
        if todo:
            log.info("retention applied", extra={"stage": "retention_policy", "deleted_objects": sum(deleted.values())})
    return {"dry_run": dry_run, "policy": policy.__dict__, "would_delete" if dry_run else "deleted_items": todo,
            "objects_deleted": deleted}  # fmt: skip


def retention_report(s: dict[str, Any]) -> str:
    items = s.get("would_delete", s.get("deleted_items", {}))
    if not items:
        return "nothing is past the retention policy"
    verb = "would delete" if s["dry_run"] else "deleted"
    return "\n".join(f"{store}: {verb} {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                     for store, v in items.items())  # fmt: skip


__all__ = ["Policy", "apply_retention", "plan", "retention_policy_due", "retention_report"]
