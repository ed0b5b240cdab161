"""The ledger against hostile validators and careless clients, on real nodes.

Goals: a rogue validator cannot mint credits with a forged effect batch nor drop a
batch from an outbox with a forged acknowledgement; a signed ledger envelope is applied
at most once and never after its validity limit, however often and by whomever it is
submitted; a client's retry with the same operation id answers the first outcome; a
submission relayed for a node that is not a validator meets the swarm's policy; an
entry whose apply raises midway is rolled back alike on every replica. After each, the
swarm still works (`hostile_kit.swarm_works`: need create, ledger transfer and decide
on every node, one plan root and one ledger root).

Method: in-process nodes on loopback (`swarmlet`), attacks made with the nodes' own
keys and the real Raft routing (`MultiRaft.submit_nowait`, `submit`) or the
ledger-submit relay protocol, checks through each node's ledger service and metrics.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import trio
from hostile_kit import swarm_works

from swarm.node.raft_kinds import DecideError, SubmitError
from swarm.node.service import Node
from swarm.protocol import bucket_machine as bm
from swarm.protocol import certificate
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import make_envelope
from swarm.protocol.ledger_ops import Credit, EffectBatch, Transfer
from swarm.testnet.inproc import BALANCE, wait_for

U = 1_000_000


def rejected(node: Node, code: str) -> float:
    value = node.metrics.registry.get_sample_value("swarm_ledger_rejected_total",
                                                   {"code": code})
    return value or 0.0


def ledger_envelope(node: Node, kind: str, payload: dict[str, Any], *,
                    valid_for_ms: int = 600_000, op_id: bytes | None = None,
                    lamport: int = 1) -> bytes:
    """A ledger envelope signed with `node`'s key, as a wallet would make it."""
    now = time.time_ns() // 1_000_000
    body = {**payload, "op_id": op_id or os.urandom(16), "valid_until_ms": now + valid_for_ms}
    return make_envelope(node.identity, kind=kind, swarm=node.genesis.swarm_id,
                         lamport=lamport, ts=now, payload=body).wire


def account(node: Node) -> bytes:
    return node.identity.public_key


async def test_a_rogue_validators_forged_credit_and_acknowledgement_are_refused(
        swarmlet: Any) -> None:
    s = await swarmlet(3)
    await s.connect_mesh()
    nodes = [s.nodes[i] for i in range(3)]
    n_buckets = s.genesis.params["bucket_count"]
    placement = nodes[0].decider.placement
    victim, payee = nodes[0], nodes[1]
    source = bucket_of(account(victim), n_buckets)
    target = bucket_of(account(payee), n_buckets)
    # The rogue does not replicate the source bucket (one replica per bucket here):
    # its word on what the source emitted proves nothing.
    rogue = next(n for n in nodes if n.decider.raft.id not in placement.replicas(source))
    real = await victim.ledger.transfer(account(payee).hex(), "7", "rent")
    assert real["ok"]
    await wait_for(lambda: len({n.ledger.root_hex() for n in nodes}) == 1
                   and all(n.ledger.supply()["in_flight"] == 0 for n in nodes),
                   "the real transfer to settle everywhere")
    supply = [n.ledger.supply() for n in nodes]
    balance = payee.ledger.balance(None)["balance"]
    # `ledger history` names the other side and the memo, on both sides.
    received = payee.ledger.history(None)["records"][-1]
    assert (received["counterparty"], received["memo"]) == (account(victim).hex(), "rent")
    sent = victim.ledger.history(None)["records"][-1]
    assert (sent["counterparty"], sent["memo"]) == (account(payee).hex(), "rent")

    forged = EffectBatch(source, real["index"], 1, target, b"\x66" * 32,
                         (Credit(account(payee), 10_000 * U, "transfer"),))
    entry = bm.ChainEntry(real["index"], 0, 0,
                          Transfer(b"\x66" * 32, account(victim), account(payee), 10_000 * U),
                          (bm.Emitted(target, 1, bm.batch_digest(forged)),))
    note = certificate.sign(rogue.identity, s.genesis.swarm_id, source, entry.index, 1,
                            entry.digest())
    proof = bm.Proof(source, entry.index, 1, entry.encode(), ((note.signer, note.sig),))
    raft = rogue.decider.raft
    raft.submit_nowait(bm.effects_command(forged, proof))
    raft.submit_nowait(bm.ack_command(source, target, proof, 9))
    raft.wake.set()
    await wait_for(lambda: sum(rejected(n, "unauthenticated") for n in nodes) >= 2,
                   "the forged batch and acknowledgement to be refused")
    assert payee.ledger.balance(None)["balance"] == balance
    for before, n in zip(supply, nodes, strict=True):
        after = n.ledger.supply()
        assert (after["total"], after["burned"], after["in_flight"]) == (
            before["total"], before["burned"], 0)
    await swarm_works(s)


