"""The pipeline as a picture, drawn from the catalog: each stage, in order, with the datasets it writes.

Drawn from :data:`services.core.catalog.CATALOG` (who writes what) and the stage order given by the
caller, so the picture cannot drift from the code. Published datasets are drawn filled, the others
outlined (the dossier shows what this lake holds).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.core.catalog import CATALOG
from services.reports.dossier import Chart, png_bytes

#: Stages that are not pipeline stages but write datasets, placed where they belong in the flow.
BEFORE = ("ingest",)
AFTER = ("describe", "abtest", "mmm", "compare_models", "dossier")


def pipeline_chart(stages: Sequence[str], published: set[str], name: str = "pipeline") -> Chart:
    """One column per stage (arrows between them), its datasets stacked below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    order = [*BEFORE, *stages, *(s for s in AFTER if s not in stages)]
    writes = {s: [d.path for d in CATALOG if d.written_by == s] for s in order}
    order = [s for s in order if writes[s] or s in stages]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    ax.set_axis_off()
    width, gap = 1.0, 0.35
    depth = max((len(v) for v in writes.values()), default=1)
    for i, stage in enumerate(order):
        x = i * (width + gap)
        ax.add_patch(FancyBboxPatch((x, 0), width, 0.5, boxstyle="round,pad=0.03", fc="#4c78a8", ec="none"))
        ax.text(x + width / 2, 0.25, stage.replace("_", "\n"), ha="center", va="center", color="white", fontsize=8)
        if i < len(order) - 1:
            ax.annotate("", xy=(x + width + gap - 0.02, 0.25), xytext=(x + width + 0.02, 0.25),
                        arrowprops={"arrowstyle": "->", "color": "#555"})  # fmt: skip
        for j, path in enumerate(writes[stage]):
            y = -0.45 - j * 0.45
            on = path in published
            ax.add_patch(FancyBboxPatch((x, y), width, 0.35, boxstyle="round,pad=0.02",
                                        fc="#dbe7f3" if on else "white", ec="#4c78a8", lw=0.8))  # fmt: skip
            ax.text(x + width / 2, y + 0.175, path.replace("/", "/\n"), ha="center", va="center", fontsize=6.5)
    ax.set_xlim(-0.1, len(order) * (width + gap))
    ax.set_ylim(-0.5 - depth * 0.45, 0.7)
    return Chart(name, png_bytes(fig), "The pipeline: stages in order (blue) and the datasets each writes (filled: "
                 "published in this lake)")


__all__ = ["pipeline_chart"]
