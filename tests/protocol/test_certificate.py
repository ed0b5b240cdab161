"""DECIDE announcements and their certificates: one envelope may state several certified
decisions (`also`); every one must be certified by a quorum of its own bucket's replicas,
no NEED twice; each becomes a DECIDED state in the plan."""

from __future__ import annotations

from typing import Any

import pytest

from swarm.protocol import certificate, genesis
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.decide import TryDecide, encode_command
from swarm.protocol.envelope import Identity
from swarm.protocol.errors import SchemaError
from swarm.protocol.placement import Placement
from swarm.protocol.raftwire import Announcement
from swarm.protocol.replay import Replica, plan_ops
from swarm.protocol.verbs import DECIDE_ALSO_MAX, validate_payload
from swarm.testnet.workload import Agent

IDS = [Identity(bytes([i + 1]) * 32) for i in range(5)]
GENESIS = genesis.new(
    name="cert", created_ms=0,
    validators=[{"account": i.public_key, "org": f"o{k}", "asn": k, "region": "r",
                 "stake": 1} for k, i in enumerate(IDS)],
    params={"bucket_count": 16, "replicas": 3})
PLACEMENT = Placement.from_genesis(GENESIS)
SWARM = GENESIS.swarm_id


def _identity(node_id: int) -> Identity:
    account = PLACEMENT.account(node_id)
    return next(i for i in IDS if i.public_key == account)


def decision(i: int, proposal: str = "p", signers: int | None = None,
             index: int = 7) -> dict[str, Any]:
    """A decision as a DECIDE states it, certified by `signers` of its bucket's replicas
    (a quorum unless told)."""
    need = dag_cbor_cid(b"need-%d" % i)
    ts_ms = 1_000 + i
    digest = certificate.entry_hash(encode_command(TryDecide(need.raw, proposal.encode()),
                                                   ts_ms))
    bucket = bucket_of(need.raw, PLACEMENT.bucket_count)
    replicas = PLACEMENT.replicas(bucket)
    n = PLACEMENT.quorum(bucket) if signers is None else signers
    sigs = [certificate.sign(_identity(r), SWARM, bucket, index, 2, digest)
            for r in replicas[:n]]
    return {"need_id": need, "proposal_id": proposal, "k_plan": 0, "epoch": 0,
            "cert": certificate.cert_payload(bucket, index, 2, ts_ms, digest, sigs)}


def batch(*ds: dict[str, Any]) -> dict[str, Any]:
    payload = dict(ds[0])
    if len(ds) > 1:
        payload["also"] = list(ds[1:])
    return payload


def test_a_batch_of_certified_decisions_checks() -> None:
    payload = batch(*(decision(i) for i in range(6)))
    validate_payload("DECIDE", payload)
    certificate.check_announcement(payload, SWARM, PLACEMENT)
    assert [d["need_id"] for d in certificate.announced(payload)] == [
        dag_cbor_cid(b"need-%d" % i) for i in range(6)]


def test_one_bad_certificate_rejects_the_whole_envelope() -> None:
    bad = decision(3)
    bad["cert"]["sigs"][0]["sig"] = bytes(64)
    with pytest.raises(certificate.CertificateError) as e:
        certificate.check_announcement(batch(decision(1), decision(2), bad), SWARM,
                                       PLACEMENT)
    assert e.value.field == "payload.also[1].cert.sigs[0].sig"


def test_checking_step_by_step_stops_at_the_bad_decision() -> None:
    """The node drives the check a decision at a time (it lets other work run between
    them): each step stands for one decision checked, and the bad one raises the same
    error as the whole check."""
    bad = decision(3)
    bad["cert"]["sigs"][0]["sig"] = bytes(64)
    steps = certificate.checking_announcement(batch(decision(1), decision(2), bad, decision(4)),
                                              SWARM, PLACEMENT)
    assert [next(steps), next(steps)] == [0, 1]
    with pytest.raises(certificate.CertificateError) as e:
        next(steps)
    assert e.value.field == "payload.also[1].cert.sigs[0].sig"
    good = batch(*(decision(i) for i in range(5)))
    assert list(certificate.checking_announcement(good, SWARM, PLACEMENT)) == [0, 1, 2, 3, 4]


