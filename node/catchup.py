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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from swarm.protocol import cbor
from swarm.protocol.cid import Cid
from swarm.protocol.errors import DecodeError
from swarm.protocol.sync import SYNC_BUCKETS, IdSet

REQUEST_BYTES_MAX = 64 * 1024
REPLY_BYTES_MAX = 8 * 1024 * 1024
IDS_PER_REPLY_MAX = 50_000
FETCH_BATCH = 256
LIMITS = cbor.Limits(size_bytes_max=REPLY_BYTES_MAX, depth_max=4, items_max=IDS_PER_REPLY_MAX + 8)


# A peer whose catch-up round failed is not asked again for this long (doubling with each
# further failure, up to the maximum); a round that succeeds clears it.
FAILURE_BACKOFF_S = 10.0
FAILURE_BACKOFF_MAX_S = 300.0


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
        backoff = min(FAILURE_BACKOFF_S * 2.0 ** (count - 1), FAILURE_BACKOFF_MAX_S)
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
            size += len(wire) + 8
            if size > REPLY_BYTES_MAX - 1024:
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
