"""Where a node keeps its evidence: the embedded block store, or the user's IPFS daemon.

Owns the choice and the interface both stores offer the control API and bitswap. Without
`ipfs_api` in the node's config (`swarm-node init|start --ipfs-api MULTIADDR`), evidence
lives in the embedded RocksDB block store (node/blockstore.py). With it, evidence is
added, pinned and read in that daemon through ipfshttpclient (node/ipfs_api.py); the
embedded store then only holds what bitswap fetches from swarm peers until it is copied
into the daemon, and bitswap serves peers from the daemon too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from swarm.protocol.cid import Cid

from .blockstore import Blockstore, GcResult, Kind, Pin


class ImportSession(Protocol):
    @property
    def size(self) -> int: ...
    def feed(self, data: bytes) -> None: ...
    def finish(self, *, pin: bool = True) -> Pin: ...
    def close(self) -> None: ...


class EvidenceStore(Protocol):
    """What Blockstore and IpfsApiStore both offer. `blocking` stores (a daemon over
    HTTP) must be called from a worker thread, not the event loop."""

    limits: dict[Kind, int]

    def get(self, cid: Cid) -> bytes | None: ...
    def has(self, cid: Cid) -> bool: ...
    def begin_import(self, kind: Kind = Kind.EVIDENCE,
                     cid_version: int = 0) -> ImportSession: ...
    def read(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Iterator[bytes]: ...
    def size_of(self, root: Cid) -> int | None: ...
    def missing(self, root: Cid) -> Cid | None: ...
    def pin(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Pin: ...
    def put_dag(self, root: Cid, kind: Kind,
                get_block: Callable[[Cid], bytes | None]) -> Pin: ...
    def unpin(self, root: Cid) -> bool: ...
    def is_pinned(self, root: Cid) -> bool: ...
    def pins(self) -> list[Pin]: ...
    def gc(self) -> GcResult: ...


def is_blocking(store: EvidenceStore) -> bool:
    return bool(getattr(store, "blocking", False))


def open_evidence_store(home: Path, ipfs_api: str | None, params: Mapping[str, int],
                        blockstore: Blockstore) -> EvidenceStore:
    """The embedded store, or a connection to the daemon at `ipfs_api` (checked now, so
    a node pointed at a daemon that is not there does not start). On failure the
    embedded store is closed, so the caller has nothing left open."""
    if not ipfs_api:
        return blockstore
    from .ipfs_api import IpfsApiStore  # ipfshttpclient is loaded only when used

    try:
        return IpfsApiStore(ipfs_api, params, home)
    except BaseException:
        blockstore.close()
        raise
