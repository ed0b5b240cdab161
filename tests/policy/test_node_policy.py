"""A running node refuses to publish what the swarm's policy denies, and reports the
policy CID in its status.

Goal: a node never stores and gossips its own envelope that every other node would
reject. Method: one real in-process node (swarm.testnet.inproc) on loopback; its
genesis validators have a stake of 1 unit, below min_verifier_stake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from swarm.policy_wasm.host import committed_cid
from swarm.protocol.errors import LocalProtocolError
from swarm.testnet.inproc import Swarmlet, make_homes
from swarm.testnet.workload import example_payloads


async def test_own_envelopes_are_checked_before_they_are_published(tmp_path: Path) -> None:
    homes, gen = make_homes(tmp_path, 1)
    async with trio.open_nursery() as nursery:
        node = await Swarmlet(nursery, homes, gen).start(0)
        assert node.status()["policy_cid"] == str(committed_cid())
        with pytest.raises(LocalProtocolError) as info:
            await node.publish("NEED", {"class": "simple", "budget": 10**9,
                                        "verify_bounty": 10**9}, "", [])
        assert info.value.code == "bounty_over_cap" and info.value.field == "policy"
        attest = {k: str(v) for k, v in example_payloads()["ATTEST"].items()}
        with pytest.raises(LocalProtocolError, match="stake_required"):
            await node.publish("ATTEST", attest, "", [])
        assert node.store.count == 0
        doc = await node.publish("NEED", {"class": "simple", "budget": 5}, "", [])
        assert node.store.count == 1 and doc["kind"] == "NEED"
        nursery.cancel_scope.cancel()
