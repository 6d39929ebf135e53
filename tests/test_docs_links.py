"""Every relative link in the Markdown of the repository root and docs/ leads somewhere.

The README is the way in and the depth lives in docs/<capability>.md: a page that moves or a
heading that is renamed must not leave a dead link behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")])

#: [text](target) and ![alt](target); the target ends at whitespace or ')'. Code spans are removed first.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Anchors of a page's headings (outside code blocks), numbered like GitHub's when repeated."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for heading in HEADING.findall(text):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """Relative link targets of a page (web addresses and mail links left out)."""
    text = CODE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def dead_links(page: Path) -> list[str]:
    """The links of a page whose file, or whose heading anchor, does not exist."""
    dead = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (fragment and dest.suffix == ".md" and fragment not in anchors(dest)):
            dead.append(target)
    return dead


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert not dead_links(page), f"{page.relative_to(ROOT)} has dead links"


def test_the_check_finds_dead_links(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading, with `code`\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-with-code) [ok](there.md#twice-1) [ok](#local) "
        "[web](https://example.org/x) `[not a link](nowhere.md)`\n\n## Local\n\n"
        "[gone](missing.md) [bad anchor](there.md#nope) ![img](missing.png)\n",
        encoding="utf-8",
    )
    assert dead_links(page) == ["missing.md", "there.md#nope", "missing.png"]


def test_readme_is_the_way_in() -> None:
    """Short, with both commands CI and the demo use, and a link to every page in docs/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    for command in ("./setup_project.sh demo", "./setup_project.sh test", "./setup_project.sh stack"):
        assert command in readme
    linked = {Path(t.partition("#")[0]).name for t in links(ROOT / "README.md")}
    unlinked = {p.name for p in (ROOT / "docs").glob("*.md")} - linked
    assert not unlinked, f"README.md does not link {sorted(unlinked)}"
