"""``shoplens export``: a published table as one CSV or Parquet file for CRM and BI tools.

Only pseudonymized user keys leave the lake this way (the tables never hold raw ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.core.lake import Lake
from services.core.readers import read_customer_values, read_features, read_propensity, read_segments


def export_table(lake: Lake, what: str, fmt: str, out: Path, step: str | None = None) -> dict[str, Any]:
    """Write the current segments or features to ``out`` as one CSV or Parquet file (pseudonymized keys).

    ``funnel-dropoffs`` needs ``step``: the users of the current funnel who reached it and not the next.
    """
    if what == "segments":
        df = read_segments(lake)
        if df is None:
            raise FileNotFoundError("no segments yet: run `shoplens score`")
        values = read_customer_values(lake, ["user_key", "p_alive", "clv", "horizon_months"])
        if values is not None:  # lifetime value beside the segment (null for users without a purchase)
            df = df.merge(values.rename(columns={"horizon_months": "clv_horizon_months"}), on="user_key", how="left")
    elif what == "features":
        df, _ = read_features(lake)
    elif what == "propensity":
        df = read_propensity(lake)
        if df is None:
            raise FileNotFoundError("no propensity scores yet: run `shoplens propensity score`")
    elif what == "funnel-dropoffs":
        if not step:
            raise ValueError("export funnel-dropoffs needs --step (a step of the current funnel, e.g. cart)")
        from services.jobs.funnel import read_dropoffs  # Spark-free, but its module imports pyspark

        df = read_dropoffs(lake, step)
    elif what == "clv":
        df = read_customer_values(lake)
        if df is None:
            raise FileNotFoundError("no lifetime values yet: run `shoplens clv fit`")
    else:
        raise ValueError(
            f"export what must be 'segments', 'features', 'propensity', 'funnel-dropoffs' or 'clv', got {what!r}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out)
    elif fmt == "csv":
        df.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    else:
        raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")
    return {"what": what, "format": fmt, "out": str(out), "rows": len(df), "columns": list(df.columns)}


__all__ = ["export_table"]
