"""The Raft transport's frames: everything one node sends another in one write.

Owns the encoding of a `Frame` (canonical CBOR) and its strict decoding: a frame from a
peer is untrusted input, so every field is type- and range-checked and anything else is
a `RemoteProtocolError` (the transport drops the frame and counts it; the node carries on).

One frame batches, for one peer pair: the Raft messages of every bucket the two share,
the sender's liveness with the set of buckets it leads (the coalesced heartbeat that lets
idle buckets go quiet), commit-certificate signatures, DECIDE requests/responses from
nodes that do not replicate a NEED's bucket, ledger commands submitted to a bucket's
leader and their outcomes, certified ledger-chain entries for nodes that do not
replicate their bucket, requests for the chain entries a node is missing, and certified
decisions on their way to the validator that announces them for the swarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import cbor
from .decide import ID_BYTES_MAX
from .errors import RemoteProtocolError
from .raft import Message, MsgType
from .raftlog import Entry, EntryKind, Snapshot
from .strict import array_max, bytes_max, decode_document, fields, int_in

FRAME_BYTES_MAX = 32 * 1024 * 1024
_LIMITS = cbor.Limits(size_bytes_max=FRAME_BYTES_MAX, depth_max=8, items_max=4_000_000)
# The bounds of a frame's parts, checked as it is decoded.
MSGS_MAX = 1_000_000  # Raft messages in a frame; entries in one message
ITEMS_MAX = 100_000  # signature notes, requests, answers, chain entries, announcements
FETCHES_MAX = 65_536  # chain fetches (one a bucket)
NODE_ID_LIMIT = 1 << 16  # a Raft node id in a message is below it
VOTERS_MAX = 1024  # in a snapshot's configuration
CONTEXT_BYTES_MAX = 64  # a message's context (a campaign's reason)
DIGEST_BYTES = 32  # SHA-256 of an entry
ACCOUNT_BYTES = 32  # an Ed25519 public key: a signer
SIG_BYTES = 64  # an Ed25519 signature
SIGS_MAX = 64  # signatures on one certified entry or announcement
DECISION_FIELDS = 8  # of a decide response's decision
DECIDE_REASON_CHARS_MAX = 200  # a longer reason is cut
SUBMIT_REASON_CHARS_MAX = 500


@dataclass(frozen=True, slots=True)
class SigNote:
    """A replica's signature over a committed entry, for the bucket's certificate."""

    bucket: int
    index: int
    term: int
    digest: bytes
    ts_ms: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class DecideRequest:
    req_id: int
    bucket: int
    need_id: bytes
    proposal_id: bytes
    k_plan: int
    epoch: int


@dataclass(frozen=True, slots=True)
class DecideResponse:
    req_id: int
    ok: bool
    # ok: the decision as [need, proposal, k_plan, epoch, bucket, index, term, ts_ms];
    # not ok: a reason
    decision: tuple[Any, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A ledger command (`bucket_machine.Command.encode()`) for `bucket`'s leader to
    stamp and propose. `req_id` 0 asks for no answer (effect delivery retries anyway)."""

    req_id: int
    bucket: int
    command: bytes


@dataclass(frozen=True, slots=True)
class SubmitResponse:
    req_id: int
    ok: bool
    # ok: the command's outcome (`LedgerOutcome.to_value()` as CBOR); not ok: a reason
    # ("not_leader:<id>", "busy", "refused:<code>:<why>", ...)
    result: bytes = b""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CertifiedEntry:
    """A ledger-chain entry of `bucket` (`bucket_machine.ChainEntry.encode()`) with the
    signatures of its replicas over (swarm, bucket, index, term, its digest)."""

    bucket: int
    index: int
    term: int
    entry: bytes
    sigs: tuple[tuple[bytes, bytes], ...]  # (signer account, signature)


CHAIN_ENTRY_BYTES_MAX = 256 * 1024


