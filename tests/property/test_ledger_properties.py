"""Property tests of the ledger, pools and payouts.

Goal: the economic invariants hold whatever the operations and whatever the delivery of
cross-bucket effects. Method:

* A stateful machine drives the real ledger, split over 4 buckets (testnet/ledger_sim:
  each bucket applies only its own log; effect batches are delivered from the outboxes
  in a seeded random order, some of them twice; any bucket may be rebuilt from its
  snapshot at any point), side by side with a model written the plain way: one
  dictionary of accounts, credits to other buckets held back until their batch is first
  delivered. After every step: the genesis supply is conserved (balances + locked +
  unbonding + escrowed + burned + credits in flight), nothing is negative, no batch is
  applied twice, and the real accounts equal the model's. At the end every open escrow
  is resolved and every batch delivered.
* Plain properties: two nodes spending one account never overspend, whatever the order
  its bucket gives their proposals; P5 (active verifiers stake at least the minimum),
  P6 (bounties within caps, in payout.py and in the ledger), P8 (no related-party payout).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.committee import CommitteeUnfillable, VerifierPool
from swarm.protocol.ledger import BP, Applied, BucketLedger, OpenEscrow, OverCap, genesis_supply
from swarm.protocol.ledger_ops import (
    Bounty,
    Cancel,
    CompleteUnbonding,
    Escrow,
    LedgerEntry,
    Release,
    Share,
    Slash,
    SlashOrder,
    Stake,
    Transfer,
    Unstake,
)
from swarm.protocol.payout import Party, bounty, payout_no_challenge, payout_upheld, related
from swarm.testnet.ledger_sim import LedgerSim

U = 1_000_000
N = 4
EVIDENCE = dag_cbor_cid(b"evidence")
PEOPLE = [hashlib.sha256(b"person%d" % i).digest() for i in range(6)]
VALIDATORS = PEOPLE[:3]
UNBONDING_MS = 1000
GENESIS = genesis_mod.new(
    name="ledger-props", created_ms=0,
    validators=[{"account": v, "org": f"o{i}", "asn": i, "region": "r", "stake": 100 * U}
                for i, v in enumerate(VALIDATORS)],
    accounts=[{"account": p, "balance": 50 * U} for p in PEOPLE],
    params={"replicas": 1, "bucket_count": N, "unbonding_ms": UNBONDING_MS},
)
PARAMS = GENESIS.params
SUPPLY = genesis_supply(GENESIS)

amounts = st.one_of(st.integers(1, 60 * U), st.sampled_from([1, U, 50 * U]))
people = st.sampled_from(PEOPLE)


def bucket(account: bytes) -> int:
    return bucket_of(account, N)


class Model:
    """The ledger, specified the slow, obvious way: one dict, one rule per operation.

    An entry's changes to accounts of other buckets wait in `pending` until their batch
    is first delivered; `begin` / `finish` bracket one entry and number its batches."""

    def __init__(self) -> None:
        self.balance = dict.fromkeys(PEOPLE, 50 * U)
        self.locked = {p: 0 for p in PEOPLE} | dict.fromkeys(VALIDATORS, 100 * U)
        self.unbonding: dict[bytes, list[list[int]]] = {p: [] for p in PEOPLE}
        self.violations = dict.fromkeys(PEOPLE, 0)
        self.escrows: dict[bytes, tuple[bytes, int, int]] = {}  # id -> payer, amount, release
        self.burned = 0
        self.out_seq: dict[tuple[int, int], int] = {}
        self.pending: dict[tuple[int, int, int], list[tuple[bytes, int] | SlashOrder]] = {}
        self.delivered: set[tuple[int, int, int]] = set()
        self.source = -1
        self.out: dict[int, list[tuple[bytes, int] | SlashOrder]] = {}

    def begin(self, source: int) -> None:
        self.source, self.out = source, {}

    def credit(self, acct: bytes, amount: int) -> None:
        if amount <= 0:
            return
        if bucket(acct) == self.source:
            self.balance[acct] += amount
        else:
            self.out.setdefault(bucket(acct), []).append((acct, amount))

    def send_slash(self, order: SlashOrder) -> None:
        if bucket(order.account) == self.source:
            self.slash(order)
        else:
            self.out.setdefault(bucket(order.account), []).append(order)

    def finish(self) -> list[tuple[int, int, int]]:
        keys = []
        for target in sorted(self.out):
            seq = self.out_seq.get((self.source, target), 0)
            self.out_seq[(self.source, target)] = seq + 1
            key = (self.source, seq, target)
            items = self.out[target]
            # Credits first, then slashes, as a batch carries them.
            self.pending[key] = ([i for i in items if not isinstance(i, SlashOrder)]
                                 + [i for i in items if isinstance(i, SlashOrder)])
            keys.append(key)
        self.out = {}
        return keys

    def deliver(self, key: tuple[int, int, int]) -> list[tuple[int, int, int]] | None:
        """Apply a batch the first time it arrives; returns the batches that emits."""
        if key in self.delivered:
            return None
        self.delivered.add(key)
        self.begin(key[2])
        for item in self.pending.pop(key):
            if isinstance(item, SlashOrder):
                self.slash(item)
            else:
                self.balance[item[0]] += item[1]
        return self.finish()

    def slash(self, order: SlashOrder) -> None:
        who = order.account
        base = self.locked[who] + sum(u[0] for u in self.unbonding[who])
        if order.reason == "failed_challenge":
            rate = PARAMS["slash_failed_challenge_bp"]
        elif order.reason == "missed_heartbeat":
            rate = PARAMS["slash_missed_heartbeat_bp"] * order.misses
        else:
            self.violations[who] += 1
            rate = PARAMS["slash_policy_violation_bp"] * self.violations[who]
        amount = base * min(rate, BP) // BP
        take = min(amount, self.locked[who])
        self.locked[who] -= take
        rest = amount - take
        for u in sorted(self.unbonding[who], key=lambda u: -u[1]):
            cut = min(rest, u[0])
            u[0] -= cut
            rest -= cut
        self.unbonding[who] = [u for u in self.unbonding[who] if u[0]]
        to_challenger = amount * PARAMS["payout_challenger_bp"] // BP if order.challenger else 0
        if order.challenger:
            self.credit(order.challenger, to_challenger)
        pool = amount * PARAMS["payout_honest_verifiers_bp"] // BP if order.honest else 0
        if order.honest:
            each, rem = divmod(pool, len(order.honest))
            for i, h in enumerate(sorted(order.honest)):
                self.credit(h, each + (i < rem))
        self.burned += amount - to_challenger - pool


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.ts = 0
        self.n = 0
        self.sim: LedgerSim

    @initialize(seed=st.integers(0, 2**32 - 1), dup_bp=st.sampled_from([0, 2500, 5000]))
    def start(self, seed: int, dup_bp: int) -> None:
        self.sim = LedgerSim(GENESIS, random.Random(seed), dup_bp=dup_bp)

    def op_id(self) -> bytes:
        self.n += 1
        return hashlib.sha256(b"op%d" % self.n).digest()

    def submit(self, op: object, expect_ok: bool, expect_code: str = "") -> Applied:
        result = self.sim.submit(op, self.ts)  # type: ignore[arg-type]
        got = result.record.error_code
        assert (got == "") == expect_ok, (op, got, expect_code)
        if expect_code:
            assert got == expect_code, (op, got, expect_code)
        return result

    def expect_batches(self, result: Applied, keys: list[tuple[int, int, int]]) -> None:
        got = [(b.source_bucket, b.seq, b.target_bucket) for b in result.effects]
        assert got == keys, (got, keys)

    @rule(ms=st.sampled_from([1, 300, UNBONDING_MS]) | st.integers(0, 2 * UNBONDING_MS))
    def advance(self, ms: int) -> None:
        self.ts += ms

    @rule(src=people, dst=people, amount=amounts)
    def transfer(self, src: bytes, dst: bytes, amount: int) -> None:
        m = self.model
        ok = m.balance[src] >= amount
        r = self.submit(Transfer(self.op_id(), src, dst, amount), ok,
                        "" if ok else "insufficient_balance")
        if ok:
            m.begin(bucket(src))
            m.balance[src] -= amount
            m.credit(dst, amount)
            self.expect_batches(r, m.finish())

    @rule(payer=people, amount=amounts,
          hold=st.sampled_from([0, 300]) | st.integers(0, 2 * UNBONDING_MS))
    def escrow(self, payer: bytes, amount: int, hold: int) -> None:
        m = self.model
        ok = m.balance[payer] >= amount
        eid = self.op_id()
        self.submit(Escrow(self.op_id(), payer, eid, amount, hold), ok)
        if ok:
            m.balance[payer] -= amount
            m.escrows[eid] = (payer, amount, self.ts + hold)

    @precondition(lambda self: self.model.escrows)
    @rule(data=st.data(), cancel=st.booleans())
    def resolve(self, data: st.DataObject, cancel: bool) -> None:
        m = self.model
        eid = data.draw(st.sampled_from(sorted(m.escrows)))
        payer, amount, release_ms = m.escrows[eid]
        if cancel:
            self.submit(Cancel(self.op_id(), payer, eid), True)
            m.balance[payer] += amount
            del m.escrows[eid]
            return
        payees = data.draw(st.lists(people, unique=True, max_size=3))
        burn = data.draw(st.integers(0, amount))
        shares = tuple(Share(p, x) for p, x in zip(payees, _split(amount - burn, len(payees)),
                                                     strict=True) if x)
        burn = amount - sum(s.amount for s in shares)
        slashes = []  # an upheld challenge: wrong attesters slashed in their own buckets
        for who in data.draw(st.lists(st.sampled_from(VALIDATORS), unique=True, max_size=2)):
            others = [p for p in PEOPLE if p != who]
            challenger = data.draw(st.none() | st.sampled_from(others))
            honest = data.draw(st.lists(st.sampled_from([p for p in others if p != challenger]),
                                        unique=True, max_size=2))
            slashes.append(SlashOrder(who, "failed_challenge", EVIDENCE, 1, challenger,
                                      tuple(sorted(honest))))
        ok = self.ts >= release_ms
        r = self.submit(Release(self.op_id(), payer, eid, shares, burn, tuple(slashes)), ok,
                        "" if ok else "escrow_held")
        if ok:
            del m.escrows[eid]
            m.begin(bucket(payer))
            m.burned += burn
            for share in shares:
                m.credit(share.account, share.amount)
            for order in slashes:
                m.send_slash(order)
            self.expect_batches(r, m.finish())

    @rule(who=people, amount=amounts)
    def stake(self, who: bytes, amount: int) -> None:
        m = self.model
        ok = m.balance[who] >= amount
        self.submit(Stake(self.op_id(), who, amount), ok)
        if ok:
            m.balance[who] -= amount
            m.locked[who] += amount

    @rule(who=people, amount=amounts)
    def unstake(self, who: bytes, amount: int) -> None:
        m = self.model
        ok = m.locked[who] >= amount
        self.submit(Unstake(self.op_id(), who, amount), ok, "" if ok else "insufficient_stake")
        if ok:
            m.locked[who] -= amount
            m.unbonding[who].append([amount, self.ts + UNBONDING_MS])

    @rule(who=people)
    def complete_unbonding(self, who: bytes) -> None:
        m = self.model
        pending = m.unbonding[who]
        done = [u for u in pending if u[1] <= self.ts]
        code = "" if done else ("unbonding_pending" if pending else "nothing_unbonding")
        self.submit(CompleteUnbonding(self.op_id(), who), not code, code)
        if done:
            m.balance[who] += sum(u[0] for u in done)
            m.unbonding[who] = [u for u in pending if u[1] > self.ts]

    @rule(who=people, reason=st.sampled_from(["failed_challenge", "missed_heartbeat",
                                              "policy_violation"]),
          misses=st.integers(1, 150), data=st.data())
    def slash(self, who: bytes, reason: str, misses: int, data: st.DataObject) -> None:
        others = [p for p in PEOPLE if p != who]
        challenger = data.draw(st.none() | st.sampled_from(others))
        honest = data.draw(st.lists(st.sampled_from([p for p in others if p != challenger]),
                                    unique=True, max_size=3))
        order = SlashOrder(who, reason, EVIDENCE, misses, challenger, tuple(sorted(honest)))
        r = self.submit(Slash(self.op_id(), order), True)
        self.model.begin(bucket(who))
        self.model.slash(order)
        self.expect_batches(r, self.model.finish())

    @rule(b=st.integers(0, N - 1))
    def restart_from_snapshot(self, b: int) -> None:
        # A replica rebuilt from a Raft snapshot carries on exactly where the old one was.
        old = self.sim.replica.buckets[b]
        new = BucketLedger.restore(PARAMS, old.snapshot())
        assert new.root() == old.root()
        self.sim.replica.buckets[b] = new

    @rule(deliveries=st.integers(1, 6))
    def deliver(self, deliveries: int) -> None:
        for _ in range(deliveries):
            out = self.sim.deliver_one(self.ts)
            if out is None:
                break
            batch, r = out
            keys = self.model.deliver((batch.source_bucket, batch.seq, batch.target_bucket))
            assert r.record.ok == (keys is not None), r.record
            if keys is not None:
                self.expect_batches(r, keys)

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "sim"):
            return
        self.sim.check()
        m = self.model
        for p in PEOPLE:
            view = self.sim.replica.account(p)
            assert view.balance == m.balance[p], (p.hex()[:8], view, m.balance[p])
            assert view.locked == m.locked[p]
            assert view.unbonding_entries == tuple(
                (u[0], u[1]) for u in m.unbonding[p]), (view, m.unbonding[p])
        assert self.sim.replica.totals().burned == m.burned

    def teardown(self) -> None:
        if not hasattr(self, "sim"):
            return
        # Every escrow resolves: once its hold has passed, its payer can always release
        # it (or cancel it); then every batch reaches its bucket.
        self.ts += 10_000
        for eid, (payer, amount, _) in sorted(self.model.escrows.items()):
            r = self.sim.submit(Release(self.op_id(), payer, eid, (Share(PEOPLE[0], amount),)),
                                self.ts)
            assert r.error is None, r.error
        self.sim.drain(self.ts)
        self.sim.check()
        assert all(not b.escrows() for b in self.sim.replica.buckets.values())
        assert self.sim.replica.totals().escrowed == 0
        assert self.sim.replica.totals().held == SUPPLY


def _split(total: int, n: int) -> list[int]:
    if n == 0:
        return []
    each, rem = divmod(total, n)
    return [each + (i < rem) for i in range(n)]


TestLedgerMachine = LedgerMachine.TestCase


# --- plain properties ------------------------------------------------------------


@given(first=st.lists(st.integers(1, 30 * U), max_size=6),
       second=st.lists(st.integers(1, 30 * U), max_size=6), data=st.data())
def test_one_account_spent_from_two_nodes_never_overspends(
        first: list[int], second: list[int], data: st.DataObject) -> None:
    # Two nodes each propose a series of debits from the same account; its bucket puts
    # them in some interleaving (drawn), and applies them in that order.
    spender = PEOPLE[0]
    led = BucketLedger.from_genesis(GENESIS, bucket(spender))
    tagged = [(0, a) for a in first] + [(1, a) for a in second]
    order = data.draw(st.permutations(tagged))
    spent = 0
    for i, (node, amount) in enumerate(order):
        op = Transfer(hashlib.sha256(b"%d-%d" % (node, i)).digest(), spender, PEOPLE[1 + node],
                      amount)
        r = led.apply(LedgerEntry(i + 1, 0, op))
        if r.error is None:
            spent += amount
        assert led.account(spender).balance >= 0
    assert spent <= 50 * U
    assert led.account(spender).balance == 50 * U - spent


@given(amount=st.integers(1, 2000 * U),
       task_class=st.sampled_from(["simple", "complex", "critical"]))
def test_p6_bounties_stay_within_caps(amount: int, task_class: str) -> None:
    cap = PARAMS[f"bounty_cap_{task_class}"]
    payer = PEOPLE[0]
    led = BucketLedger.from_genesis(
        genesis_mod.new(name="p6", created_ms=0, validators=GENESIS.value["validators"],
                        accounts=[{"account": payer, "balance": 5000 * U}],
                        params={"replicas": 1, "bucket_count": 1}), 0)
    try:
        op = bounty(b"\x01" * 32, payer, b"\x02" * 32, amount, task_class, PARAMS)
    except OverCap:
        assert amount > cap
        op = Bounty(b"\x01" * 32, payer, b"\x02" * 32, amount, task_class)
    r = led.apply(LedgerEntry(1, 0, op))  # the ledger enforces the cap on its own too
    assert (r.error is None) == (amount <= cap)
    for esc in led.escrows():
        assert esc.amount <= PARAMS[f"bounty_cap_{esc.task_class}"]


parties = st.builds(
    Party,
    st.binary(min_size=32, max_size=32),
    st.sampled_from(["", "a", "b", "c"]),
    st.none() | st.integers(1, 4),
    st.frozensets(st.sampled_from(PEOPLE), max_size=2),
)


@given(committee=st.lists(parties, max_size=6, unique_by=lambda p: p.account),
       payer=parties, worker=st.none() | parties, amount=st.integers(1, 1000 * U))
def test_p8_quiet_payouts_never_reach_related_parties(
        committee: list[Party], payer: Party, worker: Party | None, amount: int) -> None:
    esc = OpenEscrow(b"\x05" * 32, payer.account, amount, 0, 0, "critical")
    release = payout_no_challenge(b"\x06" * 32, esc, committee, payer=payer, worker=worker)
    interested = [payer] + ([worker] if worker else [])
    by_account = {p.account: p for p in committee}
    for s in release.shares:
        assert not any(related(by_account[s.account], x) for x in interested)
    assert sum(s.amount for s in release.shares) + release.burn == amount


@given(verifiers=st.lists(parties, min_size=1, max_size=6, unique_by=lambda p: p.account),
       challenger=parties, payer=parties, worker=st.none() | parties, data=st.data(),
       amount=st.integers(1, 1000 * U))
def test_p8_challenge_payouts_never_reach_related_parties(
        verifiers: list[Party], challenger: Party, payer: Party, worker: Party | None,
        data: st.DataObject, amount: int) -> None:
    cut = data.draw(st.integers(0, len(verifiers)))
    honest, slashed = verifiers[:cut], verifiers[cut:]
    esc = OpenEscrow(b"\x05" * 32, payer.account, amount, 0, 0, "critical")
    release = payout_upheld(b"\x06" * 32, esc, challenger=challenger, honest=honest,
                            slashed=slashed, evidence=EVIDENCE, payer=payer, worker=worker,
                            params=PARAMS)
    interested = [payer, *slashed] + ([worker] if worker else [])
    known = {p.account: p for p in [*honest, challenger]}
    paid = [s.account for s in release.shares]
    for order in release.slashes:
        paid += list(order.honest) + ([order.challenger] if order.challenger else [])
    for account in paid:
        party = known[account]
        assert not any(related(party, x) for x in interested if x.account != account)
        if party is not challenger:
            assert not related(party, challenger)
    assert sum(s.amount for s in release.shares) + release.burn == amount


@given(stakes=st.lists(st.integers(0, 300 * U), min_size=1, max_size=12),
       cuts=st.lists(st.integers(0, 300 * U), max_size=12), seed=st.binary(max_size=8))
def test_p5_active_verifiers_always_stake_the_minimum(
        stakes: list[int], cuts: list[int], seed: bytes) -> None:
    pool = VerifierPool(PARAMS)
    minimum = PARAMS["min_verifier_stake"]
    current: dict[bytes, int] = {}
    for i, stake in enumerate(stakes):
        acct = hashlib.sha256(b"v%d" % i).digest()
        if stake >= minimum:
            pool.register(acct, stake=stake, capabilities=[], org=f"o{i}", asn=i,
                          region=f"r{i}", ts_ms=0)
        current[acct] = stake
    # Stakes fall afterwards (slashes, unstaking) without any pool operation.
    for i, cut in enumerate(cuts):
        acct = hashlib.sha256(b"v%d" % (i % len(stakes))).digest()
        current[acct] = max(0, current[acct] - cut)
    active = pool.active(current)
    assert all(current[v.account] >= minimum for v in active)
    if active:
        k = min(len(active), 3)
        for acct in pool.select(k, seed=seed, stakes=current, now_ms=0):
            assert current[acct] >= minimum


@given(members=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2),
                                  st.integers(1, 400)), min_size=1, max_size=9),
       k=st.integers(1, 5), seed=st.binary(max_size=4))
def test_committees_respect_caps_and_are_found_whenever_one_exists(
        members: list[tuple[int, int, int, int]], k: int, seed: bytes) -> None:
    pool = VerifierPool(PARAMS)
    stakes = {}
    for i, (org, asn, region, stake_credits) in enumerate(members):
        acct = hashlib.sha256(b"m%d" % i).digest()
        stakes[acct] = PARAMS["min_verifier_stake"] * stake_credits
        pool.register(acct, stake=stakes[acct], capabilities=[], org=f"o{org}", asn=asn,
                      region=f"r{region}", ts_ms=0)
    caps = {n: max(1, k * PARAMS[f"cap_{n}_bp"] // BP) for n in ("org", "asn", "region")}

    def fits(group: Sequence[bytes]) -> bool:
        vs = [pool.member(a) for a in group]
        return all(max(Counter(getattr(v, n) for v in vs if v).values()) <= caps[n]
                   for n in ("org", "asn", "region"))

    exists = any(fits(c) for c in combinations(sorted(stakes), k))
    try:
        chosen = pool.select(k, seed=seed, stakes=stakes, now_ms=0)
    except CommitteeUnfillable:
        assert not exists
        return
    assert len(set(chosen)) == k and fits(chosen)
    assert chosen == pool.select(k, seed=seed, stakes=stakes, now_ms=0)
