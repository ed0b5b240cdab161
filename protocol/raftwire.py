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
from .errors import DecodeError, RemoteProtocolError
from .raft import Message, MsgType
from .raftlog import Entry, EntryKind, Snapshot

FRAME_BYTES_MAX = 32 * 1024 * 1024
_LIMITS = cbor.Limits(size_bytes_max=FRAME_BYTES_MAX, depth_max=8, items_max=4_000_000)
_U63 = 2**63


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


# -- decoding --

def _int(v: Any, where: str, lo: int = 0, hi: int = _U63) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise RemoteProtocolError(where, f"must be an integer in [{lo}, {hi})")
    return v


def _bytes(v: Any, where: str, max_len: int) -> bytes:
    if not isinstance(v, bytes) or len(v) > max_len:
        raise RemoteProtocolError(where, f"must be bytes of at most {max_len}")
    return v


def _list(v: Any, where: str, max_len: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_len:
        raise RemoteProtocolError(where, f"must be an array of at most {max_len}")
    return v


_NET_TYPES = {int(t) for t in MsgType if t >= MsgType.APP} | {int(MsgType.PROP),
                                                             int(MsgType.TRANSFER_LEADER)}


def _decode_msg(raw: Any, where: str, buckets: int) -> tuple[int, Message]:
    f = _list(raw, where, 13)
    if len(f) != 13:
        raise RemoteProtocolError(where, "a message has 13 fields")
    bucket = _int(f[0], where + ".bucket", 0, buckets)
    t = _int(f[1], where + ".type", 0, 256)
    if t not in _NET_TYPES:
        raise RemoteProtocolError(where + ".type", f"{t} is not a network message type")
    entries = []
    for i, e in enumerate(_list(f[11], where + ".entries", 1_000_000)):
        ef = _list(e, f"{where}.entries[{i}]", 4)
        if len(ef) != 4:
            raise RemoteProtocolError(f"{where}.entries[{i}]", "an entry has 4 fields")
        kind = _int(ef[2], f"{where}.entries[{i}].kind", 0, 2)
        entries.append(Entry(_int(ef[0], where), _int(ef[1], where), EntryKind(kind),
                             _bytes(ef[3], where, FRAME_BYTES_MAX)))
    snap = None
    if f[12] is not None:
        sf = _list(f[12], where + ".snapshot", 4)
        if len(sf) != 4:
            raise RemoteProtocolError(where + ".snapshot", "a snapshot has 4 fields")
        voters = tuple(_int(v, where + ".snapshot.voters", 1, 1 << 16)
                       for v in _list(sf[2], where + ".snapshot.voters", 1024))
        snap = Snapshot(_int(sf[0], where), _int(sf[1], where), voters,
                        _bytes(sf[3], where, FRAME_BYTES_MAX))
    if not isinstance(f[8], bool):
        raise RemoteProtocolError(where + ".reject", "must be a boolean")
    m = Message(MsgType(t), to=_int(f[2], where + ".to", 0, 1 << 16),
                frm=_int(f[3], where + ".from", 0, 1 << 16), term=_int(f[4], where + ".term"),
                log_term=_int(f[5], where), index=_int(f[6], where),
                commit=_int(f[7], where), reject=f[8], reject_hint=_int(f[9], where),
                context=_bytes(f[10], where + ".context", 64), entries=tuple(entries),
                snapshot=snap)
    return bucket, m


def decode_frame(data: bytes, *, buckets: int, nodes: int) -> Frame:
    """Decode a peer's frame; raises RemoteProtocolError (never anything else)."""
    if len(data) > FRAME_BYTES_MAX:
        raise DecodeError("frame", f"{len(data)} bytes is over {FRAME_BYTES_MAX}")
    try:
        doc = cbor.decode(data, _LIMITS)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a codec bug must not take the node down
        raise DecodeError("frame", f"undecodable: {exc!r}") from None
    if not isinstance(doc, dict) or not set(doc) <= {"from", "m", "l", "s", "q", "r", "u", "v",
                                                     "c", "g", "a"}:
        raise RemoteProtocolError("frame", "must be a map with known keys")
    sender = _int(doc.get("from"), "frame.from", 1, nodes + 1)
    msgs = tuple(_decode_msg(m, f"frame.m[{i}]", buckets)
                 for i, m in enumerate(_list(doc.get("m", []), "frame.m", 1_000_000)))
    leads = _bytes(doc.get("l", b""), "frame.l", (buckets + 7) // 8)
    sigs = []
    for i, s in enumerate(_list(doc.get("s", []), "frame.s", 100_000)):
        sf = _list(s, f"frame.s[{i}]", 6)
        if len(sf) != 6:
            raise RemoteProtocolError(f"frame.s[{i}]", "a signature note has 6 fields")
        sigs.append(SigNote(_int(sf[0], "frame.s", 0, buckets), _int(sf[1], "frame.s", 1),
                            _int(sf[2], "frame.s", 1), _bytes(sf[3], "frame.s", 32),
                            _int(sf[4], "frame.s"), _bytes(sf[5], "frame.s", 64)))
    reqs = []
    for i, q in enumerate(_list(doc.get("q", []), "frame.q", 100_000)):
        qf = _list(q, f"frame.q[{i}]", 6)
        if len(qf) != 6:
            raise RemoteProtocolError(f"frame.q[{i}]", "a decide request has 6 fields")
        reqs.append(DecideRequest(_int(qf[0], "frame.q"), _int(qf[1], "frame.q", 0, buckets),
                                  _bytes(qf[2], "frame.q", 128), _bytes(qf[3], "frame.q", 128),
                                  _int(qf[4], "frame.q"), _int(qf[5], "frame.q")))
    resps = []
    for i, r in enumerate(_list(doc.get("r", []), "frame.r", 100_000)):
        rf = _list(r, f"frame.r[{i}]", 4)
        if len(rf) != 4 or not isinstance(rf[1], bool) or not isinstance(rf[3], str):
            raise RemoteProtocolError(f"frame.r[{i}]", "a decide response is malformed")
        resps.append(DecideResponse(_int(rf[0], "frame.r"), rf[1],
                                    tuple(_list(rf[2], "frame.r", 8)), rf[3][:200]))
    submits = []
    for i, q in enumerate(_list(doc.get("u", []), "frame.u", 100_000)):
        qf = _list(q, f"frame.u[{i}]", 3)
        if len(qf) != 3:
            raise RemoteProtocolError(f"frame.u[{i}]", "a submit request has 3 fields")
        submits.append(SubmitRequest(_int(qf[0], "frame.u"), _int(qf[1], "frame.u", 0, buckets),
                                     _bytes(qf[2], "frame.u", CHAIN_ENTRY_BYTES_MAX)))
    results = []
    for i, r in enumerate(_list(doc.get("v", []), "frame.v", 100_000)):
        rf = _list(r, f"frame.v[{i}]", 4)
        if len(rf) != 4 or not isinstance(rf[1], bool) or not isinstance(rf[3], str):
            raise RemoteProtocolError(f"frame.v[{i}]", "a submit response is malformed")
        results.append(SubmitResponse(_int(rf[0], "frame.v"), rf[1],
                                      _bytes(rf[2], "frame.v", CHAIN_ENTRY_BYTES_MAX),
                                      rf[3][:500]))
    chain = []
    for i, c in enumerate(_list(doc.get("c", []), "frame.c", 100_000)):
        cf = _list(c, f"frame.c[{i}]", 5)
        if len(cf) != 5:
            raise RemoteProtocolError(f"frame.c[{i}]", "a certified entry has 5 fields")
        chain.append(CertifiedEntry(_int(cf[0], "frame.c", 0, buckets), _int(cf[1], "frame.c", 1),
                                    _int(cf[2], "frame.c", 1),
                                    _bytes(cf[3], "frame.c", CHAIN_ENTRY_BYTES_MAX),
                                    _sigs(cf[4], f"frame.c[{i}].sigs")))
    announce = []
    for i, a in enumerate(_list(doc.get("a", []), "frame.a", 100_000)):
        af = _list(a, f"frame.a[{i}]", 9)
        if len(af) != 9:
            raise RemoteProtocolError(f"frame.a[{i}]", "an announcement has 9 fields")
        w = f"frame.a[{i}]"
        announce.append(Announcement(
            _int(af[0], w + ".bucket", 0, buckets), _int(af[1], w + ".index", 1),
            _int(af[2], w + ".term", 1), _int(af[3], w + ".ts_ms"),
            _bytes(af[4], w + ".need_id", 128), _bytes(af[5], w + ".proposal_id", 128),
            _int(af[6], w + ".k_plan"), _int(af[7], w + ".epoch"), _sigs(af[8], w + ".sigs")))
    fetch = []
    for i, f in enumerate(_list(doc.get("g", []), "frame.g", 65_536)):
        ff = _list(f, f"frame.g[{i}]", 2)
        if len(ff) != 2:
            raise RemoteProtocolError(f"frame.g[{i}]", "a fetch has 2 fields")
        fetch.append((_int(ff[0], "frame.g", 0, buckets), _int(ff[1], "frame.g")))
    return Frame(sender, msgs, leads, tuple(sigs), tuple(reqs), tuple(resps), tuple(submits),
                 tuple(results), tuple(chain), tuple(fetch), tuple(announce))


def _sigs(raw: Any, where: str) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for j, sg in enumerate(_list(raw, where, 64)):
        pair = _list(sg, f"{where}[{j}]", 2)
        if len(pair) != 2:
            raise RemoteProtocolError(f"{where}[{j}]", "a signature has 2 fields")
        out.append((_bytes(pair[0], where, 32), _bytes(pair[1], where, 64)))
    return tuple(out)


def leads_bitmap(buckets: list[int], bucket_count: int) -> bytes:
    out = bytearray((bucket_count + 7) // 8)
    for b in buckets:
        out[b >> 3] |= 1 << (b & 7)
    return bytes(out)


def bitmap_has(bitmap: bytes, bucket: int) -> bool:
    i = bucket >> 3
    return i < len(bitmap) and bool(bitmap[i] >> (bucket & 7) & 1)
