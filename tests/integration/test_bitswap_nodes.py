"""Bitswap between real nodes on loopback: fetch, missing blocks, a peer that lies.

Goal: a node fetches evidence it lacks from a peer that has it (CIDv0 and CIDv1, a
multi-level DAG), every block checked and the object pinned; a block no peer has
ends the fetch with an error naming it, not a hang; a peer that answers with wrong
bytes is caught, dropped from the fetch, counted in /metrics, and the fetch still
completes from an honest peer. Method: nodes run in one trio process (see
tests/integration/conftest.py); the lying peer is a bare py-libp2p host speaking
bitswap 1.2.0 through our codec, which serves each block with one byte flipped. Every
wait has a generous deadline; nothing asserts a duration.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.utils import encode_varint_prefixed

from swarm.node import p2p
from swarm.node.bitswap import _MessageReader
from swarm.node.blockstore import Kind
from swarm.node.service import Node
from swarm.protocol import bitswap as bs
from swarm.protocol.cid import CODEC_RAW
from swarm.protocol.unixfs import Block, add_bytes

DEADLINE_S = 120


def content(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    k = 0
    while len(out) < size:
        out += hashlib.shake_128(f"bitswap-it/{seed}/{k}".encode()).digest(1 << 20)
        k += 1
    return bytes(out[:size])


def sample(node: Node, name: str, labels: dict[str, str] | None = None) -> float:
    return node.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.parametrize("version", [0, 1])
async def test_fetch_across_two_nodes(swarmlet: Any, version: int) -> None:
    s = await swarmlet(2)
    owner, fetcher = s.nodes[0], s.nodes[1]
    data = content(3_000_000, version)
    pin = owner.blockstore.add([data[i:i + 100_000] for i in range(0, len(data), 100_000)],
                               Kind.EVIDENCE, version)
    assert not fetcher.blockstore.has(pin.root)
    with trio.fail_after(DEADLINE_S):
        got = await fetcher.bitswap.fetch(pin.root)
    assert got == pin
    assert fetcher.blockstore.is_pinned(pin.root)
    assert b"".join(fetcher.blockstore.read(pin.root)) == data
    assert sample(fetcher, "swarm_bitswap_blocks_received_total") == pin.blocks
    assert sample(owner, "swarm_bitswap_blocks_sent_total") >= pin.blocks
    assert sample(fetcher, "swarm_bitswap_fetches_total", {"outcome": "finished"}) == 1
    # Fetching again needs nobody: every block is here.
    with trio.fail_after(DEADLINE_S):
        assert await fetcher.bitswap.fetch(pin.root) == pin
    assert sample(fetcher, "swarm_bitswap_blocks_received_total") == pin.blocks


async def test_concurrent_fetches_of_one_object_share_one(swarmlet: Any) -> None:
    s = await swarmlet(2)
    owner, fetcher = s.nodes[0], s.nodes[1]
    pin = owner.blockstore.add([content(1_500_000, 7)], Kind.EVIDENCE, 1)
    results = []

    async def one() -> None:
        results.append(await fetcher.bitswap.fetch(pin.root))

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(one)
    assert results == [pin, pin, pin]
    assert sample(fetcher, "swarm_bitswap_blocks_received_total") == pin.blocks


async def test_missing_block_is_a_clear_error(swarmlet: Any) -> None:
    s = await swarmlet(2)
    owner, fetcher = s.nodes[0], s.nodes[1]
    root, blocks = add_bytes(content(2_000_000, 3), 1)
    leaf = next(b.cid for b in blocks if b.cid.codec == CODEC_RAW)
    owner.blockstore.put_many((b.cid, b.data) for b in blocks if b.cid != leaf)
    with trio.fail_after(DEADLINE_S), pytest.raises(bs.NotFound) as caught:
        await fetcher.bitswap.fetch(root)
    assert caught.value.cid == leaf
    assert str(leaf) in str(caught.value) and "none of the 1 peers" in str(caught.value)
    assert not fetcher.blockstore.is_pinned(root)
    assert sample(fetcher, "swarm_bitswap_fetches_total", {"outcome": "not_found"}) == 1


async def test_a_node_without_peers_says_so(swarmlet: Any) -> None:
    s = await swarmlet(1)
    root, _ = add_bytes(b"nobody has this\n", 0)
    with trio.fail_after(DEADLINE_S), pytest.raises(bs.NotFound, match="no peer to ask"):
        await s.nodes[0].bitswap.fetch(root)


class LyingPeer:
    """A bitswap 1.2.0 peer that has every block of a DAG and serves each corrupted.

    It answers WANT_HAVE truthfully (so fetches pick it as a provider) and WANT_BLOCK
    with the block's prefix and its bytes with the last byte flipped, on a stream it
    opens to the asker, as Kubo would send a block."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = {b.cid: b.data for b in blocks}
        self.host: IHost | None = None
        self.wrong_blocks_sent = 0

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        reader = _MessageReader(stream)
        assert self.host is not None
        while (data := await reader.next()) is not None:
            message = bs.decode(data)
            out_blocks: list[Block] = []
            presences: list[bs.Presence] = []
            for want in message.wants:
                if want.cancel or want.cid not in self.blocks:
                    continue
                if want.want_type is bs.WantType.HAVE:
                    presences.append(bs.Presence(want.cid, True))
                else:
                    good = self.blocks[want.cid]
                    out_blocks.append(Block(want.cid, good[:-1] + bytes([good[-1] ^ 1])))
            if out_blocks or presences:
                # Counted before sending: the fetcher may give up the moment they arrive.
                self.wrong_blocks_sent += len(out_blocks)
                out = await self.host.new_stream(peer, [TProtocol(bs.PROTOCOL_1_2_0)])
                await out.write(encode_varint_prefixed(bs.encode(bs.Message(
                    blocks=tuple(out_blocks), presences=tuple(presences)))))
                await out.close()


