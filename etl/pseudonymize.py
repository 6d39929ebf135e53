"""Keyed pseudonymization of user and session ids.

Why a key: REES46 user ids are 9-digit numbers, so an unkeyed SHA-256 can be reversed by hashing all
10^9 candidates, which takes seconds on a laptop GPU and minutes on a CPU. HMAC-SHA256 with a secret
key (RFC 2104) makes that enumeration impossible without the key, while staying deterministic so the
same user gets the same key in every file and run.

The Arrow function (ingestion's tasks, the order path's Arrow step and every Spark-free path) and the
pure-Python one (look-ups of one id) produce the same lowercase hex digest. There is deliberately no
Spark SQL twin: built from SQL functions the HMAC carries the padded key as a literal in the query
plan, which ``explain()``, the Spark UI and error messages show.
"""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pyarrow.compute as pc

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


def pseudonymize_array(values: pa.Array | pa.ChunkedArray, key: bytes, *, encoded: bool = False) -> pa.Array:
    """:func:`pseudonymize` of every value of an Arrow string array; null stays null.

    The HMAC is computed once per distinct value (ids repeat on every event of a user or session), from
    SHA-256 states primed with the padded key once, which saves re-deriving it each time. ``encoded`` returns
    the dictionary-encoded array (a digest per distinct id and an index per row), which Parquet stores
    as is: expanding 64-character digests to every row cost more than computing them.
    """
    if not key:
        raise ValueError("the pseudonymization key must not be empty")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    codes = pc.dictionary_encode(values)
    # HMAC(K, m) = H(K ^ opad || H(K ^ ipad || m)): both padded-key blocks hashed once, each id then
    # costs two copies of a SHA-256 state, 1.6x cheaper than copying an hmac object (same digest)
    ipad, opad = _pads(key)
    inner, outer = hashlib.sha256(ipad), hashlib.sha256(opad)
    digests = []
    for value in codes.dictionary.to_pylist():
        h = inner.copy()
        h.update(value.encode("utf-8"))
        o = outer.copy()
        o.update(h.digest())
        digests.append(o.hexdigest())
    unique = pa.array(digests, pa.string())
    return pa.DictionaryArray.from_arrays(codes.indices, unique) if encoded else unique.take(codes.indices)
