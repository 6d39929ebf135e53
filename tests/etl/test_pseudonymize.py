"""Every pseudonymization path gives the RFC 2104 HMAC-SHA256 that Python's ``hmac`` module computes."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pytest

from etl.online_retail import key_columns
from etl.pseudonymize import pseudonymize, pseudonymize_array

VALUES = ["512475445", "u-1", "", "ünïcødé", None, "512475445"]
KEYS = [b"k", b"a-32-byte-key-for-the-lake-xxxxx", b"x" * 64, b"y" * 100]  # short, typical, block, hashed


def _reference(value: str | None, key: bytes) -> str | None:
    return None if value is None else hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", KEYS, ids=["1B", "32B", "64B", "100B"])
def test_the_arrow_and_python_paths_equal_the_hmac_module(key):
    want = [_reference(v, key) for v in VALUES]
    assert pseudonymize_array(pa.array(VALUES, pa.string()), key).to_pylist() == want
    encoded = pseudonymize_array(pa.chunked_array([VALUES[:3], VALUES[3:]], pa.string()), key, encoded=True)
    assert isinstance(encoded, pa.DictionaryArray) and encoded.to_pylist() == want
    assert len(encoded.dictionary) == 4  # one digest per distinct id
    assert [pseudonymize(v, key) for v in VALUES if v is not None] == [w for w in want if w is not None]


@pytest.mark.spark
@pytest.mark.parametrize("key", KEYS, ids=["1B", "32B", "64B", "100B"])
def test_the_spark_arrow_step_equals_the_hmac_module_and_keeps_the_key_out_of_the_plan(spark, key):
    """The order path keys ids in mapInArrow tasks: same digests, and neither the key nor its HMAC pads
    (what a SQL-built HMAC put in the plan as literals) appear in ``explain()``."""
    frame = key_columns(spark.createDataFrame([(v,) for v in VALUES], "v string"), ("v",), key)
    assert [r[0] for r in frame.collect()] == [_reference(v, key) for v in VALUES]
    plan = frame._jdf.queryExecution().toString()
    short = key if len(key) <= 64 else hashlib.sha256(key).digest()
    pads = [bytes(b ^ x for b in short.ljust(64, b"\0")) for x in (0x36, 0x5C)]
    for secret in (key, *pads):
        for text in (secret.hex(), secret.hex().upper(), " ".join(f"{b:02X}" for b in secret[:16])):
            assert text not in plan


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError, match="must not be empty"):
        pseudonymize_array(pa.array(["a"]), b"")
