"""The RocksDB Raft store: what one synced commit wrote comes back after reopening,
conflicting suffixes and compacted prefixes are really gone, and damage is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.node.raftstore import RaftStore
from swarm.node.store import StoreError
from swarm.protocol.raftlog import Entry, EntryKind, HardState, Snapshot


def test_reopen_restores_log_hard_state_and_snapshot(tmp_path: Path) -> None:
    s = RaftStore(tmp_path)
    b = s.bucket(5, [1, 2, 3])
    other = s.bucket(6, [1, 2, 3])
    b.append([Entry(1, i, EntryKind.NORMAL, b"x%d" % i) for i in range(1, 11)])
    b.set_hard_state(HardState(2, 1, 4))
    other.append([Entry(1, 1, EntryKind.CONF, b"c")])
    s.commit()
    b.append([Entry(2, 6, data=b"new6"), Entry(2, 7, data=b"new7")])  # replaces 6..10
    s.commit()
    b.create_snapshot(5, [1, 2, 3], b"state@5")
    b.compact(5)
    s.commit()
    s.close()

    s = RaftStore(tmp_path)
    b = s.bucket(5, [1, 2, 3])
    assert (b.first_index(), b.last_index()) == (6, 7)
    assert b.hard_state == HardState(2, 1, 4)
    assert b.snapshot() == Snapshot(5, 1, (1, 2, 3), b"state@5")
    assert [e.data for e in b.entries(6, 8, 1 << 20)] == [b"new6", b"new7"]
    assert [e.kind for e in s.bucket(6, [1]).entries(1, 2, 100)] == [EntryKind.CONF]
    assert s.bucket(7, [1, 2]).last_index() == 0  # an untouched bucket is empty
    s.close()


def test_uncommitted_batch_is_not_on_disk(tmp_path: Path) -> None:
    s = RaftStore(tmp_path)
    s.bucket(1, [1]).append([Entry(1, 1)])
    s.close()  # like a crash before the round's synced write
    s = RaftStore(tmp_path)
    assert s.bucket(1, [1]).last_index() == 0
    s.close()


def test_snapshot_from_leader_replaces_the_log(tmp_path: Path) -> None:
    s = RaftStore(tmp_path)
    b = s.bucket(2, [1, 2, 3])
    b.append([Entry(1, i) for i in range(1, 4)])
    s.commit()
    b.apply_snapshot(Snapshot(50, 4, (1, 2, 3, 4), b"s"))
    s.commit()
    s.close()
    s = RaftStore(tmp_path)
    b = s.bucket(2, [1, 2, 3])
    assert (b.first_index(), b.last_index(), b.snapshot().voters) == (51, 50, (1, 2, 3, 4))
    s.close()


def test_a_gap_in_the_log_is_reported(tmp_path: Path) -> None:
    s = RaftStore(tmp_path)
    s.bucket(3, [1]).append([Entry(1, i) for i in range(1, 6)])
    s.commit()
    s.db.delete(b"e" + (3).to_bytes(2, "big") + (3).to_bytes(8, "big"))
    s.close()
    s = RaftStore(tmp_path)
    with pytest.raises(StoreError, match="gap at 3"):
        s.bucket(3, [1])
    s.close()

