"""A deterministic simulation of the ledger's buckets exchanging effects.

Stands in for Raft: each bucket's log is a counter (index) and a clock (timestamps
stamped per bucket, never going back), and every committed entry is applied by that
bucket's `BucketLedger` alone. Delivery works as the shell's does: the
batches a bucket emitted wait in its replicated outbox; the "network" picks any waiting
batch at random (so order is arbitrary) and commits it in the target's log; now and
then the source learns the target's progress and commits an `EffectAck`, which empties
its outbox up to there. A batch delivered but not yet acknowledged may be picked again,
so duplicates arise the way retries cause them. All randomness comes from the one
`random.Random` passed in, so a seed replays a run exactly.

The checks the simulation offers (`check`) are the ledger's invariants: conservation
of the genesis supply, credits in flight exactly those of unapplied batches in some
outbox, no negative amount anywhere, no empty account kept, every batch applied
exactly once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from swarm.protocol.buckets import bucket_of
from swarm.protocol.genesis import Genesis
from swarm.protocol.ledger import (
    AccountView,
    Applied,
    AuditRecord,
    BucketLedger,
    Totals,
    genesis_supply,
)
from swarm.protocol.ledger_ops import Credit, EffectAck, EffectBatch, LedgerEntry, Op
from swarm.protocol.plan import merkle_root


class LedgerReplica:
    """All buckets' ledgers side by side: the simulation's world, and the tests' view of
    a whole swarm's ledger. Each bucket still applies only its own entries; this class
    only routes queries."""

    def __init__(self, buckets: Mapping[int, BucketLedger], supply: int) -> None:
        self.buckets = dict(buckets)
        self.genesis_supply = supply
        first = next(iter(self.buckets.values()))
        self.bucket_count = first.bucket_count
        self.unit = first.unit

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> LedgerReplica:
        n = genesis.params["bucket_count"]
        buckets = {b: BucketLedger(genesis.params, b) for b in range(n)}
        # One hash per account, not one per account per bucket (256 x for a full replica).
        for a in genesis.value["accounts"]:
            if a["balance"]:
                buckets[bucket_of(a["account"], n)]._acct(a["account"]).balance += a["balance"]
        for v in genesis.value["validators"]:
            if v["stake"]:
                buckets[bucket_of(v["account"], n)]._acct(v["account"]).locked += v["stake"]
        return cls(buckets, genesis_supply(genesis))

    def bucket_for(self, account: bytes) -> BucketLedger:
        return self.buckets[bucket_of(account, self.bucket_count)]

    def account(self, account: bytes) -> AccountView:
        return self.bucket_for(account).account(account)

    def totals(self) -> Totals:
        total = Totals()
        for b in self.buckets.values():
            total = total + b.totals()
        return total

    def root(self) -> bytes:
        """Merkle root over the bucket roots in bucket order (the node's `ledger_root`)."""
        return merkle_root([self.buckets[b].root() for b in sorted(self.buckets)])

    def check_conservation(self) -> None:
        """Raise AssertionError unless every unit of the genesis supply is accounted for."""
        t = self.totals()
        assert t.held == self.genesis_supply, (
            f"conservation broken: held {t.held}, genesis supply {self.genesis_supply} ({t})")

    def history(self, account: bytes) -> list[AuditRecord]:
        """Entries touching `account` in any bucket (its own and effects it received)."""
        out: list[AuditRecord] = []
        for b in self.buckets.values():
            out += b.history(account)
        return sorted(out, key=lambda r: r.ts_ms)


@dataclass
class LedgerSim:
    genesis: Genesis
    rng: random.Random
    # Chance that a delivery is *not* followed by an acknowledgement, leaving the batch
    # in the outbox to be delivered again.
    dup_bp: int = 2000
    replica: LedgerReplica = field(init=False)
    applied: Counter[tuple[int, int, int]] = field(default_factory=Counter)
    emitted: set[tuple[int, int, int]] = field(default_factory=set)
    deliveries: int = 0
    _index: dict[int, int] = field(default_factory=dict)
    _clock: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replica = LedgerReplica.from_genesis(self.genesis)

    @property
    def bucket_count(self) -> int:
        return self.replica.bucket_count

    def bucket(self, b: int) -> BucketLedger:
        return self.replica.buckets[b]

    def _commit(self, b: int, body: Op | EffectBatch | EffectAck, ts_ms: int) -> Applied:
        """Append to bucket b's log and apply: the leader stamps a monotonic time."""
        index = self._index.get(b, 0) + 1
        ts = max(ts_ms, self._clock.get(b, 0))
        self._index[b], self._clock[b] = index, ts
        result = self.bucket(b).apply(LedgerEntry(index, ts, body))
        for batch in result.effects:
            key = (batch.source_bucket, batch.seq, batch.target_bucket)
            assert key not in self.emitted, f"seq reused: {key}"
            self.emitted.add(key)
        return result

    def submit(self, op: Op, ts_ms: int, *, bucket: int | None = None) -> Applied:
        """Order `op` in its home bucket (or, to test refusal, in `bucket`)."""
        b = bucket_of(op.home, self.bucket_count) if bucket is None else bucket
        return self._commit(b, op, ts_ms)

    def waiting(self) -> list[EffectBatch]:
        return [batch for b in sorted(self.replica.buckets) for batch in self.bucket(b).outbox()]

    def deliver_one(self, ts_ms: int, *, ack: bool | None = None
                    ) -> tuple[EffectBatch, Applied] | None:
        """Deliver one waiting batch, picked at random, then maybe acknowledge it."""
        # Source, then target, then batch, each at random: any waiting batch can go next,
        # without listing every outbox on every delivery.
        sources = [b for b in sorted(self.replica.buckets) if self.bucket(b).outbox_targets()]
        if not sources:
            return None
        source = self.bucket(sources[self.rng.randrange(len(sources))])
        targets = source.outbox_targets()
        waiting = source.outbox(targets[self.rng.randrange(len(targets))])
        batch = waiting[self.rng.randrange(len(waiting))]
        self.deliveries += 1
        result = self._commit(batch.target_bucket, batch, ts_ms)
        if result.record.ok:
            self.applied[(batch.source_bucket, batch.seq, batch.target_bucket)] += 1
        else:
            assert result.record.error_code == "duplicate_effect", result.record
        if ack if ack is not None else self.rng.randrange(10_000) >= self.dup_bp:
            progress = self.bucket(batch.target_bucket).applied_seq(batch.source_bucket)
            acked = self._commit(batch.source_bucket,
                                 EffectAck(batch.target_bucket, progress), ts_ms)
            assert acked.record.ok, acked.record
        return batch, result

    def drain(self, ts_ms: int, deliveries_max: int = 100_000) -> None:
        """Deliver and acknowledge until every outbox is empty."""
        for _ in range(deliveries_max):
            if self.deliver_one(ts_ms, ack=True) is None:
                return
        raise AssertionError(f"outboxes not drained after {deliveries_max} deliveries")

    def check(self) -> None:
        """The invariants, after any step."""
        self.replica.check_conservation()
        for b in self.replica.buckets.values():
            for a in b.accounts():
                assert min(a.balance, a.locked, a.unbonding, a.escrowed) >= 0, a
                assert a.balance or a.locked or a.unbonding or a.escrowed or a.violations, (
                    f"an empty account is kept in the state: {a}")
            assert b.totals().burned >= 0
        assert all(n == 1 for n in self.applied.values()), "a batch applied twice"
        # Nothing in flight is lost: every credit sent and not yet applied is in an outbox.
        unapplied = sum(e.amount for batch in self.waiting()
                        if not self.bucket(batch.target_bucket).has_applied(
                            batch.source_bucket, batch.seq)
                        for e in batch.effects if isinstance(e, Credit))
        assert unapplied == self.replica.totals().in_flight
        if not self.waiting():
            assert set(self.applied) == self.emitted, "a batch was never applied"
            assert self.replica.totals().in_flight == 0
