"""The RocksDB block store: hash-checked puts, recursive pins, GC, per-kind limits.

Method: a real store in a temporary directory (no doubles), small genesis-style limits
so the limit cases are cheap, objects made by the UnixFS importer; after each operation
check what a reader of the store would see (get/has, read back, pins, GC counts), and
that everything pinned survives closing and reopening.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.node.blockstore import Blockstore, BlockstoreError, Kind, parse_kind
from swarm.protocol import cbor
from swarm.protocol.cid import CODEC_RAW, Cid, block_cid, dag_cbor_cid
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.unixfs import (
    CHUNK_BYTES,
    BlockMismatch,
    BlockMissing,
    TooLarge,
    add_bytes,
    decode_dag_pb,
)

PARAMS = {**DEFAULT_PARAMS, "evidence_bytes_max": 3 * CHUNK_BYTES, "proof_bytes_max": 10_240}


def pieces(data: bytes, size: int = 100_000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def sample(n: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(n))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Blockstore]:
    s = Blockstore(tmp_path / "blocks", PARAMS)
    yield s
    s.close()


def test_put_checks_hash(store: Blockstore) -> None:
    data = b"some evidence"
    cid = block_cid(data, CODEC_RAW)
    store.put(cid, data)
    assert store.has(cid) and store.get(cid) == data
    other = block_cid(b"other", CODEC_RAW)
    with pytest.raises(BlockMismatch):
        store.put(other, data)
    with pytest.raises(BlockMismatch):
        store.put_many([(cid, data), (other, data)])
    assert not store.has(other) and store.get(other) is None


def test_add_matches_importer_and_reads_back(store: Blockstore) -> None:
    data = sample(2 * CHUNK_BYTES + 10)
    for version in (0, 1):
        pin = store.add(pieces(data), Kind.EVIDENCE, version)
        root, blocks = add_bytes(data, version)
        assert pin.root == root and pin.size == len(data) and pin.blocks == len(blocks)
        assert b"".join(store.read(root)) == data
        assert all(store.has(b.cid) for b in blocks)
    assert {p.root for p in store.pins()} == {add_bytes(data, v)[0] for v in (0, 1)}


def test_gc_keeps_pinned_and_removes_the_rest(store: Blockstore, tmp_path: Path) -> None:
    kept = sample(CHUNK_BYTES + 1, 1)
    dropped = sample(CHUNK_BYTES + 1, 2)
    pinned = store.add(pieces(kept))
    loose = store.add(pieces(dropped), pin=False)
    stray = b"a block nobody links to"
    store.put(block_cid(stray, CODEC_RAW), stray)
    result = store.gc()
    assert result.removed == loose.blocks + 1 and result.kept == pinned.blocks
    assert b"".join(store.read(pinned.root)) == kept
    assert not store.has(loose.root)
    with pytest.raises(BlockMissing):
        b"".join(store.read(loose.root))
    # Unpin, collect again: nothing left. A second unpin says it was not pinned.
    assert store.unpin(pinned.root) and not store.unpin(pinned.root)
    assert store.gc().kept == 0 and list(store.blocks()) == []


def test_shared_blocks_survive_unpin_of_one_root(store: Blockstore) -> None:
    # Two files with the same first chunk share its leaf; unpinning one keeps the other
    # whole.
    head = sample(CHUNK_BYTES, 3)
    a = store.add([head + b"tail a"])
    b = store.add([head + b"tail b"])
    store.unpin(a.root)
    store.gc()
    assert b"".join(store.read(b.root)) == head + b"tail b"
    assert not store.has(a.root)


def test_pins_survive_restart(tmp_path: Path) -> None:
    data = sample(CHUNK_BYTES * 2)
    first = Blockstore(tmp_path / "blocks", PARAMS)
    pin = first.add(pieces(data), Kind.EVIDENCE, 1)
    first.close()
    again = Blockstore(tmp_path / "blocks", PARAMS)
    try:
        assert again.pins() == [pin]
        assert again.gc().removed == 0
        assert b"".join(again.read(pin.root)) == data
    finally:
        again.close()


def test_pin_blocks_from_elsewhere(store: Blockstore) -> None:
    # Blocks arriving one by one (as from a peer): pin refuses until all are here.
    data = sample(3 * CHUNK_BYTES)
    root, blocks = add_bytes(data)
    missing = decode_dag_pb(blocks[-1].data).links[1].cid
    store.put_many((b.cid, b.data) for b in blocks if b.cid != missing)
    with pytest.raises(BlockMissing) as caught:
        store.pin(root)
    assert caught.value.cid == missing and not store.is_pinned(root)
    store.put_many((b.cid, b.data) for b in blocks if b.cid == missing)
    pin = store.pin(root)
    assert pin.size == len(data) and pin.blocks == len(blocks) and store.is_pinned(root)
    assert store.size_of(root) == len(data)


def test_a_dag_cbor_block_is_pinned_as_one_block(store: Blockstore, tmp_path: Path) -> None:
    # A decision memo's shape: one dag-cbor block whose CBOR link (tag 42) names a block
    # that is not here and is not part of it.
    elsewhere = dag_cbor_cid(cbor.encode("a need"))
    memo = cbor.encode({"v": "memo", "need": elsewhere, "bids": [{"cost": 7}]})
    cid = dag_cbor_cid(memo)
    with pytest.raises(BlockMismatch):
        store.put(cid, memo + b"\x00")
    store.put(cid, memo)
    pin = store.pin(cid, Kind.EVIDENCE)
    assert (pin.root, pin.kind, pin.size, pin.blocks) == (cid, Kind.EVIDENCE, len(memo), 1)
    assert store.missing(cid) is None and store.size_of(cid) == len(memo)
    assert store.gc().kept == 1 and b"".join(store.read(cid)) == memo
    # Its size is the block's: over a kind's limit, it is refused as any object is.
    big = cbor.encode(bytes(PARAMS["proof_bytes_max"]))
    big_cid = dag_cbor_cid(big)
    with pytest.raises(TooLarge):
        store.put_dag(big_cid, Kind.PROOF, {big_cid: big}.get)
    assert not store.is_pinned(big_cid)
    assert store.unpin(cid) and store.gc().removed >= 1 and not store.has(cid)
    # put_dag: the same call takes it in either evidence store.
    assert store.put_dag(cid, Kind.EVIDENCE, {cid: memo}.get) == pin
    assert store.gc().kept == 1 and store.is_pinned(cid)


def test_limits_per_kind(store: Blockstore) -> None:
    limit = PARAMS["evidence_bytes_max"]
    at_limit = store.add(pieces(sample(limit)))
    assert at_limit.size == limit
    with pytest.raises(TooLarge):
        store.add(pieces(sample(limit + 1, 5)))
    proof = store.add([sample(PARAMS["proof_bytes_max"])], Kind.PROOF)
    assert proof.kind is Kind.PROOF
    with pytest.raises(TooLarge):
        store.add([sample(PARAMS["proof_bytes_max"] + 1)], Kind.PROOF)
    # An object already here cannot be pinned as a kind whose limit it passes.
    with pytest.raises(TooLarge):
        store.pin(at_limit.root, Kind.PROOF)
    # What an over-limit add wrote (its first two leaves, complete before the piece
    # that passed the limit) is deleted as it is refused, without waiting for a GC.
    partial = add_bytes(sample(limit + 1, 5)[: 2 * CHUNK_BYTES])[1][:2]
    assert not any(store.has(b.cid) for b in partial)
    assert store.gc().removed == 0
    assert b"".join(store.read(at_limit.root)) == sample(limit)
    assert b"".join(store.read(proof.root, Kind.PROOF)) == sample(PARAMS["proof_bytes_max"])


def test_an_unfinished_import_deletes_only_the_blocks_it_alone_created(
        store: Blockstore) -> None:
    # Leaves of an abandoned import: one it created alone, one a second import wrote
    # too, one already pinned before. Only the first goes when it is closed unfinished.
    pinned, shared, alone = (sample(CHUNK_BYTES, salt) for salt in (1, 2, 3))
    kept = store.add([pinned], cid_version=1)

    def leaf(data: bytes) -> Cid:
        return add_bytes(data, cid_version=1)[0]

    abandoned = store.begin_import(Kind.EVIDENCE, 1)
    abandoned.feed(alone + shared + pinned[:1])  # a byte more: both leaves are complete
    other = store.begin_import(Kind.EVIDENCE, 1)
    other.feed(shared + b"!")
    assert store.has(leaf(alone)) and store.has(leaf(shared))
    abandoned.close()
    assert not store.has(leaf(alone)) and store.has(leaf(shared))
    again = store.begin_import(Kind.EVIDENCE, 1)
    again.feed(pinned + b"!")
    again.close()
    assert store.has(leaf(pinned))
    finished = other.finish()
    other.close()
    assert b"".join(store.read(finished.root)) == shared + b"!"
    assert b"".join(store.read(kept.root)) == pinned
    assert store.gc().removed == 0


def test_gc_spares_an_import_in_progress(store: Blockstore) -> None:
    # gc() running between two pieces of an add (the node serves requests while a
    # large upload streams in) must not delete the blocks already written.
    data = sample(2 * CHUNK_BYTES + 3, 9)
    results = []

    def chunks() -> Iterator[bytes]:
        yield data[:CHUNK_BYTES + 5]
        results.append(store.gc())
        yield data[CHUNK_BYTES + 5 :]

    pin = store.add(chunks())
    assert results[0].removed == 0 and results[0].kept >= 1
    assert b"".join(store.read(pin.root)) == data


def test_repeated_chunks_stored_once(store: Blockstore) -> None:
    data = sample(CHUNK_BYTES) * 3  # three identical leaves under one root
    pin = store.add([data])
    assert pin.blocks == 2 and store.pin(pin.root).blocks == 2
    assert b"".join(store.read(pin.root)) == data


def test_parse_kind() -> None:
    assert parse_kind("proof") is Kind.PROOF
    with pytest.raises(LocalProtocolError):
        parse_kind("video")


def test_second_open_is_a_clear_error(store: Blockstore, tmp_path: Path) -> None:
    with pytest.raises(BlockstoreError, match="another node"):
        Blockstore(tmp_path / "blocks", PARAMS)


def test_gc_spares_held_blocks_until_every_holder_lets_go(store: Blockstore) -> None:
    """A fetch stores blocks one by one (a holding) and pins only at the end: gc in
    between must not eat them, even when two fetches hold the same block."""
    root, blocks = add_bytes(sample(300_000, 9), 1)
    first, second = store.hold(), store.hold()
    for block in blocks:
        first.put(block.cid, block.data)
    second.put(blocks[0].cid, blocks[0].data)
    with pytest.raises(BlockMismatch):
        first.put(blocks[1].cid, blocks[0].data)
    assert store.gc().removed == 0
    first.close()
    assert store.gc().removed == len(blocks) - 1  # the one the second holds stays
    assert store.has(blocks[0].cid)
    second.close()
    assert store.gc().removed == 1
    assert not any(store.has(b.cid) for b in blocks)
    assert root == blocks[-1].cid
