"""Durable Raft state for every bucket this node replicates, in one RocksDB.

Owns the on-disk layout and the group commit of Raft writes. Keys (bucket as 2 bytes,
index as 8, both big-endian):

* ``h`` + bucket -> hard state, CBOR ``[term, vote, commit]``
* ``s`` + bucket -> snapshot, CBOR ``[index, term, voters, data]``
* ``e`` + bucket + index -> entry, CBOR ``[term, kind, data]``

Each bucket's `BucketStorage` keeps its log since the last snapshot in memory as well (the
core reads entries often; compaction keeps the tail short) and records every write into
the shared `pending` batch. `RaftStore.commit()` writes the batch for every bucket that
had a Ready in this round with one synced write: that is the point after which the
node may send the messages those Readies carry (the persistence contract in
protocol/raft.py), and it costs one fsync per round however many buckets moved.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import rocksdict

from swarm.protocol import cbor
from swarm.protocol.raftlog import Entry, EntryKind, HardState, MemoryStorage, Snapshot

from .store import StoreError, open_rocksdb, synced

_B = struct.Struct(">H")
_BI = struct.Struct(">HQ")


class BucketStorage(MemoryStorage):
    """One bucket's log: MemoryStorage mirrored to RocksDB through the store's batch."""

    def __init__(self, store: RaftStore, bucket: int, voters: Sequence[int]) -> None:
        super().__init__(voters)
        self.store = store
        self.bucket = bucket
        self._load()

    def _load(self) -> None:
        db, b = self.store.db, _B.pack(self.bucket)
        raw = db.get(b"s" + b)
        if raw is not None:
            index, term, voters, data = cbor.decode(bytes(raw), _BIG)
            self.snap = Snapshot(index, term, tuple(voters), data)
            self.ents = [Entry(term, index)]
        raw = db.get(b"h" + b)
        if raw is not None:
            term, vote, commit = cbor.decode(bytes(raw))
            self.hard_state = HardState(term, vote, commit)
        start = _BI.pack(self.bucket, self.snap.index + 1)
        stop = b"e" + _BI.pack(self.bucket + 1, 0) if self.bucket < 0xFFFF else b"f"
        expect = self.snap.index + 1
        for raw_key, value in db.items(from_key=b"e" + start):
            if not isinstance(raw_key, bytes) or raw_key >= stop:
                break
            key = raw_key
            if not isinstance(value, bytes):
                raise StoreError(f"raft bucket {self.bucket}: a non-bytes entry")
            index = _BI.unpack(key[1:])[1]
            if index != expect:
                raise StoreError(f"raft log of bucket {self.bucket} has a gap at {expect} "
                                 f"(found {index}); the store is damaged")
            term, kind, data = cbor.decode(bytes(value), _BIG)
            self.ents.append(Entry(term, index, EntryKind(kind), data))
            expect += 1
        if self.hard_state.commit > self.last_index():
            raise StoreError(f"raft bucket {self.bucket}: commit {self.hard_state.commit} "
                             f"beyond the last entry {self.last_index()}; the store is damaged")

    def _key(self, index: int) -> bytes:
        return b"e" + _BI.pack(self.bucket, index)

    def set_hard_state(self, hs: HardState) -> None:
        super().set_hard_state(hs)
        self.store.pending.put(b"h" + _B.pack(self.bucket), cbor.encode([hs.term, hs.vote,
                                                                         hs.commit]))

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index <= self.snap.index:
            return
        old_first, old_last = self.first_index(), self.last_index()
        super().apply_snapshot(snap)
        batch = self.store.pending
        batch.put(b"s" + _B.pack(self.bucket), _encode_snapshot(snap))
        if old_last >= old_first:
            batch.delete_range(self._key(old_first), self._key(old_last + 1))

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        old_last = self.last_index()
        super().append(entries)
        batch = self.store.pending
        first = self.first_index()
        for e in entries:
            if e.index >= first:
                batch.put(self._key(e.index), cbor.encode([e.term, int(e.kind), e.data]))
        new_last = self.last_index()
        if old_last > new_last:  # a conflicting suffix was replaced by a shorter one
            batch.delete_range(self._key(new_last + 1), self._key(old_last + 1))

    def create_snapshot(self, index: int, voters: Sequence[int], data: bytes) -> Snapshot:
        snap = super().create_snapshot(index, voters, data)
        self.store.pending.put(b"s" + _B.pack(self.bucket), _encode_snapshot(snap))
        return snap

    def compact(self, index: int) -> None:
        first = self.first_index()
        super().compact(index)
        if index >= first:
            self.store.pending.delete_range(self._key(first), self._key(index + 1))


_BIG = cbor.Limits(size_bytes_max=1 << 30, depth_max=8, items_max=1 << 26)


def _encode_snapshot(snap: Snapshot) -> bytes:
    return cbor.encode([snap.index, snap.term, list(snap.voters), snap.data])


class RaftStore:
    """The RocksDB behind every bucket; `commit()` is the round's one synced write."""

    def __init__(self, path: Path) -> None:
        self.db = open_rocksdb(path, "raft store")
        self._sync = synced()
        self._nosync = rocksdict.WriteOptions()
        self.pending = rocksdict.WriteBatch(raw_mode=True)
        self.synced_writes = 0
        # Seconds each synced write held the event loop (the write is inline: see
        # docs/RAFT.md); the node exports them as swarm_raft_write_seconds.
        self.observe_write: Callable[[float], None] = lambda _seconds: None

    def bucket(self, bucket: int, voters: Sequence[int]) -> BucketStorage:
        return BucketStorage(self, bucket, voters)

    def take(self) -> rocksdict.WriteBatch | None:
        """The writes recorded since the last take (None if there are none); new writes
        go to a fresh batch, so the taken one can be written from another thread."""
        if self.pending.is_empty():
            return None
        batch, self.pending = self.pending, rocksdict.WriteBatch(raw_mode=True)
        return batch

    def write(self, batch: rocksdict.WriteBatch, sync: bool = True) -> None:
        if not sync:
            self.db.write(batch, self._nosync)
            return
        started = time.perf_counter()
        self.db.write(batch, self._sync)
        self.observe_write(time.perf_counter() - started)
        self.synced_writes += 1

    def commit(self, sync: bool = True) -> None:
        batch = self.take()
        if batch is not None:
            self.write(batch, sync)

    def close(self) -> None:
        self.db.close()
