"""Baseline: the ingestion work in DuckDB SQL (multi-threaded, vectorized, spills to disk).

Read, validate (same rules as etl.ingest), drop exact duplicates, HMAC-SHA256 the ids with DuckDB's
sha256 (the same digest as Python's hmac), write Parquet by event date, count events per user.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb

from etl.contract import EVENT_TYPES, MAX_PRICE


def _hmac_sql(column: str, key: bytes) -> str:
    padded = key.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in padded).hex()
    opad = bytes(b ^ 0x5C for b in padded).hex()
    inner = f"unhex(sha256(unhex('{ipad}') || encode({column})))"
    return f"lower(sha256(unhex('{opad}') || {inner}))"


def run(paths: list[Path], out: Path, key: bytes) -> dict[str, int]:
    con = duckdb.connect()
    files = ", ".join(f"'{p}'" for p in paths)
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_csv([{files}], all_varchar=true, header=true, "
        "ignore_errors=true)"
    )
    read = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    con.execute(
        f"""
        CREATE TABLE good AS
        SELECT DISTINCT
            strptime(event_time, '%Y-%m-%d %H:%M:%S UTC') AS event_time, event_type,
            CAST(product_id AS BIGINT) AS product_id, TRY_CAST(category_id AS BIGINT) AS category_id,
            category_code, lower(brand) AS brand, CAST(price AS DOUBLE) AS price,
            {_hmac_sql("user_id", key)} AS user_key, {_hmac_sql("user_session", key)} AS session_key
        FROM raw
        WHERE try_strptime(event_time, '%Y-%m-%d %H:%M:%S UTC') IS NOT NULL
          AND event_type IN ({types})
          AND regexp_full_match(product_id, '[0-9]{{1,19}}')
          AND (category_id IS NULL OR regexp_full_match(category_id, '[0-9]{{1,19}}'))
          AND regexp_full_match(user_id, '[0-9]{{1,19}}')
          AND user_session IS NOT NULL
          AND TRY_CAST(price AS DOUBLE) BETWEEN 0 AND {MAX_PRICE}
        """
    )
    accepted = con.execute("SELECT count(*) FROM good").fetchone()[0]
    con.execute(
        f"COPY (SELECT *, CAST(event_time AS DATE) AS event_date FROM good) TO '{out / 'events'}' "
        "(FORMAT parquet, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)"
    )
    con.execute(
        f"COPY (SELECT user_key, count(*) AS events FROM good GROUP BY user_key) "
        f"TO '{out / 'per_user.parquet'}' (FORMAT parquet)"
    )
    users = con.execute("SELECT count(DISTINCT user_key) FROM good").fetchone()[0]
    return {"rows_read": read, "rows_accepted": accepted, "users": users}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args.paths, args.out, args.key.encode())))