def _relayed(d: dict[str, Any], **change: Any) -> Announcement:
    c = d["cert"]
    fields = {"bucket": c["bucket"], "index": c["index"], "term": c["term"],
              "ts_ms": c["ts_ms"], "need_id": d["need_id"].raw,
              "proposal_id": d["proposal_id"].encode(), "k_plan": d["k_plan"],
              "epoch": d["epoch"], "sigs": tuple((s["signer"], s["sig"]) for s in c["sigs"])}
    return Announcement(**{**fields, **change})


def test_a_relayed_decision_checks_like_an_announced_one() -> None:
    d = decision(5)
    assert certificate.check_relayed(_relayed(d), SWARM, PLACEMENT) == d["cert"]
    forged_sig = ((d["cert"]["sigs"][0]["signer"], bytes(64)),
                  *((s["signer"], s["sig"]) for s in d["cert"]["sigs"][1:]))
    for bad in (_relayed(d, proposal_id=b"other"),  # not what was signed
                _relayed(d, bucket=(d["cert"]["bucket"] + 1) % PLACEMENT.bucket_count),
                _relayed(d, sigs=forged_sig),
                _relayed(d, sigs=tuple((s["signer"], s["sig"])
                                       for s in d["cert"]["sigs"][:1]))):  # short
        with pytest.raises(certificate.CertificateError):
            certificate.check_relayed(bad, SWARM, PLACEMENT)


def test_short_of_a_quorum_is_rejected() -> None:
    with pytest.raises(certificate.CertificateError) as e:
        certificate.check_announcement(batch(decision(1), decision(2, signers=1)), SWARM,
                                       PLACEMENT)
    assert e.value.field == "payload.also[0].cert.sigs"


def test_a_decision_stated_otherwise_than_signed_is_rejected() -> None:
    forged = decision(2)
    forged["proposal_id"] = "other"  # the signatures are over proposal "p"
    with pytest.raises(certificate.CertificateError) as e:
        certificate.check_announcement(batch(decision(1), forged), SWARM, PLACEMENT)
    assert e.value.field == "payload.also[0].cert.entry_hash"


def test_the_same_need_twice_and_uncertified_decisions_are_rejected() -> None:
    with pytest.raises(certificate.CertificateError, match="twice"):
        certificate.check_announcement(batch(decision(1), decision(1)), SWARM, PLACEMENT)
    plain = {k: v for k, v in decision(1).items() if k != "cert"}
    with pytest.raises(certificate.CertificateError, match="certified"):
        certificate.check_announcement(plain, SWARM, PLACEMENT)


def test_also_is_bounded_and_each_entry_is_certified_by_schema() -> None:
    with pytest.raises(SchemaError):
        validate_payload("DECIDE", batch(*(decision(i) for i in range(DECIDE_ALSO_MAX + 2))))
    uncertified = {k: v for k, v in decision(2).items() if k != "cert"}
    with pytest.raises(SchemaError):
        validate_payload("DECIDE", {**decision(1), "also": [uncertified]})
    with pytest.raises(SchemaError):
        validate_payload("DECIDE", {**decision(1), "also": []})


def test_a_batch_of_decisions_is_applied_and_leaves_the_plan_alone(agent: Agent) -> None:
    # A task's lifecycle is its bucket's; the plan keeps the DAG only.
    needs = [agent.make("NEED", {"class": "simple", "budget": 1}) for _ in range(3)]
    ds = [dict(decision(i), need_id=n.id) for i, n in enumerate(needs)]
    env = agent.make("DECIDE", batch(*ds), needs)
    assert plan_ops(env) == []
    r = Replica()
    for e in needs:
        r.receive(e.wire)
    before = r.plan.snapshot()
    r.receive(env.wire)
    assert env.id in r.applied and r.plan.snapshot() == before

