"""CIDs: our hand-built CIDv1 bytes and strings agree with the multiformats package."""

from __future__ import annotations

import hashlib
import os

import pytest
from multiformats import CID, multihash

from swarm.protocol.cid import Cid, b32, dag_cbor_cid
from swarm.protocol.errors import DecodeError


@pytest.mark.parametrize("block", [b"", b"a", os.urandom(100), os.urandom(5000)])
def test_dag_cbor_cid_matches_multiformats(block: bytes) -> None:
    ours = dag_cbor_cid(block)
    theirs = CID("base32", 1, "dag-cbor", multihash.digest(block, "sha2-256"))
    assert ours.raw == bytes(theirs)
    assert str(ours) == str(theirs)
    assert Cid.parse(str(theirs)) == ours


def test_b32_matches_rfc4648() -> None:
    import base64

    for n in range(0, 64):
        raw = hashlib.sha256(bytes([n])).digest()[: n % 33]
        assert b32(raw) == base64.b32encode(raw).decode().lower().rstrip("=")


def test_parse_kubo_cids() -> None:
    # The empty file as Kubo's `ipfs add` prints it (CIDv0), and its CIDv1 form.
    v0 = Cid.parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert v0.version == 0
    assert str(v0) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    v1 = Cid.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert v1.version == 1 and v1.codec == 0x55


@pytest.mark.parametrize(
    "text", ["", "b", "bAFY", "not-a-cid", "b" + "a" * 200, "zzzz", "Qm123"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        Cid.parse(text)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x02\x71\x12\x20" + b"a" * 32, b"\x01\x71\x12\x20" + b"a" * 31,
     b"\x01\x71\x12\x20" + b"a" * 33, b"\x01\x80\x00\x12\x20" + b"a" * 32, b"\x01" * 100],
)
def test_from_bytes_rejects(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Cid.from_bytes(raw)
