"""Durability of accepted envelopes: unsynced writes survive `kill -9`; group fsync.

Goal: what the node forwards is written through to the operating system first, so a
process killed at any moment loses none of it (node/store.py), and the WAL syncer turns
many writes into few fsyncs, reports failures, and wakes exactly the waiters it covers
(node/durability.py). Method: a real child process writing to a real RocksDB store and
SIGKILLed mid-stream; the syncer on a real store in trio.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from swarm.node.durability import WalSyncer
from swarm.node.store import Store
from swarm.protocol.cid import Cid

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from swarm.node.store import Store
    from swarm.protocol.cid import dag_cbor_cid
    store = Store(Path(sys.argv[1]))
    k = 0
    while True:
        wire = b"envelope %d " % k + bytes(200)
        cid = dag_cbor_cid(wire)
        store.append([(cid, wire)], sync=False)
        # Reported only once append() returned: the node would forward it now.
        sys.stdout.write(str(cid) + "\\n")
        sys.stdout.flush()
        k += 1
""")


def test_unsynced_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = []
    for line in proc.stdout:
        reported.append(line.strip())
        if len(reported) == 300:
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is still writing
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = Store(path)
    try:
        stored = {str(cid) for cid, _wire in store.log()}
        assert store.count >= len(reported)
        assert set(reported) <= stored
    finally:
        store.close()


def wire_and_id(k: int) -> tuple[Cid, bytes]:
    from swarm.protocol.cid import dag_cbor_cid

    wire = b"envelope %d" % k
    return dag_cbor_cid(wire), wire


async def test_group_sync_covers_every_write_with_fewer_fsyncs(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    errors: list[BaseException] = []
    syncer = WalSyncer(store, errors.append)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(syncer.run)
            tickets = []
            for k in range(200):
                store.append([wire_and_id(k)], sync=False)
                tickets.append(syncer.note_write())
                if k % 50 == 0:
                    await trio.sleep(0)
            await syncer.wait_synced(tickets[0])
            assert syncer.synced >= tickets[0]
            await syncer.wait_synced()
            assert syncer.synced == syncer.written == 200
            # Writes made while an fsync ran were covered by the next one.
            assert 1 <= syncer.syncs < 200
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert errors == []
    reopened = Store(tmp_path / "store")
    try:
        assert reopened.count == 200
    finally:
        reopened.close()


async def test_a_failed_fsync_reaches_the_node_and_every_waiter(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append([wire_and_id(0)], sync=False)
    store.close()  # a store that can no longer sync: every fsync now fails
    errors: list[BaseException] = []
    syncer = WalSyncer(store, errors.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(syncer.run)
        ticket = syncer.note_write()
        with pytest.raises(Exception, match="closed"):
            await syncer.wait_synced(ticket)
        with pytest.raises(Exception, match="closed"):
            await syncer.wait_synced(syncer.note_write())
    assert len(errors) == 1 and syncer.synced == 0
