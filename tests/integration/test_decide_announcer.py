"""One validator announces certified decisions for the whole swarm.

Goal: bucket leaders send their certified decisions to the announcer (the lowest-numbered
validator they take to be alive) in Raft frames; it checks each certificate, and only it
publishes DECIDE envelopes; every node ends up holding every decision, certified. A
relayed decision whose certificate does not verify is dropped and counted, not
published (it would get the whole envelope rejected by every node). A gossiped DECIDE
is checked a decision at a time, and a copy arriving while another is being checked
waits for that one instead of checking it again. Method: three or four in-process
validators on loopback.
"""

from __future__ import annotations

from typing import Any

import trio

from swarm.protocol import certificate
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import make_envelope
from swarm.protocol.raftwire import Announcement
from swarm.testnet.inproc import wait_for


def _need(i: int) -> str:
    return str(dag_cbor_cid(b"announcer-%d" % i))


async def test_only_the_announcer_publishes_and_everyone_learns_everything(
        swarmlet: Any) -> None:
    s = await swarmlet(4, validators=4)
    nodes = list(s.nodes.values())
    for i, a in enumerate(nodes):  # every validator reaches every other (as on a testnet)
        for b in nodes[i + 2:]:
            await b.connect(a.addrs()[0])
    by_id = {n.decider.raft.id: n for n in nodes}
    await wait_for(lambda: all(n.decider.raft.peers.announcer() == 1 for n in nodes),
                   "every validator to take validator 1 for the announcer")
    needs = [_need(i) for i in range(24)]
    with trio.fail_after(120):
        for i, need in enumerate(needs):
            await nodes[i % 4].decider.try_decide(need, f"p{i}")
    await wait_for(lambda: all((n.decider.decision(x) or {}).get("certified")
                               for n in nodes for x in needs),
                   "every node to hold every decision certified")
    assert by_id[1].decider.announcements > 0
    assert all(n.decider.announcements == 0 for i, n in by_id.items() if i != 1)
    assert sum(n.decider.raft.stats["announcements_forwarded"] for n in nodes) > 0
    assert by_id[1].decider.raft.stats["announcements_relayed"] > 0
    assert by_id[1].decider.raft.stats["announcements_rejected"] == 0


async def test_a_relayed_decision_that_does_not_verify_is_dropped(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=3)
    announcer = next(n for n in s.nodes.values() if n.decider.raft.id == 1)
    need = _need(100)
    with trio.fail_after(60):
        d = await s.nodes[1].decider.try_decide(need, "real")
    await wait_for(lambda: (announcer.decider.decision(need) or {}).get("certified"),
                   "the real decision certified")
    stated = announcer.decider.certified_json(Cid.parse(need).raw)
    assert stated is not None
    forged_need = Cid.parse(_need(101)).raw
    forged = Announcement(d["bucket"], d["index"], d["term"], d["ts_ms"], forged_need,
                          b"forged", 0, 0, ((b"\x01" * 32, b"\x02" * 64),))
    announcer.decider._relayed(2, forged)
    await wait_for(lambda: announcer.decider.raft.stats["announcements_rejected"] == 1,
                   "the forged decision to be rejected")
    await trio.sleep(1.5)  # an announcement window: nothing goes out for it
    assert forged_need not in announcer.decider.certified
    assert stated["proposal_id"] == "real"


async def test_copies_of_a_decide_being_checked_wait_for_the_first(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=3)
    node = s.nodes[0]
    with trio.fail_after(60):
        d = await s.nodes[1].decider.try_decide(_need(200), "p")
    await wait_for(lambda: (node.decider.decision(_need(200)) or {}).get("certified"),
                   "the decision certified")
    env_id = Cid(node.decider.certified[Cid.parse(_need(200)).raw].envelope)
    stated = node.store.get(env_id)
    assert stated is not None and d["proposal_id"] == "p"
    original = node.pipeline.decode(stated)
    assert not isinstance(original, tuple) and original.kind == "DECIDE"
    # The same decisions, announced again in a fresh envelope (another lamport).
    again = make_envelope(s.nodes[1].identity, kind="DECIDE", swarm=s.genesis.swarm_id,
                          lamport=original.lamport + 1, ts=original.ts,
                          payload=original.payload, thread="decide")
    results: list[bool] = []

    async def check() -> None:
        results.append(await node.decider.precheck(again))

    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            n.start_soon(check)
            n.start_soon(check)
    assert sorted(results) == [False, True]  # one checked, one waited for it
    node.decider.check_envelope(again)  # passes without checking again
    certificate.check_announcement(again.payload, s.genesis.swarm_id, node.decider.placement)
