"""The Raft transport's framing: frames survive any split of the byte stream, and a
peer announcing an oversize frame ends its stream rather than our memory."""

from __future__ import annotations

import random
from typing import Any

import pytest

from swarm.node.raft_transport import FrameReader
from swarm.protocol.logformat import uvarint


class ChoppyStream:
    """Returns what it holds in random small pieces, as a real stream may."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data = data
        self.rng = random.Random(seed)

    async def read(self, n: int) -> bytes:
        if not self.data:
            return b""
        k = min(n, self.rng.randint(1, 7))
        piece, self.data = self.data[:k], self.data[k:]
        return piece


@pytest.mark.parametrize("seed", range(5))
async def test_frames_survive_any_split(seed: int) -> None:
    frames = [bytes([i]) * (i * 37 % 300) for i in range(40)]
    wire = b"".join(uvarint(len(f)) + f for f in frames)
    stream: Any = ChoppyStream(wire, seed)
    reader = FrameReader(stream)
    got = []
    while (frame := await reader.next()) is not None:
        got.append(frame)
    assert got == frames


async def test_oversize_frame_is_refused() -> None:
    stream: Any = ChoppyStream(uvarint(10_000) + b"x" * 10, 0)
    with pytest.raises(ValueError, match="over"):
        await FrameReader(stream, frame_bytes_max=1000).next()


async def test_bad_length_prefix_is_refused() -> None:
    stream: Any = ChoppyStream(b"\xff" * 12, 0)
    with pytest.raises(ValueError, match="prefix"):
        await FrameReader(stream).next()


def two_validators(name: str, first_seed: int) -> tuple[Any, Any, list[bytes], list[int]]:
    """A genesis of two validators (every bucket on both): (genesis, placement, their
    seeds, their Raft node ids)."""
    from swarm.protocol import genesis
    from swarm.protocol.envelope import Identity
    from swarm.protocol.placement import Placement

    seeds = [bytes([first_seed + i]) * 32 for i in range(2)]
    gen = genesis.new(name=name, created_ms=0,
                      validators=[{"account": Identity(s).public_key, "org": f"o{k}",
                                   "asn": k, "region": "r", "stake": 1}
                                  for k, s in enumerate(seeds)],
                      params={"bucket_count": 8, "replicas": 2})
    placement = Placement.from_genesis(gen)
    ids = [placement.node_id(Identity(s).public_key) for s in seeds]
    assert all(ids)
    return gen, placement, seeds, ids


async def test_a_full_queue_resets_the_stream_rather_than_drop_silently(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame dropped for a full queue must not vanish: a quiet bucket sends nothing
    after it. The stream is reset instead, so the receiver takes the sender for lost
    (and, when the new stream's frames come, for back), and frames flow again."""
    from contextlib import AsyncExitStack

    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from swarm.node import p2p, raft_transport
    from swarm.node.raft_transport import RaftTransport, raft_protocol

    monkeypatch.setattr(raft_transport, "QUEUE_FRAMES_MAX", 4)
    gen, placement, seeds, ids = two_validators("overflow", 0x90)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    got: list[bytes] = []
    events: list[tuple[str, int]] = []
    arrived = trio.Event()

    def on_frame(sender: int, frame: bytes) -> None:
        got.append(frame)
        arrived.set()

    async with AsyncExitStack() as stack:
        hosts = []
        for s in seeds:
            h, _ = p2p.make_host(s, listen)
            await stack.enter_async_context(h.run(listen_addrs=listen))
            hosts.append(h)
        b_addr = str(hosts[1].get_addrs()[0])
        await hosts[0].connect(info_from_p2p_addr(multiaddr.Multiaddr(b_addr)))
        proto = raft_protocol(gen.short_id)
        a = RaftTransport(hosts[0], proto, placement, ids[0], lambda n: [b_addr],
                          lambda n, f: None, lambda n: events.append(("a lost", n)),
                          lambda n: events.append(("a up", n)))
        b = RaftTransport(hosts[1], proto, placement, ids[1], lambda n: [],
                          on_frame, lambda n: events.append(("b lost", n)),
                          lambda n: None)
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await nursery.start(a.run)
            with trio.fail_after(30):
                a.send(ids[1], b"first")
                while b"first" not in got:
                    await arrived.wait()
                    arrived = trio.Event()
                for k in range(10):  # no await in between: the queue overflows
                    a.send(ids[1], b"burst-%d" % k)
                while a.stats["overflows"] < 1 or ("b lost", ids[0]) not in events:
                    await trio.sleep(0.02)
                while b"after" not in got:  # the stream is dialled again; frames flow
                    a.send(ids[1], b"after")
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert a.stats["frames_dropped"] >= 6
    assert events.count(("a up", ids[1])) >= 2  # the first stream, then the new one


async def test_a_peer_back_on_a_new_connection_gets_our_frames_there() -> None:
    """A peer restarted while a cut kept its old connection open at our end (TCP sees
    nothing). Its new incarnation dials us and its frames arrive on a new connection,
    so it looks alive and the stall timer never fires; our own stream still rides the
    dead connection. A second stream from the same peer on another connection closes
    the old connections, and our frames reach the new incarnation."""
    from contextlib import AsyncExitStack

    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from swarm.node import p2p
    from swarm.node.raft_transport import RaftTransport, raft_protocol

    gen, placement, seeds, (a_id, b_id) = two_validators("restart", 0xa0)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    proto = raft_protocol(gen.short_id)
    old_b_alive = [True]
    to_old_b: list[bytes] = []
    to_new_b: list[bytes] = []
    to_a: list[bytes] = []

    async with AsyncExitStack() as stack:
        async def host(seed: bytes) -> Any:
            h, _ = p2p.make_host(seed, listen)
            await stack.enter_async_context(h.run(listen_addrs=listen))
            return h

        host_a, host_b = await host(seeds[0]), await host(seeds[1])
        host_b2 = await host(seeds[1])  # the same peer id: B's next process, idle so far
        a_addr = str(host_a.get_addrs()[0])
        b_addr = str(host_b.get_addrs()[0])
        a = RaftTransport(host_a, proto, placement, a_id, lambda n: [b_addr],
                          lambda n, f: to_a.append(f), lambda n: None, lambda n: None)

        def old_b_frame(n: int, f: bytes) -> None:
            if old_b_alive[0]:  # the old process is gone: it reads nothing any more
                to_old_b.append(f)

        b = RaftTransport(host_b, proto, placement, b_id, lambda n: [a_addr], old_b_frame,
                          lambda n: None, lambda n: None)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            b_scope = trio.CancelScope()

            async def run_old_b() -> None:
                with b_scope:
                    await b.run()

            nursery.start_soon(run_old_b)
            with trio.fail_after(30):
                while not (to_old_b and to_a):
                    a.send(b_id, b"hello")
                    b.send(a_id, b"hi")
                    await trio.sleep(0.05)
            # The old B dies without its connection closing (as behind a cut).
            old_b_alive[0] = False
            b_scope.cancel()
            await host_b2.connect(info_from_p2p_addr(multiaddr.Multiaddr(
                a_addr + "/p2p/" + host_a.get_id().to_base58())))
            b2 = RaftTransport(host_b2, proto, placement, b_id, lambda n: [a_addr],
                               lambda n, f: to_new_b.append(f), lambda n: None,
                               lambda n: None)
            await nursery.start(b2.run)
            with trio.fail_after(30):
                while b"after" not in to_new_b or b"beat" not in to_a:
                    b2.send(a_id, b"beat")
                    a.send(b_id, b"after")
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert a.stats["superseded"] >= 1