@dataclass(frozen=True, slots=True)
class Announcement:
    """A certified decision sent to the validator that announces for the swarm: the
    decision's fields, where its bucket committed it, and its replicas' signatures over
    (swarm, bucket, index, term, the entry's digest), the digest being rebuilt from the
    fields and `ts_ms` (`certificate.decide_digest`)."""

    bucket: int
    index: int
    term: int
    ts_ms: int
    need_id: bytes
    proposal_id: bytes
    k_plan: int
    epoch: int
    sigs: tuple[tuple[bytes, bytes], ...]  # (signer account, signature)


@dataclass(frozen=True, slots=True)
class Frame:
    sender: int  # the sender's Raft node id
    msgs: tuple[tuple[int, Message], ...] = ()  # (bucket, message)
    leads: bytes = b""  # bitmap of buckets the sender leads; empty = not a liveness beat
    sigs: tuple[SigNote, ...] = ()
    requests: tuple[DecideRequest, ...] = ()
    responses: tuple[DecideResponse, ...] = ()
    submits: tuple[SubmitRequest, ...] = ()
    results: tuple[SubmitResponse, ...] = ()
    chain: tuple[CertifiedEntry, ...] = ()
    # (bucket, after): "send me the certified chain entries of bucket after this index"
    fetch: tuple[tuple[int, int], ...] = ()
    announce: tuple[Announcement, ...] = ()

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"from": self.sender}
        if self.msgs:
            doc["m"] = [[b, *_msg(m)] for b, m in self.msgs]
        if self.leads:
            doc["l"] = self.leads
        if self.sigs:
            doc["s"] = [[s.bucket, s.index, s.term, s.digest, s.ts_ms, s.sig] for s in self.sigs]
        if self.requests:
            doc["q"] = [[r.req_id, r.bucket, r.need_id, r.proposal_id, r.k_plan, r.epoch]
                        for r in self.requests]
        if self.responses:
            doc["r"] = [[r.req_id, r.ok, list(r.decision), r.reason] for r in self.responses]
        if self.submits:
            doc["u"] = [[q.req_id, q.bucket, q.command] for q in self.submits]
        if self.results:
            doc["v"] = [[r.req_id, r.ok, r.result, r.reason] for r in self.results]
        if self.chain:
            doc["c"] = [[c.bucket, c.index, c.term, c.entry, [list(s) for s in c.sigs]]
                        for c in self.chain]
        if self.fetch:
            doc["g"] = [list(f) for f in self.fetch]
        if self.announce:
            doc["a"] = [[a.bucket, a.index, a.term, a.ts_ms, a.need_id, a.proposal_id,
                         a.k_plan, a.epoch, [list(s) for s in a.sigs]] for a in self.announce]
        return cbor.encode(doc)


def _msg(m: Message) -> list[Any]:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, list(s.voters), s.data]
    return [int(m.type), m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject,
            m.reject_hint, m.context, [[e.term, e.index, int(e.kind), e.data]
                                       for e in m.entries], snap]


# -- decoding (the field checks are protocol/strict.py's) --

_NET_TYPES = {int(t) for t in MsgType if t >= MsgType.APP} | {int(MsgType.PROP),
                                                             int(MsgType.TRANSFER_LEADER)}


