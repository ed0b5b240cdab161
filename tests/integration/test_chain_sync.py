"""A node that is not a validator follows every bucket's certified chain.

Goal: a plain node shows the same balances, ledger root and task states as the
validators: credits sent to it appear in its own `ledger balance`, its ledger root
moves with the validators', a NEED it posts (funded through a validator) shows in its
task view, and it bids on another's NEED, wins, claims and commits it, a validator's
committee attests, and its payout shows in its own balance. A malformed sync request
gets an empty answer and the validator keeps serving. Method: three in-process nodes on
loopback, two of them validators.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.node.chain_sync import ANSWER_BYTES_MAX, decode_answer
from swarm.protocol.genesis import UNIT_PER_CREDIT
from swarm.testnet.inproc import wait_for

U = UNIT_PER_CREDIT


# Windows of seconds; validators staking the verifier minimum, so they make a pool.
MARKET_PARAMS = {"min_verifier_stake": 1, "challenge_window_ms": 2_000,
                 "escrow_hold_factor": 1, "reputation_decay_weekly_bp": 0}


async def test_a_plain_node_follows_balances_roots_and_tasks(swarmlet: Any) -> None:
    s = await swarmlet(3, validators=2, params=MARKET_PARAMS)
    v0, plain = s.nodes[0], s.nodes[2]
    assert plain.decider.raft.id == 0, "node 2 is not a validator"
    before = plain.ledger.balance(None)["balance"]
    with trio.fail_after(90):
        await v0.ledger.transfer(plain.identity.public_key.hex(), "5")
        await wait_for(lambda: plain.ledger.balance(None)["balance"] == before + 5 * U,
                       "the plain node to see the credit in its own balance")
        await wait_for(lambda: plain.ledger.root_hex() == v0.ledger.root_hex(),
                       "the plain node's ledger root to equal a validator's")
        posted = await plain.market.post("simple", "2", bid_window_ms=600_000)
        need = posted["need_id"]
        await wait_for(lambda: _state(plain, need) == "OPEN",
                       "the plain node to see its task open")
        assert plain.ledger.balance(None)["balance"] == before + 3 * U
        assert plain.market.task(need)["source"] == "read_replica"
        assert plain.ledger.sync.stats["applied"] > 0

        # The plain node works for another's NEED: wins it, commits, and is paid.
        v1 = s.nodes[1]
        other = (await v0.market.post("simple", "4", verify_bounty="1", k_result=1,
                                      bid_window_ms=1_500))["need_id"]
        await wait_for(lambda: _state(plain, other) == "OPEN", "the plain node to see it")
        await plain.market.bid(other, "2", 1_000)
        await wait_for(lambda: _state(plain, other) == "DECIDED", "the auction to close")
        assert plain.market.task(other)["winner"] == plain.identity.public_key.hex()
        await plain.market.claim(other, 60_000, 5_000)
        await plain.market.commit(
            other, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
        await wait_for(lambda: (_task(v1, other) or {}).get("commit", {}).get("committee")
                       == [v1.identity.public_key.hex()], "the committee of v1 to be drawn")
        await v1.market.attest(other, "valid")
        await wait_for(lambda: (_task(plain, other) or {}).get("paid") is True,
                       "the plain node to see the task paid")
        await wait_for(lambda: plain.ledger.balance(None)["balance"] == before + 5 * U,
                       "the payout in the plain node's own balance")
        await wait_for(lambda: plain.ledger.root_hex() == v0.ledger.root_hex()
                       == v1.ledger.root_hex(), "one ledger root on all three")
        mine, theirs = _task(plain, other), _task(v0, other)
        assert mine is not None and theirs is not None
        assert {k: v for k, v in mine.items() if k != "source"} == \
            {k: v for k, v in theirs.items() if k != "source"}


async def test_a_malformed_sync_request_gets_an_empty_answer(swarmlet: Any) -> None:
    s = await swarmlet(2, validators=1)
    validator, plain = s.nodes[0], s.nodes[1]
    protocol = validator.ledger.sync.protocol
    with trio.fail_after(30):
        for garbage in (b"\xff\x00", b"\x81\x83\x00\x01\x02"):
            stream = await plain.host.new_stream(validator.peer_id, [protocol])
            await stream.write(encode_varint_prefixed(garbage))
            data = await read_varint_prefixed_bytes_limited(stream, ANSWER_BYTES_MAX)
            await stream.close()
            assert decode_answer(data, 256) == []
        assert await plain.ledger.sync.pull(plain.host) >= 0  # still served


def _task(node: Any, need: str) -> dict[str, Any] | None:
    try:
        task: dict[str, Any] = node.market.task(need)
        return task
    except Exception:  # noqa: BLE001 - not known yet
        return None


def _state(node: Any, need: str) -> str | None:
    try:
        state: str = node.market.task(need)["state"]
        return state
    except Exception:  # noqa: BLE001 - not known yet
        return None
