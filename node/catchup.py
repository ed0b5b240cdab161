"""Catch-up: a request/response protocol that brings a node the envelopes it lacks.

Gossip is the fast path and drops by design (bounded queues, no flooding), so every node
also pulls: it asks a random peer for its id-set summary (256 bucket digests, see
`swarm.protocol.sync`), asks for the ids in the buckets that differ, and fetches the
envelopes it lacks, in batches. Everything fetched goes through the same pipeline as
gossip. Messages are DAG-CBOR, one request and one reply per stream, each
varint-length-prefixed and bounded in size; a peer that answers with garbage is told
nothing and simply not believed.

Whom to ask (`SyncPeers`): only connected peers that speak the sync protocol. A peer
whose identify answer (py-libp2p runs identify on every new connection) lists its
protocols without ours (a Kubo node dialled for evidence, say) is never asked; a peer
not identified yet may be asked, and any failed round puts that peer aside for a while,
so neither kind can make catch-up wait on it round after round.

`CatchUp` runs it: it serves peers' requests (a bounded number at once) and every
INTERVAL_S, jittered, pulls from one chosen peer. What to do with the envelopes a pull
brings (judge, penalise, commit) is the node's (`take`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.protocol import cbor
from swarm.protocol.cid import Cid
from swarm.protocol.errors import DecodeError
from swarm.protocol.sync import SYNC_BUCKETS, IdSet, differing_buckets

from .store import StoreError
from .streamlimits import Slots

log = logging.getLogger("swarm.node")

INTERVAL_S = 2.0  # between pulls, jittered by up to half either way
REQUEST_TIMEOUT_S = 10.0  # one request and its reply
# Requests served at once: a node asks its peers one request at a time, and each reply
# being built holds up to REPLY_BYTES_MAX of memory.
SERVE_PER_PEER_MAX = 4
SERVE_TOTAL_MAX = 32
REQUEST_BYTES_MAX = 64 * 1024
REPLY_BYTES_MAX = 8 * 1024 * 1024
IDS_PER_REPLY_MAX = 50_000
FETCH_BATCH = 256
# A reply's envelopes fill REPLY_BYTES_MAX less room for the map around them, counting
# each with its CBOR header (at most 8 bytes for a length under 2^32).
REPLY_HEADROOM_BYTES = 1024
WIRE_HEADER_BYTES_MAX = 8
LIMITS = cbor.Limits(size_bytes_max=REPLY_BYTES_MAX, depth_max=4, items_max=IDS_PER_REPLY_MAX + 8)


# A peer whose catch-up round failed is not asked again for this long (doubling with each
# further failure, up to the maximum); a round that succeeds clears it.
FAILURE_BACKOFF_S = 10.0
FAILURE_BACKOFF_S_MAX = 300.0


class CatchupError(Exception):
    """A peer's request or reply is malformed."""


class SyncPeers:
    """Chooses the peers worth a catch-up round: those that speak `protocol`."""

    def __init__(self, protocol: str, now: Callable[[], float] = time.monotonic) -> None:
        self.protocol = protocol
        self._now = now
        # peer -> (consecutive failures, not to be asked before this time)
        self._failed: dict[Hashable, tuple[int, float]] = {}

    def candidates(self, connected: Sequence[Any],
                   protocols_of: Callable[[Any], Sequence[str] | None]) -> list[Any]:
        """The connected peers to choose from. `protocols_of(peer)` is what identify
        reported, or None if nothing yet."""
        now = self._now()
        out = []
        for peer in connected:
            protocols = protocols_of(peer)
            if protocols is not None and self.protocol not in protocols:
                continue
            failed = self._failed.get(peer)
            if failed is not None and now < failed[1]:
                continue
            out.append(peer)
        return out

    def failed(self, peer: Hashable) -> float:
        """Record a failed round; returns how long the peer is put aside, in seconds."""
        count = self._failed.get(peer, (0, 0.0))[0] + 1
        backoff = min(FAILURE_BACKOFF_S * 2.0 ** (count - 1), FAILURE_BACKOFF_S_MAX)
        self._failed[peer] = (count, self._now() + backoff)
        return backoff

    def succeeded(self, peer: Hashable) -> None:
        self._failed.pop(peer, None)

    def set_aside(self) -> set[Any]:
        """The peers not to be asked now because their last round failed."""
        now = self._now()
        return {peer for peer, (_, until) in self._failed.items() if now < until}

    def forget(self, connected: Sequence[Any]) -> None:
        """Drop what is remembered about peers no longer connected (bounds the memory;
        a peer that reconnects starts afresh, as its new identify answer will tell)."""
        keep = set(connected)
        for peer in [p for p in self._failed if p not in keep]:
            del self._failed[peer]


