"""The ledger through multi-raft: five nodes on real RocksDB stores over the in-memory
transport of tests/node/test_multiraft.py, each with its `LedgerRaft` (effect delivery
and the certified read replica).

Goals: transfers across buckets credit the recipient exactly once; the same account
spent concurrently from every node never overspends; effects survive the source
leader's crash while the target bucket is down; a node that was away rebuilds its read
replica; and in the end every node computes the same ledger root and the genesis
supply is conserved on every node."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_multiraft import BUCKETS, Cluster, N, running

from swarm.node.ledger_raft import LedgerRaft
from swarm.node.multiraft import MultiRaft
from swarm.node.raft_kinds import DecideError, SubmitError
from swarm.node.raftstore import RaftStore
from swarm.protocol import certificate, genesis
from swarm.protocol.bucket_machine import (
    ChainEntry,
    Command,
    Emitted,
    Proof,
    ack_command,
    batch_digest,
    command_key,
    effects_command,
    ledger_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import TryDecide
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.ledger_ops import Credit, EffectBatch, Transfer
from swarm.protocol.placement import Placement
from swarm.protocol.raft import Role
from swarm.protocol.raftwire import CertifiedEntry

U = 1_000_000
UNBONDING_MS = 600


def users() -> list[Identity]:
    return [Identity(bytes([0x40 + i]) * 32) for i in range(40)]


class LedgerCluster(Cluster):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.users = users()
        self.genesis = genesis.new(
            name="mr-ledger", created_ms=0,
            validators=[{"account": i.public_key, "org": f"o{k}", "asn": k, "region": "r",
                         "stake": 500 * U} for k, i in enumerate(self.ids)],
            accounts=[{"account": u.public_key, "balance": 100 * U} for u in self.users],
            params={"bucket_count": BUCKETS, "replicas": 3, "unbonding_ms": UNBONDING_MS,
                    "min_verifier_stake": 50 * U})
        self.placement = Placement.from_genesis(self.genesis)
        self.ledgers: dict[int, LedgerRaft] = {}
        self.stopped: dict[int, trio.Event] = {}
        self.lamport = 0

    def make(self, node_id: int, store: RaftStore) -> MultiRaft:
        mr = MultiRaft(self.identity_of(node_id), self.genesis.swarm_id, self.placement,
                       store, self.send_from(node_id), self.publish, seed=node_id,
                       genesis=self.genesis, announced=self.announced.__contains__)
        self.ledgers[node_id] = LedgerRaft(mr, store, self.genesis)
        return mr

    def loops(self, node_id: int, mr: MultiRaft) -> list[Callable[[], Awaitable[None]]]:
        return [mr.run, self.ledgers[node_id].run]

    async def kill(self, node_id: int) -> None:
        """Like kill -9: the loop stops mid-flight; only what reached the disk remains.
        (Waits for a disk write already under way to land before closing the store.)"""
        self.scopes.pop(node_id).cancel()
        await self.stopped.pop(node_id).wait()
        self.nodes.pop(node_id)
        self.ledgers.pop(node_id)
        self.stores.pop(node_id).close()

    def envelope(self, who: Identity, kind: str, payload: dict[str, object]) -> bytes:
        """A fresh operation, valid for ten minutes of the buckets' (wall) clock."""
        self.lamport += 1
        payload = {**payload, "op_id": os.urandom(16),
                   "valid_until_ms": time.time_ns() // 1_000_000 + 600_000}
        return make_envelope(who, kind=kind, swarm=self.genesis.swarm_id,
                             lamport=self.lamport, ts=0, payload=payload).wire

    async def submit(self, node_id: int, who: Identity, kind: str,
                     payload: dict[str, object]):  # type: ignore[no-untyped-def]
        cmd = ledger_command(bucket_of(who.public_key, BUCKETS),
                             self.envelope(who, kind, payload))
        return await self.nodes[node_id].submit(cmd, timeout_s=30)

    def leader_of(self, bucket: int) -> int:
        return next(n for n in self.placement.replicas(bucket) if n in self.nodes
                    and self.nodes[n].groups[bucket].raw.raft.role == Role.LEADER)

    def user_in(self, bucket: int, skip: int = 0) -> Identity:
        return [u for u in self.users if bucket_of(u.public_key, BUCKETS) == bucket][skip]

    def buckets_with_users(self) -> list[int]:
        return sorted({bucket_of(u.public_key, BUCKETS) for u in self.users})


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


def converged(c: LedgerCluster) -> bool:
    """Every running node: the same ledger root, nothing in flight or in an outbox."""
    roots = {lr.root() for lr in c.ledgers.values()}
    return len(roots) == 1 and all(
        lr.totals().in_flight == 0 and not any(
            g.machine.ledger.outbox() for g in c.nodes[n].groups.values())
        for n, lr in c.ledgers.items())


def assert_conserved(c: LedgerCluster) -> None:
    for lr in c.ledgers.values():
        assert lr.totals().held == lr.supply


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[LedgerCluster, trio.Nursery]]:
    async with running(LedgerCluster(tmp_path)) as running_cluster:
        yield running_cluster


