"""The dossier's comparison section when a challenger clearly beats a shipped model (issue 34).

The comparison document is computed by :func:`model.comparison.compare_assigners` on short histories
with a systematic shift (the centroid rule misreads them, K-NN learns the shift), published in a local
lake like ``compare-models`` publishes it, then read by the section builder: the section must say that
K-NN beats the shipped rule, by how much (the table's own figures) and what switching would cost; the
summary's sentence, who wins and by how much. Two families only, no Spark: a few seconds.
"""

from __future__ import annotations

import numpy as np

from model.comparison.assignment import ASSIGNERS, nearest_centroid
from services.core.catalog import MODEL_COMPARISON
from services.core.publish import new_version


def _shifted_study(seed: int = 0):
    rng = np.random.default_rng(seed)
    C = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    full = C[rng.integers(0, 3, 400)] + rng.normal(0, 1.0, (400, 2))
    ns = (5, 10, 20, 40)
    first = np.vstack([full + 12.0 / n + rng.normal(0, 0.2 / np.sqrt(n), full.shape) for n in ns])
    user = np.tile(np.arange(len(full)), len(ns))
    shipped = nearest_centroid(C, np.array([10, 11, 12]))
    return first, np.repeat(ns, len(full)), user, shipped(full)[user], full, np.arange(len(full)), shipped


def test_a_challenger_that_beats_the_shipped_rule_is_said_with_its_gain_and_cost(local_lake) -> None:
    from model.comparison import compare_assigners
    from services.jobs.compare_models import ComparisonResult
    from services.jobs.dossier import summary
    from services.jobs.dossier_sections import comparison_section

    table = compare_assigners(*_shifted_study(), ns=(5, 10, 20, 40), seed=1, assigners=ASSIGNERS[:2]).to_dict()
    doc = ComparisonResult(version="v1", computed_at="2026-12-07T00:00:00+00:00", seed=1, inputs={},
                           tables={"assignment": table}).to_dict()  # fmt: skip
    with new_version(local_lake, MODEL_COMPARISON, "v1") as staged:
        staged.write_json("comparison.json", doc)

    section = comparison_section(local_lake)
    shipped, knn = table["rows"]
    assert table["winner"] == knn["family"] == "K-NN (k=15)" and table["shipped"] == shipped["family"]
    assert knn["mean_agreement"] - shipped["mean_agreement"] >= 0.02
    text = " ".join(p for p in section.parts if isinstance(p, str))
    gain = f"({knn['mean_agreement']:.3f} against {shipped['mean_agreement']:.3f})"
    assert "Winner: K-NN (k=15). K-NN (k=15) agrees with the full-history segment" in text and gain in text
    assert "switching would cost a classifier retrained with every model" in text
    assert "trust figure and the event threshold" in text  # what the shipped rule's calibration would need
    [insight] = section.insights  # the summary's sentence: who wins and by how much; the cost is in the section
    assert insight == ("Assigning a customer to a segment from the first n events: K-NN (k=15) beats the shipped "
                       f"Nearest centroid: it agrees with the full-history segment "
                       f"{knn['mean_agreement'] - shipped['mean_agreement']:+.3f} more often on average {gain}.")  # fmt: skip
    assert summary([section])[1] == [insight]
