"""The node's durable state in RocksDB (rocksdict): every envelope it accepted, in order.

Owns the on-disk layout and the durability rule. Keys:

* ``e`` + envelope id (binary CID) -> wire bytes
* ``s`` + 8-byte big-endian sequence -> envelope id (arrival order, for replay)
* ``m`` + name -> metadata (next sequence, last plan root)

`append()` writes a batch through to the operating system before it returns (RocksDB
hands the WAL record to the kernel), so anything the node accepted and forwarded survives
`kill -9` of the process; with `sync=True` (the default) it also fsyncs, so it survives
losing the machine. Gossip writes unsynced and fsyncs in groups off the event loop
(`node/durability.py`, `sync()`); see docs/NETWORK.md. The plan is rebuilt at start by
replaying the log in arrival order without re-verifying signatures (each entry was
verified before it was written); the stored plan root is compared with the rebuilt one
to catch a corrupted store at start rather than later.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import rocksdict

from swarm.protocol.cid import Cid

_NEXT_SEQ = b"mnext_seq"
_SEQ = struct.Struct(">Q")


class StoreError(Exception):
    """The store cannot be opened, written or read back, or is inconsistent; the
    message says what to do. The one failure that stops a node (node/pipeline.py)."""


def open_rocksdb(path: Path, what: str, *, write_buffer_bytes: int = 0,
                 error: type[StoreError] = StoreError) -> rocksdict.Rdict:
    """Open (creating) one of the node's RocksDB databases, in raw (bytes) mode; a
    failure -- most often another node running with this home -- is a clear `error`."""
    path.mkdir(parents=True, exist_ok=True)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    if write_buffer_bytes:
        options.set_write_buffer_size(write_buffer_bytes)
    try:
        return rocksdict.Rdict(str(path), options=options)
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
        raise error(f"cannot open the {what} at {path}: {exc} (is another node running "
                    "with this home?)") from None


def synced() -> rocksdict.WriteOptions:
    options = rocksdict.WriteOptions()
    options.sync = True
    return options


class Store:
    def __init__(self, path: Path) -> None:
        self._db = open_rocksdb(path, "store")
        self._sync = synced()
        # sync=False still writes the WAL record to the file with write(2) before
        # returning (the WAL is not in manual-flush mode), so the record is in the
        # kernel's page cache and survives the process.
        self._nosync = rocksdict.WriteOptions()
        self._nosync.sync = False
        raw = self._db.get(_NEXT_SEQ)
        self._next_seq = _SEQ.unpack(raw)[0] if raw is not None else 0

    @property
    def count(self) -> int:
        return self._next_seq

    def has(self, envelope_id: Cid) -> bool:
        return self._db.get(b"e" + envelope_id.raw) is not None

    def get(self, envelope_id: Cid) -> bytes | None:
        value = self._db.get(b"e" + envelope_id.raw)
        return bytes(value) if value is not None else None

    def append(self, items: list[tuple[Cid, bytes]], *, sync: bool = True) -> None:
        """Add envelopes (id, wire) not already stored, in one batch. The batch has reached
        the operating system when this returns (it survives the process being killed);
        with `sync` it is also on disk."""
        if not items:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        seq = self._next_seq
        for envelope_id, wire in items:
            batch.put(b"e" + envelope_id.raw, wire)
            batch.put(b"s" + _SEQ.pack(seq), envelope_id.raw)
            seq += 1
        batch.put(_NEXT_SEQ, _SEQ.pack(seq))
        try:
            self._db.write(batch, self._sync if sync else self._nosync)
        except Exception as exc:  # rocksdict raises plain Exception
            raise StoreError(f"cannot write {len(items)} envelopes to the store: {exc}") \
                from exc
        self._next_seq = seq

    def sync(self) -> None:
        """fsync the WAL: every write made before the call is then on disk. Safe to call
        from a worker thread while the event loop goes on writing."""
        self._db.flush_wal(True)

    def log(self, start: int = 0) -> Iterator[tuple[Cid, bytes]]:
        """(id, wire) in arrival order from sequence `start`."""
        for seq in range(start, self._next_seq):
            raw_id = self._db.get(b"s" + _SEQ.pack(seq))
            if raw_id is None:
                raise StoreError(f"log entry {seq} is missing; the store is damaged")
            wire = self._db.get(b"e" + bytes(raw_id))
            if wire is None:
                raise StoreError(f"envelope of log entry {seq} is missing; the store is "
                                 "damaged")
            yield Cid(bytes(raw_id)), bytes(wire)

    def get_meta(self, name: str) -> bytes | None:
        value = self._db.get(b"m" + name.encode())
        return bytes(value) if value is not None else None

    def put_meta(self, name: str, value: bytes, *, sync: bool = True) -> None:
        """Set a named value; without `sync` it survives the process, not a power cut."""
        self._db.put(b"m" + name.encode(), value, self._sync if sync else self._nosync)

    def meta_items(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        """(name, value) of every named value whose name starts with `prefix`."""
        start = b"m" + prefix.encode()
        it = self._db.iter()
        it.seek(start)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(start):
                break
            yield key[1:].decode(), bytes(it.value())
            it.next()

    def close(self) -> None:
        self._db.flush_wal(True)  # a clean stop leaves nothing unsynced
        self._db.close()
