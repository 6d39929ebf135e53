"""The result documents jobs publish and pages, the API and tests read, each typed once.

One pydantic model per JSON document; the job builds it, :meth:`Document.to_dict` is its one
serialization (what lands in the lake) and :meth:`Document.read` / :meth:`Document.from_dict` the one
way back, so a writer, a reader and a test fixture cannot disagree on a field without a validation
error. The types live in ``services.core`` because every layer that touches the documents may import
it: the jobs and reports above, the dashboard beside (``pyproject.toml`` import contracts).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from services.core.lake import Lake


class OutdatedDocument(ValueError):
    """A stored document this release cannot read: written by another release (the stage that writes it
    writes a current one)."""


class Part(BaseModel):
    """A typed piece of a document: unknown fields are an error (a typo in a writer is caught)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Document(Part):
    """A JSON document published as ``<DATASET>/<version>/<FILE>``."""

    DATASET: ClassVar[str]
    FILE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON-ready values: what the job writes and the report renders."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_dict(cls, obj: Any) -> Self:
        return cls.model_validate(obj)

    @classmethod
    def key(cls, version: str) -> str:
        return f"{cls.DATASET}/{version}/{cls.FILE}"

    @classmethod
    def read(cls, lake: Lake, version: str) -> Self:
        """The document of ``version`` (FileNotFoundError if that version has none, :class:`OutdatedDocument`
        if it does not have this release's fields)."""
        return cls.read_key(lake, cls.key(version))

    @classmethod
    def read_key(cls, lake: Lake, key: str) -> Self:
        """The document stored at ``key`` (see :meth:`read`). The error names the fields, never their values."""
        try:
            return cls.from_dict(lake.read_json(key))
        except ValidationError as err:
            fields = sorted({".".join(map(str, e["loc"])) for e in err.errors()})
            raise OutdatedDocument(
                f"{key} does not have this release's fields ({', '.join(fields[:5])}"
                f"{', ...' if len(fields) > 5 else ''}): it was written by another shoplens release"
            ) from None


__all__ = ["Document", "OutdatedDocument", "Part"]
