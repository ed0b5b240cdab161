"""Bitswap codec, a peer's want list, and the fetch state machine, without a network.

Goal: our messages are byte for byte what protobuf makes of boxo's message.proto (the
generated module py-libp2p ships is the independent encoder), blocks carry the prefix
Kubo needs (CIDv0 `00 70 12 20`), the serving side answers each kind of want as Kubo
expects, and a fetch ends (Finished, or Failed naming the block) with bounded wants
under any order of delivery, loss, silence and departure. Method: unit cases, then a
Hypothesis search over schedules played against simulated peers that hold all, part or
none of a DAG.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.bitswap.pb import bitswap_pb2 as pb

from swarm.protocol.bitswap import (
    MESSAGE_BYTES_MAX,
    BitswapError,
    Failed,
    Fetch,
    Finished,
    Message,
    NotFound,
    PeerLedger,
    Presence,
    SendWants,
    StoreBlock,
    Want,
    WantType,
    answer,
    block_from_prefix,
    cid_prefix,
    decode,
    encode,
)
from swarm.protocol.cid import CODEC_DAG_PB, CODEC_RAW, Cid, block_cid
from swarm.protocol.unixfs import Block, TooLarge, UnixfsError, _parent_node, add_bytes

UNLIMITED = 1 << 40


def content(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    k = 0
    while len(out) < size:
        out += hashlib.shake_128(seed.to_bytes(4, "big") + k.to_bytes(8, "big")).digest(65536)
        k += 1
    return bytes(out[:size])


# -- codec ----------------------------------------------------------------------------


def to_pb(m: Message) -> pb.Message:
    out = pb.Message()
    if m.wants or m.full:
        out.wantlist.full = m.full
        for w in m.wants:
            out.wantlist.entries.add(block=w.cid.raw, priority=w.priority, cancel=w.cancel,
                                     wantType=int(w.want_type), sendDontHave=w.send_dont_have)
    for b in m.blocks:
        out.payload.add(prefix=cid_prefix(b.cid), data=b.data)
    for p in m.presences:
        out.blockPresences.add(cid=p.cid.raw, type=0 if p.have else 1)
    out.pendingBytes = m.pending_bytes
    return out


cids = st.builds(lambda data, v: block_cid(data, CODEC_DAG_PB if v == 0 else CODEC_RAW, v),
                 st.binary(max_size=16), st.sampled_from([0, 1]))
wants = st.builds(Want, cids, st.sampled_from(list(WantType)), st.booleans(), st.booleans(),
                  st.integers(-(2**31), 2**31 - 1))
blocks = st.builds(lambda data, v: Block(block_cid(data, CODEC_DAG_PB if v == 0 else CODEC_RAW,
                                                   v), data),
                   st.binary(max_size=64), st.sampled_from([0, 1]))
messages = st.builds(Message, st.lists(wants, max_size=5).map(tuple), st.booleans(),
                     st.lists(blocks, max_size=3).map(tuple),
                     st.lists(st.builds(Presence, cids, st.booleans()), max_size=4).map(tuple),
                     st.integers(0, 2**31 - 1))


@given(messages)
def test_encoding_is_protobufs_and_decodes_back(m: Message) -> None:
    wire = encode(m)
    assert wire == to_pb(m).SerializeToString()
    assert decode(wire) == m
    assert decode(to_pb(m).SerializeToString()) == m


def test_prefixes_are_the_ones_kubo_reads() -> None:
    root, blocks_v0 = add_bytes(b"hello world\n", 0)
    assert cid_prefix(root) == bytes.fromhex("00701220")
    raw_root, _ = add_bytes(b"hello world\n", 1)
    assert cid_prefix(raw_root) == bytes.fromhex("01551220")
    tree_root, _ = add_bytes(content(300_000), 1)
    assert cid_prefix(tree_root) == bytes.fromhex("01701220")
    # A message carrying the CIDv0 block, read back, names the same CIDv0.
    wire = encode(Message(blocks=(blocks_v0[0],)))
    assert decode(wire).blocks[0].cid == root
    assert str(decode(wire).blocks[0].cid) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


def test_a_block_is_named_by_its_bytes_not_by_the_sender() -> None:
    good = Block(block_cid(b"real", CODEC_RAW, 1), b"real")
    liar = pb.Message()
    liar.payload.add(prefix=cid_prefix(good.cid), data=b"fake")
    got = decode(liar.SerializeToString()).blocks[0]
    assert got.cid != good.cid and got.cid == block_cid(b"fake", CODEC_RAW, 1)
    # 1.0.0-style bare blocks are CIDv0 dag-pb.
    bare = pb.Message()
    bare.blocks.append(b"\x0a\x00")
    assert decode(bare.SerializeToString()).blocks[0].cid == block_cid(b"\x0a\x00", CODEC_DAG_PB, 0)


@pytest.mark.parametrize(("prefix", "reason"), [
    (bytes.fromhex("01551320"), "sha2-256 only"),        # sha2-512
    (bytes.fromhex("01551210"), "sha2-256 only"),        # truncated digest
    (bytes.fromhex("00551220"), "CIDv0 with codec"),     # v0 must be dag-pb
    (bytes.fromhex("02551220"), "CID version 2"),
    (bytes.fromhex("015512"), "truncated"),
    (bytes.fromhex("0155122000"), "trailing"),
    (b"", "truncated"),                                   # py-libp2p's empty CIDv0 prefix
])
def test_unusable_prefixes_are_refused(prefix: bytes, reason: str) -> None:
    with pytest.raises(BitswapError, match=reason):
        block_from_prefix(prefix, b"data")


@pytest.mark.parametrize("wire", [
    b"\x0a\x05\x0a\x03\x0a\x01",          # entry with a truncated CID field
    b"\x0a\x04\x0a\x02\x10\x01",          # entry without a CID
    b"\x1a\x02\x12\x00",                  # payload without a prefix
    b"\x22\x00",                          # presence without a CID
    b"\x0a\x02\x0a\x22",                  # runs past the end
    b"\x0b",                              # wire type 3
    b"\x0a\x27\x0a\x25\x0a\x22" + b"\x12\x20" + bytes(32) + b"\x20\x07",  # wantType 7
])
def test_malformed_messages_are_refused(wire: bytes) -> None:
    with pytest.raises(BitswapError):
        decode(wire)


def test_oversize_message_and_block_are_refused() -> None:
    with pytest.raises(BitswapError, match="limit"):
        decode(bytes(MESSAGE_BYTES_MAX + 1))
    with pytest.raises(BitswapError, match="limit"):
        block_from_prefix(bytes.fromhex("01551220"), bytes(2 * 1024 * 1024 + 1))


def test_unknown_fields_are_skipped_as_protobuf_says() -> None:
    cid = block_cid(b"x", CODEC_RAW, 1)
    wire = encode(Message(wants=(Want(cid),))) + b"\x30\x05" + b"\x39" + bytes(8)
    assert decode(wire).wants == (Want(cid),)


def test_one_one_zero_peers_get_no_presences_and_no_have_wants() -> None:
    cid = block_cid(b"x", CODEC_RAW, 1)
    m = Message(wants=(Want(cid, WantType.HAVE, send_dont_have=True),),
                presences=(Presence(cid, True),))
    assert decode(encode(m, have_supported=False)) == Message(wants=(Want(cid),))


# -- serving --------------------------------------------------------------------------


def store_of(*blocks_: Block) -> Callable[[PeerLedger], list[Message]]:
    """Replies a store holding `blocks_` gives to everything a ledger holds: take the
    wants, look each up, answer (what node/bitswap.py does per serving round)."""
    held = {b.cid: b.data for b in blocks_}

    def serve(ledger: PeerLedger, block_bytes_max: int = 1024 * 1024) -> list[Message]:
        out: list[Message] = []
        while wants := ledger.take():
            found: dict[Cid, bytes | bool | None] = {
                w.cid: held.get(w.cid) if w.want_type is WantType.BLOCK else w.cid in held
                for w in wants}
            out += answer(wants, found, ledger.have_supported, block_bytes_max)
        return out

    return serve


def test_ledger_answers_each_kind_of_want() -> None:
    here = Block(block_cid(b"here", CODEC_RAW, 1), b"here")
    gone = block_cid(b"gone", CODEC_RAW, 1)
    serve = store_of(here)
    ledger = PeerLedger()
    ledger.receive(Message(wants=(
        Want(here.cid, WantType.HAVE, send_dont_have=True),
        Want(gone, WantType.HAVE, send_dont_have=True),
    )))
    assert serve(ledger) == [Message(presences=(Presence(here.cid, True),
                                               Presence(gone, False)))]
    assert serve(ledger) == []
    ledger.receive(Message(wants=(Want(here.cid), Want(gone, send_dont_have=True))))
    assert serve(ledger) == [Message(blocks=(here,), presences=(Presence(gone, False),))]
    # Without send-DONT_HAVE a missing block gets no answer at all.
    ledger.receive(Message(wants=(Want(gone), Want(block_cid(b"other", CODEC_RAW, 1),
                                                   WantType.HAVE))))
    assert serve(ledger) == []
    assert len(ledger) == 0


def test_ledger_cancel_full_and_bound() -> None:
    a, b, c = (Block(block_cid(bytes([i]), CODEC_RAW, 1), bytes([i])) for i in range(3))
    serve = store_of(a, b, c)
    ledger = PeerLedger(wants_max=2)
    ledger.receive(Message(wants=(Want(a.cid), Want(b.cid), Want(c.cid))))
    assert len(ledger) == 2 and ledger.dropped == 1
    ledger.receive(Message(wants=(Want(a.cid, cancel=True),)))
    ledger.receive(Message(wants=(Want(c.cid),)))
    assert serve(ledger) == [Message(blocks=(b, c))]
    ledger.receive(Message(wants=(Want(a.cid), Want(b.cid))))
    ledger.receive(Message(wants=(Want(c.cid),), full=True))  # replaces the list
    assert serve(ledger) == [Message(blocks=(c,))]


def test_take_is_bounded_and_in_order() -> None:
    blocks_ = [Block(block_cid(bytes([i]), CODEC_RAW, 1), bytes([i])) for i in range(10)]
    ledger = PeerLedger()
    ledger.receive(Message(wants=tuple(Want(b.cid, WantType.HAVE if i % 2 else WantType.BLOCK)
                                       for i, b in enumerate(blocks_))))
    first = ledger.take(blocks_max=2)
    assert [w.cid for w in first] == [b.cid for b in blocks_[:4]]  # 2 blocks, 2 haves
    assert [w.cid for w in ledger.take(blocks_max=10, entries_max=3)] == \
        [b.cid for b in blocks_[4:7]]
    assert len(ledger) == 3


def test_replies_split_by_size_and_one_one_zero_gets_no_presences() -> None:
    big = [Block(block_cid(content(300_000, i), CODEC_RAW, 1), content(300_000, i))
           for i in range(5)]
    serve = store_of(*big)
    ledger = PeerLedger(have_supported=False)
    wants = [Want(b.cid, WantType.HAVE, send_dont_have=True) for b in big]
    wants.append(Want(block_cid(b"nope", CODEC_RAW, 1), send_dont_have=True))
    ledger.receive(Message(wants=tuple(wants)))
    replies = serve(ledger, 700_000)
    assert [len(r.blocks) for r in replies] == [2, 2, 1]
    assert all(not r.presences for r in replies)
    assert [b for r in replies for b in r.blocks] == big


# -- fetching -------------------------------------------------------------------------


class Net:
    """Simulated peers answering a Fetch: each holds some blocks and a behaviour.

    `honest` answers every want (HAVE/DONT_HAVE/block); `silent` never answers; `liar`
    answers every WANT_BLOCK with the wrong bytes (which never hash to what was asked,
    so the fetch does not want them: here they are simply not delivered, the shell's
    rule)."""

    def __init__(self, fetch: Fetch[str], holdings: dict[str, dict[Cid, bytes]],
                 silent: set[str] | None = None) -> None:
        self.fetch = fetch
        self.holdings = holdings
        self.silent = silent or set()
        self.store: dict[Cid, bytes] = {}
        self.queue: deque[tuple[str, Want]] = deque()
        self.outcome: Finished | Failed | None = None
        self.max_outstanding = 0
        self.sent: list[tuple[str, Want]] = []

    def apply(self, actions: list[object]) -> None:
        self.max_outstanding = max(self.max_outstanding, self.fetch.outstanding)
        for action in actions:
            if isinstance(action, StoreBlock):
                assert action.block.cid.matches(action.block.data)
                self.store[action.block.cid] = action.block.data
            elif isinstance(action, SendWants):
                for want in action.wants:
                    self.sent.append((action.peer, want))
                    if not want.cancel and action.peer not in self.silent:
                        self.queue.append((action.peer, want))
            else:
                assert isinstance(action, Finished | Failed)
                assert self.outcome is None
                self.outcome = action

    def deliver(self, peer: str, want: Want) -> None:
        data = self.holdings[peer].get(want.cid)
        if want.want_type is WantType.BLOCK and data is not None:
            self.apply(self.fetch.on_block(peer, Block(want.cid, data)))
        else:
            self.apply(self.fetch.on_presence(peer, want.cid, data is not None))

    def run(self, rng: random.Random | None = None, ticks_max: int = 1000) -> None:
        self.apply(self.fetch.start(sorted(self.holdings)))
        for _ in range(ticks_max):
            while self.queue and self.outcome is None:
                i = rng.randrange(len(self.queue)) if rng else 0
                self.queue.rotate(-i)
                self.deliver(*self.queue.popleft())
            if self.outcome is not None:
                return
            self.apply(self.fetch.tick())
        raise AssertionError("the fetch neither finished nor failed")


def dag(size: int, version: int, seed: int = 0) -> tuple[Cid, dict[Cid, bytes]]:
    root, blocks_ = add_bytes(content(size, seed), version, 1024, 4)  # deep trees
    return root, {b.cid: b.data for b in blocks_}


def fetch_of(root: Cid, local: dict[Cid, bytes] | None = None, **kw: int) -> Fetch[str]:
    held = local if local is not None else {}
    return Fetch(root, UNLIMITED, held.get, **kw)


@pytest.mark.parametrize("version", [0, 1])
def test_fetch_from_one_peer_stores_exactly_the_dag(version: int) -> None:
    root, blocks_ = dag(50_000, version)
    net = Net(fetch_of(root, wants_max=8, peer_wants_max=4), {"a": blocks_})
    net.run()
    assert net.outcome == Finished(root, 50_000)
    assert net.store == blocks_
    assert net.max_outstanding <= 8
    assert net.fetch.received_bytes == 50_000


def test_fetch_skips_local_blocks_and_repeats() -> None:
    data = bytes(20 * 1024)  # zeros: every leaf is the same block
    root, blocks_ = add_bytes(data, 0, 1024, 4)
    table = {b.cid: b.data for b in blocks_}
    net = Net(fetch_of(root), {"a": table})
    net.run()
    assert net.outcome == Finished(root, len(data))
    asked = [w.cid for p, w in net.sent if w.want_type is WantType.BLOCK and not w.cancel]
    assert len(asked) == len(set(asked)) == len(table)
    # Half of it already here: only the other half is asked for.
    root2, blocks2 = dag(30_000, 1)
    local = dict(list(blocks2.items())[: len(blocks2) // 2])
    net2 = Net(fetch_of(root2, local), {"a": blocks2})
    net2.run()
    assert net2.outcome == Finished(root2, 30_000)
    assert set(net2.store) == set(blocks2) - set(local)


def test_peers_without_it_are_passed_over() -> None:
    root, blocks_ = dag(40_000, 0)
    net = Net(fetch_of(root), {"empty": {}, "full": blocks_, "silent": {}}, silent={"silent"})
    net.run()
    assert net.outcome == Finished(root, 40_000)
    block_wants = {p for p, w in net.sent if w.want_type is WantType.BLOCK and not w.cancel}
    assert block_wants == {"full"}


def test_missing_block_fails_naming_it() -> None:
    root, blocks_ = dag(40_000, 1)
    leaf = next(c for c in blocks_ if c.codec == CODEC_RAW)
    partial = {c: d for c, d in blocks_.items() if c != leaf}
    net = Net(fetch_of(root), {"a": partial, "b": partial})
    net.run()
    assert isinstance(net.outcome, Failed)
    assert isinstance(net.outcome.error, NotFound)
    assert net.outcome.error.cid == leaf
    assert "none of the 2 peers" in str(net.outcome.error)


def test_silent_peers_end_in_not_found() -> None:
    root, blocks_ = dag(5_000, 0)
    net = Net(fetch_of(root, ticks_max=3), {"a": blocks_}, silent={"a"})
    net.run()
    assert isinstance(net.outcome, Failed) and isinstance(net.outcome.error, NotFound)
    # No peers at all: the same error at once, saying so.
    alone = fetch_of(root)
    actions = alone.start([])
    assert isinstance(actions[-1], Failed)
    assert "no peer to ask" in str(actions[-1].error)


def test_a_departed_holder_hands_its_wants_on() -> None:
    root, blocks_ = dag(40_000, 1)
    fetch = fetch_of(root, wants_max=4)
    net = Net(fetch, {"a": blocks_, "b": blocks_})
    net.apply(fetch.start(["a", "b"]))
    while net.queue and len(net.store) < 3:
        net.deliver(*net.queue.popleft())
    net.apply(fetch.on_peer_gone("a"))
    net.queue = deque((p, w) for p, w in net.queue if p != "a")
    net.holdings["a"] = {}
    net.run()
    assert net.outcome == Finished(root, 40_000)


def test_bad_dags_fail_the_fetch() -> None:
    # A parent that lies about a child's size: the child hashes right but does not fit.
    leaf = Block(block_cid(b"abc", CODEC_RAW, 1), b"abc")
    lying = _parent_node([(leaf.cid.raw, 3, 4)])  # says 4 bytes, holds 3
    parent = Block(block_cid(lying, CODEC_DAG_PB, 1), lying)
    net = Net(fetch_of(parent.cid), {"a": {leaf.cid: leaf.data, parent.cid: parent.data}})
    net.run()
    assert isinstance(net.outcome, Failed) and isinstance(net.outcome.error, UnixfsError)
    # Over the size limit: refused from the root alone, nothing below it asked for.
    root, blocks_ = dag(10_000, 0)
    small = Fetch(root, 9_999, {}.get)
    net2 = Net(small, {"a": blocks_})
    net2.run()
    assert isinstance(net2.outcome, Failed) and isinstance(net2.outcome.error, TooLarge)
    assert [w.cid for _, w in net2.sent if not w.cancel and w.want_type is WantType.BLOCK] \
        == [root]


@given(seed=st.integers(0, 2**32 - 1), wants_max=st.integers(1, 6),
       peer_wants_max=st.integers(1, 3), size=st.integers(0, 20_000),
       kinds=st.lists(st.sampled_from(["full", "half", "none", "silent"]), min_size=0,
                      max_size=4))
def test_any_schedule_ends_correctly_with_bounded_wants(
        seed: int, wants_max: int, peer_wants_max: int, size: int, kinds: list[str]) -> None:
    rng = random.Random(seed)
    root, blocks_ = dag(size, seed % 2, seed)
    items = sorted(blocks_.items())
    holdings: dict[str, dict[Cid, bytes]] = {}
    silent = set()
    for i, kind in enumerate(kinds):
        name = f"{kind}{i}"
        if kind == "full":
            holdings[name] = blocks_
        elif kind == "half":
            holdings[name] = dict(rng.sample(items, len(items) // 2))
        else:
            holdings[name] = {}
            if kind == "silent":
                silent.add(name)
    fetch = Fetch(root, UNLIMITED, {}.get, wants_max=wants_max, peer_wants_max=peer_wants_max,
                  ticks_max=2)
    net = Net(fetch, holdings, silent)
    net.run(rng)
    assert net.max_outstanding <= wants_max
    union: set[Cid] = set().union(*(set(h) for h in holdings.values())) if holdings else set()
    if "full" in kinds or set(blocks_) <= union:
        assert net.outcome == Finished(root, size)
        assert net.store == blocks_
    else:
        assert isinstance(net.outcome, Failed) and isinstance(net.outcome.error, NotFound)
        assert net.outcome.error.cid not in union
        assert set(net.store) <= set(blocks_)