def _decode_msg(raw: Any, where: str, buckets: int) -> tuple[int, Message]:
    f = fields(raw, where, 13, "a message")
    bucket = int_in(f[0], where + ".bucket", 0, buckets)
    t = int_in(f[1], where + ".type", 0, 256)
    if t not in _NET_TYPES:
        raise RemoteProtocolError(where + ".type", f"{t} is not a network message type")
    entries = []
    for i, e in enumerate(array_max(f[11], where + ".entries", MSGS_MAX)):
        ef = fields(e, f"{where}.entries[{i}]", 4, "an entry")
        kind = int_in(ef[2], f"{where}.entries[{i}].kind", 0, 2)
        entries.append(Entry(int_in(ef[0], where), int_in(ef[1], where), EntryKind(kind),
                             bytes_max(ef[3], where, FRAME_BYTES_MAX)))
    snap = None
    if f[12] is not None:
        sf = fields(f[12], where + ".snapshot", 4, "a snapshot")
        voters = tuple(int_in(v, where + ".snapshot.voters", 1, NODE_ID_LIMIT)
                       for v in array_max(sf[2], where + ".snapshot.voters", VOTERS_MAX))
        snap = Snapshot(int_in(sf[0], where), int_in(sf[1], where), voters,
                        bytes_max(sf[3], where, FRAME_BYTES_MAX))
    if not isinstance(f[8], bool):
        raise RemoteProtocolError(where + ".reject", "must be a boolean")
    m = Message(MsgType(t), to=int_in(f[2], where + ".to", 0, NODE_ID_LIMIT),
                frm=int_in(f[3], where + ".from", 0, NODE_ID_LIMIT),
                term=int_in(f[4], where + ".term"),
                log_term=int_in(f[5], where), index=int_in(f[6], where),
                commit=int_in(f[7], where), reject=f[8], reject_hint=int_in(f[9], where),
                context=bytes_max(f[10], where + ".context", CONTEXT_BYTES_MAX),
                entries=tuple(entries), snapshot=snap)
    return bucket, m


