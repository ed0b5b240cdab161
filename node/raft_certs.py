"""Commit certificates in the shell: signing what a replica applied, collecting its
co-replicas' signatures, and handing on what a quorum signed.

Owns two kinds of certificate, told apart by type: a decision's (`DecisionCert`: the
bucket's leader announces it in a DECIDE envelope, `to_publish`) and a ledger chain
entry's (`ChainCert`: handed to the ledger's hook, which stores it, sends it to the
nodes that do not replicate the bucket and delivers the effects it proves), plus
signatures that arrived before this replica applied the entry (`EarlySigs`). What a
certificate is and how one is checked is protocol/certificate.py's; when the group's
entries apply is `MultiRaft`'s.

Signature notes travel in the Raft frames (`raft_outbox`). For a decision, a follower
sends its signature to the leader only (only the leader announces); should the leader
not announce, the replicas share their signatures with every replica and publish
themselves (`sweep`). For a chain entry every replica sends its signature to every
other, and a replica short of a quorum sends its own again, every second at first, then
every 5 s, for up to an hour: a replica back from a crash that applies the entry then
completes the quorum. A replica also writes its own signature and the chain entry to its
store with the round that applied it (key ``w`` + bucket + index, gone once certified or
given up), and reloads them when it opens the group: a replica that restarts from a
snapshot past the entry never applies it again, and without this an entry whose
replicas all restarted so would never be certified (found by the market simulation,
testnet/market_sim.py).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm.protocol import cbor, certificate
from swarm.protocol.bucket_machine import ChainEntry, chain_digest
from swarm.protocol.decide import Decision, TryDecide, encode_command
from swarm.protocol.decide import decode_command as decode_decide
from swarm.protocol.envelope import Identity
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.placement import Placement
from swarm.protocol.raft import NONE, Role
from swarm.protocol.raftlog import Compacted
from swarm.protocol.raftwire import Announcement, CertifiedEntry, SigNote

from .raft_outbox import Outbox

if TYPE_CHECKING:
    from .raft_group import Group
    from .raftstore import RaftStore

log = logging.getLogger("swarm.raft")

CERT_SWEEP_TICKS = 10  # `sweep` runs every this many ticks
# A non-leader replica shares its signature, then publishes a certified DECIDE, if none
# has arrived after about 2 s (4 sweeps of 10 ticks).
PUBLISH_FALLBACK_SWEEPS = 4
# Until a DECIDE stating it is out, a decision's shares and publications go again every
# PUBLISH_FALLBACK_SWEEPS sweeps, and every SHARE_LATE_SWEEPS sweeps once it is
# SHARE_LATE_AFTER_SWEEPS old (2 s, then 5 s).
SHARE_LATE_AFTER_SWEEPS = 20
SHARE_LATE_SWEEPS = 10
# A settled decision's (or early) signatures are forgotten after this many sweeps.
SETTLED_KEEP_SWEEPS = 2 * PUBLISH_FALLBACK_SWEEPS
_SIGNED_KEY = struct.Struct(">cHQ")  # b"w", bucket, index: our signature, not certified


def _signed_key(bucket: int, index: int) -> bytes:
    return _SIGNED_KEY.pack(b"w", bucket, index)
# A ledger-chain entry short of a quorum (the other replicas down, or a note lost) keeps
# its signatures for up to an hour, and we send ours again: every CHAIN_RESEND_SWEEPS
# sweeps (1 s) at first, every CHAIN_RESEND_LATE_SWEEPS (5 s) after
# SHARE_LATE_AFTER_SWEEPS. Bounded: past CHAIN_PENDING_MAX such entries on this node,
# those older than CHAIN_CROWDED_SWEEPS go.
CHAIN_CERT_SWEEPS_MAX = 7200
CHAIN_RESEND_SWEEPS = 2
CHAIN_RESEND_LATE_SWEEPS = 10
CHAIN_PENDING_MAX = 200_000
CHAIN_CROWDED_SWEEPS = 60


@dataclass
class _Signed:
    """Signatures over one entry of a bucket (signer account -> signature)."""

    digest: bytes
    term: int
    ts_ms: int  # the entry's own stamp (a decision's certificate carries it)
    sigs: dict[bytes, bytes] = field(default_factory=dict)
    age_sweeps: int = 0


@dataclass
class EarlySigs(_Signed):
    """Signatures for an entry this replica has not applied yet (checked against ours
    when it applies)."""

    cosign_scanned: bool = False  # looked for the decision in a compacted log once


@dataclass
class DecisionCert(_Signed):
    need_id: bytes = b""
    done: bool = False  # a quorum signed
    published: bool = False
    shared: bool = False  # our signature went to every replica (the fallback)
    cosign_scanned: bool = False


@dataclass
class ChainCert(_Signed):
    chain: bytes = b""  # the chain entry's encoding
    done: bool = False


CertState = EarlySigs | DecisionCert | ChainCert


class Certifier:
    """The certificates of one node's groups (each group keeps its own in `g.certs`)."""

    def __init__(self, identity: Identity, swarm_id: bytes, placement: Placement,
                 node_id: int, outbox: Outbox, stats: dict[str, int],
                 announced: Callable[[bytes], bool],
                 chain_certified: Callable[[Group, CertifiedEntry], None],
                 store: RaftStore | None = None) -> None:
        self.identity = identity
        self.store = store
        self.swarm_id = swarm_id
        self.placement = placement
        self.id = node_id
        self.outbox = outbox
        self.stats = stats
        self.announced = announced  # has a certified DECIDE for this NEED arrived?
        self.chain_certified = chain_certified
        # Certified decisions this node (leading the bucket, or as the fallback) is to
        # announce; `MultiRaft.run` hands them to its publisher.
        self.to_publish: list[tuple[Decision, dict[str, Any]]] = []
        self.with_certs: set[int] = set()  # buckets holding signatures
        self.chain_pending = self.chain_pending_last = 0  # chain entries short of a quorum

    # -- what this replica applied --

    def decided(self, g: Group, d: Decision, index: int, term: int, data: bytes) -> None:
        """Sign the decision applied at `index` and send the signature on."""
        if d.index != index:
            return  # a later attempt for a decided NEED: nothing new to certify
        digest = certificate.entry_hash(data)
        # The certificate carries the entry's own stamp, from which a verifier rebuilds
        # the entry and its hash; `d.ts_ms` is the bucket's clock, later than the stamp
        # when a leader with a slower clock followed one with a faster.
        stamp = decode_decide(data)[1]
        note = certificate.sign(self.identity, self.swarm_id, g.bucket, index, term, digest)
        self.with_certs.add(g.bucket)
        early = g.certs.get(index)
        state = DecisionCert(digest, term, stamp, need_id=d.need_id)
        if isinstance(early, DecisionCert | EarlySigs) and early.digest == digest:
            # What arrived before we applied counts, and ages from when it arrived.
            state.sigs, state.age_sweeps = early.sigs, early.age_sweeps
            state.cosign_scanned = early.cosign_scanned
        g.certs[index] = state
        state.sigs[note.signer] = note.sig
        r = g.raw.raft
        if r.role != Role.LEADER:
            # Only the leader announces, so only it needs a quorum: one signature note,
            # riding with this round's append response, instead of one to every
            # replica (a third of the Raft frames per DECIDE). Should the leader not
            # announce, the replicas share their signatures then (`sweep`).
            for peer in [r.lead] if r.lead != NONE else r.voters:
                if peer != self.id:
                    self.outbox.to(peer).sigs.append(SigNote(g.bucket, index, term, digest,
                                                             stamp, note.sig))
        self._maybe_certified(g, index)

    def chain_applied(self, g: Group, entry: ChainEntry, term: int) -> None:
        """Sign the ledger chain entry applied here and send the signature to every
        co-replica."""
        index, data = entry.index, entry.encode()
        digest = chain_digest(data)
        note = certificate.sign(self.identity, self.swarm_id, g.bucket, index, term, digest)
        early = g.certs.get(index)
        state = ChainCert(digest, term, entry.ts_ms, chain=data)
        if early is not None and early.digest == digest:
            state.sigs, state.age_sweeps = early.sigs, early.age_sweeps
        elif early is not None:
            self.stats["sigs_conflicting"] += 1
        g.certs[index] = state
        state.sigs[note.signer] = note.sig
        self.with_certs.add(g.bucket)
        if self.store is not None:
            self.store.pending.put(_signed_key(g.bucket, index),
                                   cbor.encode([term, data, note.sig]))
        for peer in g.raw.raft.voters:
            if peer != self.id:
                self.outbox.to(peer).sigs.append(SigNote(g.bucket, index, term, digest,
                                                         entry.ts_ms, note.sig))
        self._maybe_certified(g, index)

    def _forget_signed(self, bucket: int, index: int) -> None:
        if self.store is not None:
            self.store.pending.delete(_signed_key(bucket, index))

    def reload_signed(self, g: Group) -> None:
        """The chain entries of `g` this replica signed in an earlier life that were not
        certified then: waiting for a quorum again, our signature sent on each sweep."""
        if self.store is None:
            return
        start, stop = _signed_key(g.bucket, 0), _signed_key(g.bucket + 1, 0) \
            if g.bucket < 0xFFFF else b"x"
        for key, value in self.store.db.items(from_key=start):
            if not isinstance(key, bytes) or key >= stop or not isinstance(value, bytes):
                break
            _, _, index = _SIGNED_KEY.unpack(key)
            if self.store.db.get(_SIGNED_KEY.pack(b"c", g.bucket, index)) is not None:
                self._forget_signed(g.bucket, index)  # certified: the ledger stored it
                continue
            term, data, sig = cbor.decode(value)
            entry = ChainEntry.decode(data)  # our own disk
            state = ChainCert(chain_digest(data), term, entry.ts_ms, chain=data)
            state.sigs[self.identity.public_key] = sig
            g.certs[index] = state
            self.with_certs.add(g.bucket)
            self.stats["chain_sigs_reloaded"] += 1

    # -- what other replicas signed --

    def add_sig(self, g: Group | None, sender: int, note: SigNote) -> None:
        """A co-replica's signature note (as the transport authenticated `sender`)."""
        if g is None or sender not in self.placement.replicas(note.bucket):
            self.stats["sigs_rejected"] += 1
            return
        signer = self.placement.account(sender)
        s = certificate.CertSig(signer, note.sig)
        if not certificate.valid_sig(self.swarm_id, note.bucket, note.index, note.term,
                                     note.digest, s):
            self.stats["sigs_rejected"] += 1
            return
        state = g.certs.get(note.index)
        if state is None:
            # Not applied here yet: keep it; the digest is checked against ours later.
            state = g.certs[note.index] = EarlySigs(note.digest, note.term, note.ts_ms)
            self.with_certs.add(g.bucket)
        if state.digest != note.digest:
            self.stats["sigs_conflicting"] += 1
            log.warning("replica %d signed a different entry at bucket %d index %d",
                        sender, note.bucket, note.index)
            return
        state.sigs[signer] = note.sig
        if (self.identity.public_key not in state.sigs
                and isinstance(state, DecisionCert | EarlySigs)
                and note.index <= g.machine.applied):
            self._cosign(g, sender, note, state)
        self._maybe_certified(g, note.index)

    def _cosign(self, g: Group, sender: int, note: SigNote,
                state: DecisionCert | EarlySigs) -> None:
        """A replica shares its signature over an entry we applied but hold none for
        (we restarted since, or forgot it): sign it too if it is the decision we applied
        there, or a decision whose replicas all restarted would never be certified
        (a regression seed of the shell simulation, testnet/simkit.py)."""
        try:
            ents = g.raw.raft.log.slice(note.index, note.index + 1, 1 << 62)
        except Compacted:
            ents = []
        d: Decision | None = None
        if ents:
            try:
                d = g.machine.get(decode_decide(ents[0].data)[0].need_id)
            except RemoteProtocolError:
                return  # not a DECIDE
        elif not state.cosign_scanned:  # inside our snapshot: look once
            state.cosign_scanned = True
            d = next((x for x in g.machine.decisions.values() if x.index == note.index), None)
        if d is None or d.index != note.index or d.term != note.term:
            return
        cmd = TryDecide(d.need_id, d.proposal_id, d.k_plan, d.epoch)
        if certificate.entry_hash(encode_command(cmd, note.ts_ms)) != note.digest:
            return
        own = certificate.sign(self.identity, self.swarm_id, g.bucket, note.index, note.term,
                               note.digest)
        if isinstance(state, EarlySigs):
            state = g.certs[note.index] = DecisionCert(
                state.digest, state.term, note.ts_ms, state.sigs, state.age_sweeps,
                cosign_scanned=state.cosign_scanned)
        state.need_id, state.ts_ms = d.need_id, note.ts_ms
        state.sigs[own.signer] = own.sig
        self.stats["sigs_cosigned"] += 1
        self.outbox.to(sender).sigs.append(SigNote(g.bucket, note.index, note.term,
                                                   note.digest, note.ts_ms, own.sig))

    def _maybe_certified(self, g: Group, index: int) -> None:
        state = g.certs.get(index)
        if isinstance(state, ChainCert):
            if not state.done and len(state.sigs) >= self.placement.quorum(g.bucket):
                state.done = True
                self.stats["chain_certified"] += 1
                self._forget_signed(g.bucket, index)
                self.chain_certified(g, CertifiedEntry(
                    g.bucket, index, state.term, state.chain, tuple(sorted(state.sigs.items()))))
            return
        if not isinstance(state, DecisionCert) or state.done:
            return
        if len(state.sigs) < self.placement.quorum(g.bucket):
            return
        d = g.machine.get(state.need_id)
        if d is None or d.index != index:
            return
        state.done = True
        if g.raw.raft.role == Role.LEADER:
            self._queue_publish(g, d, state)

    def _queue_publish(self, g: Group, d: Decision, state: DecisionCert) -> None:
        sigs = [certificate.CertSig(k, v) for k, v in state.sigs.items()]
        cert = certificate.cert_payload(g.bucket, d.index, state.term, state.ts_ms,
                                        state.digest, sigs)
        self.to_publish.append((d, cert))
        state.published = True
        self.stats["certified"] += 1

    # -- the sweep --

    def start_sweep(self) -> None:
        """Before the sweep of every group with signatures (`sweep`)."""
        self.chain_pending_last, self.chain_pending = self.chain_pending, 0

    def sweep(self, g: Group) -> None:
        """Every CERT_SWEEP_TICKS: publish what the leader did not, send again what may
        have been lost, forget old signature sets."""
        for index in list(g.certs):
            state = g.certs[index]
            state.age_sweeps += 1
            if isinstance(state, ChainCert):
                self._sweep_chain(g, index, state)
            elif isinstance(state, DecisionCert):
                self._sweep_decision(g, index, state)
            elif state.age_sweeps > SETTLED_KEEP_SWEEPS:
                del g.certs[index]

    def _sweep_decision(self, g: Group, index: int, state: DecisionCert) -> None:
        unsettled = not self.announced(state.need_id)
        if unsettled and state.age_sweeps >= PUBLISH_FALLBACK_SWEEPS:
            # The leader died (or lost a note) before its DECIDE went out, or the
            # decision was lost on its way to the announcer: send our signature to
            # every replica, and publish once we hold a quorum, leader or not (should
            # two go out, they state the same decision; harmless). Shares and
            # publications go again, every 2 s and after 10 s every 5 s, until a DECIDE
            # is out: one share lost with a connection left the decision uncertified
            # for good (a regression seed of the shell simulation, testnet/simkit.py).
            d = g.machine.get(state.need_id)
            own = state.sigs.get(self.identity.public_key)
            every = (PUBLISH_FALLBACK_SWEEPS if state.age_sweeps <= SHARE_LATE_AFTER_SWEEPS
                     else SHARE_LATE_SWEEPS)
            due = state.age_sweeps % every == 0
            if d is None or d.index != index:
                pass
            elif state.done:
                if due or not state.published:
                    self._queue_publish(g, d, state)
            elif own is not None and (due or not state.shared):
                state.shared = True
                self.stats["sigs_shared"] += 1
                for peer in g.raw.raft.voters:
                    if peer != self.id:
                        self.outbox.to(peer).sigs.append(SigNote(
                            g.bucket, index, state.term, state.digest, state.ts_ms, own))
        if state.age_sweeps > (CHAIN_CERT_SWEEPS_MAX if unsettled else SETTLED_KEEP_SWEEPS):
            del g.certs[index]

    def _sweep_chain(self, g: Group, index: int, state: ChainCert) -> None:
        if state.done:
            del g.certs[index]  # the hook has it (persisted, sent on)
            return
        if state.age_sweeps > CHAIN_CERT_SWEEPS_MAX or (
                self.chain_pending_last > CHAIN_PENDING_MAX
                and state.age_sweeps > CHAIN_CROWDED_SWEEPS):
            self.stats["chain_uncertified"] += 1
            del g.certs[index]
            self._forget_signed(g.bucket, index)
            return
        self.chain_pending += 1
        mine = state.sigs.get(self.identity.public_key)
        every = (CHAIN_RESEND_SWEEPS if state.age_sweeps <= SHARE_LATE_AFTER_SWEEPS
                 else CHAIN_RESEND_LATE_SWEEPS)
        if mine is not None and state.age_sweeps % every == 0:
            # A signature note may have been lost with a connection: send ours again.
            for peer in g.raw.raft.voters:
                if peer != self.id:
                    self.outbox.to(peer).sigs.append(SigNote(g.bucket, index, state.term,
                                                             state.digest, state.ts_ms, mine))

    def uncertified_above(self, g: Group, index: int) -> bool:
        """Whether a decision applied after `index` is not announced yet, or a chain
        entry not certified (compaction waits for them: should every replica restart
        before a quorum signs it, or before the certificate reaches the gossip,
        re-applying it signs it again; inside a snapshot it would never be, and a
        follower caught up by a snapshot past it never signs it: a regression seed of
        the shell simulation, testnet/simkit.py, and the market simulation)."""
        return any(i > index and (
            (isinstance(st, DecisionCert) and not self.announced(st.need_id))
            or (isinstance(st, ChainCert) and not st.done)) for i, st in g.certs.items())

    def forward_announcement(self, peer: int, d: Decision, cert: dict[str, Any]) -> None:
        """Send a certified decision to `peer` (the announcer) with the next frame to it
        or the next tick's. Lost with a connection, it is sent again by the replicas'
        fallback (`sweep`) until a DECIDE stating it is out."""
        self.outbox.to(peer).announce.append(Announcement(
            cert["bucket"], cert["index"], cert["term"], cert["ts_ms"], d.need_id,
            d.proposal_id, d.k_plan, d.epoch,
            tuple((s["signer"], s["sig"]) for s in cert["sigs"])))
        self.stats["announcements_forwarded"] += 1
