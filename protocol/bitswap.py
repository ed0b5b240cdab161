"""Bitswap as Kubo speaks it: the message codec, a peer's want list, and one fetch.

Owns three pure pieces; node/bitswap.py does the I/O (streams, timers, the block
store) and feeds them bytes, ticks and lookups:

* **Codec** (`encode`, `decode`): the protobuf `Message` of `/ipfs/bitswap/1.2.0` and
  `1.1.0` (boxo `message/pb/message.proto`), written out by hand as in unixfs.py. A
  block travels as (prefix, data); the prefix is the CID without its digest (version,
  codec, hash function, digest length: `00 70 12 20` for a CIDv0, `01 55 12 20` for a
  raw CIDv1). `decode` never trusts a sender's CID: it hashes the data and builds the
  CID from the prefix and that hash, so a block's CID always names its bytes, and
  "checking a block" means checking that its CID is one we asked for.
* **PeerLedger** and **answer**: what one peer wants from us, merged from its
  messages (a full list replaces, a cancel removes), bounded, taken a few at a time
  and answered in replies of bounded size: WANT_BLOCK with the block, WANT_HAVE with
  HAVE, either with DONT_HAVE when the block is not here and the peer asked for that.
  A peer that speaks 1.1.0 gets no presences and its wants count as WANT_BLOCK (1.1.0
  has no HAVE).
* **Fetch**: fetching one UnixFS file DAG from peers, as a state machine. Inputs are
  `start`, `on_block`, `on_presence`, `on_peer_gone` and `tick`; each returns actions
  in the order the shell must carry them out (`StoreBlock`, then `SendWants`, then at
  most one `Finished` or `Failed`). Theory of operation:

  - The DAG is walked depth first, as the reader walks it, with an explicit stack of
    links not yet wanted (at most DEPTH_MAX x 174 of them). A block already in the
    local store (`get_local`) is used without asking anyone.
  - At most `wants_max` blocks are wanted at once, and at most `peer_wants_max` of
    them from one peer, so memory in flight is bounded by wants_max blocks.
  - Who has what: a block no known provider can give is first asked for with WANT_HAVE
    (send DONT_HAVE) from every peer; a peer that answers HAVE, or sends any block of
    this DAG, is a provider. Blocks are then asked for with WANT_BLOCK (send
    DONT_HAVE) from the least busy provider. DONT_HAVE, or no answer within
    `ticks_max` ticks, moves the want to another peer; a peer that times out
    `strikes_max` times is dropped from the fetch. When every peer has refused a block
    the fetch fails with NotFound naming it, so a missing block is an error, not a hang.
  - Every block that arrives is checked before it is stored: its CID (computed from
    its bytes) is the one wanted, it is a UnixFS file block whose sizes agree with
    what its parent says, the root declares at most `size_max` bytes, and the tree is
    at most DEPTH_MAX deep. A block that does not check out fails the fetch (the DAG
    itself is bad; which peer sent it does not matter, it hashes right). A peer that
    sends a block we never asked it for is the shell's business (node/bitswap.py
    drops and counts it): this class only ever sees blocks it wants.

Limits (boxo's where it has one): a message is at most 4 MiB (libp2p's
`network.MessageSizeMax`, the most Kubo reads), a block at most 2 MiB (BLOCK_BYTES_MAX),
a decoded message at most WANTS_PER_MESSAGE_MAX wants and presences, and a peer's want
list at most PEER_WANTS_MAX entries (boxo's MaxQueuedWantlistEntriesPerPeer is 1024).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from . import protobuf
from .cid import CODEC_DAG_PB, HASH_SHA2_256, Cid
from .errors import DecodeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from .logformat import uvarint
from .unixfs import BLOCK_BYTES_MAX, DEPTH_MAX, Block, BlockMissing, TooLarge, UnixfsError
from .unixfs import file_node as _file_node

PROTOCOL_1_2_0 = "/ipfs/bitswap/1.2.0"
PROTOCOL_1_1_0 = "/ipfs/bitswap/1.1.0"
# Preference order when we open a stream.
PROTOCOLS = (PROTOCOL_1_2_0, PROTOCOL_1_1_0)

MESSAGE_BYTES_MAX = 4 * 1024 * 1024
WANTS_PER_MESSAGE_MAX = 16_384
PEER_WANTS_MAX = 1024
# Replies carry blocks up to this many bytes per message (at least one block): well
# under MESSAGE_BYTES_MAX, so a reader of any libp2p implementation accepts them. A
# serving round takes at most REPLY_BLOCKS wanted blocks from a peer's list (1 MiB of
# Kubo's 256 KiB chunks).
REPLY_BLOCK_BYTES = 1024 * 1024
REPLY_BLOCKS = 4


def supports_have(protocol: str) -> bool:
    """HAVE/DONT_HAVE exist from bitswap 1.2.0 on."""
    return protocol == PROTOCOL_1_2_0


class BitswapError(RemoteProtocolError):
    """A peer's bitswap message is malformed, oversize, or names an unusable block."""

    code = "bitswap"


