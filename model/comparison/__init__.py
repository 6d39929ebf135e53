"""Model families weighed against the shipped ones, on the same inputs and the same splits.

Three questions, one module each: which clustering (:mod:`.clustering`), which classifier assigns a
customer to a segment from their first n events (:mod:`.assignment`), which purchase-propensity model
(:mod:`.propensity`). Each returns one :class:`.table.Table`: a row per family, the winner and why.
Pure: arrays and frames in, tables out; reading and publishing are ``services.jobs.compare_models``.
"""

from model.comparison.assignment import ASSIGNERS, compare_assigners
from model.comparison.clustering import CLUSTERINGS, compare_clusterings
from model.comparison.propensity import PROPENSITY_FAMILIES, compare_propensity
from model.comparison.table import Table, pick_winner

__all__ = [
    "ASSIGNERS",
    "CLUSTERINGS",
    "PROPENSITY_FAMILIES",
    "Table",
    "compare_assigners",
    "compare_clusterings",
    "compare_propensity",
    "pick_winner",
]
