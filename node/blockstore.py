"""The node's evidence blocks in RocksDB: content-addressed blocks, pins and GC.

Owns the on-disk layout of ``<home>/blocks`` (a RocksDB of its own, apart from the
envelope store, so a large evidence upload never competes with envelope writes for one
write-ahead log) and the rules that keep it bounded. Keys:

* ``b`` + binary CID -> block bytes
* ``p`` + binary CID of a root -> pin record (kind byte, 8-byte file size, 8-byte
  block count)

Rules:

* **Hash checked on put.** A block is stored only if its bytes hash to its CID (sha2-256;
  other hash functions are refused), so `get` never returns bytes the CID does not name.
* **Per-object limits.** An object is pinned as one kind, evidence or a challenge
  proof, and may be at most `evidence_bytes_max` or `proof_bytes_max` (genesis params)
  bytes of file data. `add` stops reading as soon as the input passes the limit; `pin`
  checks the size the root declares before walking it.
* **Recursive pins, mark-and-sweep GC.** Pinning a root walks its whole DAG with the
  UnixFS reader (every block present, hashes and sizes consistent) before recording
  the pin; `gc()` keeps every block reachable from a pin, and the blocks of imports still
  in progress, and deletes the rest.
* **An import that does not finish leaves nothing.** An import closed before it
  finished (refused as too large, its upload cut short, an error) deletes the blocks it
  created -- those that were not here before it wrote them and that nothing else wrote,
  pinned or holds since -- so a refused 64 MiB upload does not wait for `gc()`.
* **Durability.** Blocks are written without fsync; the pin record is written with a
  synced WAL after them, and RocksDB's WAL is ordered, so once `add` or `pin` returns
  the pinned object survives `kill -9`. Unpinned blocks may be lost in a crash; nothing
  depends on them.

The store is used from one thread (the node's trio loop or one CLI process); it does
no locking of its own.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import rocksdict

from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.unixfs import (
    Block,
    BlockMissing,
    Importer,
    TooLarge,
    UnixfsError,
    block_links,
    check_block,
    copy_dag,
    file_size,
    first_missing,
    read_file,
)

from .store import StoreError, open_rocksdb, synced

BLOCKS_DIR = "blocks"
WRITE_BUFFER_BYTES = 32 * 1024 * 1024
_PIN = struct.Struct(">BQQ")


class Kind(enum.Enum):
    """What a pinned object is for; each kind has its own size limit."""

    EVIDENCE = "evidence"
    PROOF = "proof"


_KIND_CODES = {Kind.EVIDENCE: 0, Kind.PROOF: 1}
_KIND_BY_CODE = {v: k for k, v in _KIND_CODES.items()}
LIMIT_PARAMS = {Kind.EVIDENCE: "evidence_bytes_max", Kind.PROOF: "proof_bytes_max"}


class BlockstoreError(StoreError):
    """The block store cannot be opened or is damaged; the message says what to do.

    A StoreError, so `swarm-node start` reports it the way it reports the envelope
    store's."""


@dataclass(frozen=True, slots=True)
class Pin:
    root: Cid
    kind: Kind
    size: int  # file bytes
    blocks: int

    def to_json(self) -> dict[str, object]:
        return {"cid": str(self.root), "kind": self.kind.value, "size": self.size,
                "blocks": self.blocks}


@dataclass(frozen=True, slots=True)
class GcResult:
    removed: int
    removed_bytes: int
    kept: int

    def to_json(self) -> dict[str, int]:
        return {"removed": self.removed, "removed_bytes": self.removed_bytes,
                "kept": self.kept}


