"""A node that is not a validator submits DECIDEs and ledger operations through a
validator.

Goal: any node may call try_decide, not only validators: a plain node asks a
connected validator over the decide submission protocol, gets the committed decision
(first writer wins, the same one a validator's later attempt gets), and then holds it
certified from the announcement. A malformed submission gets an error answer and the
validator keeps serving. Method: three in-process nodes on loopback, two of them
validators.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.node.ledger_service import LedgerRefused
from swarm.node.raft_kinds import SubmitError
from swarm.protocol.buckets import bucket_of
from swarm.protocol.decide import SUBMISSION_BYTES_MAX, decode_answer
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.errors import RemoteProtocolError
from swarm.testnet.inproc import wait_for
from swarm.testnet.workload import ledger_fields


async def test_a_plain_node_decides_through_a_validator(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=2)
    outsider = s.nodes[2]
    assert outsider.decider.raft.id == 0  # not a validator
    with trio.fail_after(60):
        # Posted here and decided at once: the validator waits for each NEED to arrive.
        needs = [(await outsider.publish("NEED", {"class": "simple", "budget": 1,
                                                  "title": f"outsider {i}"}, "", []))["id"]
                 for i in range(6)]
        for need in needs:
            d = await outsider.decider.try_decide(need, "p-outsider")
            assert d["need_id"] == need and d["proposal_id"] == "p-outsider"
        # First writer wins: a validator's later attempt gets the outsider's decision.
        again = await s.nodes[0].decider.try_decide(needs[0], "p-validator")
        assert again["proposal_id"] == "p-outsider"
    # The announcement brings each decision, certified, to the outsider's read replica.
    await wait_for(lambda: all((outsider.decider.decision(n) or {}).get("certified")
                               for n in needs), "certified decisions at the outsider")
    assert {outsider.decider.decision(n)["proposal_id"] for n in needs} == {"p-outsider"}


async def test_a_malformed_submission_gets_an_error_answer(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=2)
    outsider, validator = s.nodes[2], s.nodes[1]  # connected in a line: 0 - 1 - 2
    with trio.fail_after(30):
        stream = await outsider.host.new_stream(validator.peer_id,
                                                [validator.decider.submission_protocol])
        await stream.write(encode_varint_prefixed(b"\xa1\x61x\x01"))  # {"x": 1}
        answer = await read_varint_prefixed_bytes_limited(stream, SUBMISSION_BYTES_MAX)
        await stream.close()
    with pytest.raises(RemoteProtocolError, match="submission"):
        decode_answer(answer)
    # The validator still serves a good one.
    with trio.fail_after(60):
        need = await outsider.publish("NEED", {"class": "simple", "budget": 1}, "", [])
        d = await outsider.decider.try_decide(need["id"], "p")
    assert d["proposal_id"] == "p"


async def test_a_plain_node_submits_ledger_operations_through_a_validator(
        swarmlet: Any) -> None:
    """The same for the ledger: a plain node signs its own TRANSFER and a validator
    relays it; the outcome is the ledger's (here a refusal: the account holds less), and
    a relayed envelope that is not the asker's own is refused at the leader's door."""
    s = await swarmlet(3, validators=2)
    outsider = s.nodes[2]
    with trio.fail_after(60):
        with pytest.raises(LedgerRefused, match="insufficient"):
            await outsider.ledger.transfer(s.nodes[0].identity.public_key.hex(), "1000000")
        other = make_envelope(Identity(b"\x07" * 32), kind="TRANSFER",
                              swarm=s.genesis.swarm_id, lamport=1, ts=0,
                              payload={"to": b"\x01" * 32, "amount": 5,
                                       **ledger_fields(bytes(16))})
        wrong_bucket = (bucket_of(other.sender, s.genesis.params["bucket_count"]) + 1) \
            % s.genesis.params["bucket_count"]
        with pytest.raises(SubmitError) as refused:
            await outsider.ledger._submit_through_validator(wrong_bucket, other.wire, 10)
    assert refused.value.code != "submit_failed"  # refused at the door, not a timeout