class NotFound(BlockMissing):
    """No peer of a fetch has a block of it (each said DONT_HAVE, timed out or left)."""

    code = "not_found"

    def __init__(self, cid: Cid, root: Cid, reason: str) -> None:
        ProtocolError.__init__(self, "cid", f"block {cid} of {root} is not available: "
                               f"{reason}")
        self.cid = cid
        self.root = root


# -- messages -------------------------------------------------------------------------


class WantType(enum.IntEnum):
    BLOCK = 0
    HAVE = 1


@dataclass(frozen=True, slots=True)
class Want:
    cid: Cid
    want_type: WantType = WantType.BLOCK
    send_dont_have: bool = False
    cancel: bool = False
    priority: int = 1


@dataclass(frozen=True, slots=True)
class Presence:
    cid: Cid
    have: bool


@dataclass(frozen=True, slots=True)
class Message:
    wants: tuple[Want, ...] = ()
    full: bool = False
    blocks: tuple[Block, ...] = ()
    presences: tuple[Presence, ...] = ()
    pending_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.wants or self.full or self.blocks or self.presences)


def _field_bytes(number: int, value: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(value)) + value


def _field_varint(number: int, value: int) -> bytes:
    # protobuf int32: a negative value is sent as its 64-bit two's complement.
    return uvarint(number << 3) + uvarint(value & 0xFFFF_FFFF_FFFF_FFFF)


def cid_prefix(cid: Cid) -> bytes:
    """The CID without its digest, as a bitswap Block's `prefix`."""
    if cid.version == 0:
        return b"\x00\x70\x12\x20"  # version 0, dag-pb, sha2-256, 32 bytes
    _code, digest = cid.multihash
    return cid.raw[: len(cid.raw) - len(digest)]


def encode(message: Message, have_supported: bool = True) -> bytes:
    """The protobuf bytes of `message` (without the varint length prefix).

    With `have_supported` False (a 1.1.0 peer) wants are sent as WANT_BLOCK without
    send-DONT_HAVE and presences are left out, as boxo does for such peers.
    """
    parts: list[bytes] = []
    if message.wants or message.full:
        entries = []
        for want in message.wants:
            entry = [_field_bytes(1, want.cid.raw)]
            if want.priority:
                entry.append(_field_varint(2, want.priority))
            if want.cancel:
                entry.append(_field_varint(3, 1))
            if have_supported and want.want_type is WantType.HAVE:
                entry.append(_field_varint(4, 1))
            if have_supported and want.send_dont_have:
                entry.append(_field_varint(5, 1))
            entries.append(_field_bytes(1, b"".join(entry)))
        if message.full:
            entries.append(_field_varint(2, 1))
        parts.append(_field_bytes(1, b"".join(entries)))
    for block in message.blocks:
        body = _field_bytes(1, cid_prefix(block.cid))
        if block.data:  # proto3 leaves an empty field out (the empty file's raw block)
            body += _field_bytes(2, block.data)
        parts.append(_field_bytes(3, body))
    if have_supported:
        for presence in message.presences:
            body = _field_bytes(1, presence.cid.raw)
            if not presence.have:
                body += _field_varint(2, 1)
            parts.append(_field_bytes(4, body))
    if message.pending_bytes:
        parts.append(_field_varint(5, message.pending_bytes))
    return b"".join(parts)