async def test_transfers_across_buckets_reach_every_node(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, _ = cluster
    src, dst = c.buckets_with_users()[:2]
    a, b = c.user_in(src), c.user_in(dst)
    # Submitted through a node that does not replicate the payer's bucket: forwarded.
    outsider = next(n for n in range(1, N + 1) if n not in c.placement.replicas(src))
    with trio.fail_after(60):
        out = await c.submit(outsider, a, "TRANSFER", {"to": b.public_key, "amount": 30 * U})
    assert out.ok and out.account is not None and out.account.balance == 70 * U
    assert out.emitted == ((dst, 0),)
    await eventually(lambda: all(lr.account(b.public_key).balance == 130 * U
                                 for lr in c.ledgers.values()), "the credit everywhere")
    await eventually(lambda: converged(c), "one ledger root")
    assert_conserved(c)
    # The payer's history shows the transfer on every node, read replicas included.
    for lr in c.ledgers.values():
        assert [r.kind for r in lr.history(a.public_key)] == ["transfer"]
        assert [r.kind for r in lr.history(b.public_key)] == ["effects"]


async def test_one_account_spent_concurrently_from_every_node_never_overspends(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, _ = cluster
    src, dst = c.buckets_with_users()[:2]
    a, b = c.user_in(src), c.user_in(dst)
    outcomes = []

    async def spend(node_id: int) -> None:
        outcomes.append(await c.submit(node_id, a, "TRANSFER",
                                       {"to": b.public_key, "amount": 30 * U}))

    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            for node_id in range(1, N + 1):
                n.start_soon(spend, node_id)
    ok = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if not o.ok]
    assert len(ok) == 3 and len(refused) == 2
    assert {o.code for o in refused} == {"insufficient_balance"}
    assert all(o.reason == "insufficient balance: have 10, need 30" for o in refused)
    await eventually(lambda: converged(c), "one ledger root")
    for lr in c.ledgers.values():
        assert lr.account(a.public_key).balance == 10 * U
        assert lr.account(b.public_key).balance == 190 * U
    assert_conserved(c)


async def test_effects_survive_the_source_leaders_crash_while_the_target_is_down(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, nursery = cluster
    pairs = [(s, t) for s in c.buckets_with_users() for t in c.buckets_with_users()
             if s != t and len(set(c.placement.replicas(t)) - set(c.placement.replicas(s))) >= 2]
    src, dst = pairs[0]
    a, b = c.user_in(src), c.user_in(dst)
    with trio.fail_after(60):  # both buckets have leaders
        await c.submit(1, a, "STAKE", {"amount": U})
        await c.submit(1, b, "STAKE", {"amount": U})
    down = sorted(set(c.placement.replicas(dst)) - set(c.placement.replicas(src)))[:2]
    for n in down:
        await c.kill(n)
    caller = next(n for n in c.placement.replicas(src) if n in c.nodes)
    with trio.fail_after(60):
        out = await c.submit(caller, a, "TRANSFER", {"to": b.public_key, "amount": 40 * U})
    assert out.ok
    leader = c.leader_of(src)
    assert c.nodes[leader].groups[src].machine.ledger.outbox(), "the target is down"
    await c.kill(leader)
    for n in down:
        await c.start(nursery, n)
    # A new leader of the source delivers from the replicated outbox.
    await eventually(lambda: all(lr.account(b.public_key).balance == 140 * U - U
                                 for lr in c.ledgers.values()), "the credit")
    await c.start(nursery, leader)
    await eventually(lambda: converged(c), "one ledger root", 90)
    for lr in c.ledgers.values():
        assert lr.account(b.public_key).balance == 139 * U  # credited exactly once
    assert_conserved(c)


async def test_a_node_that_was_away_rebuilds_its_read_replica(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, nursery = cluster
    away = 5
    foreign = [b for b in c.buckets_with_users() if away not in c.placement.replicas(b)]
    with trio.fail_after(60):
        await c.submit(1, c.user_in(foreign[0]), "STAKE", {"amount": 5 * U})
    await eventually(lambda: converged(c), "one ledger root")
    await c.kill(away)
    with trio.fail_after(60):
        for k, bucket in enumerate(foreign[:4]):
            payer = c.user_in(bucket)
            payee = c.user_in(foreign[(k + 1) % len(foreign)])
            out = await c.submit(1, payer, "TRANSFER", {"to": payee.public_key,
                                                        "amount": (k + 1) * U})
            assert out.ok
    await c.start(nursery, away)
    await eventually(lambda: converged(c), "the returning node to catch up", 90)
    assert_conserved(c)


async def test_staking_unbonding_and_pool_through_the_buckets(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, _ = cluster
    u = c.users[0]
    with trio.fail_after(60):
        assert (await c.submit(2, u, "STAKE", {"amount": 60 * U})).ok
        reg = await c.submit(3, u, "POOL_REGISTER", {"capabilities": [], "org": "acme",
                                                     "asn": 1, "region": "eu"})
        assert reg.ok
        out = await c.submit(4, u, "UNSTAKE", {"amount": 20 * U})
        assert out.ok and out.account is not None and out.account.unbonding == 20 * U
        early = await c.submit(5, u, "COMPLETE_UNBONDING", {})
        assert early.code == "unbonding_pending"
        assert early.reason.startswith("unbonding completes in ")
        await trio.sleep(UNBONDING_MS / 1000 + 0.1)
        done = await c.submit(1, u, "COMPLETE_UNBONDING", {})
    assert done.ok and done.account is not None
    assert (done.account.balance, done.account.locked) == (60 * U, 40 * U)
    await eventually(lambda: converged(c), "one ledger root")
    for lr in c.ledgers.values():
        assert [v.account for v, _ in lr.pool()].count(u.public_key) == 1


async def test_a_forged_envelope_is_refused_at_the_leaders_door(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    c, _ = cluster
    u = c.users[0]
    wire = c.envelope(u, "TRANSFER", {"to": c.users[1].public_key, "amount": U})
    forged = wire[:7] + bytes([wire[7] ^ 1]) + wire[8:]
    bucket = bucket_of(u.public_key, BUCKETS)
    for node_id in (c.placement.replicas(bucket)[0],
                    next(n for n in range(1, N + 1) if n not in c.placement.replicas(bucket))):
        with trio.fail_after(60), pytest.raises(SubmitError) as err:
            await c.nodes[node_id].submit(ledger_command(bucket, forged), timeout_s=30)
        assert err.value.code == "bad_signature"
    with trio.fail_after(60):  # the real one still goes through
        assert (await c.nodes[1].submit(ledger_command(bucket, wire), timeout_s=30)).ok


async def test_a_funded_task_is_decided_by_its_auction_not_by_a_proposal(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    """`decide NEED PROPOSAL` on a NEED that was posted and funded is refused at the
    leader's door: its bucket's task book decides it."""
    c, _ = cluster
    poster = c.users[0]
    need = make_envelope(poster, kind="NEED", swarm=c.genesis.swarm_id, lamport=99,
                         ts=time.time_ns() // 1_000_000,
                         payload={"class": "simple", "budget": U})
    with trio.fail_after(60):
        out = await c.nodes[1].submit(ledger_command(bucket_of(poster.public_key, BUCKETS),
                                                     need.wire), timeout_s=30)
        assert out.ok, out
        home = bucket_of(need.id.raw, BUCKETS)
        while c.ledgers[1].part(home).ledger.tasks.get(need.id) is None:
            await trio.sleep(0.05)
        with pytest.raises(DecideError, match="funded task"):
            await c.nodes[1].try_decide(TryDecide(need.id.raw, b"p"), timeout_s=30)


async def test_leader_entries_cannot_be_requested(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    """Ticks, pool views and committee draws are the bucket leader's own entries: a
    peer's request for one is refused (a draw's seed is the quorum of signatures its
    proposer picks, so no other peer may race the leader with another pick)."""
    c, _ = cluster
    bucket = 1
    proof = {"index": 1, "term": 1, "entry": b"x", "sigs": [{"signer": bytes(32),
                                                            "sig": bytes(64)}]}
    need = make_envelope(c.users[0], kind="NEED", swarm=c.genesis.swarm_id, lamport=1,
                         ts=0, payload={"class": "simple", "budget": U}).id
    for value in ({"op": "tick"}, {"op": "pool_view", "bucket": 0, "rows": []},
                  {"op": "draw", "need": need, "proof": proof}):
        cmd = Command(bucket, command_key(value) if value["op"] != "tick" else b"t" * 12,
                      value)
        with trio.fail_after(60), pytest.raises(SubmitError) as err:
            await c.nodes[1].submit(cmd, timeout_s=30)
        assert err.value.code == "not_requestable", value["op"]


async def test_a_read_replica_applies_only_entries_a_quorum_of_replicas_signed(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    """Goal: a node never applies a foreign bucket's entry without a valid quorum
    certificate. Method: hand a node certified entries for a bucket it does not
    replicate, signed by too few replicas, by non-replicas, over other bytes, then by a
    quorum."""
    c, _ = cluster
    node = 5
    lr = c.ledgers[node]
    bucket = next(b for b in c.buckets_with_users() if node not in c.placement.replicas(b))
    payer, payee = c.user_in(bucket), c.users[-1]
    part = lr.read[bucket]
    entry = ChainEntry(part.last + 50, part.last, 10**12, Transfer(
        b"\x09" * 32, payer.public_key, payee.public_key, 5 * U))
    data, digest = entry.encode(), entry.digest()
    replicas = [c.identity_of(n) for n in c.placement.replicas(bucket)]
    outsiders = [c.identity_of(n) for n in range(1, N + 1)
                 if n not in c.placement.replicas(bucket)]

    def cert(signers: list[Identity], signed: bytes = digest) -> CertifiedEntry:
        sigs = [certificate.sign(i, c.genesis.swarm_id, bucket, entry.index, 1, signed)
                for i in signers]
        return CertifiedEntry(bucket, entry.index, 1, data,
                              tuple((s.signer, s.sig) for s in sigs))

    before = part.root()
    assert not lr.offer(cert(replicas[:1]))  # below a quorum
    assert not lr.offer(cert(outsiders))  # a quorum's worth, but not replicas
    assert not lr.offer(cert(replicas, b"\x00" * 32))  # signatures over other bytes
    assert part.root() == before and lr.stats["chain_rejected"] == 3
    assert lr.offer(cert(replicas[:2]))
    assert lr.read[bucket].last == entry.index
    assert lr.account(payer.public_key).balance == 95 * U


async def test_a_rogue_validators_forged_credit_and_acknowledgement_change_nothing(
        cluster: tuple[LedgerCluster, trio.Nursery]) -> None:
    """Goal: a validator cannot mint credits by submitting an effect batch, nor drop a
    batch from an outbox by acknowledging it. Method: after a real transfer between two
    buckets has settled, a validator that replicates neither submits (through the real
    routing) a 10,000-credit batch under the next seq with a proof only it signed, and
    an acknowledgement of batches never sent proven by that same entry; the target's
    and the source's replicas refuse both as unauthenticated, and no node's ledger
    moves."""
    c, _ = cluster
    pairs = [(s, t) for s in c.buckets_with_users() for t in c.buckets_with_users()
             if s != t and set(c.placement.replicas(s)) | set(c.placement.replicas(t))
             != set(range(1, N + 1))]
    src, dst = pairs[0]
    rogue = next(n for n in range(1, N + 1)
                 if n not in c.placement.replicas(src) and n not in c.placement.replicas(dst))
    a, b = c.user_in(src), c.user_in(dst)
    with trio.fail_after(60):
        await c.submit(1, b, "STAKE", {"amount": U})  # the target bucket has a leader
        out = await c.submit(1, a, "TRANSFER", {"to": b.public_key, "amount": 10 * U})
    assert out.ok
    leader = c.leader_of(src)
    await eventually(lambda: not c.nodes[leader].groups[src].machine.ledger.outbox(),
                     "the real batch delivered and acknowledged")
    await eventually(lambda: converged(c), "one ledger root")
    before = {n: lr.totals() for n, lr in c.ledgers.items()}
    real = c.nodes[c.leader_of(dst)].groups[dst].machine.ledger
    credited = real.account(b.public_key).balance

    me = c.identity_of(rogue)
    forged = EffectBatch(src, out.index, 1, dst, b"\x66" * 32,
                         (Credit(me.public_key if bucket_of(me.public_key, BUCKETS) == dst
                                 else b.public_key, 10_000 * U, "transfer"),))
    entry = ChainEntry(out.index, 0, 0, Transfer(b"\x66" * 32, a.public_key, b.public_key,
                                                 10_000 * U),
                       (Emitted(dst, 1, batch_digest(forged)),))
    note = certificate.sign(me, c.genesis.swarm_id, src, entry.index, 1, entry.digest())
    proof = Proof(src, entry.index, 1, entry.encode(), ((note.signer, note.sig),))
    c.nodes[rogue].submit_nowait(effects_command(forged, proof))
    c.nodes[rogue].submit_nowait(ack_command(src, dst, proof, 5))

    def refused(bucket: int) -> int:
        return sum(1 for n in c.nodes.values() if bucket in n.groups
                   and n.groups[bucket].machine.refused["unauthenticated"] >= 1)

    await eventually(lambda: refused(dst) >= c.placement.quorum(dst)
                     and refused(src) >= c.placement.quorum(src),
                     "the replicas to refuse the forged batch and acknowledgement")
    await eventually(lambda: converged(c), "one ledger root")
    for n, lr in c.ledgers.items():
        assert lr.totals() == before[n], f"node {n}'s ledger moved"
        assert lr.account(b.public_key).balance == credited
    assert_conserved(c)


async def test_a_bucket_that_cannot_apply_an_entry_halts_alone(
        cluster: tuple[LedgerCluster, trio.Nursery],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Goal: when a replica cannot apply an entry alike on every replica, only that
    bucket stops on that node: the node's other buckets and the bucket's other replicas
    go on. Method: one replica of a bucket runs out of memory (injected) applying a
    transfer; it halts the bucket (status `halted`, counted) and keeps serving its other
    buckets, while the remaining quorum applies the transfer and the next ones."""
    c, _ = cluster
    bucket = c.buckets_with_users()[0]
    victim = c.placement.replicas(bucket)[0]
    payer, payee = c.user_in(bucket), c.user_in(c.buckets_with_users()[1])
    target = c.nodes[victim].groups[bucket].machine
    machine_cls = type(target)
    real_apply = machine_cls.apply

    def apply(self: Any, index: int, term: int, data: bytes) -> Any:
        if self is target and b"TRANSFER" in data:
            raise MemoryError("injected")
        return real_apply(self, index, term, data)

    monkeypatch.setattr(machine_cls, "apply", apply)
    other = next(n for n in range(1, N + 1) if n != victim)
    with trio.fail_after(60):
        out = await c.submit(other, payer, "TRANSFER", {"to": payee.public_key,
                                                        "amount": 3 * U})
    assert out.ok
    await eventually(lambda: bucket in c.nodes[victim].halted, "the victim to halt it")
    assert c.nodes[victim].stats["buckets_halted"] == 1
    [row] = c.nodes[victim].status(bucket)
    assert row["role"] == "halted" and "MemoryError" in row["halted"]
    with trio.fail_after(60):  # the bucket goes on with its other replicas
        again = await c.submit(victim, payer, "TRANSFER", {"to": payee.public_key,
                                                           "amount": 2 * U})
        assert again.ok
        # ... and the victim's other buckets with it
        elsewhere = next(b for b in c.buckets_with_users()
                         if b != bucket and victim in c.placement.replicas(b))
        assert (await c.submit(victim, c.user_in(elsewhere), "STAKE", {"amount": U})).ok
