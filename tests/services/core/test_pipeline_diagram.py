"""docs/pipeline.dot (the source of docs/pipeline.png) names every stage and every dataset of the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.core.catalog import CATALOG
from services.jobs.stages import STAGES

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _labels() -> set[str]:
    text = (DOCS / "pipeline.dot").read_text(encoding="utf-8")
    quoted = re.findall(r'"([^"]+)"', text)
    labels = re.findall(r'label="([^"]+)"', text)
    bare = re.findall(r"(?:^|[;{\s])([a-z_]+)(?=\s*(?:->|;))", text, flags=re.MULTILINE)
    return {q.strip() for q in quoted} | set(labels) | set(bare)


def test_every_stage_and_dataset_is_in_the_diagram() -> None:
    labels = _labels()
    missing = [s.name for s in STAGES if s.name not in labels] + [d.path for d in CATALOG if d.path not in labels]
    assert not missing, f"docs/pipeline.dot lacks {missing}: add them and regenerate docs/pipeline.png"


def test_the_committed_image_is_rendered_from_the_source(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (apt-get install -y graphviz)")
    out = tmp_path / "pipeline.png"
    subprocess.run(["dot", "-Tpng", "-Gdpi=110", str(DOCS / "pipeline.dot"), "-o", str(out)], check=True)
    from PIL import Image

    # the same picture (graphviz versions may differ in bytes, not in layout size beyond a few pixels)
    new, committed = Image.open(out).size, Image.open(DOCS / "pipeline.png").size
    assert all(abs(a - b) <= 0.02 * b for a, b in zip(new, committed, strict=True)), (new, committed)