def _read_varint(data: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    return protobuf.read_varint(data, pos, what, BitswapError)


def _fields(data: bytes | memoryview, what: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """(number, wire type, value) of each field; skips the fixed-width ones unread (no
    field of ours is one: the protobuf rule for an unknown field)."""
    return protobuf.fields(memoryview(data), what, BitswapError, skip_fixed=True)


def _bool(value: int | memoryview, what: str) -> bool:
    if not isinstance(value, int):
        raise BitswapError(what, "must be a varint")
    return value != 0


def _as_bytes(value: int | memoryview, what: str) -> memoryview:
    if isinstance(value, int):
        raise BitswapError(what, "must be length-delimited")
    return value


def _cid(raw: memoryview, what: str) -> Cid:
    try:
        return Cid.from_bytes(bytes(raw), what)
    except DecodeError as exc:
        raise BitswapError(what, exc.reason) from None


def block_from_prefix(prefix: bytes | memoryview, data: bytes) -> Block:
    """The block `data` under the CID `prefix` describes, its digest computed here.

    Only sha2-256 with a 32-byte digest can be checked, so any other hash function is
    refused (Kubo hashes with sha2-256 unless told otherwise)."""
    if len(data) > BLOCK_BYTES_MAX:
        raise BitswapError("payload.data", f"block of {len(data)} bytes, limit "
                           f"{BLOCK_BYTES_MAX}")
    version, pos = _read_varint(prefix, 0, "payload.prefix")
    codec, pos = _read_varint(prefix, pos, "payload.prefix")
    hash_code, pos = _read_varint(prefix, pos, "payload.prefix")
    length, pos = _read_varint(prefix, pos, "payload.prefix")
    if pos != len(prefix):
        raise BitswapError("payload.prefix", "trailing bytes")
    if hash_code != HASH_SHA2_256 or length != 32:
        raise BitswapError("payload.prefix", f"hash function 0x{hash_code:x} of {length} "
                           "bytes is not supported (sha2-256 only)")
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != CODEC_DAG_PB:
            raise BitswapError("payload.prefix", f"CIDv0 with codec 0x{codec:x}")
        return Block(Cid(b"\x12\x20" + digest), data)
    if version != 1:
        raise BitswapError("payload.prefix", f"CID version {version}")
    return Block(Cid(b"\x01" + uvarint(codec) + b"\x12\x20" + digest), data)


def decode(data: bytes) -> Message:
    """Parse one bitswap message; raises BitswapError for anything malformed or oversize.

    Blocks come back with CIDs computed from their bytes (see block_from_prefix); a
    1.0.0-style block (field 2, bare data) is a CIDv0 dag-pb block.
    """
    if len(data) > MESSAGE_BYTES_MAX:
        raise BitswapError("message", f"{len(data)} bytes, limit {MESSAGE_BYTES_MAX}")
    wants: list[Want] = []
    full = False
    blocks: list[Block] = []
    presences: list[Presence] = []
    pending = 0
    for number, _wire, value in _fields(data, "message"):
        if number == 1:
            for n2, _w2, v2 in _fields(_as_bytes(value, "wantlist"), "wantlist"):
                if n2 == 1:
                    if len(wants) >= WANTS_PER_MESSAGE_MAX:
                        raise BitswapError("wantlist", f"more than {WANTS_PER_MESSAGE_MAX} "
                                           "entries")
                    wants.append(_decode_entry(_as_bytes(v2, "wantlist.entry")))
                elif n2 == 2:
                    full = _bool(v2, "wantlist.full")
        elif number == 2:
            raw = bytes(_as_bytes(value, "blocks"))
            blocks.append(block_from_prefix(b"\x00\x70\x12\x20", raw))
        elif number == 3:
            prefix: memoryview | None = None
            payload: bytes | None = None
            for n2, _w2, v2 in _fields(_as_bytes(value, "payload"), "payload"):
                if n2 == 1:
                    prefix = _as_bytes(v2, "payload.prefix")
                elif n2 == 2:
                    payload = bytes(_as_bytes(v2, "payload.data"))
            if prefix is None:
                raise BitswapError("payload.prefix", "missing")
            blocks.append(block_from_prefix(prefix, payload or b""))
        elif number == 4:
            if len(presences) >= WANTS_PER_MESSAGE_MAX:
                raise BitswapError("blockPresences", f"more than {WANTS_PER_MESSAGE_MAX}")
            presences.append(_decode_presence(_as_bytes(value, "blockPresences")))
        elif number == 5:
            if not isinstance(value, int):
                raise BitswapError("pendingBytes", "must be a varint")
            pending = value
    return Message(tuple(wants), full, tuple(blocks), tuple(presences), pending)


def _decode_entry(raw: memoryview) -> Want:
    cid: Cid | None = None
    want_type = WantType.BLOCK
    send_dont_have = cancel = False
    priority = 0
    for number, _wire, value in _fields(raw, "wantlist.entry"):
        if number == 1:
            cid = _cid(_as_bytes(value, "wantlist.entry.block"), "wantlist.entry.block")
        elif number == 2:
            if not isinstance(value, int):
                raise BitswapError("wantlist.entry.priority", "must be a varint")
            priority = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3:
            cancel = _bool(value, "wantlist.entry.cancel")
        elif number == 4:
            if value not in (0, 1):
                raise BitswapError("wantlist.entry.wantType", f"unknown type {value!r}")
            want_type = WantType(value)
        elif number == 5:
            send_dont_have = _bool(value, "wantlist.entry.sendDontHave")
    if cid is None:
        raise BitswapError("wantlist.entry.block", "missing")
    return Want(cid, want_type, send_dont_have, cancel, priority)


def _decode_presence(raw: memoryview) -> Presence:
    cid: Cid | None = None
    kind = 0
    for number, _wire, value in _fields(raw, "blockPresences"):
        if number == 1:
            cid = _cid(_as_bytes(value, "blockPresences.cid"), "blockPresences.cid")
        elif number == 2:
            if value not in (0, 1):
                raise BitswapError("blockPresences.type", f"unknown type {value!r}")
            kind = int(value)
    if cid is None:
        raise BitswapError("blockPresences.cid", "missing")
    return Presence(cid, kind == 0)


# -- serving: one peer's want list ------------------------------------------------------


class PeerLedger:
    """What one peer wants from us, in the order it asked; see the module docstring.

    Answered wants leave the list: a block that arrives here later is not pushed to the
    peer (Kubo's server would; our peers ask again on their own timer).
    """

    def __init__(self, have_supported: bool = True, wants_max: int = PEER_WANTS_MAX) -> None:
        self.have_supported = have_supported
        self.wants_max = wants_max
        self._wants: dict[Cid, Want] = {}
        self.dropped = 0  # wants refused because the list was full

    def __len__(self) -> int:
        return len(self._wants)

    def receive(self, message: Message) -> None:
        """Merge a message's want list (a full list replaces the one we hold)."""
        if message.full:
            self._wants.clear()
        for want in message.wants:
            if want.cancel:
                self._wants.pop(want.cid, None)
            elif want.cid in self._wants or len(self._wants) < self.wants_max:
                if not self.have_supported:
                    want = Want(want.cid, WantType.BLOCK, False, False, want.priority)
                self._wants[want.cid] = want
            else:
                self.dropped += 1

    def take(self, blocks_max: int = REPLY_BLOCKS,
             entries_max: int = WANTS_PER_MESSAGE_MAX) -> list[Want]:
        """Remove and return the next wants to answer, in the order they were asked:
        at most `blocks_max` WANT_BLOCKs and `entries_max` wants in all. The caller
        looks them up (in a store, or a daemon, maybe off the event loop) and builds
        the replies with `answer`."""
        out: list[Want] = []
        blocks = 0
        while self._wants and len(out) < entries_max:
            cid, want = next(iter(self._wants.items()))
            if want.want_type is WantType.BLOCK:
                if blocks == blocks_max:
                    break
                blocks += 1
            del self._wants[cid]
            out.append(want)
        return out


def answer(wants: list[Want], found: Mapping[Cid, bytes | bool | None], have_supported: bool,
           block_bytes_max: int = REPLY_BLOCK_BYTES) -> list[Message]:
    """The replies to `wants`, given what was found for each: the block (or None) for a
    WANT_BLOCK, whether it is here for a WANT_HAVE. Blocks are spread over messages of
    at most `block_bytes_max` bytes of blocks (at least one block each); presences go
    in the first. A 1.1.0 peer (`have_supported` False) gets blocks only."""
    blocks: list[Block] = []
    presences: list[Presence] = []
    for want in wants:
        value = found.get(want.cid)
        if want.want_type is WantType.BLOCK:
            if isinstance(value, bytes):
                blocks.append(Block(want.cid, value))
            elif want.send_dont_have and have_supported:
                presences.append(Presence(want.cid, False))
        elif value:
            presences.append(Presence(want.cid, True))
        elif want.send_dont_have:
            presences.append(Presence(want.cid, False))
    if not have_supported:
        presences = []
    messages: list[Message] = []
    batch: list[Block] = []
    size = 0
    for block in blocks:
        if batch and size + len(block.data) > block_bytes_max:
            messages.append(Message(blocks=tuple(batch)))
            batch, size = [], 0
        batch.append(block)
        size += len(block.data)
    if batch:
        messages.append(Message(blocks=tuple(batch)))
    if presences:
        first = messages[0].blocks if messages else ()
        messages[:1] = [Message(blocks=first, presences=tuple(presences))]
    return messages


# -- fetching: one DAG ------------------------------------------------------------------

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SendWants(Generic[P]):
    """Send these wants (and cancels) to `peer`."""

    peer: P
    wants: tuple[Want, ...]


@dataclass(frozen=True, slots=True)
class StoreBlock:
    """A checked block of the DAG, to be written to the store before anything else."""

    block: Block


@dataclass(frozen=True, slots=True)
class Finished:
    root: Cid
    size: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: ProtocolError


Action = SendWants[P] | StoreBlock | Finished | Failed


@dataclass
class _Wanted(Generic[P]):
    # Places in the DAG where this CID occurs: (file bytes the parent says it holds,
    # or None for the root; depth). Identical chunks make one CID occur many times.
    places: list[tuple[int | None, int]]
    holder: P | None = None  # the peer asked for the block itself
    asked: dict[P, int] = field(default_factory=dict)  # peer -> tick asked, unanswered
    refused: set[P] = field(default_factory=set)  # DONT_HAVE, timed out, or gone


class Fetch(Generic[P]):
    """Fetch the file DAG under `root` from peers; see the module docstring."""

    def __init__(self, root: Cid, size_max: int, get_local: Callable[[Cid], bytes | None],
                 *, wants_max: int = 32, peer_wants_max: int = 16, ticks_max: int = 10,
                 strikes_max: int = 3) -> None:
        assert wants_max >= 1 and peer_wants_max >= 1 and ticks_max >= 1 and strikes_max >= 1
        self.root = root
        self.size_max = size_max
        self._get_local = get_local
        self.wants_max = wants_max
        self.peer_wants_max = peer_wants_max
        self.ticks_max = ticks_max
        self.strikes_max = strikes_max
        self._stack: list[tuple[Cid, int | None, int]] = [(root, None, 0)]
        self._wants: dict[Cid, _Wanted[P]] = {}
        self._peers: dict[P, None] = {}  # insertion-ordered set
        self._providers: dict[P, None] = {}
        self._busy: dict[P, int] = {}  # WANT_BLOCKs outstanding per peer
        self._strikes: dict[P, int] = {}
        self._tick = 0
        self._outbox: dict[P, list[Want]] = {}
        self._stores: list[Action[P]] = []
        self._fresh: dict[Cid, bytes] = {}  # blocks of _stores, until the step returns
        self.outcome: Finished | Failed | None = None
        self.size: int | None = None  # the root's file size, once known
        self.received_bytes = 0  # file bytes in the blocks checked so far
        self.blocks = 0  # blocks checked so far (local ones included)

    # -- queries -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def wants(self, cid: Cid) -> bool:
        return cid in self._wants

    @property
    def outstanding(self) -> int:
        return len(self._wants)

    @property
    def peers(self) -> list[P]:
        return list(self._peers)

    # -- inputs ------------------------------------------------------------------------

    def start(self, peers: list[P]) -> list[Action[P]]:
        for peer in peers:
            self._peers.setdefault(peer, None)
        return self._step()

    def add_peer(self, peer: P) -> list[Action[P]]:
        if self.done or peer in self._peers:
            return []
        self._peers[peer] = None
        return self._step()

    def on_block(self, peer: P, block: Block) -> list[Action[P]]:
        """A block from `peer` whose CID (computed from its bytes) this fetch wants."""
        wanted = self._wants.get(block.cid)
        if self.done or wanted is None:
            return []
        self._heard_from(peer)
        self._providers.setdefault(peer, None)
        del self._wants[block.cid]
        self._release(wanted)
        for other in wanted.asked:
            if other != peer:
                self._queue(other, Want(block.cid, cancel=True))
        self._accept(block, wanted.places, fresh=True)
        return self._step()

    def on_presence(self, peer: P, cid: Cid, have: bool) -> list[Action[P]]:
        wanted = self._wants.get(cid)
        if self.done or wanted is None or peer not in self._peers:
            return []
        self._heard_from(peer)
        if have:
            self._providers.setdefault(peer, None)
            if wanted.holder != peer:
                wanted.asked.pop(peer, None)
        else:
            self._refuse(cid, wanted, peer)
        return self._step()

    def on_peer_gone(self, peer: P) -> list[Action[P]]:
        """`peer` left, failed, or was penalised: nothing more is expected from it."""
        if self.done or peer not in self._peers:
            return []
        self._drop_peer(peer)
        return self._step()

    def tick(self) -> list[Action[P]]:
        """Time passes by one tick; unanswered wants older than ticks_max move on."""
        if self.done:
            return []
        self._tick += 1
        late: list[tuple[Cid, _Wanted[P], P]] = []
        for cid, wanted in self._wants.items():
            for peer, asked_at in wanted.asked.items():
                if self._tick - asked_at >= self.ticks_max:
                    late.append((cid, wanted, peer))
        struck: dict[P, None] = {}
        for cid, wanted, peer in late:
            self._refuse(cid, wanted, peer)
            if peer not in struck:
                struck[peer] = None
                self._strikes[peer] = self._strikes.get(peer, 0) + 1
        for peer in struck:
            if self._strikes[peer] >= self.strikes_max and peer in self._peers:
                self._drop_peer(peer)
        return self._step()

    def abandon(self) -> list[Action[P]]:
        """The caller gives up: cancels for everything still asked, then Failed."""
        if self.done:
            return []
        self._fail(LocalProtocolError("cid", f"the fetch of {self.root} was abandoned",
                                      code="abandoned"))
        return self._step()

    # -- internals -----------------------------------------------------------------------

    def _queue(self, peer: P, want: Want) -> None:
        self._outbox.setdefault(peer, []).append(want)

    def _release(self, wanted: _Wanted[P]) -> None:
        if wanted.holder is not None:
            self._busy[wanted.holder] -= 1
            wanted.holder = None

    def _heard_from(self, peer: P) -> None:
        """`peer` answered: it is alive, so the clocks of its other wants restart (a
        busy peer working through a long queue is not a silent one)."""
        self._strikes.pop(peer, None)
        for wanted in self._wants.values():
            if peer in wanted.asked:
                wanted.asked[peer] = self._tick

    def _refuse(self, cid: Cid, wanted: _Wanted[P], peer: P) -> None:
        """`peer` will not give this block: never ask it again within this fetch."""
        if peer in wanted.asked:
            del wanted.asked[peer]
            if peer in self._peers:
                self._queue(peer, Want(cid, cancel=True))
        wanted.refused.add(peer)
        if wanted.holder == peer:
            self._release(wanted)

    def _drop_peer(self, peer: P) -> None:
        del self._peers[peer]
        self._providers.pop(peer, None)
        self._outbox.pop(peer, None)
        for wanted in self._wants.values():
            wanted.asked.pop(peer, None)
            wanted.refused.add(peer)
            if wanted.holder == peer:
                self._release(wanted)
        self._busy.pop(peer, None)

    def _accept(self, block: Block, places: list[tuple[int | None, int]], *,
                fresh: bool) -> None:
        """Check a block against every place it occupies, queue it for the store if it
        is `fresh` (not read from the store), and put its children on the stack. Raises
        nothing: a bad block fails the fetch."""
        try:
            data, links, blocksizes, filesize = _file_node(block.cid, block.data)
            for expected, depth in places:
                if expected is None:
                    if filesize > self.size_max:
                        raise TooLarge("size", f"{self.root} is {filesize} bytes, limit "
                                       f"{self.size_max}")
                    self.size = filesize
                elif filesize != expected:
                    raise UnixfsError("unixfs.blocksizes", f"{block.cid} holds {filesize} "
                                      f"bytes, its parent says {expected}")
                if links and depth + 1 > DEPTH_MAX:
                    raise UnixfsError("depth", f"{self.root}: deeper than {DEPTH_MAX} levels")
        except ProtocolError as exc:
            self._fail(exc)
            return
        if fresh:
            self._stores.append(StoreBlock(block))
            self._fresh[block.cid] = block.data
        self.blocks += len(places)
        self.received_bytes += len(data) * len(places)
        for _expected, depth in places:
            for link, size in zip(reversed(links), reversed(blocksizes), strict=True):
                self._stack.append((link.cid, size, depth + 1))

    def _fail(self, error: ProtocolError) -> None:
        if self.outcome is not None:
            return
        for cid, wanted in self._wants.items():
            for peer in wanted.asked:
                self._queue(peer, Want(cid, cancel=True))
        self._wants.clear()
        self._stack.clear()
        self.outcome = Failed(error)

    def _step(self) -> list[Action[P]]:
        """Take in what can be taken from the stack, ask for what is wanted, report."""
        while self.outcome is None and self._stack and len(self._wants) < self.wants_max:
            cid, expected, depth = self._stack.pop()
            wanted = self._wants.get(cid)
            if wanted is not None:  # the same block again, already on its way
                wanted.places.append((expected, depth))
                continue
            # A block accepted in this step is not in the store until the shell writes
            # it, so a repeat of it (identical chunks) is looked up here first.
            local = self._fresh.get(cid)
            if local is None:
                local = self._get_local(cid)
            if local is not None:
                self._accept(Block(cid, local), [(expected, depth)], fresh=False)
            else:
                self._wants[cid] = _Wanted([(expected, depth)])
        if self.outcome is None:
            for cid, wanted in list(self._wants.items()):
                if wanted.holder is None and not self._assign(cid, wanted):
                    break
        if self.outcome is None and not self._wants and not self._stack:
            self.outcome = Finished(self.root, self.size or 0)
        actions: list[Action[P]] = list(self._stores)
        self._stores.clear()
        self._fresh.clear()
        for peer, wants in self._outbox.items():
            actions.append(SendWants(peer, tuple(wants)))
        self._outbox.clear()
        if self.outcome is not None:
            actions.append(self.outcome)
        return actions

    def _assign(self, cid: Cid, wanted: _Wanted[P]) -> bool:
        """Ask a provider for the block, or probe for one; False once the fetch failed."""
        best: P | None = None
        for peer in self._providers:
            if peer in wanted.refused or self._busy.get(peer, 0) >= self.peer_wants_max:
                continue
            if best is None or self._busy.get(peer, 0) < self._busy.get(best, 0):
                best = peer
        if best is not None:
            wanted.holder = best
            wanted.asked[best] = self._tick
            self._busy[best] = self._busy.get(best, 0) + 1
            self._queue(best, Want(cid, WantType.BLOCK, send_dont_have=True))
            return True
        if any(p not in wanted.refused for p in self._providers):
            return True  # a provider may have it but is busy: wait for it
        probes = [p for p in self._peers if p not in wanted.refused and p not in wanted.asked]
        for peer in probes:
            wanted.asked[peer] = self._tick
            self._queue(peer, Want(cid, WantType.HAVE, send_dont_have=True))
        if wanted.asked:
            return True
        if not self._peers:
            reason = "no peer to ask (connect to one that has it)"
        else:
            reason = f"none of the {len(wanted.refused)} peers asked has it"
        self._fail(NotFound(cid, self.root, reason))
        return False