async def start_liar(stack: AsyncExitStack, liar: LyingPeer, target: Node) -> Any:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host, peer_id = p2p.make_host(os.urandom(32), listen)
    await stack.enter_async_context(host.run(listen_addrs=listen))
    liar.host = host
    host.set_stream_handler(TProtocol(bs.PROTOCOL_1_2_0), liar.handle)
    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(target.addrs()[0])))
    return peer_id


async def test_a_peer_serving_wrong_blocks_is_caught(swarmlet: Any) -> None:
    s = await swarmlet(1)
    fetcher = s.nodes[0]
    root, blocks = add_bytes(content(1_200_000, 5), 0)
    liar = LyingPeer(blocks)
    async with AsyncExitStack() as stack:
        liar_id = await start_liar(stack, liar, fetcher)
        # The liar is the only peer: caught on its first block, then nobody is left.
        with trio.fail_after(DEADLINE_S), pytest.raises(bs.NotFound):
            await fetcher.bitswap.fetch(root)
        assert liar.wrong_blocks_sent >= 1
        assert fetcher.bitswap.penalised(liar_id)
        assert sample(fetcher, "swarm_bitswap_bad_blocks_total", {"reason": "unrequested"}) == 1
        assert 'swarm_bitswap_bad_blocks_total{reason="unrequested"} 1.0' in \
            fetcher.metrics_text().decode()
        # Nothing it sent was stored: no block under the root is here.
        assert all(not fetcher.blockstore.has(b.cid) for b in blocks)


async def test_fetch_completes_from_honest_peer_beside_a_liar(swarmlet: Any) -> None:
    s = await swarmlet(2)
    owner, fetcher = s.nodes[0], s.nodes[1]
    data = content(2_500_000, 6)
    pin = owner.blockstore.add([data], Kind.EVIDENCE, 0)
    _, blocks = add_bytes(data, 0)
    liar = LyingPeer(blocks)
    async with AsyncExitStack() as stack:
        liar_id = await start_liar(stack, liar, fetcher)
        with trio.fail_after(DEADLINE_S):
            got = await fetcher.bitswap.fetch(pin.root)
        assert got == pin
        assert b"".join(fetcher.blockstore.read(pin.root)) == data
        # Whenever the liar was given a block to send, it was caught.
        if liar.wrong_blocks_sent:
            assert fetcher.bitswap.penalised(liar_id)
            assert sample(fetcher, "swarm_bitswap_bad_blocks_total",
                          {"reason": "unrequested"}) >= 1
