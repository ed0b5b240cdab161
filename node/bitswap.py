"""Bitswap on the node's libp2p host: serving our blocks and fetching DAGs from peers.

Owns the streams, the timers and the per-peer state of `/ipfs/bitswap/1.2.0` (and
1.1.0); the message format, the answers to wants and the logic of a fetch are pure
and live in `swarm.protocol.bitswap`.

Streams, as Kubo (boxo's bsnet) uses them: a peer reads only the streams the *other*
side opens, so everything we say to a peer (our wants, our blocks, HAVE/DONT_HAVE)
goes on one stream we open to it and keep, and everything it says to us arrives on
streams it opens, which we only read, until they end. Each message is a varint
length and a protobuf body of at most 4 MiB. This is where py-libp2p 0.8.1's bitswap
cannot serve Kubo (docs/EVIDENCE.md lists its four defects); nothing of it is used.

Per peer (`_Peer`): its want list (a PeerLedger, bounded), the wants and cancels we
still have to send it, the stream we opened to it, and the CIDs we have asked it for
(bounded, newest kept). One sender task per peer, started when there is something to
send and ending when there is nothing left, writes messages that combine our wants
with the next reply to its wants (blocks up to 1 MiB per message), so a reader never
waits on a writer: reading a peer's stream only merges its wants and hands blocks to
fetches, it never blocks on sending.

Checking and penalties: a block's CID is computed from its bytes when the message is
decoded, so the only question on arrival is whether we asked this peer for that CID.
A block we did not ask the peer for (a wrong block for the one we asked for hashes to
some other CID), or a message that does not decode, penalises the peer: it is dropped
from every fetch, left out of new ones for PENALTY_S, counted in
`swarm_bitswap_bad_blocks_total{reason}`, and reported to `on_bad_peer` (the node
lowers its gossip score). Late copies of blocks we did ask for are only counted.

Fetches (`start_fetch`, `fetch`) run in the service's nursery, one per (root, kind),
at most FETCHES_MAX at once; callers wait on a FetchHandle, so several requests for
one object share a fetch. Blocks are stored as they arrive through a blockstore
holding (spared by gc), and the root is pinned when the whole DAG is here, which walks
and checks it once more. Memory stays bounded: at most WANTS_MAX blocks are wanted at
once, and a peer's message is at most 4 MiB.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.utils import encode_varint_prefixed
from prometheus_client import CollectorRegistry, Counter

from swarm.protocol import bitswap as bs
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError, ProtocolError
from swarm.protocol.logformat import UVARINT_BYTES_MAX, uvarint_prefix

from .blockstore import Blockstore, Holding, Kind, Pin

log = logging.getLogger("swarm.bitswap")

# A fetch: blocks wanted at once (x 256 KiB is the most a fetch holds in flight), and
# from one peer; a tick of its clock, and ticks without a word before a want moves on.
WANTS_MAX = 32
PEER_WANTS_MAX = 16
TICK_S = 1.0
TICKS_MAX = 15
FETCHES_MAX = 16
# CIDs remembered per peer as asked for (a block for one we forgot looks unrequested;
# far above what WANTS_MAX wants per fetch and FETCHES_MAX fetches can have out).
ASKED_MAX = 8192
PENALTY_S = 600.0
PENALISED_MAX = 1024
OPEN_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
# A message that has started arriving must be complete within this time.
READ_TIMEOUT_S = 60.0
READ_BYTES = 256 * 1024
RESET_TIMEOUT_S = 1.0  # resetting a stale stream before opening a fresh one


class BitswapMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.blocks_received = Counter("swarm_bitswap_blocks_received",
                                       "Blocks a fetch wanted, checked and stored", registry=r)
        self.bytes_received = Counter("swarm_bitswap_bytes_received",
                                      "Bytes of those blocks", registry=r)
        self.duplicates = Counter("swarm_bitswap_duplicate_blocks",
                                  "Blocks we had asked for that came when no fetch wanted "
                                  "them any more", registry=r)
        self.bad_blocks = Counter("swarm_bitswap_bad_blocks",
                                  "Messages or blocks that got a peer penalised: "
                                  "unrequested (includes wrong bytes for a wanted CID) "
                                  "or malformed", ["reason"], registry=r)
        self.blocks_sent = Counter("swarm_bitswap_blocks_sent", "Blocks served to peers",
                                   registry=r)
        self.bytes_sent = Counter("swarm_bitswap_bytes_sent", "Bytes of those blocks",
                                  registry=r)
        self.fetches = Counter("swarm_bitswap_fetches", "Fetches by outcome (finished or "
                               "an error code)", ["outcome"], registry=r)


@dataclass
class _Peer:
    ledger: bs.PeerLedger = field(default_factory=bs.PeerLedger)
    outbox: dict[Cid, bs.Want] = field(default_factory=dict)
    asked: OrderedDict[Cid, None] = field(default_factory=OrderedDict)
    stream: INetStream | None = None
    protocol: str = bs.PROTOCOL_1_2_0
    sending: bool = False


class FetchHandle:
    """One fetch in progress: wait for `done`, then read `pin` or `error`."""

    def __init__(self, root: Cid, kind: Kind, session: bs.Fetch[ID], holding: Holding) -> None:
        self.root = root
        self.kind = kind
        self.session = session
        self.holding = holding  # spares the blocks stored so far from gc until the pin
        self.done = trio.Event()
        self.changed = trio.Event()
        self.pin: Pin | None = None
        self.error: ProtocolError | None = None

    @property
    def received_bytes(self) -> int:
        return self.session.received_bytes

    @property
    def size(self) -> int | None:
        return self.session.size

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self) -> Pin:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.pin is not None
        return self.pin


class BlockSource(Protocol):
    """Somewhere else blocks may be: the user's IPFS daemon (node/ipfs_api.py). Called
    in a worker thread; each call is bounded by its own timeout."""

    def get(self, cid: Cid) -> bytes | None: ...
    def has(self, cid: Cid) -> bool: ...


class Bitswap:
    def __init__(self, host: IHost, blockstore: Blockstore, registry: CollectorRegistry,
                 on_bad_peer: Callable[[ID], None] | None = None,
                 remote: BlockSource | None = None) -> None:
        self.host = host
        self.blockstore = blockstore
        self.remote = remote
        self.metrics = BitswapMetrics(registry)
        self.on_bad_peer = on_bad_peer
        self._peers: dict[ID, _Peer] = {}
        self._fetches: dict[tuple[Cid, Kind], FetchHandle] = {}
        self._penalised: OrderedDict[ID, float] = OrderedDict()  # peer -> until (monotonic)
        self._nursery: trio.Nursery | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: registers the protocols and hosts the sender and
        fetch tasks."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for protocol in bs.PROTOCOLS:
                self.host.set_stream_handler(TProtocol(protocol), self._handle)
            task_status.started()
            await trio.sleep_forever()

    # -- fetching ----------------------------------------------------------------------

    def start_fetch(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> FetchHandle:
        """The fetch of `root` as `kind`, started now or already running."""
        handle = self._fetches.get((root, kind))
        if handle is not None:
            return handle
        if len(self._fetches) >= FETCHES_MAX:
            raise LocalProtocolError("cid", f"{FETCHES_MAX} fetches are running; try again "
                                     "when one ends", code="busy")
        assert self._nursery is not None, "Bitswap.run() is not running"
        session: bs.Fetch[ID] = bs.Fetch(root, self.blockstore.limits[kind],
                                         self.blockstore.get, wants_max=WANTS_MAX,
                                         peer_wants_max=PEER_WANTS_MAX, ticks_max=TICKS_MAX)
        handle = FetchHandle(root, kind, session, self.blockstore.hold())
        self._fetches[(root, kind)] = handle
        self._nursery.start_soon(self._run_fetch, handle)
        return handle

    async def fetch(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Pin:
        """Fetch `root` from peers unless it is here, check it, store and pin it.

        Raises NotFound (no peer has a block of it), TooLarge, UnixfsError (the DAG is
        not a well-formed file), or LocalProtocolError (too many fetches running)."""
        return await self.start_fetch(root, kind).wait()

    async def _run_fetch(self, handle: FetchHandle) -> None:
        session = handle.session
        started = time.monotonic()
        try:
            self._apply(handle, session.start(self._candidates()))
            next_tick = trio.current_time() + TICK_S
            while not session.done:
                with trio.move_on_at(next_tick):
                    await handle.changed.wait()
                if trio.current_time() >= next_tick:
                    next_tick += TICK_S
                    for peer in self._candidates():
                        if peer not in session.peers:
                            self._apply(handle, session.add_peer(peer))
                    self._apply(handle, session.tick())
            outcome = session.outcome
            if isinstance(outcome, bs.Failed):
                raise outcome.error
            # Every block is here: pinning walks the DAG once more from the store.
            handle.pin = self.blockstore.pin(handle.root, handle.kind)
            self.metrics.fetches.labels("finished").inc()
            log.info("fetched root=%s bytes=%d blocks=%d seconds=%.2f", handle.root,
                     handle.pin.size, handle.pin.blocks, time.monotonic() - started)
        except ProtocolError as exc:
            handle.error = exc
            self.metrics.fetches.labels(exc.code).inc()
            log.info("fetch failed root=%s error=%s", handle.root, exc)
        finally:
            if not session.done:  # cancelled: tell the peers we no longer want anything
                self._apply(handle, session.abandon())
            if handle.pin is None and handle.error is None:
                # Cancelled (the node is stopping) or the store failed (which stops it).
                handle.error = LocalProtocolError("cid", f"the fetch of {handle.root} was "
                                                  "stopped", code="abandoned")
            handle.holding.close()
            del self._fetches[(handle.root, handle.kind)]
            handle.done.set()
            handle._notify()

    def _candidates(self) -> list[ID]:
        return [p for p in self.host.get_connected_peers() if not self.penalised(p)]

    def _apply(self, handle: FetchHandle, actions: list[bs.Action[ID]]) -> None:
        """Carry out a session's actions in their order: store, then send."""
        for action in actions:
            if isinstance(action, bs.StoreBlock):
                handle.holding.put(action.block.cid, action.block.data)
                self.metrics.blocks_received.inc()
                self.metrics.bytes_received.inc(len(action.block.data))
            elif isinstance(action, bs.SendWants):
                self._send_wants(action.peer, action.wants)
        if actions:
            handle._notify()

    # -- sending -----------------------------------------------------------------------

    def _peer(self, peer: ID) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer()
        return state

    def _send_wants(self, peer: ID, wants: tuple[bs.Want, ...]) -> None:
        state = self._peer(peer)
        for want in wants:
            # The latest word on a CID replaces one not sent yet.
            state.outbox.pop(want.cid, None)
            state.outbox[want.cid] = want
            if not want.cancel:
                state.asked[want.cid] = None
                state.asked.move_to_end(want.cid)
                if len(state.asked) > ASKED_MAX:
                    state.asked.popitem(last=False)
        self._wake(peer, state)

    def _wake(self, peer: ID, state: _Peer) -> None:
        if not state.sending and self._nursery is not None:
            state.sending = True
            self._nursery.start_soon(self._send_loop, peer, state)

    async def _next_messages(self, state: _Peer) -> list[bs.Message]:
        """Our queued wants, with the replies to the next few of the peer's wants."""
        taken = state.ledger.take()
        replies = []
        if taken:
            found = await self._lookup(taken)
            replies = bs.answer(taken, found, state.ledger.have_supported)
        wants: list[bs.Want] = []
        while state.outbox and len(wants) < bs.WANTS_PER_MESSAGE_MAX:
            cid = next(iter(state.outbox))
            wants.append(state.outbox.pop(cid))
        for reply in replies:
            for block in reply.blocks:
                self.metrics.blocks_sent.inc()
                self.metrics.bytes_sent.inc(len(block.data))
        if wants:
            first = replies[0] if replies else bs.Message()
            replies[:1] = [bs.Message(wants=tuple(wants), blocks=first.blocks,
                                      presences=first.presences)]
        return replies

    async def _lookup(self, wants: list[bs.Want]) -> dict[Cid, bytes | bool | None]:
        """What we hold of each wanted block: the embedded store first, then (for what
        it lacks) the user's IPFS daemon if the node has one, in a worker thread."""
        found: dict[Cid, bytes | bool | None] = {}
        elsewhere: list[bs.Want] = []
        for want in wants:
            value: bytes | bool | None = (self.blockstore.get(want.cid)
                                          if want.want_type is bs.WantType.BLOCK
                                          else self.blockstore.has(want.cid))
            if value is None or value is False:
                elsewhere.append(want)
            found[want.cid] = value
        if elsewhere and self.remote is not None:
            # Not abandoned on cancel: each lookup is bounded by the daemon's timeout.
            found.update(await trio.to_thread.run_sync(self._remote_lookup, elsewhere))
        return found

    def _remote_lookup(self, wants: list[bs.Want]) -> dict[Cid, bytes | bool | None]:
        assert self.remote is not None
        out: dict[Cid, bytes | bool | None] = {}
        for want in wants:
            out[want.cid] = (self.remote.get(want.cid) if want.want_type is bs.WantType.BLOCK
                             else self.remote.has(want.cid))
        return out

    async def _send_loop(self, peer: ID, state: _Peer) -> None:
        try:
            while messages := await self._next_messages(state):
                for message in messages:
                    await self._write(peer, state, message)
        except Exception as exc:  # noqa: BLE001 - any failure to reach a peer ends it here
            log.debug("bitswap send failed peer=%s error=%r", peer, exc)
            self._peer_failed(peer, state)
        finally:
            state.sending = False
            self._forget_if_gone(peer)

    async def _write(self, peer: ID, state: _Peer, message: bs.Message) -> None:
        for attempt in range(2):
            if state.stream is None:
                with trio.fail_after(OPEN_TIMEOUT_S):
                    stream = await self.host.new_stream(
                        peer, [TProtocol(p) for p in bs.PROTOCOLS])
                state.stream = stream
                state.protocol = str(stream.get_protocol())
            body = bs.encode(message, bs.supports_have(state.protocol))
            try:
                with trio.fail_after(WRITE_TIMEOUT_S):
                    await state.stream.write(encode_varint_prefixed(body))
                return
            except Exception:  # a stale stream: open a fresh one, once
                stream, state.stream = state.stream, None
                with trio.move_on_after(RESET_TIMEOUT_S):
                    await stream.reset()
                if attempt:
                    raise

    def _peer_failed(self, peer: ID, state: _Peer) -> None:
        """We cannot reach `peer`: its fetches move on and its want list is dropped.
        What we asked it for is kept, so its late blocks are not taken for wrong ones."""
        state.outbox.clear()
        state.ledger = bs.PeerLedger()
        state.stream = None
        for handle in list(self._fetches.values()):
            self._apply(handle, handle.session.on_peer_gone(peer))

    def _forget_if_gone(self, peer: ID) -> None:
        """Drop the state of a peer that is no longer connected and has nothing queued,
        so the table does not grow with every peer ever seen."""
        state = self._peers.get(peer)
        if (state is not None and not state.sending and not state.outbox
                and peer not in self.host.get_connected_peers()):
            del self._peers[peer]

    # -- receiving ---------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        """Read a stream a peer opened to us, message by message, until it ends."""
        peer = stream.muxed_conn.peer_id
        protocol = str(stream.get_protocol())
        reader = _MessageReader(stream)
        try:
            while (data := await reader.next()) is not None:
                if self.penalised(peer):
                    await stream.reset()
                    return
                self._received(peer, protocol, bs.decode(data))
        except bs.BitswapError as exc:
            self._penalise(peer, "malformed", str(exc))
            await stream.reset()
            return
        except Exception as exc:  # noqa: BLE001 - the peer went away or reset the stream
            log.debug("bitswap stream ended peer=%s error=%r", peer, exc)
            await stream.reset()
            return
        finally:
            self._forget_if_gone(peer)
        await stream.close()

    def _received(self, peer: ID, protocol: str, message: bs.Message) -> None:
        state = self._peer(peer)
        if message.wants or message.full:
            state.ledger.have_supported = bs.supports_have(protocol)
            state.ledger.receive(message)
            if len(state.ledger):
                self._wake(peer, state)
        for block in message.blocks:
            if block.cid not in state.asked:
                self._penalise(peer, "unrequested", f"sent block {block.cid}, which we did "
                               "not ask it for")
                return
            wanted = [h for h in self._fetches.values() if h.session.wants(block.cid)]
            if not wanted:
                self.metrics.duplicates.inc()
            for handle in wanted:
                self._apply(handle, handle.session.on_block(peer, block))
        for presence in message.presences:
            if presence.cid in state.asked:
                for handle in list(self._fetches.values()):
                    self._apply(handle, handle.session.on_presence(
                        peer, presence.cid, presence.have))

    def _penalise(self, peer: ID, reason: str, detail: str) -> None:
        log.warning("bitswap peer penalised peer=%s reason=%s detail=%s", peer, reason, detail)
        self.metrics.bad_blocks.labels(reason).inc()
        self._penalised[peer] = time.monotonic() + PENALTY_S
        self._penalised.move_to_end(peer)
        while len(self._penalised) > PENALISED_MAX:
            self._penalised.popitem(last=False)
        state = self._peers.pop(peer, None)
        if state is not None:
            state.outbox.clear()
        for handle in list(self._fetches.values()):
            self._apply(handle, handle.session.on_peer_gone(peer))
        if self.on_bad_peer is not None:
            self.on_bad_peer(peer)

    def penalised(self, peer: ID) -> bool:
        """True while `peer` serves its penalty (PENALTY_S from its last offence)."""
        now = time.monotonic()
        # Ordered by expiry: each new offence moves its peer to the end.
        while self._penalised and next(iter(self._penalised.values())) <= now:
            self._penalised.popitem(last=False)
        return peer in self._penalised


