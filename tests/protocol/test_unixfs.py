"""UnixFS import and read: the CIDs Kubo prints, round trips, and hostile DAGs refused.

Method: rebuild each input of testdata/unixfs_vectors.json from its recipe (checked by
its SHA-256), import it whole and in odd-sized pieces, and compare the root with the
CID real Kubo (v0) and the js importer (v1) gave; the "small_trees" set does the same
with 4-byte chunks and 3 links per node so trees of depth 5 come from 330 bytes. Then
read every DAG back through `read_file`, and feed it corrupt, missing, lying and
non-file blocks to check each is refused with its own error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import cbor
from swarm.protocol.cid import (
    CODEC_DAG_CBOR,
    CODEC_DAG_PB,
    CODEC_RAW,
    Cid,
    block_cid,
    dag_cbor_cid,
)
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.logformat import uvarint
from swarm.protocol.unixfs import (
    CHUNK_BYTES,
    LINKS_PER_NODE_MAX,
    Block,
    BlockMismatch,
    BlockMissing,
    Importer,
    TooLarge,
    UnixfsError,
    _parent_node,
    add_bytes,
    add_stream,
    block_links,
    decode_dag_pb,
    decode_unixfs,
    file_size,
    first_missing,
    read_file,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "testdata" / "unixfs_vectors.json").read_text())
SMALL = VECTORS["small_trees"]
UNLIMITED = 1 << 62


def recipe_pieces(size: int) -> Iterator[bytes]:
    """The "shake128-ctr" recipe (see the JSON file), in 65536-byte pieces."""
    k = 0
    left = size
    while left > 0:
        piece = hashlib.shake_128(b"can-swarm/unixfs-vector/" + k.to_bytes(8, "big"))
        chunk = piece.digest(65536)[:left]
        yield chunk
        left -= len(chunk)
        k += 1


def content(vector: dict[str, Any]) -> bytes:
    if "content_hex" in vector:
        data = bytes.fromhex(vector["content_hex"])
    else:
        data = b"".join(recipe_pieces(vector["size"]))
    assert len(data) == vector["size"]
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]
    return data


def store_of(blocks: list[Block]) -> dict[Cid, bytes]:
    return {b.cid: b.data for b in blocks}


def read_all(root: Cid, store: dict[Cid, bytes], size_max: int = UNLIMITED) -> bytes:
    return b"".join(read_file(root, store.get, size_max))


def check_order(blocks: list[Block], root: Cid) -> None:
    """Children come before parents and the root is last: a streaming consumer can
    store each block as it comes and have a complete DAG when the root arrives."""
    seen: set[Cid] = set()
    for block in blocks:
        for child in block_links(block.cid, block.data):
            assert child in seen
        seen.add(block.cid)
    assert blocks[-1].cid == root


def test_known_cids() -> None:
    # The two CIDs anyone can check with `ipfs add`.
    assert str(add_bytes(b"")[0]) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert str(add_bytes(b"hello world\n")[0]) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert (str(add_bytes(b"hello world\n", 1)[0])
            == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector(vector: dict[str, Any]) -> None:
    data = content(vector)
    for version, key in ((0, "cid_v0"), (1, "cid_v1")):
        root, blocks = add_bytes(data, version)
        assert str(root) == vector[key]
        check_order(blocks, root)
        # Streamed in pieces that straddle chunk boundaries: same blocks.
        streamed = list(add_stream(recipe_pieces(len(data)) if "recipe" in vector
                                   else [data], version))
        assert streamed == blocks
        if len(data) <= 4 * CHUNK_BYTES + 7:
            assert read_all(root, store_of(blocks)) == data


def test_vector_tree_shapes() -> None:
    # 174 chunks fit under one root; the 175th adds a level whose right child is an
    # interior node with a single link (balanced layout keeps the full depth).
    by_name = {v["name"]: v for v in VECTORS["vectors"]}
    root, blocks = add_bytes(content(by_name["175-chunks"]))
    store = store_of(blocks)
    top = decode_dag_pb(store[root])
    assert len(top.links) == 2
    left, right = (decode_dag_pb(store[link.cid]) for link in top.links)
    assert len(left.links) == LINKS_PER_NODE_MAX and len(right.links) == 1
    assert decode_unixfs(top.data or b"").filesize == 175 * CHUNK_BYTES


def test_small_trees_match_js_importer() -> None:
    full = b"".join(recipe_pieces(len(SMALL["cids_v0"]) - 1))
    for size, (cid_v0, cid_v1) in enumerate(zip(SMALL["cids_v0"], SMALL["cids_v1"],
                                                 strict=True)):
        data = full[:size]
        for version, expected in ((0, cid_v0), (1, cid_v1)):
            root, blocks = add_bytes(data, version, SMALL["chunk_bytes"], SMALL["links_max"])
            assert str(root) == expected, (size, version)
            check_order(blocks, root)
            assert read_all(root, store_of(blocks)) == data


@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8),
       version=st.sampled_from([0, 1]), links=st.integers(2, 5), chunk=st.integers(1, 9))
def test_stream_split_and_round_trip(data: bytes, cuts: list[int], version: int,
                                     links: int, chunk: int) -> None:
    # However the input is cut into pieces, the blocks are the same; reading them back
    # gives the input; and the importer never holds a whole chunk unprocessed.
    root, blocks = add_bytes(data, version, chunk, links)
    importer = Importer(version, chunk, links)
    streamed: list[Block] = []
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for start, end in itertools.pairwise(bounds):
        streamed += importer.feed(data[start:end])
        assert len(importer._buffer) < chunk
        assert all(len(level) <= links for level in importer._levels)
    streamed += importer.finish()
    assert importer.root == root and importer.size == len(data)
    assert streamed == blocks
    assert read_all(root, store_of(blocks)) == data
    assert file_size(root, store_of(blocks)[root]) == len(data)


def test_cid_versions_and_codecs() -> None:
    data = bytes(range(256)) * 2049  # just over 2 chunks
    root0, blocks0 = add_bytes(data, 0)
    assert root0.version == 0 and all(b.cid.version == 0 for b in blocks0)
    root1, blocks1 = add_bytes(data, 1)
    assert root1.version == 1 and root1.codec == CODEC_DAG_PB
    assert {b.cid.codec for b in blocks1 if b.cid != root1} == {CODEC_RAW}
    assert str(root1).startswith("bafybei")


# -- hostile or broken DAGs ---------------------------------------------------------


def big_dag() -> tuple[bytes, Cid, dict[Cid, bytes]]:
    data = b"".join(recipe_pieces(3 * CHUNK_BYTES + 5))
    root, blocks = add_bytes(data)
    return data, root, store_of(blocks)


def test_corrupt_block_detected() -> None:
    _, root, store = big_dag()
    leaf = decode_dag_pb(store[root]).links[1].cid
    damaged = bytearray(store[leaf])
    damaged[100] ^= 1
    store[leaf] = bytes(damaged)
    with pytest.raises(BlockMismatch):
        read_all(root, store)


def test_missing_block_detected() -> None:
    _, root, store = big_dag()
    leaf = decode_dag_pb(store[root]).links[2].cid
    del store[leaf]
    with pytest.raises(BlockMissing) as caught:
        read_all(root, store)
    assert caught.value.cid == leaf and caught.value.code == "block_missing"


def test_parent_lying_about_sizes_refused() -> None:
    # A root whose hash is right (it is the CID asked for) but whose blocksizes do not
    # match what its children hold: a reader must not return a different length.
    _, root, store = big_dag()
    links = decode_dag_pb(store[root]).links
    lie = [(link.cid.raw, link.tsize or 0, CHUNK_BYTES) for link in links]  # last is 5
    forged = _parent_node(lie)
    forged_cid = block_cid(forged, CODEC_DAG_PB, 0)
    store[forged_cid] = forged
    with pytest.raises(UnixfsError, match="parent says"):
        read_all(forged_cid, store)


@given(data=st.binary(min_size=1, max_size=200), version=st.sampled_from([0, 1]),
       pick=st.integers(0, 10_000), position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_caught(data: bytes, version: int, pick: int, position: int,
                                   bit: int) -> None:
    # Whichever block a peer damages, and wherever, the reader raises rather than
    # return bytes other than the file's.
    root, blocks = add_bytes(data, version, 4, 3)
    store = store_of(blocks)
    cid = list(store)[pick % len(store)]
    damaged = bytearray(store[cid])
    assert damaged  # non-empty input: no block is empty
    damaged[position % len(damaged)] ^= 1 << bit
    store[cid] = bytes(damaged)
    with pytest.raises(BlockMismatch):
        read_all(root, store)


def test_size_limit() -> None:
    data, root, store = big_dag()
    assert read_all(root, store, size_max=len(data)) == data
    with pytest.raises(TooLarge):
        read_all(root, store, size_max=len(data) - 1)


def test_not_a_file() -> None:
    directory = b"\x0a\x02\x08\x01"  # PBNode{Data: UnixFS{Type: Directory}}
    cid = block_cid(directory, CODEC_DAG_PB, 0)
    with pytest.raises(UnixfsError, match="directory"):
        read_all(cid, {cid: directory})
    dag_json = Cid(b"\x01" + uvarint(0x0129) + b"\x12\x20" + hashlib.sha256(b"{}").digest())
    with pytest.raises(UnixfsError, match="codec"):
        read_all(dag_json, {dag_json: b"{}"})


# -- one dag-cbor block as an object ------------------------------------------------

# A memo-like block that links to another block (tag 42), which is not part of it.
LINKED = dag_cbor_cid(cbor.encode("elsewhere"))
MEMO = cbor.encode({"v": "memo", "need": LINKED, "bids": [{"cost": 3}]})
MEMO_CID = dag_cbor_cid(MEMO)


def test_a_dag_cbor_block_reads_as_itself() -> None:
    assert MEMO_CID.codec == CODEC_DAG_CBOR
    assert read_all(MEMO_CID, {MEMO_CID: MEMO}) == MEMO
    assert file_size(MEMO_CID, MEMO) == len(MEMO)
    # Its CBOR link is not followed: the linked block is neither needed nor wanted.
    assert block_links(MEMO_CID, MEMO) == []
    assert first_missing(MEMO_CID, {MEMO_CID: MEMO}.__contains__, {}.get) is None
    assert first_missing(MEMO_CID, {}.__contains__, {}.get) == MEMO_CID
    with pytest.raises(BlockMissing):
        read_all(MEMO_CID, {})


def test_a_dag_cbor_block_that_does_not_match_is_refused() -> None:
    other = cbor.encode({"v": "memo", "need": LINKED, "bids": [{"cost": 4}]})
    with pytest.raises(BlockMismatch):
        read_all(MEMO_CID, {MEMO_CID: other})
    with pytest.raises(BlockMismatch):
        file_size(MEMO_CID, other)
    with pytest.raises(TooLarge):
        read_all(MEMO_CID, {MEMO_CID: MEMO}, size_max=len(MEMO) - 1)
    # An object by itself only: a file's node linking to it is not a file.
    parent = _parent_node([(MEMO_CID.raw, len(MEMO), len(MEMO))])
    parent_cid = block_cid(parent, CODEC_DAG_PB, 1)
    with pytest.raises(UnixfsError, match="dag-cbor"):
        read_all(parent_cid, {parent_cid: parent, MEMO_CID: MEMO})


@pytest.mark.parametrize("block", [
    b"\x0a",                    # truncated length
    b"\x0a\x05\x08",            # field runs past the end
    b"\x1a\x00",                # unknown PBNode field
    b"\x0a\x00\x12\x00",        # a link after Data
    b"\x12\x02\x12\x00",        # a link without a Hash
    b"\x0a\x02\x18\x00",        # UnixFS without a Type
    b"\x0d\x00\x00\x00\x00",    # fixed32 wire type
    b"\x0a\x04\x08\x02\x18\x05",  # says 5 bytes, holds 0
])
def test_malformed_blocks_refused(block: bytes) -> None:
    cid = block_cid(block, CODEC_DAG_PB, 0)
    with pytest.raises(UnixfsError):
        read_all(cid, {cid: block})


def test_importer_misuse() -> None:
    importer = Importer()
    importer.feed(b"abc")
    with pytest.raises(LocalProtocolError):
        _ = importer.root
    importer.finish()
    with pytest.raises(LocalProtocolError):
        importer.feed(b"more")
    with pytest.raises(LocalProtocolError):
        importer.finish()
    with pytest.raises(LocalProtocolError):
        Importer(cid_version=2)
    with pytest.raises(LocalProtocolError):
        Importer(0, chunk_bytes=0)