def decode_frame(data: bytes, *, buckets: int, nodes: int) -> Frame:
    """Decode a peer's frame; raises RemoteProtocolError (never anything else)."""
    doc = decode_document(data, _LIMITS, "frame")
    if not isinstance(doc, dict) or not set(doc) <= {"from", "m", "l", "s", "q", "r", "u", "v",
                                                     "c", "g", "a"}:
        raise RemoteProtocolError("frame", "must be a map with known keys")
    sender = int_in(doc.get("from"), "frame.from", 1, nodes + 1)
    msgs = tuple(_decode_msg(m, f"frame.m[{i}]", buckets)
                 for i, m in enumerate(array_max(doc.get("m", []), "frame.m", MSGS_MAX)))
    leads = bytes_max(doc.get("l", b""), "frame.l", (buckets + 7) // 8)
    sigs = []
    for i, s in enumerate(array_max(doc.get("s", []), "frame.s", ITEMS_MAX)):
        sf = fields(s, f"frame.s[{i}]", 6, "a signature note")
        sigs.append(SigNote(int_in(sf[0], "frame.s", 0, buckets), int_in(sf[1], "frame.s", 1),
                            int_in(sf[2], "frame.s", 1), bytes_max(sf[3], "frame.s", DIGEST_BYTES),
                            int_in(sf[4], "frame.s"), bytes_max(sf[5], "frame.s", SIG_BYTES)))
    reqs = []
    for i, q in enumerate(array_max(doc.get("q", []), "frame.q", ITEMS_MAX)):
        qf = fields(q, f"frame.q[{i}]", 6, "a decide request")
        reqs.append(DecideRequest(int_in(qf[0], "frame.q"),
                                  int_in(qf[1], "frame.q", 0, buckets),
                                  bytes_max(qf[2], "frame.q", ID_BYTES_MAX),
                                  bytes_max(qf[3], "frame.q", ID_BYTES_MAX),
                                  int_in(qf[4], "frame.q"), int_in(qf[5], "frame.q")))
    resps = []
    for i, r in enumerate(array_max(doc.get("r", []), "frame.r", ITEMS_MAX)):
        rf = array_max(r, f"frame.r[{i}]", 4)
        if len(rf) != 4 or not isinstance(rf[1], bool) or not isinstance(rf[3], str):
            raise RemoteProtocolError(f"frame.r[{i}]", "a decide response is malformed")
        resps.append(DecideResponse(int_in(rf[0], "frame.r"), rf[1],
                                    tuple(array_max(rf[2], "frame.r", DECISION_FIELDS)),
                                    rf[3][:DECIDE_REASON_CHARS_MAX]))
    submits = []
    for i, q in enumerate(array_max(doc.get("u", []), "frame.u", ITEMS_MAX)):
        qf = fields(q, f"frame.u[{i}]", 3, "a submit request")
        submits.append(SubmitRequest(int_in(qf[0], "frame.u"), int_in(qf[1], "frame.u", 0, buckets),
                                     bytes_max(qf[2], "frame.u", CHAIN_ENTRY_BYTES_MAX)))
    results = []
    for i, r in enumerate(array_max(doc.get("v", []), "frame.v", ITEMS_MAX)):
        rf = array_max(r, f"frame.v[{i}]", 4)
        if len(rf) != 4 or not isinstance(rf[1], bool) or not isinstance(rf[3], str):
            raise RemoteProtocolError(f"frame.v[{i}]", "a submit response is malformed")
        results.append(SubmitResponse(int_in(rf[0], "frame.v"), rf[1],
                                      bytes_max(rf[2], "frame.v", CHAIN_ENTRY_BYTES_MAX),
                                      rf[3][:SUBMIT_REASON_CHARS_MAX]))
    chain = []
    for i, c in enumerate(array_max(doc.get("c", []), "frame.c", ITEMS_MAX)):
        cf = fields(c, f"frame.c[{i}]", 5, "a certified entry")
        chain.append(CertifiedEntry(int_in(cf[0], "frame.c", 0, buckets),
                                    int_in(cf[1], "frame.c", 1),
                                    int_in(cf[2], "frame.c", 1),
                                    bytes_max(cf[3], "frame.c", CHAIN_ENTRY_BYTES_MAX),
                                    _sigs(cf[4], f"frame.c[{i}].sigs")))
    announce = []
    for i, a in enumerate(array_max(doc.get("a", []), "frame.a", ITEMS_MAX)):
        af = fields(a, f"frame.a[{i}]", 9, "an announcement")
        w = f"frame.a[{i}]"
        announce.append(Announcement(
            int_in(af[0], w + ".bucket", 0, buckets), int_in(af[1], w + ".index", 1),
            int_in(af[2], w + ".term", 1), int_in(af[3], w + ".ts_ms"),
            bytes_max(af[4], w + ".need_id", ID_BYTES_MAX),
            bytes_max(af[5], w + ".proposal_id", ID_BYTES_MAX),
            int_in(af[6], w + ".k_plan"), int_in(af[7], w + ".epoch"), _sigs(af[8], w + ".sigs")))
    fetch = []
    for i, f in enumerate(array_max(doc.get("g", []), "frame.g", FETCHES_MAX)):
        ff = fields(f, f"frame.g[{i}]", 2, "a fetch")
        fetch.append((int_in(ff[0], "frame.g", 0, buckets), int_in(ff[1], "frame.g")))
    return Frame(sender, msgs, leads, tuple(sigs), tuple(reqs), tuple(resps), tuple(submits),
                 tuple(results), tuple(chain), tuple(fetch), tuple(announce))


def _sigs(raw: Any, where: str) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for j, sg in enumerate(array_max(raw, where, SIGS_MAX)):
        pair = fields(sg, f"{where}[{j}]", 2, "a signature")
        out.append((bytes_max(pair[0], where, ACCOUNT_BYTES), bytes_max(pair[1], where, SIG_BYTES)))
    return tuple(out)


def leads_bitmap(buckets: list[int], bucket_count: int) -> bytes:
    out = bytearray((bucket_count + 7) // 8)
    for b in buckets:
        out[b >> 3] |= 1 << (b & 7)
    return bytes(out)


def bitmap_has(bitmap: bytes, bucket: int) -> bool:
    i = bucket >> 3
    return i < len(bitmap) and bool(bitmap[i] >> (bucket & 7) & 1)