class _MessageReader:
    """Varint-length-prefixed messages from a stream, each at most MESSAGE_BYTES_MAX.

    Reads in pieces of READ_BYTES into one buffer (py-libp2p's read_exactly gives up
    after 100 partial reads, fewer than a 4 MiB message can take)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        try:
            piece = await self._stream.read(READ_BYTES)
        except EOFError:  # py-libp2p's StreamEOF is one
            return False
        if not piece:
            return False
        self._buffer += piece
        return True

    async def next(self) -> bytes | None:
        """The next message, or None at a clean end of the stream."""
        while True:
            length, start = _parse_uvarint(self._buffer)
            if length is not None:
                break
            if not await self._fill():
                if self._buffer:
                    raise bs.BitswapError("message", "stream ended inside a length prefix")
                return None
        if length > bs.MESSAGE_BYTES_MAX:
            raise bs.BitswapError("message", f"{length} bytes, limit {bs.MESSAGE_BYTES_MAX}")
        with trio.fail_after(READ_TIMEOUT_S):
            while len(self._buffer) < start + length:
                if not await self._fill():
                    raise bs.BitswapError("message", "stream ended inside a message")
        data = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return data


def _parse_uvarint(buffer: bytearray) -> tuple[int | None, int]:
    """(value, bytes used) of the varint at the start of `buffer`; (None, 0) if it is
    not complete yet. More than UVARINT_BYTES_MAX bytes is an error."""
    try:
        head = uvarint_prefix(buffer)
    except ValueError:
        raise bs.BitswapError("message", f"length prefix longer than {UVARINT_BYTES_MAX} "
                                         f"bytes") from None
    return head if head is not None else (None, 0)
