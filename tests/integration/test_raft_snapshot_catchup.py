"""A validator that was away catches up through a chunked snapshot, node to node.

Goal: the node's wiring of streamed snapshots (node/decide_service.py starting
node/raft_snapshots.py beside the Raft transport) works end to end: a bucket's leader
compacts its log past a replica that is away, and when the replica comes the leader
sends it the bucket's snapshot over `/can-swarm/<swarm>/raft-snap/1.0.0` in many
chunks; it applies it and replicates on. Method: three in-process validator nodes on
loopback (every bucket on all three), snapshots every 20 entries and 1 KiB chunks
(monkeypatched, so a few dozen decisions make a multi-chunk snapshot). The third node
starts only after the decisions: an in-process node that is stopped and started again
can leave its old connections half alive (py-libp2p keeps some of a stopped host's
tasks running), which is no part of what is tested here; restarts with the disk kept
are covered by tests/node/test_raft_snapshots.py and the process tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from swarm.node import multiraft, raft_snapshots
from swarm.node.home import GENESIS_FILE, create_identity, ensure_token, write_config
from swarm.node.p2p import key_pair, peer_id_of
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.raft import Role
from swarm.testnet.cluster import free_port
from swarm.testnet.inproc import Swarmlet, wait_for


def homes_with_replicas(root: Path, n: int) -> list[Path]:
    """n validator homes, every bucket on all n, each listening on a fixed port named
    in genesis (as testnet/cluster.py does): Raft dials a restarted node there."""
    homes = [root / f"node{i}" for i in range(n)]
    identities = [create_identity(h) for h in homes]
    addrs = [f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/"
             f"{peer_id_of(key_pair(ident.seed).public_key).to_base58()}"
             for ident in identities]
    gen = genesis_mod.new(
        name="snapshots", created_ms=0,
        validators=[{"account": ident.public_key, "org": f"o{i}", "asn": i, "region": "r",
                     "stake": 1, "addrs": [addrs[i]]} for i, ident in enumerate(identities)],
        params={"replicas": n})
    for h, addr in zip(homes, addrs, strict=True):
        (h / GENESIS_FILE).write_text(gen.to_json())
        write_config(h, {"listen": [addr.split("/p2p/")[0]], "bootstrap": [],
                         "api": "127.0.0.1:0", "swarm": gen.swarm_id.hex()})
        ensure_token(h)
    return homes


async def test_a_returning_validator_catches_up_through_a_chunked_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiraft, "SNAPSHOT_EVERY", 20)
    monkeypatch.setattr(multiraft, "LOG_TAIL_KEEP", 5)
    monkeypatch.setattr(raft_snapshots, "CHUNK_BYTES", 1024)
    homes = homes_with_replicas(tmp_path, 3)
    async with trio.open_nursery() as nursery:
        s = Swarmlet(nursery, homes, genesis_mod.from_json(
            (homes[0] / GENESIS_FILE).read_text()))
        for i in range(2):
            await s.start(i)

        async def mesh() -> None:
            nodes = sorted(s.nodes)
            for a in nodes:
                for b in nodes:
                    if a < b:
                        await s.nodes[b].connect(s.nodes[a].addrs()[0])

        await mesh()
        buckets = s.nodes[0].decider.placement.bucket_count
        with trio.fail_after(60):
            d = await s.nodes[0].decider.try_decide(str(dag_cbor_cid(b"snap-0")), "warm")
        bucket = d["bucket"]
        mine = []
        for i in range(1, 100_000):
            need = dag_cbor_cid(b"snap-%d" % i)
            if bucket_of(need.raw, buckets) == bucket:
                mine.append(str(need))
                if len(mine) == 60:
                    break

        def leader() -> int | None:
            for i, node in s.nodes.items():
                g = node.decider.raft.groups[bucket]
                if g.raw.raft.role == Role.LEADER:
                    return i
            return None

        await wait_for(lambda: leader() is not None, "a leader of the bucket")
        lead = leader()
        assert lead is not None
        victim = 2
        with trio.fail_after(120):
            for n in mine:
                await s.nodes[lead].decider.try_decide(n, "p" * 100)
        g = s.nodes[lead].decider.raft.groups[bucket]
        # Compaction waits until the bucket's decisions are certified (a sweep later).
        await wait_for(lambda: g.storage.first_index() > 10,
                       "compaction past what the victim holds")
        assert len(g.storage.snapshot().data) > 4 * 1024  # several chunks

        await s.start(victim)
        await mesh()
        back = s.nodes[victim].decider

        def caught_up() -> bool:
            return all(back.raft.local_decision(Cid.parse(n).raw) is not None for n in mine)

        await wait_for(caught_up, "the returning validator to catch up")
        assert back.snapshots is not None
        assert back.snapshots.receiver.stats["snapshots_received"] >= 1
        assert back.snapshots.receiver.stats["snapshot_bytes_received"] > 4 * 1024
        assert back.raft.stats["snapshots_in"] >= 1
        nursery.cancel_scope.cancel()
