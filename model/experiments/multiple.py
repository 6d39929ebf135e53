"""Multiple-comparison adjustment across every variant x metric comparison."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from statsmodels.stats.multitest import multipletests

Correction = Literal["holm", "fdr_bh"]


def adjust_p_values(p_values: Sequence[float], method: Correction = "holm") -> NDArray[np.float64]:
    """Holm (family-wise error, Holm 1979) or Benjamini-Hochberg (false discovery rate, 1995) p-values.

    Comparisons without a p-value (nan: an empty arm, zero variance) are left out of the family and
    stay nan, so a degenerate metric neither dilutes nor blocks the others.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method=method)[1]
    return adjusted
