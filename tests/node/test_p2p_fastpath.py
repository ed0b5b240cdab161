"""The py-libp2p patches of node/p2p_fastpath.py keep behaviour and drop the repeated work.

Goal: yamux returns credit in batches (many small messages cost no WINDOW_UPDATE each,
and transfers of several windows still complete both ways); a sender's peer record is
verified once and then recognised, while a different or invalid record still goes
through py-libp2p's full check. Method: two real hosts (Noise, Yamux) on loopback in one
trio process; the record check on records issued by a real host.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes

from swarm.node import p2p, p2p_fastpath

PROTOCOL = TProtocol("/test/fastpath/1")


async def two_hosts(stack: AsyncExitStack) -> tuple[Any, Any]:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    a, _ = p2p.make_host(os.urandom(32), listen)
    b, _ = p2p.make_host(os.urandom(32), listen)
    await stack.enter_async_context(a.run(listen_addrs=listen))
    await stack.enter_async_context(b.run(listen_addrs=listen))
    await a.connect(info_from_p2p_addr(multiaddr.Multiaddr(str(b.get_addrs()[0]))))
    return a, b


async def test_small_messages_cost_no_window_update_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[int] = []
    send_update = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await send_update(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    messages = [os.urandom(300) for _ in range(1000)]
    received: list[bytes] = []
    done = trio.Event()

    async def reader(stream: Any) -> None:
        for _ in messages:
            received.append(await read_varint_prefixed_bytes(stream))
        done.set()

    async with AsyncExitStack() as stack:
        a, b = await two_hosts(stack)
        b.set_stream_handler(PROTOCOL, reader)
        stream = await a.new_stream(b.get_id(), [PROTOCOL])
        for m in messages:
            await stream.write(encode_varint_prefixed(m))
        with trio.fail_after(30):
            await done.wait()
    assert received == messages
    # ~300 KB read a byte, then a body, at a time: credit once per half window (128 KiB),
    # not after each of the ~3000 reads.
    assert 1 <= len(updates) <= 4


async def test_transfers_of_many_windows_complete_both_ways() -> None:
    size = 3 * 1024 * 1024  # twelve 256 KiB windows

    async def echo_digest(stream: Any) -> None:
        digest, got = hashlib.sha256(), 0
        while got < size:
            chunk = await stream.read(65536)
            digest.update(chunk)
            got += len(chunk)
        await stream.write(digest.digest() + os.urandom(size))  # a big reply as well
        await stream.close()

    payload = os.urandom(size)
    async with AsyncExitStack() as stack:
        a, b = await two_hosts(stack)
        b.set_stream_handler(PROTOCOL, echo_digest)
        stream = await a.new_stream(b.get_id(), [PROTOCOL])
        with trio.fail_after(60):
            for k in range(0, size, 100_000):
                await stream.write(payload[k:k + 100_000])
            reply = b""
            while len(reply) < 32 + size:
                reply += await stream.read(65536)
    assert reply[:32] == hashlib.sha256(payload).digest()


async def test_a_repeated_peer_record_is_recognised_and_others_still_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[bytes] = []
    full_check = p2p_fastpath._consume_record

    def counted(msg: RPC, host: Any, peer_id: Any) -> bool:
        checks.append(bytes(msg.senderRecord))
        return bool(full_check(msg, host, peer_id))

    monkeypatch.setattr(p2p_fastpath, "_consume_record", counted)
    async with AsyncExitStack() as stack:
        a, b = await two_hosts(stack)
        record, _ = p2p_fastpath.env_to_send_in_rpc(b)
        assert p2p_fastpath.env_to_send_in_rpc(b)[0] == record  # reused, same bytes
        rpc = RPC(senderRecord=record)
        assert p2p_fastpath.maybe_consume_signed_record(rpc, a, b.get_id())
        assert p2p_fastpath.maybe_consume_signed_record(rpc, a, b.get_id())
        assert checks == [record]  # verified once
        # The same bytes claimed by another peer, or other bytes, get the full check.
        assert not p2p_fastpath.maybe_consume_signed_record(rpc, a, a.get_id())
        tampered = bytearray(record)
        tampered[-1] ^= 1
        assert not p2p_fastpath.maybe_consume_signed_record(
            RPC(senderRecord=bytes(tampered)), a, b.get_id())
        assert len(checks) == 3
        # An RPC without a record needs no check.
        assert p2p_fastpath.maybe_consume_signed_record(RPC(), a, b.get_id())
        assert len(checks) == 3
