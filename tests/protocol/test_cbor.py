"""Canonical, bounded DAG-CBOR: every rule, both sides.

Method: hand-written byte strings for each way a document can be wrong (the CBOR
spec's alternative spellings of the same value, forbidden kinds, hostile lengths),
and round trips for the values we do allow.
"""

from __future__ import annotations

import cbor2
import pytest

from swarm.protocol import cbor
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.errors import DecodeError, LocalProtocolError


@pytest.mark.parametrize(
    "value",
    [0, 1, 23, 24, 255, 256, 2**32, 2**64 - 1, -1, -(2**64), "", "héllo", b"", b"\x00" * 40,
     [], [1, [2, [3]]], {}, {"a": 1, "bb": 2, "c": [True, False, None]},
     {"link": dag_cbor_cid(b"x")}],
)
def test_round_trip(value: object) -> None:
    data = cbor.encode(value)
    assert cbor.decode(data) == value
    assert cbor.encode(cbor.decode(data)) == data


def test_map_keys_sorted_length_first() -> None:
    # DAG-CBOR orders keys by encoded length, then bytewise: "b" < "aa".
    assert cbor.encode({"aa": 1, "b": 2}) == bytes.fromhex("a2616202626161" "01")


@pytest.mark.parametrize(
    ("hex_data", "code"),
    [
        ("1800", "non_canonical"),  # 0 encoded in two bytes
        ("190001", "non_canonical"),  # 1 encoded in three bytes
        ("a2616201616101", "non_canonical"),  # keys out of order
        ("a2616101616102", "non_canonical"),  # duplicate key
        ("5800", "non_canonical"),  # empty byte string with a 1-byte length
        ("9f00ff", "decode"),  # indefinite-length array
        ("5f4100ff", "decode"),  # indefinite-length byte string
        ("f93c00", "forbidden_type"),  # half float 1.0
        ("fb3ff0000000000000", "forbidden_type"),  # double 1.0
        ("f7", "forbidden_type"),  # undefined
        ("f0", "forbidden_type"),  # simple value 16
        ("c074323032302d30312d30315430303a30303a30305a", "forbidden_type"),  # tag 0 date
        ("d9d9f700", "forbidden_type"),  # self-describe tag 55799 around 0
        ("c249010000000000000000", "forbidden_type"),  # bignum 2^64
        ("a10101", "decode"),  # integer map key
        ("62ff00", "decode"),  # invalid UTF-8
        ("0000", "trailing"),
        ("", "truncated"),
        ("a1", "truncated"),
        ("5b0000010000000000", "truncated"),  # byte string claiming 2^40 bytes
        ("9b1000000000000000", "truncated"),  # array claiming 2^60 items
        ("d82a4100", "decode"),  # CID link too short
        ("d82a430171ff", "decode"),  # CID link without the 0x00 prefix
        ("d81c81d81d00", "forbidden_type"),  # shared-reference cycle
        ("d9010082d8196161d81900", "forbidden_type"),  # string-reference namespace
    ],
)
def test_rejects(hex_data: str, code: str) -> None:
    with pytest.raises(DecodeError) as info:
        cbor.decode(bytes.fromhex(hex_data))
    assert info.value.code == code, info.value


def test_every_tag_but_42_is_refused() -> None:
    # cbor2 decodes some tags natively (dates, bignums, sets, shared values, string
    # references); none may reach it. Probe far past the ones it knows today.
    for tag in range(70_000):
        if tag == 42:
            continue
        with pytest.raises(DecodeError) as info:
            cbor.decode(cbor2.dumps(cbor2.CBORTag(tag, 0)))
        assert info.value.code in ("forbidden_type", "decode"), (tag, info.value)


def test_shared_values_cannot_amplify_memory() -> None:
    # Found by review: 2.8 KB of shared references re-encoded to 191 MB (and 7 KB to
    # 1.9 GB) before tags 28/29 were refused at decode time.
    x: list[object] = [b"\0" * 1000]
    for _ in range(2):
        x = [x] * 300
    data = cbor2.dumps(x, value_sharing=True)
    assert len(data) < 4000
    with pytest.raises(DecodeError) as info:
        cbor.decode(data)
    assert info.value.code == "forbidden_type"


def test_depth_limit() -> None:
    limits = cbor.Limits(depth_max=4)
    assert cbor.decode(b"\x81" * 4 + b"\x00", limits) == [[[[0]]]]
    with pytest.raises(DecodeError) as info:
        cbor.decode(b"\x81" * 5 + b"\x00", limits)
    assert info.value.code == "too_deep"
    with pytest.raises(DecodeError):
        cbor.decode(b"\x81" * 100_000 + b"\x00")


def test_size_and_item_limits() -> None:
    with pytest.raises(DecodeError) as info:
        cbor.decode(cbor.encode(b"x" * 100), cbor.Limits(size_bytes_max=50))
    assert info.value.code == "too_large"
    with pytest.raises(DecodeError) as info:
        cbor.decode(cbor.encode(list(range(20))), cbor.Limits(items_max=10))
    assert info.value.code == "too_many_items"


def test_error_names_the_path() -> None:
    data = cbor2.dumps({"a": [1, 2.5]}, canonical=True)
    with pytest.raises(DecodeError) as info:
        cbor.decode(data)
    assert info.value.field == "a[1]"


def test_cid_link_decodes_to_cid() -> None:
    cid = dag_cbor_cid(b"hello")
    data = cbor.encode([cid])
    assert data[:3] == bytes.fromhex("81d82a")
    (out,) = cbor.decode(data)
    assert isinstance(out, Cid) and out == cid


@pytest.mark.parametrize("value", [1.5, {1: "a"}, 2**64, {"a": object()}, {1, 2}])
def test_encode_refuses_values_outside_the_model(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        cbor.encode(value)


def test_non_bytes_input() -> None:
    with pytest.raises(DecodeError):
        cbor.decode("text")  # type: ignore[arg-type]
