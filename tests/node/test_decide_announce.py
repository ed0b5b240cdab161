"""Batched DECIDE announcements: the packer fills an envelope up to the policy's limits
for a DECIDE, keeps the queue's order, and every envelope it makes is one the pinned
policy module accepts and the certificate check passes."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from swarm.node.decide_service import pack_decisions
from swarm.node.policy import WasmPolicy
from swarm.protocol import certificate, genesis
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.decide import Decision, TryDecide, encode_command
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.placement import Placement
from swarm.protocol.verbs import DECIDE_ALSO_MAX

IDS = [Identity(bytes([i + 1]) * 32) for i in range(7)]


def _setup(replicas: int) -> tuple[genesis.Genesis, Placement]:
    g = genesis.new(
        name="announce", created_ms=0,
        validators=[{"account": i.public_key, "org": f"o{k}", "asn": k, "region": "r",
                     "stake": 1} for k, i in enumerate(IDS)],
        params={"bucket_count": 16, "replicas": replicas})
    return g, Placement.from_genesis(g)


def _queue(g: genesis.Genesis, p: Placement, n: int
           ) -> deque[tuple[Decision, dict[str, Any]]]:
    """n certified decisions, each signed by all of its bucket's replicas (the largest
    certificates a node may hold)."""
    by_key = {i.public_key: i for i in IDS}
    out: deque[tuple[Decision, dict[str, Any]]] = deque()
    for i in range(n):
        need = dag_cbor_cid(b"need-%d" % i).raw
        bucket = bucket_of(need, p.bucket_count)
        d = Decision(need, b"proposal-%d" % i, 0, 0, bucket, 10 + i, 3, 5_000 + i)
        digest = certificate.entry_hash(encode_command(TryDecide(need, d.proposal_id),
                                                       d.ts_ms))
        sigs = [certificate.sign(by_key[p.account(r)], g.swarm_id, bucket, d.index, d.term,
                                 digest) for r in p.replicas(bucket)]
        out.append((d, certificate.cert_payload(bucket, d.index, d.term, d.ts_ms, digest,
                                                sigs)))
    return out


@pytest.mark.parametrize("replicas", [3, 5, 7])
def test_packed_announcements_fit_the_policy_and_keep_order(replicas: int) -> None:
    g, p = _setup(replicas)
    policy = WasmPolicy.for_genesis(g)
    rule = policy.host.rules()["DECIDE"]
    queue = _queue(g, p, 40)
    expected = [d.need_id for d, _ in queue]
    seen: list[bytes] = []
    sizes = []
    while queue:
        payload = pack_decisions(queue, rule)
        stated = certificate.announced(payload)
        sizes.append(len(stated))
        seen += [x["need_id"].raw for x in stated]
        env = make_envelope(IDS[0], kind="DECIDE", swarm=g.swarm_id, lamport=1, ts=0,
                            payload=payload)
        assert policy.run(env).allowed, policy.run(env).reason
        certificate.check_announcement(env.payload, g.swarm_id, p)
    assert seen == expected
    assert max(sizes) <= 1 + DECIDE_ALSO_MAX
    assert sizes[0] > 1  # it does batch, even with the largest certificates


def test_without_a_policy_rule_each_decision_goes_alone() -> None:
    g, p = _setup(3)
    queue = _queue(g, p, 3)
    assert [len(certificate.announced(pack_decisions(queue, None))) for _ in range(3)] \
        == [1, 1, 1]
