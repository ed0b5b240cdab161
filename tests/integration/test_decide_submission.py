"""A node that is not a validator submits DECIDEs through a validator.

Goal: any node may call try_decide (issue 5), not only validators: a plain node asks a
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

from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.decide import SUBMISSION_BYTES_MAX, decode_answer
from swarm.protocol.errors import RemoteProtocolError
from swarm.testnet.inproc import wait_for


async def test_a_plain_node_decides_through_a_validator(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=2)
    outsider = s.nodes[2]
    assert outsider.decider.raft.id == 0  # not a validator
    needs = [str(dag_cbor_cid(b"outsider-%d" % i)) for i in range(6)]
    with trio.fail_after(60):
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
        d = await outsider.decider.try_decide(str(dag_cbor_cid(b"after")), "p")
    assert d["proposal_id"] == "p"