async def test_a_signed_envelope_applies_once_and_never_after_its_limit(
        swarmlet: Any) -> None:
    """The attack: a TRANSFER someone saw is submitted again later.
    Within its validity it is the same operation (answered, not applied again); after
    it, refused as expired, through the node's own routing and through the relay a
    node that is not a validator uses."""
    s = await swarmlet(3, validators=2)
    await s.connect_mesh()
    payer, payee, plain = s.nodes[0], s.nodes[1], s.nodes[2]
    bucket = bucket_of(account(payer), s.genesis.params["bucket_count"])
    wire = ledger_envelope(payer, "TRANSFER", {"to": account(payee), "amount": 2 * U},
                           valid_for_ms=3_000)
    raft = payer.decider.raft
    first = await raft.submit(bm.ledger_command(bucket, wire), timeout_s=30)
    assert first.ok
    again = await payee.decider.raft.submit(bm.ledger_command(bucket, wire), timeout_s=30)
    assert again == first  # the first outcome, not a second transfer
    relayed = await plain.ledger._submit_through_validator(bucket, wire, 30)
    assert relayed == first
    await trio.sleep(3.5)
    # Any entry of the bucket moves its clock past the limit and the ledger forgets the
    # id; the envelope is never applied again: the replicas still answer its first
    # outcome while they remember it, and refuse it as expired after that.
    assert (await payer.ledger.submit("STAKE", {"amount": U}))["ok"]
    assert not raft.groups[bucket].machine.ledger.is_decided(first.key) \
        if bucket in raft.groups else True
    try:
        late = await payee.decider.raft.submit(bm.ledger_command(bucket, wire), timeout_s=30)
        assert late == first
    except SubmitError as exc:
        assert exc.code == "expired"
    fresh_copy = ledger_envelope(payer, "TRANSFER", {"to": account(payee), "amount": 2 * U},
                                 valid_for_ms=-1)
    with pytest.raises(SubmitError) as expired:
        await raft.submit(bm.ledger_command(bucket, fresh_copy), timeout_s=30)
    assert expired.value.code == "expired"
    await wait_for(lambda: payee.ledger.balance(account(payer).hex())["balance"]
                   == BALANCE - 3 * U, "the payer's balance everywhere")
    await swarm_works(s)


async def test_a_retry_with_the_same_operation_id_is_applied_once(swarmlet: Any) -> None:
    s = await swarmlet(3)
    await s.connect_mesh()
    payer, payee = s.nodes[0], s.nodes[1]
    op_id, valid_until = os.urandom(16), time.time_ns() // 1_000_000 + 60_000
    payload = {"to": account(payee), "amount": 3 * U}
    outcomes = []

    async def send() -> None:
        outcomes.append(await payer.ledger.submit("TRANSFER", payload, 30, op_id,
                                                  valid_until))

    async with trio.open_nursery() as nursery:  # a retry racing the first attempt
        nursery.start_soon(send)
        nursery.start_soon(send)
    await send()  # and one after it
    assert all(o["ok"] for o in outcomes)
    assert len({(o["index"], o["op_id"]) for o in outcomes}) == 1
    assert payer.ledger.balance(None)["balance"] == BALANCE - 3 * U
    await swarm_works(s)


