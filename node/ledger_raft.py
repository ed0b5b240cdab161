"""The ledger across buckets, in the node: effects between bucket leaders, the certified
chain, and the read replica of the buckets this node does not replicate.

Owns what `MultiRaft` hands to its `ledger_hook` and the periodic work around it:

* **Effect delivery.** The leader of a source bucket sends every batch in its bucket's
  outbox (replicated state) to the target bucket's leader (`MultiRaft.submit_nowait`)
  with its proof, the source's certified chain entry that emitted it: at once when
  that entry is certified, and again every `EFFECT_RESEND_TICKS` until the batch leaves
  the outbox. Whichever replica of the target leads applies it (exactly once: the
  ledger deduplicates by (source bucket, seq); only with a proof that checks: the
  bucket machine verifies it) and, as the target's leader, once its own chain entry
  for the batch is certified, acknowledges to the source with that entry as proof (its
  `in`: the source's batches applied in order), coalesced every `EFFECT_TICKS`; the
  source drops the acknowledged batches. A lost message, a crashed leader or a restart
  only delays this: the next leader of the source finds the batches still in its
  outbox and their certificates in its store (or fetches them from another replica),
  and a batch applied already is applied as a duplicate and acknowledged again.
* **Task timers.** The leader of a bucket whose earliest task deadline its clock has
  passed proposes a tick entry (`tick_tasks`), at most once per `tick_interval_ms`;
  applying it fires the timers due by its stamp (docs/MARKET.md). A bucket with no
  pending deadline proposes nothing.
* **Committee draws.** The leader of a bucket holding a committed result that awaits
  its committee (`draw_committees`) first brings the bucket's views of other buckets'
  verifiers up to what this node holds (a `pool_view` entry per bucket whose verifiers
  differ, proven by that bucket's latest certified chain entry, or by the genesis),
  then proposes the `draw` entry with the certificate of the COMMIT entry, whose
  signatures seed the draw. A view whose certificate is still on its way holds the
  draw back for at most `VIEW_WAIT_TICKS`. Every replica draws the committee itself.
  A challenge's panel is drawn the same way, seeded by the certificate of the entry
  that started its round (`Task.draw_index`).
* **The certified chain.** When a quorum of a bucket's replicas have signed a chain
  entry (`MultiRaft` collects the signatures), each replica that holds the quorum
  stores the certified entry (RocksDB key ``c`` + bucket + index), and the bucket's
  leader sends it to every node that does not replicate the bucket.
* **The read replica.** For every bucket it does not replicate, a node keeps a
  `LedgerPart` built only from certified chain entries, applied in chain order (each
  entry names the previous one). An entry whose certificate does not check (signers
  must be a quorum of the bucket's replicas by the genesis placement, each signature
  valid over exactly these bytes) is dropped. Entries past a gap wait; every
  `SYNC_TICKS` the node asks one live peer (in turn) for the entries after its last of
  each bucket that peer replicates, and the peer answers from its store. The entries
  received are stored too, so a restart rebuilds the read replica from disk and asks
  only for what it missed.
* **Queries over every bucket**: accounts, history, supply, the pool, `ledger_root`.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import trio

from swarm.protocol import cbor, certificate
from swarm.protocol.bucket_machine import (
    ChainEntry,
    LedgerApplied,
    LedgerPart,
    Proof,
    ack_command,
    chain_digest,
    draw_command,
    effects_command,
    pool_views_command,
    tick_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.committee import Verifier, view_digest
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.ledger import AccountView, AuditRecord, Totals, genesis_supply
from swarm.protocol.ledger_ops import POOL_VIEWS_MAX, EffectBatch, PoolRow
from swarm.protocol.plan import merkle_root
from swarm.protocol.raft import Role
from swarm.protocol.raftwire import CertifiedEntry, Frame
from swarm.protocol.task import Step

from .multiraft import LedgerHook, MultiRaft
from .raft_group import TICK_MS, Group
from .raftstore import RaftStore

log = logging.getLogger("swarm.ledger")

EFFECT_TICKS = 4  # acknowledgements and due resends every 200 ms
EFFECT_RESEND_TICKS = 60  # a batch still in the outbox after 3 s is sent again
# A proof asked of a co-replica and never answered is forgotten after this long (30 s),
# so the table of requests in flight stays bounded.
FETCH_FORGET_TICKS = 10 * EFFECT_RESEND_TICKS
SYNC_TICKS = 20  # ask a peer for missing chain entries every second
FETCH_ENTRIES_MAX = 512  # chain entries in one answer to a fetch
AHEAD_MAX = 4096  # chain entries held past a gap, per bucket
OUTBOX_SEND_MAX = 256  # batches sent per bucket per round
PROOFS_KEPT_MAX = 4096  # recent proofs of entries that emitted batches, kept in memory
DRAWS_PER_ROUND = 16  # draws proposed per bucket per round
# A draw waits this long (2 s) for views of other buckets whose certificates have not
# reached this node yet, then goes ahead with the views the bucket holds.
VIEW_WAIT_TICKS = 40
# A view whose verifiers differ from the bucket's only in reputation and recency is
# refreshed at most this often (30 s): every attestation moves its members' reputations,
# and refreshing every view before every draw cost about five entries a committee.
VIEW_REFRESH_TICKS = 600
# One `pool_views` entry stays within these (an entry holds at most 256 KiB; its chain
# body, the rows without the proofs, must itself fit in a proof of 64 KiB).
VIEW_BATCH_ROWS_MAX = 128
VIEW_BATCH_PROOF_BYTES_MAX = 160 * 1024
# A certified chain entry as this node stored it: far below it (an entry is bounded by
# the envelope it carries, its signatures by the replica count).
CERT_LIMITS = cbor.Limits(size_bytes_max=1 << 20)
_KEY = struct.Struct(">cHQ")


def _cert_key(bucket: int, index: int) -> bytes:
    return _KEY.pack(b"c", bucket, index)


def _encode_cert(cert: CertifiedEntry) -> bytes:
    return cbor.encode([cert.term, cert.entry, [list(s) for s in cert.sigs]])


def _proof(cert: CertifiedEntry) -> Proof:
    return Proof(cert.bucket, cert.index, cert.term, cert.entry, cert.sigs)


def _decode_cert(key: bytes, value: bytes) -> CertifiedEntry:
    _, bucket, index = _KEY.unpack(key)
    term, entry, sigs = cbor.decode(value, CERT_LIMITS)
    return CertifiedEntry(bucket, index, term, entry, tuple((a, b) for a, b in sigs))


class LedgerRaft(LedgerHook):
    def __init__(self, raft: MultiRaft, store: RaftStore, genesis: Genesis) -> None:
        self.raft = raft
        self.store = store
        self.genesis = genesis
        self.placement = raft.placement
        self.bucket_count = self.placement.bucket_count
        self.supply = genesis_supply(genesis)
        self.unit = genesis.params["unit_per_credit"]
        self.read: dict[int, LedgerPart] = {
            b: LedgerPart.from_genesis(genesis, b)
            for b in range(self.bucket_count) if b not in raft.groups}
        self.ahead: dict[int, dict[int, ChainEntry]] = defaultdict(dict)  # bucket -> prev
        self.sent: dict[tuple[int, int, int], int] = {}  # (source, target, seq) -> tick
        # (source, target) -> (applied below, proof): the acknowledgement due, the best
        # proven so far.
        self.acks: dict[tuple[int, int], tuple[int, Proof]] = {}
        self.fetching: dict[tuple[int, int], int] = {}  # (bucket, index) -> tick asked
        # Proofs of our buckets' recent entries that emitted batches (the store has them
        # once the round after their certificate writes).
        self.proofs: OrderedDict[tuple[int, int], Proof] = OrderedDict()
        self.stats: dict[str, int] = defaultdict(int)
        self.ticked: dict[int, int] = {}  # bucket -> our clock when we last proposed a tick
        # Draws: (bucket, draw index) -> tick first seen waiting, tick last proposed;
        # views: (bucket, viewed bucket, its index) -> tick proposed.
        self.draw_waiting: dict[tuple[int, int], int] = {}
        self.draw_sent: dict[tuple[int, int], int] = {}
        self.view_sent: dict[tuple[int, int, int], int] = {}
        # (bucket led, bucket viewed) -> when its view was last proposed, or first found
        # differing only in reputations, here.
        self.view_fresh: dict[tuple[int, int], int] = {}
        self._rows: dict[int, tuple[int, tuple[PoolRow, ...], bytes | None]] = {}
        # Told what each applied entry did to a bucket's tasks (replica or read replica).
        self.listeners: list[Callable[[int, tuple[Step, ...]], None]] = []
        self._sync_turn = 0
        raft.ledger_hook = self
        self._load()

    # -- restart: the read replica from the stored certified entries --

    def _load(self) -> None:
        loaded = 0
        for bucket in sorted(self.read):
            for key, value in self._stored(bucket, 0):
                # Our own disk: checked when it was received, not again.
                self._apply(bucket, ChainEntry.decode(_decode_cert(key, value).entry))
                loaded += 1
        if loaded:
            log.info("read replica rebuilt from %d stored certified entries", loaded)

    def stored_after(self, bucket: int, after: int) -> Iterator[CertifiedEntry]:
        """The certified entries of `bucket` this node stored after index `after`, in
        order (what chain sync serves)."""
        for key, value in self._stored(bucket, after):
            yield _decode_cert(key, value)

    def _stored(self, bucket: int, after: int) -> Iterator[tuple[bytes, bytes]]:
        """The stored certified entries of `bucket` after index `after`, in order."""
        stop = _cert_key(bucket + 1, 0) if bucket < 0xFFFF else b"d"
        for key, value in self.store.db.items(from_key=_cert_key(bucket, after + 1)):
            if not isinstance(key, bytes) or key >= stop:
                return
            if isinstance(value, bytes):
                yield key, value

    # -- hooks from MultiRaft --

    def applied(self, g: Group, result: LedgerApplied) -> None:
        """Batches wait for their entry's certificate (`certified`), their proof. What
        the entry did to the bucket's tasks goes to the listeners."""
        if result.tasks:
            self._tell(g.bucket, result.tasks)

    def _tell(self, bucket: int, steps: tuple[Step, ...]) -> None:
        for listener in self.listeners:
            listener(bucket, steps)

    def certified(self, g: Group, cert: CertifiedEntry) -> None:
        self.store.pending.put(_cert_key(cert.bucket, cert.index), _encode_cert(cert))
        self.stats["certified_stored"] += 1
        entry = ChainEntry.decode(cert.entry)  # our own replicas signed it
        proof = _proof(cert)
        if entry.out:
            # Kept at hand until the round writes it: this replica may lead next.
            self.proofs[(cert.bucket, cert.index)] = proof
            while len(self.proofs) > PROOFS_KEPT_MAX:
                self.proofs.popitem(last=False)
        if g.raw.raft.role != Role.LEADER:
            return
        replicas = set(self.placement.replicas(cert.bucket))
        for peer in range(1, len(self.placement.accounts) + 1):
            if peer not in replicas:
                self.raft.outbox.to(peer).chain.append(cert)
        if entry.out:
            # Deliver at once: the recipient sees its credit within a round trip.
            now = self.raft.now_tick
            pending = {(b.target_bucket, b.seq): b for b in g.machine.ledger.outbox()
                       if b.source_index == entry.index}
            for e in entry.out:
                batch = pending.get((e.target_bucket, e.seq))
                if batch is not None:
                    self.sent[(batch.source_bucket, batch.target_bucket, batch.seq)] = now
                    self.raft.submit_nowait(effects_command(batch, proof))
        body = entry.body
        if isinstance(body, EffectBatch) and entry.applied_below is not None:
            key = (body.source_bucket, g.bucket)
            had = self.acks.get(key)
            if had is None or had[0] <= entry.applied_below:
                self.acks[key] = (entry.applied_below, proof)

    def frame(self, sender: int, frame: Frame) -> None:
        for cert in frame.chain:
            self.offer(cert)
        if frame.fetch:
            self._serve_fetch(sender, frame.fetch)

    # -- the read replica --

    def offer(self, cert: CertifiedEntry) -> bool:
        """A certified chain entry from a peer; True if it was new and valid. For a
        bucket we replicate, only one we asked for (`_proof_for`) is kept."""
        part = self.read.get(cert.bucket)
        if part is None:
            return self._keep_asked(cert)
        if cert.index <= part.last:
            return False
        entry = self._checked(cert)
        if entry is None:
            return False
        self.store.pending.put(_cert_key(cert.bucket, cert.index), _encode_cert(cert))
        self._apply(cert.bucket, entry)
        self.raft.wake.set()  # so the round writes what we stored
        return True

    def _keep_asked(self, cert: CertifiedEntry) -> bool:
        """A certificate of one of our buckets' entries that we lacked (a replica that
        caught up by snapshot holds none for the entries inside it) and asked a
        co-replica for, to prove a batch still in the outbox: checked, then stored."""
        if self.fetching.pop((cert.bucket, cert.index), None) is None \
                or self._checked(cert) is None:
            return False
        self.store.pending.put(_cert_key(cert.bucket, cert.index), _encode_cert(cert))
        self.proofs[(cert.bucket, cert.index)] = _proof(cert)
        self.stats["proofs_fetched"] += 1
        self.raft.wake.set()
        return True

    def _checked(self, cert: CertifiedEntry) -> ChainEntry | None:
        """The chain entry a certificate from a peer carries, if a quorum of its bucket's
        replicas (by the genesis placement) signed exactly these bytes; else None,
        counted and logged."""
        digest = chain_digest(cert.entry)
        try:
            certificate.check({"bucket": cert.bucket, "index": cert.index, "term": cert.term,
                               "entry_hash": digest,
                               "sigs": [{"signer": a, "sig": s} for a, s in cert.sigs]},
                              self.raft.swarm_id, self.placement, cert.bucket, digest)
            entry = ChainEntry.decode(cert.entry)
            if entry.index != cert.index:
                raise RemoteProtocolError("chain.index", "differs from the certificate's")
        except RemoteProtocolError as exc:
            self.stats["chain_rejected"] += 1
            log.warning("certified entry %d of bucket %d rejected: %s", cert.index,
                        cert.bucket, exc)
            return None
        return entry

    def _proof_for(self, bucket: int, index: int) -> Proof | None:
        """The certificate of our bucket's chain entry at `index`, from memory or our
        store; if we lack it, ask a live co-replica (at most every EFFECT_RESEND_TICKS)
        and say None."""
        stored = self._stored_proof(bucket, index)
        if stored is not None:
            return stored
        now = self.raft.now_tick
        asked = self.fetching.get((bucket, index))
        if asked is None or now - asked >= EFFECT_RESEND_TICKS:
            # Co-replicas first, then every other node: a read replica stores each
            # certified entry it receives, and may be the only one left holding it
            # when the replicas that certified it have compacted or crashed since.
            replicas = self.placement.replicas(bucket)
            peers = [p for p in (*replicas, *range(1, len(self.placement.accounts) + 1))
                     if p != self.raft.id and self.raft.alive(p)]
            peers = list(dict.fromkeys(peers))
            if peers:
                self.fetching[(bucket, index)] = now
                peer = peers[self.stats["proofs_asked"] % len(peers)]
                self.raft.outbox.to(peer).fetch.append((bucket, index - 1))
                self.stats["proofs_asked"] += 1
        return None

    def _apply(self, bucket: int, entry: ChainEntry) -> None:
        part = self.read[bucket]
        ahead = self.ahead[bucket]
        if entry.prev != part.last:
            if entry.prev > part.last and len(ahead) < AHEAD_MAX:
                ahead[entry.prev] = entry
            return
        applied = part.apply_chain(entry)
        self.stats["chain_applied"] += 1
        if applied.tasks:
            self._tell(bucket, applied.tasks)
        while part.last in ahead:
            applied = part.apply_chain(ahead.pop(part.last))
            self.stats["chain_applied"] += 1
            if applied.tasks:
                self._tell(bucket, applied.tasks)
        for prev in [p for p in ahead if p < part.last]:
            del ahead[prev]

    def _serve_fetch(self, sender: int, wanted: tuple[tuple[int, int], ...]) -> None:
        budget = FETCH_ENTRIES_MAX
        for bucket, after in wanted:
            # A replica of the bucket asks for one entry's certificate (`_proof_for`);
            # a read replica for everything after its last entry.
            one = sender in self.placement.replicas(bucket)
            for key, value in self._stored(bucket, after):
                if budget == 0:
                    return
                self.raft.outbox.to(sender).chain.append(_decode_cert(key, value))
                budget -= 1
                if one:
                    break
        self.stats["fetches_served"] += 1

    def request_missing(self) -> None:
        """Ask the next live peer for what follows our last entry of each bucket it
        replicates."""
        peers = [p for p in range(1, len(self.placement.accounts) + 1)
                 if p != self.raft.id and self.raft.alive(p)]
        if not peers or not self.read:
            return
        self._sync_turn += 1
        peer = peers[self._sync_turn % len(peers)]
        wanted = [(b, part.last) for b, part in sorted(self.read.items())
                  if peer in self.placement.replicas(b)]
        if wanted:
            self.raft.outbox.to(peer).fetch.extend(wanted)
            self.raft.wake.set()

    # -- effects --

    def tick_tasks(self) -> None:
        """Lead the task timers: in each bucket we lead whose earliest task deadline our
        clock has passed, propose a tick entry, at most once per `tick_interval_ms` of
        our clock. Quiet buckets propose nothing."""
        raft = self.raft
        now_ms = raft.clock_ms()
        interval = self.genesis.params["tick_interval_ms"]
        for g in raft.groups.values():
            if g.raw.raft.role != Role.LEADER:
                continue
            due = g.machine.ledger.tasks.next_due_ms()
            if due is None or due > now_ms:
                continue
            last = self.ticked.get(g.bucket)
            if last is not None and now_ms - last < interval:
                continue
            if raft.propose(g, tick_command(g.bucket).stamp(max(now_ms,
                                                                g.machine.clock_ms))):
                self.ticked[g.bucket] = now_ms
                self.stats["task_ticks"] += 1

    def draw_committees(self) -> None:
        """In each bucket we lead, seat the committees its committed results wait for,
        and the panels its challenges wait for (see the module docstring)."""
        raft = self.raft
        now = raft.now_tick
        live: set[tuple[int, int]] = set()
        for g in raft.groups.values():
            if g.raw.raft.role != Role.LEADER:
                continue
            waiting = g.machine.ledger.tasks.awaiting_draw()[:DRAWS_PER_ROUND]
            if not waiting:
                continue
            ts = max(raft.clock_ms(), g.machine.clock_ms)
            views_ready = self._send_views(g, ts)
            quorum = self.placement.quorum(g.bucket)
            for task in waiting:
                # The COMMIT for a committee, the round's first entry for a panel.
                key = (g.bucket, task.draw_index)
                live.add(key)
                first = self.draw_waiting.setdefault(key, now)
                sent = self.draw_sent.get(key)
                if sent is not None and now - sent < EFFECT_RESEND_TICKS:
                    continue
                if not views_ready and now - first < VIEW_WAIT_TICKS:
                    continue
                proof = self._proof_for(g.bucket, task.draw_index)
                if proof is None:
                    continue  # the COMMIT's certificate is not complete yet
                seeded = Proof(proof.bucket, proof.index, proof.term, proof.entry,
                               tuple(sorted(proof.sigs))[:quorum])
                if raft.propose(g, draw_command(g.bucket, task.terms.need,
                                                seeded).stamp(ts)):
                    self.draw_sent[key] = now
                    self.stats["draws_proposed"] += 1
        for stale in [k for k in self.draw_waiting if k not in live]:
            self.draw_waiting.pop(stale, None)
            self.draw_sent.pop(stale, None)
        for k in [k for k, t in self.view_sent.items() if now - t > FETCH_FORGET_TICKS]:
            del self.view_sent[k]

    def _send_views(self, g: Group, ts: int) -> bool:
        """Propose a view of every other bucket whose verifiers this node sees otherwise
        than `g`'s bucket does, as few entries as the bounds allow (`pool_views`); False
        while one of them lacks its certificate here."""
        raft = self.raft
        now = raft.now_tick
        views = g.machine.ledger.views()
        ready = True
        batch: list[tuple[int, tuple[PoolRow, ...], Proof | None, int]] = []

        def flush() -> None:
            if batch and raft.propose(g, pool_views_command(
                    g.bucket, [(b, rows, proof) for b, rows, proof, _ in batch]).stamp(ts)):
                for b, _, _, index in batch:
                    self.view_sent[(g.bucket, b, index)] = now
                    self.view_fresh[(g.bucket, b)] = now
                self.stats["pool_views_proposed"] += 1
            batch.clear()

        for b in range(self.bucket_count):
            if b == g.bucket:
                continue
            index, rows, digest = self._view_of(b)
            had = views.get(b)
            if had is None and digest is None:
                continue
            if had is not None and (had[0] >= index or view_digest(had[1]) == digest):
                continue
            if had is not None and _membership(had[1]) == _membership(rows):
                since = self.view_fresh.setdefault((g.bucket, b), now)
                if now - since < VIEW_REFRESH_TICKS:
                    continue  # only reputations moved: the held view will do a while
            key = (g.bucket, b, index)
            if key in self.view_sent:
                continue
            proof = None
            if index:
                proof = self._stored_proof(b, index)
                if proof is None:
                    ready = False
                    continue
            if not _fits(batch, rows, proof):
                flush()
            batch.append((b, rows, proof, index))
        flush()
        return ready

    def _view_of(self, bucket: int) -> tuple[int, tuple[PoolRow, ...], bytes | None]:
        """The bucket's verifiers as this node holds them: (chain index, rows, digest)."""
        part = self.part(bucket)
        cached = self._rows.get(bucket)
        if cached is None or cached[0] != part.last:
            rows = part.rows()
            cached = (part.last, rows, view_digest(rows))
            self._rows[bucket] = cached
        return cached

    def proof_of(self, bucket: int, index: int) -> Proof | None:
        """The certificate of `bucket`'s chain entry at `index`, if this node holds it."""
        return self._stored_proof(bucket, index)

    def _stored_proof(self, bucket: int, index: int) -> Proof | None:
        """The certificate of `bucket`'s chain entry at `index`, from memory or our
        store (one we certified, or received as a read replica)."""
        kept = self.proofs.get((bucket, index))
        if kept is not None:
            return kept
        value = self.store.db.get(_cert_key(bucket, index))
        if isinstance(value, bytes):
            return _proof(_decode_cert(_cert_key(bucket, index), value))
        return None

    def deliver(self) -> None:
        """Send the acknowledgements due, and every outbox batch not sent lately."""
        raft = self.raft
        for (source, target), (applied_below, proof) in sorted(self.acks.items()):
            raft.submit_nowait(ack_command(source, target, proof, applied_below))
        self.acks.clear()
        now = raft.now_tick
        waiting: set[tuple[int, int, int]] = set()
        for g in raft.groups.values():
            if g.raw.raft.role != Role.LEADER or not g.machine.ledger.outbox_targets():
                continue
            for batch in g.machine.ledger.outbox()[:OUTBOX_SEND_MAX]:
                key = (batch.source_bucket, batch.target_bucket, batch.seq)
                waiting.add(key)
                last = self.sent.get(key)
                if last is not None and now - last < EFFECT_RESEND_TICKS:
                    continue
                found = self._proof_for(g.bucket, batch.source_index)
                if found is None:
                    continue  # not certified yet, or its certificate is on its way
                if last is not None:
                    self.stats["effects_resent"] += 1
                self.sent[key] = now
                raft.submit_nowait(effects_command(batch, found))
        for key in [k for k in self.sent if k not in waiting]:
            del self.sent[key]
        for asked in [k for k, t in self.fetching.items()
                      if now - t > FETCH_FORGET_TICKS]:
            del self.fetching[asked]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        tick = 0
        while True:
            await trio.sleep(EFFECT_TICKS * TICK_MS / 1000)
            tick += EFFECT_TICKS
            self.deliver()
            self.tick_tasks()
            self.draw_committees()
            if tick % SYNC_TICKS == 0:
                self.request_missing()
            self.raft.wake.set()

    # -- queries over every bucket --

    def part(self, bucket: int) -> LedgerPart:
        g = self.raft.groups.get(bucket) or self.raft.halted.get(bucket)
        return g.machine.part if g is not None else self.read[bucket]

    def replicated(self, bucket: int) -> bool:
        return bucket in self.raft.groups or bucket in self.raft.halted

    def account(self, account: bytes) -> AccountView:
        return self.part(bucket_of(account, self.bucket_count)).ledger.account(account)

    def history(self, account: bytes) -> list[AuditRecord]:
        """Every entry of the account's bucket that it submitted or that changed it
        (credits from other buckets arrive there as effect batches)."""
        return self.part(bucket_of(account, self.bucket_count)).ledger.history(account)

    def totals(self) -> Totals:
        total = Totals()
        for b in range(self.bucket_count):
            total = total + self.part(b).ledger.totals()
        return total

    def root(self) -> bytes:
        """Merkle root over every bucket's ledger-part root, in bucket order."""
        return merkle_root([self.part(b).root() for b in range(self.bucket_count)])

    def task_root(self) -> bytes:
        """Merkle root over every bucket's task book root, in bucket order."""
        return merkle_root([self.part(b).ledger.tasks.root()
                            for b in range(self.bucket_count)])

    def pool(self) -> list[tuple[Verifier, int]]:
        """Every registered verifier with its stake now, in account order."""
        out = []
        for b in range(self.bucket_count):
            part = self.part(b)
            for v in part.pool.members():
                out.append((v, part.ledger.account(v.account).locked))
        return sorted(out, key=lambda x: x[0].account)

    def lag(self) -> dict[str, int]:
        """How far the read replica is behind what it has heard of."""
        return {"buckets_read": len(self.read),
                "entries_waiting": sum(len(a) for a in self.ahead.values())}


def _membership(rows: tuple[PoolRow, ...]) -> tuple[tuple[Any, ...], ...]:
    """What of a bucket's verifiers decides who may sit and with what stake: all but
    reputation and recency, which only weigh the draw."""
    return tuple((r.account, r.stake, r.capabilities, r.org, r.asn, r.region,
                  r.registered_ms) for r in rows)


def _fits(batch: list[tuple[int, tuple[PoolRow, ...], Proof | None, int]],
          rows: tuple[PoolRow, ...], proof: Proof | None) -> bool:
    """Whether one more view keeps a `pool_views` entry within its bounds."""
    proof_bytes = sum(len(p.entry) for _, _, p, _ in batch if p is not None)
    return (len(batch) < POOL_VIEWS_MAX
            and sum(len(r) for _, r, _, _ in batch) + len(rows) <= VIEW_BATCH_ROWS_MAX
            and proof_bytes + (len(proof.entry) if proof else 0) <= VIEW_BATCH_PROOF_BYTES_MAX)
