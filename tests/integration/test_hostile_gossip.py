"""Ledger verbs never travel by gossip, on real nodes.

Goal (docs/NETWORK.md, "Topics"): a ledger envelope (TRANSFER, STAKE, ...) is applied
only through its account's Raft bucket. `POST /envelopes` refuses one, pointing to the
ledger routes; the gossip pipeline rejects one (`not_gossiped`: not stored, not
forwarded, the sender penalised); a node joins no ledger topic; and one that an older
node stored is never offered through catch-up, so nobody can fetch a user's signed
TRANSFER and replay it. Afterwards every node still creates NEEDs, transfers and
decides (`hostile_kit.swarm_works`). Method: three in-process validators, fully
connected; a stranger (a bare libp2p peer) publishes and fetches.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gossip_kit import full_mesh, invalid_count, restart, sample, stranger
from hostile_kit import swarm_works

from swarm.node.home import TOKEN_FILE
from swarm.protocol import verbs
from swarm.protocol.bucket_machine import LEDGER_VERBS
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.errors import LocalProtocolError
from swarm.testnet.inproc import Swarmlet, wait_for
from swarm.testnet.workload import example_payloads


def signed(s: Swarmlet, identity: Identity, kind: str, lamport: int = 1) -> Envelope:
    payload = verbs.payload_from_json(kind, example_payloads()[kind])
    return make_envelope(identity, kind=kind, swarm=s.genesis.swarm_id, lamport=lamport,
                         ts=0, payload=payload)


async def test_publish_refuses_ledger_verbs_and_points_to_the_ledger_routes(
        swarmlet: Any) -> None:
    s = await full_mesh(swarmlet, 3)
    node = s.nodes[0]
    for kind in LEDGER_VERBS:
        with pytest.raises(LocalProtocolError) as refused:
            await node.publish(kind, example_payloads()[kind], "", [])
        assert refused.value.code == "not_gossiped"
        assert "swarm-node ledger transfer" in refused.value.reason
    token = (s.homes[0] / TOKEN_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as client:
        answer = await client.post(
            "/envelopes", headers={"Authorization": f"Bearer {token}"},
            json={"kind": "TRANSFER", "payload": {"to": "ab" * 32, "amount": 5},
                  "thread": "", "refs": []})
    assert answer.status_code == 400, answer.text
    assert "not_gossiped" in answer.text
    assert node.store.count == 0
    for n in s.nodes.values():  # the topics it joined, and only those
        assert n.status()["topics"] == sorted(n.topics.values())
        assert set(n.pubsub.topic_ids) == set(n.topics.values())
        assert not any("/ledger/" in t for t in n.status()["topics"])
    await swarm_works(s)


async def test_a_gossiped_ledger_envelope_is_rejected_and_goes_nowhere(swarmlet: Any) -> None:
    s = await full_mesh(swarmlet, 3)
    target = s.nodes[0]
    async with stranger(target) as mallory:
        # A user's signed TRANSFER (node 1's key), as if captured, and the stranger's own.
        stolen = signed(s, s.nodes[1].identity, "TRANSFER")
        own = [signed(s, mallory.identity, kind) for kind in LEDGER_VERBS]
        for env in (stolen, *own):
            await mallory.publish(env)
        # Each REJECT costs the stranger score, and after a few the target drops what
        # it forwards unjudged (gossipsub's publish threshold): a couple are counted.
        await wait_for(lambda: sample(target, "reject", "not_gossiped") >= 2,
                       "the target to reject ledger envelopes")
        assert invalid_count(target, mallory.peer_id) > 0
        marker = await target.publish("NEED", {"class": "simple", "budget": 1}, "", [])
        await wait_for(lambda: all(marker["id"] in n.pipeline.replica.plan.task_ids()
                                   for n in s.nodes.values()), "a later NEED everywhere")
        for n in s.nodes.values():
            assert all(n.store.get(e.id) is None for e in (stolen, *own))
        assert sample(s.nodes[1], "reject", "not_gossiped") == 0  # never forwarded
        assert sample(s.nodes[2], "reject", "not_gossiped") == 0
    await swarm_works(s)


async def test_a_stored_ledger_envelope_is_never_offered(swarmlet: Any) -> None:
    """Node 1's store holds a signed TRANSFER of its own, as a node that took ledger
    verbs from gossip would have kept it: after a restart it is not in the id set, and a
    peer that asks catch-up for it by id gets nothing."""
    s = await full_mesh(swarmlet, 3)
    transfer = signed(s, s.nodes[1].identity, "TRANSFER")
    node = await restart(s, 1, stored=[transfer])
    assert node.store.get(transfer.id) is not None and transfer.id not in node.pipeline.ids
    need = await node.publish("NEED", {"class": "simple", "budget": 1}, "", [])
    async with stranger(node) as mallory:
        assert await mallory.fetch([transfer.id]) == []
        # The same request for an envelope it offers is answered.
        assert len(await mallory.fetch([Cid.parse(need["id"])])) == 1
    await wait_for(lambda: all(need["id"] in n.pipeline.replica.plan.task_ids()
                               for n in s.nodes.values()), "node 1's NEED everywhere")
    for n in s.nodes.values():
        assert transfer.id not in n.pipeline.ids
    await swarm_works(s)