async def test_relayed_submissions_meet_the_policy(swarmlet: Any) -> None:
    """A node that is not a validator submits through a validator; the validator judges
    the envelope with the swarm's policy where it enters Raft, so the per-sender rate
    holds (genesis allows 3 envelopes per second per sender here: of 8 at once, one of
    the two validators sees at least 4)."""
    s = await swarmlet(3, validators=2, params={"sender_rate_per_s": 3})
    await s.connect_mesh()
    plain, payee = s.nodes[2], s.nodes[0]
    bucket = bucket_of(account(plain), s.genesis.params["bucket_count"])
    answers: list[str] = []

    async def submit(k: int) -> None:
        wire = ledger_envelope(plain, "TRANSFER", {"to": account(payee), "amount": U},
                               lamport=k + 1)
        try:
            out = await plain.ledger._submit_through_validator(bucket, wire, 20)
            answers.append("ok" if out.ok else out.code)
        except SubmitError as exc:
            answers.append(exc.code)

    async with trio.open_nursery() as nursery:
        for k in range(8):
            nursery.start_soon(submit, k)
    assert "rate_limited" in answers, answers
    assert answers.count("ok") < 8
    # DECIDE requests relayed for it meet the policy too: of eight at once, some are
    # denied (the asker tries the other validator, then gives up), the rest decided.
    await trio.sleep(1.5)  # the rate window moves on
    need = await payee.publish("NEED", {"class": "simple", "budget": 1}, "", [])
    await wait_for(lambda: need["id"] in {str(c) for c in plain.pipeline.replica.applied},
                   "the NEED at the plain node")
    sender = account(plain).hex()

    def denials() -> float:
        return sum(n.metrics.registry.get_sample_value(
            "swarm_policy_denials_total", {"sender": sender, "reason": "rate_limited"}) or 0
            for n in (s.nodes[0], s.nodes[1]))

    before = denials()
    decided: list[str] = []
    denied: list[str] = []

    async def decide(k: int) -> None:
        try:
            d = await plain.decider.try_decide(need["id"], f"p{k}", timeout_s=30)
            decided.append(d["proposal_id"])
        except DecideError as exc:
            denied.append(exc.reason)

    async with trio.open_nursery() as nursery:
        for k in range(8):
            nursery.start_soon(decide, k)
    assert len(set(decided)) <= 1  # one decision, whoever asked first
    assert all("rate_limited" in why for why in denied), denied
    assert denials() > before
    await trio.sleep(1.5)
    await swarm_works(s)


async def test_an_entry_that_raises_midway_is_rolled_back_on_every_replica(
        swarmlet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug that raises while a transfer is half applied (after the debit): every
    replica rolls the entry back and records the same `internal` refusal; the node and
    the bucket go on."""
    s = await swarmlet(3, params={"replicas": 3})
    await s.connect_mesh()
    payer, payee = s.nodes[0], s.nodes[1]
    real_mutate = bm.BucketLedger.__dict__["_mutate"]

    def mutate(self: bm.BucketLedger, op: Any, ts_ms: int, tx: Any) -> None:
        real_mutate(self, op, ts_ms, tx)
        if isinstance(op, Transfer) and op.amount == 13 * U:
            raise KeyError("injected after the debit")

    monkeypatch.setattr(bm.BucketLedger, "_mutate", mutate)
    before = payer.ledger.balance(None)["balance"]
    with pytest.raises(Exception) as err:
        await payer.ledger.transfer(account(payee).hex(), "13")
    assert getattr(err.value, "code", "") == "internal"
    await wait_for(lambda: sum(rejected(n, "internal") for n in s.nodes.values()) >= 3,
                   "every replica to refuse the entry as internal")
    assert payer.ledger.balance(None)["balance"] == before
    monkeypatch.undo()
    await swarm_works(s)