class Blockstore:
    def __init__(self, path: Path, params: Mapping[str, int]) -> None:
        self.limits = {kind: int(params[name]) for kind, name in LIMIT_PARAMS.items()}
        # RocksDB keeps written values in a memtable until it is flushed (64 MiB, up
        # to two of them, by default): with 256 KiB blocks that memtable, not the
        # object, sets a node's memory while it adds or fetches. 32 MiB halves it and
        # adds as fast as 64 MiB here (an A/B of 100 MiB imports: medians 368 and 360
        # MB/s; 16 MiB gave 306).
        self._db = open_rocksdb(path, "block store", write_buffer_bytes=WRITE_BUFFER_BYTES,
                                error=BlockstoreError)
        self._sync = synced()
        # Blocks written by imports and fetches that have not finished: live for gc()
        # until then. A count per block, as two of them may share a block.
        self._in_flight: Counter[Cid] = Counter()
        # Blocks an unfinished import created (absent before it wrote them), by import:
        # it deletes them if it does not finish. Anyone else who writes or pins one of
        # them takes it out of here, and then it stays.
        self._created: dict[Cid, Import] = {}

    # -- blocks ---------------------------------------------------------------------

    def has(self, cid: Cid) -> bool:
        return self._db.get(b"b" + cid.raw) is not None

    def get(self, cid: Cid) -> bytes | None:
        value = self._db.get(b"b" + cid.raw)
        return bytes(value) if value is not None else None

    def put(self, cid: Cid, data: bytes) -> None:
        """Store one block; raises BlockMismatch/TooLarge if `data` is not `cid`'s block."""
        check_block(cid, data)
        self._db.put(b"b" + cid.raw, data)
        self._created.pop(cid, None)

    def put_many(self, blocks: Iterable[tuple[Cid, bytes]]) -> int:
        """Store blocks in one batch, each checked first; returns how many were given."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        count = 0
        for cid, data in blocks:
            check_block(cid, data)
            batch.put(b"b" + cid.raw, data)
            self._created.pop(cid, None)
            count += 1
        if count:
            self._db.write(batch)
        return count

    def blocks(self) -> Iterator[tuple[Cid, int]]:
        """(cid, size in bytes) of every stored block."""
        it = self._db.iter()
        it.seek(b"b")
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(b"b"):
                break
            yield Cid(key[1:]), len(it.value())
            it.next()

    # -- objects --------------------------------------------------------------------

    def add(self, chunks: Iterable[bytes], kind: Kind = Kind.EVIDENCE, cid_version: int = 0,
            *, pin: bool = True) -> Pin:
        """Import a file from `chunks`, store its blocks and (by default) pin it.

        Raises TooLarge as soon as the input passes the kind's limit; the blocks written
        until then are deleted (those that nothing else holds).
        """
        session = self.begin_import(kind, cid_version)
        try:
            for data in chunks:
                session.feed(data)
            return session.finish(pin=pin)
        finally:
            session.close()

    def begin_import(self, kind: Kind = Kind.EVIDENCE, cid_version: int = 0) -> Import:
        """An import fed piece by piece, for callers that read their input themselves
        (the control API reading an upload). Close it when done, finished or not."""
        return Import(self, kind, cid_version)

    def hold(self) -> Holding:
        """Blocks put through the returned holding are spared by gc() until it is
        closed: a fetch stores a DAG block by block and pins it only at the end."""
        return Holding(self)

    def _put_fresh(self, blocks: list[Block], owner: Import) -> None:
        if not blocks:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for block in blocks:
            cid = block.cid
            key = b"b" + cid.raw
            if cid not in owner._written:
                owner._written.add(cid)
                self._in_flight[cid] += 1
                creator = self._created.get(cid)
                if creator is not None:
                    del self._created[cid]  # two imports share it: neither deletes it
                # key_may_exist answers from memory (False: surely absent); a block it
                # is unsure of is looked up.
                elif not self._db.key_may_exist(key) or self._db.get(key) is None:
                    self._created[cid] = owner
            # Our own importer made these, so the hash is right by construction.
            batch.put(key, block.data)
        self._db.write(batch)

    def _release(self, cids: set[Cid]) -> None:
        for cid in cids:
            self._in_flight[cid] -= 1
            if self._in_flight[cid] <= 0:
                del self._in_flight[cid]

    def _settle(self, owner: Import, *, delete: bool) -> None:
        """Forget the blocks `owner` created; with `delete`, delete those nothing else
        holds (it did not finish)."""
        mine = [cid for cid in owner._written if self._created.get(cid) is owner]
        for cid in mine:
            del self._created[cid]
        doomed = [cid for cid in mine if self._in_flight[cid] <= 1] if delete else []
        if doomed:  # held by `owner` alone
            batch = rocksdict.WriteBatch(raw_mode=True)
            for cid in doomed:
                batch.delete(b"b" + cid.raw)
            self._db.write(batch)

    def read(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Iterator[bytes]:
        """The file bytes of `root`, every block checked (BlockMissing if one is absent)."""
        return read_file(root, self.get, self.limits[kind])

    def size_of(self, root: Cid) -> int | None:
        """The file size the root block declares, or None if the root is not here."""
        block = self.get(root)
        return file_size(root, block) if block is not None else None

    def missing(self, root: Cid) -> Cid | None:
        """The first block of `root`'s DAG that is not here, or None if all are.

        Raw leaves are only looked up, not read; dag-pb nodes are read for their links.
        """
        return first_missing(root, self.has, self.get)

    def put_dag(self, root: Cid, kind: Kind, get_block: Callable[[Cid], bytes | None]) -> Pin:
        """Copy the DAG under `root` from elsewhere, every block hash-checked, and pin
        it (the same as IpfsApiStore.put_dag, so either store can take a fetched DAG)."""
        with_held = self.hold()
        try:
            copy_dag(root, get_block, with_held.put)
            return self.pin(root, kind)
        finally:
            with_held.close()

    # -- pins -----------------------------------------------------------------------

    def pin(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Pin:
        """Pin `root` recursively once every block of it is here and checks out.

        Raises BlockMissing naming the first absent block, TooLarge if the object is over
        the kind's limit, BlockMismatch/UnixfsError if the stored DAG is inconsistent.
        """
        size = 0
        for piece in read_file(root, self.get, self.limits[kind]):
            size += len(piece)
        result = Pin(root, kind, size, self._count_blocks(root))
        self._write_pin(result)
        return result

    def _count_blocks(self, root: Cid) -> int:
        seen: set[Cid] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            data = self.get(cid)
            if data is None:
                raise BlockMissing(cid)
            stack.extend(block_links(cid, data))
        for cid in seen:  # pinned now: no unfinished import may delete them
            self._created.pop(cid, None)
        return len(seen)

    def _write_pin(self, pin: Pin) -> None:
        record = _PIN.pack(_KIND_CODES[pin.kind], pin.size, pin.blocks)
        self._db.put(b"p" + pin.root.raw, record, self._sync)

    def unpin(self, root: Cid) -> bool:
        """Remove the pin of `root`; False if it was not pinned. Blocks go at gc()."""
        key = b"p" + root.raw
        if self._db.get(key) is None:
            return False
        self._db.delete(key, self._sync)
        return True

    def is_pinned(self, root: Cid) -> bool:
        return self._db.get(b"p" + root.raw) is not None

    def pins(self) -> list[Pin]:
        out = []
        it = self._db.iter()
        it.seek(b"p")
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(b"p"):
                break
            kind_code, size, blocks = _PIN.unpack(bytes(it.value()))
            out.append(Pin(Cid(key[1:]), _KIND_BY_CODE[kind_code], size, blocks))
            it.next()
        return out

    def gc(self) -> GcResult:
        """Delete every block not reachable from a pin (nor written by an open import)."""
        live: set[Cid] = set(self._in_flight)
        stack = [pin.root for pin in self.pins()]
        while stack:
            cid = stack.pop()
            if cid in live:
                continue
            live.add(cid)
            data = self.get(cid)
            if data is None:
                raise BlockstoreError(f"pinned block {cid} is missing; the block store is "
                                      "damaged (unpin its root or add the object again)")
            try:
                stack.extend(block_links(cid, data))
            except UnixfsError as exc:
                raise BlockstoreError(f"pinned block {cid} does not decode ({exc}); the "
                                      "block store is damaged") from None
        removed = removed_bytes = kept = 0
        batch = rocksdict.WriteBatch(raw_mode=True)
        for cid, size in self.blocks():
            if cid in live:
                kept += 1
            else:
                batch.delete(b"b" + cid.raw)
                removed += 1
                removed_bytes += size
        if removed:
            self._db.write(batch, self._sync)
        return GcResult(removed, removed_bytes, kept)

    def close(self) -> None:
        self._db.close()


class Import:
    """One file being added to a Blockstore; see Blockstore.begin_import()."""

    def __init__(self, store: Blockstore, kind: Kind, cid_version: int) -> None:
        self._store = store
        self.kind = kind
        self.limit = store.limits[kind]
        self._importer = Importer(cid_version)
        self._written: set[Cid] = set()
        self._finished = False

    @property
    def size(self) -> int:
        return self._importer.size

    def feed(self, data: bytes) -> None:
        if self._importer.size + len(data) > self.limit:
            raise TooLarge("size", f"{self.kind.value} is more than {self.limit} bytes")
        self._store._put_fresh(self._importer.feed(data), self)

    def finish(self, *, pin: bool = True) -> Pin:
        self._store._put_fresh(self._importer.finish(), self)
        # Distinct blocks: a file with repeated chunks stores each once.
        result = Pin(self._importer.root, self.kind, self._importer.size, len(self._written))
        if pin:
            self._store._write_pin(result)
        self._store._settle(self, delete=False)
        self._finished = True
        return result

    def close(self) -> None:
        """Stop sparing this import's blocks from gc(): pinned, or garbage now. An import
        that did not finish first deletes the blocks it created that nothing else
        holds."""
        self._store._settle(self, delete=not self._finished)
        self._store._release(self._written)
        self._written = set()
        self._finished = True


class Holding:
    """Blocks on their way into a Blockstore one by one; see Blockstore.hold()."""

    def __init__(self, store: Blockstore) -> None:
        self._store = store
        self._held: set[Cid] = set()

    def put(self, cid: Cid, data: bytes) -> None:
        """Store one block (hash checked, as Blockstore.put) and hold it."""
        self._store.put(cid, data)
        if cid not in self._held:
            self._held.add(cid)
            self._store._in_flight[cid] += 1

    def close(self) -> None:
        """Stop sparing the held blocks (pinned by now, or garbage)."""
        self._store._release(self._held)
        self._held = set()


def parse_kind(text: str) -> Kind:
    try:
        return Kind(text)
    except ValueError:
        raise LocalProtocolError("kind", f"must be one of {[k.value for k in Kind]} "
                                 f"(got {text!r})") from None

