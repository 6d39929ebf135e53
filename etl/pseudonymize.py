"""Keyed pseudonymization of user and session ids.

Why a key: REES46 user ids are 9-digit numbers, so an unkeyed SHA-256 can be reversed by hashing all
10^9 candidates, which takes seconds on a laptop GPU and minutes on a CPU. HMAC-SHA256 with a secret
key (RFC 2104) makes that enumeration impossible without the key, while staying deterministic so the
same user gets the same key in every file and run.

The Spark expression and the pure-Python twin produce the same lowercase hex digest; the twin lets the
dashboard and ``shoplens predict`` find a user without Spark.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark only for the Spark twin: the dashboard and `shoplens predict` run without it
    from pyspark.sql import Column

_BLOCK_SIZE = 64  # SHA-256 block size in bytes (RFC 2104, B)


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if not key:
        raise ValueError("the pseudonymization key must not be empty")
    if len(key) > _BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK_SIZE, b"\0")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)


def pseudonymize(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, as 64 lowercase hex characters."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymize_col(col: Column, key: bytes) -> Column:
    """The same HMAC as :func:`pseudonymize`, built from Spark SQL functions (no Python UDF).

    HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)); null stays null.
    """
    from pyspark.sql import functions as F

    ipad, opad = _pads(key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(col, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)
