"""Envelopes signed elsewhere, handed to a node as their wire bytes.

Goal: a client without a libp2p stack of its own (a wallet, a script) reaches the swarm
through any node's control API (`POST /envelopes/wire`, `swarm-node envelope send`),
and is answered with the pipeline's verdict, code and field: a gossiped verb is
judged as gossip is and published; a ledger verb goes to its signer's bucket and
answers the outcome, applied once however often it is sent; a NEED is posted and funded
by its signer's bucket before it is gossiped (refused, and not gossiped, when the
signer cannot pay); bad bytes are refused
naming the field, and nothing is stored for them.

Method: three in-process nodes; envelopes signed with keys the nodes do not hold for
this purpose (a stranger's, and node0's own key used as a wallet's) posted to another
node's API over HTTP, and once through the CLI; then `swarm_works`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import trio
from hostile_kit import swarm_works
from test_hostile_api import Api, detail
from typer.testing import CliRunner

from swarm.cli.main import app
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.lamport import LAMPORT_MAX
from swarm.testnet.inproc import BALANCE, wait_for

U = 1_000_000


async def test_envelopes_signed_elsewhere_are_judged_and_answered(
        swarmlet: Any, tmp_path: Path) -> None:
    s = await swarmlet(3)
    await s.connect_mesh()
    wallet, entry, other = s.nodes[0], s.nodes[1], s.nodes[2]
    api = Api(entry)
    swarm = s.genesis.swarm_id
    now = time.time_ns() // 1_000_000

    def post(wire: bytes) -> Any:
        return api.call("POST", "/envelopes/wire", content=wire,
                        headers={"content-type": "application/octet-stream"})

    # A ledger verb: to its signer's bucket, applied once, the outcome answered.
    transfer = make_envelope(wallet.identity, kind="TRANSFER", swarm=swarm, lamport=1,
                             ts=now, payload={"to": other.identity.public_key,
                                              "amount": 4 * U, "op_id": os.urandom(16),
                                              "valid_until_ms": now + 60_000})
    r = await post(transfer.wire)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["verdict"] == "accept" and first["outcome"]["ok"]
    r = await post(transfer.wire)  # sent again: the first outcome, not a second transfer
    assert r.status_code == 200 and r.json()["outcome"]["index"] == first["outcome"]["index"]
    await wait_for(lambda: all(n.ledger.balance(wallet.identity.public_key.hex())["balance"]
                               == BALANCE - 4 * U for n in s.nodes.values()),
                   "the transfer on every node")
    poor = make_envelope(Identity(os.urandom(32)), kind="STAKE", swarm=swarm, lamport=1,
                         ts=now, payload={"amount": U, "op_id": bytes(16),
                                          "valid_until_ms": now + 60_000})
    r = await post(poor.wire)
    assert r.status_code == 409 and detail(r)["code"] == "insufficient_balance", r.text

    # A NEED is a market task: its signer's bucket escrows the budget first, then it
    # is gossiped for the plan. A stranger without credits is refused and nothing is
    # stored or gossiped.
    stranger = Identity(os.urandom(32))
    broke = make_envelope(stranger, kind="NEED", swarm=swarm, lamport=1, ts=now,
                          payload={"class": "simple", "budget": 3, "title": "unpaid"})
    r = await post(broke.wire)
    assert r.status_code == 409 and detail(r)["code"] == "insufficient_balance", r.text
    assert not entry.store.has(broke.id)
    need = make_envelope(wallet.identity, kind="NEED", swarm=swarm, lamport=2, ts=now,
                         payload={"class": "simple", "budget": 3, "title": "from afar"})
    r = await post(need.wire)
    assert r.status_code == 200 and r.json()["outcome"]["ok"], r.text
    first = r.json()
    await wait_for(lambda: all(need.id in n.pipeline.ids
                               and n.market.task_named(str(need.id)) is not None
                               for n in s.nodes.values()),
                   "the NEED in every node's plan and task book")
    r = await post(need.wire)  # again: the first outcome, one task
    assert r.status_code == 200 and r.json()["outcome"]["index"] == first["outcome"]["index"]

    # A gossiped verb from a stranger: judged, stored, published to every node.
    plan = make_envelope(stranger, kind="UPDATE_PLAN", swarm=swarm, lamport=3, ts=now,
                         payload={"base_lamport": 0, "ops": [
                             {"op": "ADD_TASK", "task_id": "afar", "title": "from afar"}]})
    r = await post(plan.wire)
    assert r.status_code == 200 and r.json()["verdict"] == "accept", r.text
    await wait_for(lambda: all(plan.id in n.pipeline.ids for n in s.nodes.values()),
                   "the UPDATE_PLAN on every node")
    r = await post(plan.wire)
    assert r.status_code == 200 and r.json()["code"] == "duplicate"

    # Refusals name the code and field; nothing is stored for them.
    stored = entry.store.count
    forged = bytearray(plan.wire)
    forged[9] ^= 1
    future = make_envelope(stranger, kind="UPDATE_PLAN", swarm=swarm, lamport=LAMPORT_MAX,
                           ts=now, payload={"base_lamport": 0, "ops": [
                               {"op": "ADD_TASK", "task_id": "later"}]})
    uncertified = make_envelope(stranger, kind="DECIDE", swarm=swarm, lamport=2, ts=now,
                                payload={"need_id": need.id, "proposal_id": "p",
                                         "k_plan": 0, "epoch": 0})
    for wire, status, code, fld in [
            (b"\xff\x00garbage", 400, "decode", "bytes"),
            (bytes(forged), 400, "bad_signature", "sig"),
            (future.wire, 409, "lamport_future", "lamport"),
            (uncertified.wire, 400, "bad_certificate", "payload.cert")]:
        r = await post(wire)
        assert r.status_code == status, (code, r.text)
        d = detail(r)
        assert (d["code"], d["field"]) == (code, fld), d
    r = await post(b"\xa1" + os.urandom(70_000))  # over an envelope's 64 KiB
    assert r.status_code == 413, r.text
    assert entry.store.count == stored

    # The CLI: `swarm-node envelope send FILE`.
    need2 = make_envelope(stranger, kind="UPDATE_PLAN", swarm=swarm, lamport=4, ts=now,
                          payload={"base_lamport": 0, "ops": [
                              {"op": "ADD_TASK", "task_id": "by file"}]})
    path = tmp_path / "need2.env"
    path.write_bytes(need2.wire)

    def send(file: Path) -> Any:
        return CliRunner().invoke(app, ["envelope", "send", str(file), "--home",
                                        str(entry.settings.home)])

    sent = await trio.to_thread.run_sync(send, path)
    assert sent.exit_code == 0 and "accepted" in sent.stdout, sent.output
    (tmp_path / "bad.env").write_bytes(bytes(forged))
    refused = await trio.to_thread.run_sync(send, tmp_path / "bad.env")
    assert refused.exit_code == 1 and "sig:" in refused.stderr, refused.output
    await swarm_works(s)