def encode(message: dict[str, Any]) -> bytes:
    return cbor.encode(message)


def decode(data: bytes) -> dict[str, Any]:
    try:
        value = cbor.decode(data, LIMITS)
    except DecodeError as exc:
        raise CatchupError(f"undecodable message: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("op"), str):
        raise CatchupError("message must be a map with an `op`")
    return value


def answer(request: dict[str, Any], ids: IdSet, get_wire: Any) -> dict[str, Any]:
    """The server side, pure apart from reading the store through `get_wire(cid)`."""
    op = request["op"]
    if op == "summary":
        return {"op": "summary", "count": len(ids), "digests": ids.summary()}
    if op == "ids":
        buckets = request.get("buckets")
        if not isinstance(buckets, list) or not all(
            isinstance(b, int) and 0 <= b < SYNC_BUCKETS for b in buckets
        ):
            raise CatchupError("`buckets` must be a list of bucket numbers")
        out: list[bytes] = []
        for b in buckets:
            out.extend(c.raw for c in ids.ids_in(b))
            if len(out) >= IDS_PER_REPLY_MAX:
                out = out[:IDS_PER_REPLY_MAX]
                break
        return {"op": "ids", "ids": out}
    if op == "get":
        wanted = request.get("ids")
        if not isinstance(wanted, list) or len(wanted) > FETCH_BATCH or not all(
            isinstance(i, bytes) for i in wanted
        ):
            raise CatchupError(f"`ids` must be a list of at most {FETCH_BATCH} binary CIDs")
        wires: list[bytes] = []
        size = 0
        for raw in wanted:
            try:
                cid = Cid.from_bytes(raw)
            except DecodeError:
                continue
            wire = get_wire(cid)
            if wire is None:
                continue
            size += len(wire) + WIRE_HEADER_BYTES_MAX
            if size > REPLY_BYTES_MAX - REPLY_HEADROOM_BYTES:
                break
            wires.append(wire)
        return {"op": "envelopes", "envelopes": wires}
    raise CatchupError(f"unknown op {op!r}")


def digests_of(reply: dict[str, Any]) -> list[bytes]:
    digests = reply.get("digests")
    if (
        reply.get("op") != "summary"
        or not isinstance(digests, list)
        or len(digests) != SYNC_BUCKETS
        or not all(isinstance(d, bytes) and len(d) == 32 for d in digests)
    ):
        raise CatchupError("malformed summary")
    return digests


def ids_of(reply: dict[str, Any]) -> list[Cid]:
    raw = reply.get("ids")
    if reply.get("op") != "ids" or not isinstance(raw, list):
        raise CatchupError("malformed id list")
    out = []
    for item in raw:
        if not isinstance(item, bytes):
            raise CatchupError("malformed id list")
        try:
            out.append(Cid.from_bytes(item))
        except DecodeError:
            raise CatchupError("malformed id in list") from None
    return out


def envelopes_of(reply: dict[str, Any]) -> list[bytes]:
    raw = reply.get("envelopes")
    if reply.get("op") != "envelopes" or not isinstance(raw, list) or not all(
        isinstance(w, bytes) for w in raw
    ):
        raise CatchupError("malformed envelope list")
    return raw


class CatchUp:
    """This node's side of catch-up over libp2p streams of `protocol`. `ids` is the set
    of envelopes this node offers and `offered(cid)` reads one of them; `take(peer,
    wires)` hands a pulled batch to the node and answers how many it accepted;
    `storage_failed` stops the node when the store fails under a pull."""

    def __init__(self, host: IHost, protocol: TProtocol, ids: IdSet,
                 offered: Callable[[Cid], bytes | None],
                 take: Callable[[ID, list[bytes]], Awaitable[int]],
                 storage_failed: Callable[[BaseException], None]) -> None:
        self.host = host
        self.protocol = protocol
        self.ids = ids
        self.offered = offered
        self.take = take
        self.storage_failed = storage_failed
        self.slots = Slots(SERVE_PER_PEER_MAX, SERVE_TOTAL_MAX)
        self.peers = SyncPeers(protocol)

    async def serve(self, stream: INetStream) -> None:
        """One peer's request on its own stream (the stream handler)."""
        peer = stream.muxed_conn.peer_id
        if not self.slots.take(peer):
            await stream.reset()
            return
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                request = decode(await read_varint_prefixed_bytes_limited(
                    stream, REQUEST_BYTES_MAX))
                reply = answer(request, self.ids, self.offered)
                await stream.write(encode_varint_prefixed(encode(reply)))
                await stream.close()
        except Exception as exc:  # noqa: BLE001 - a peer's bad request ends its stream only
            log.debug("catch-up request failed peer=%s error=%r", peer, exc)
            await stream.reset()
        finally:
            self.slots.give(peer)

    async def request(self, peer: ID, message: dict[str, Any]) -> dict[str, Any]:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            stream = await self.host.new_stream(peer, [self.protocol])
            try:
                await stream.write(encode_varint_prefixed(encode(message)))
                reply = await read_varint_prefixed_bytes_limited(stream, REPLY_BYTES_MAX)
            finally:
                await stream.close()
        return decode(reply)

    async def catch_up_with(self, peer: ID) -> int:
        """Fetch what `peer` has and we lack; returns how many envelopes were accepted."""
        theirs = digests_of(await self.request(peer, {"op": "summary"}))
        buckets = differing_buckets(self.ids.summary(), theirs)
        if not buckets:
            return 0
        ids = ids_of(await self.request(peer, {"op": "ids", "buckets": buckets}))
        missing = self.ids.missing_from(ids)
        accepted = 0
        for start in range(0, len(missing), FETCH_BATCH):
            chunk = missing[start:start + FETCH_BATCH]
            reply = await self.request(peer, {"op": "get", "ids": [c.raw for c in chunk]})
            accepted += await self.take(peer, envelopes_of(reply))
            await trio.sleep(0)
        if accepted:
            log.info("caught up peer=%s accepted=%d", peer.to_base58(), accepted)
        return accepted

    def protocols_of(self, peer: ID) -> list[str] | None:
        """What identify reported for `peer`, or None if it has not answered yet."""
        try:
            protocols = self.host.get_peerstore().get_protocols(peer)
        except KeyError:  # PeerStoreError: an unknown peer
            return None
        return [str(p) for p in protocols] or None

    async def run(self) -> None:
        """Pull from a random candidate peer every INTERVAL_S, until cancelled or the
        store fails. (`serve` is the stream handler, set by the node.)"""
        rng = random.Random()
        while True:
            connected = self.host.get_connected_peers()
            self.peers.forget(connected)
            candidates = self.peers.candidates(connected, self.protocols_of)
            if candidates:
                peer = rng.choice(candidates)
                try:
                    await self.catch_up_with(peer)
                    self.peers.succeeded(peer)
                except StoreError as exc:
                    self.storage_failed(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a peer's failure costs only this round
                    backoff = self.peers.failed(peer)
                    log.debug("catch-up failed peer=%s error=%r; not asked for %.0f s",
                              peer, exc, backoff)
            await trio.sleep(INTERVAL_S * (0.5 + rng.random()))
