"""Set reconciliation of envelope ids: how two replicas find what one lacks.

Owns the summary a node offers a peer and the rule for comparing two summaries. Ids
are spread over `SYNC_BUCKETS` buckets by a byte of their digest; a bucket's digest is
SHA-256 over its sorted ids, so equal digests mean equal sets (an XOR or sum of ids
would be cheaper to update but an attacker can make different sets collide by solving a
linear system; sorting and hashing a bucket cannot be gamed that way). Two nodes
exchange the 256 digests (8 KiB), then the id lists of the buckets that differ, then
the envelopes one side lacks. Digests are computed lazily for buckets that changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .cid import Cid

SYNC_BUCKETS = 256
EMPTY_BUCKET = hashlib.sha256(b"").digest()


def bucket_of(envelope_id: Cid) -> int:
    # The last digest byte: uniform for sha2-256 CIDs, and cheap.
    return envelope_id.raw[-1]


class IdSet:
    """Every envelope id a replica holds, with per-bucket digests."""

    def __init__(self, ids: Iterable[Cid] = ()) -> None:
        self._buckets: list[set[bytes]] = [set() for _ in range(SYNC_BUCKETS)]
        self._digests: list[bytes | None] = [EMPTY_BUCKET] * SYNC_BUCKETS
        self._count = 0
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, envelope_id: Cid) -> bool:
        return envelope_id.raw in self._buckets[bucket_of(envelope_id)]

    def add(self, envelope_id: Cid) -> bool:
        b = bucket_of(envelope_id)
        bucket = self._buckets[b]
        if envelope_id.raw in bucket:
            return False
        bucket.add(envelope_id.raw)
        self._digests[b] = None
        self._count += 1
        return True

    def discard(self, envelope_id: Cid) -> bool:
        """Remove an id if present; returns whether it was."""
        b = bucket_of(envelope_id)
        bucket = self._buckets[b]
        if envelope_id.raw not in bucket:
            return False
        bucket.discard(envelope_id.raw)
        self._digests[b] = None
        self._count -= 1
        return True

    def digest(self, b: int) -> bytes:
        d = self._digests[b]
        if d is None:
            h = hashlib.sha256()
            for raw in sorted(self._buckets[b]):
                h.update(raw)
            d = h.digest()
            self._digests[b] = d
        return d

    def summary(self) -> list[bytes]:
        return [self.digest(b) for b in range(SYNC_BUCKETS)]

    def root(self) -> bytes:
        """One digest for the whole set: equal roots, equal sets."""
        return hashlib.sha256(b"".join(self.summary())).digest()

    def ids_in(self, b: int) -> list[Cid]:
        return [Cid(raw) for raw in sorted(self._buckets[b])]

    def missing_from(self, theirs: Iterable[Cid]) -> list[Cid]:
        """Ids in `theirs` that this set lacks."""
        return [c for c in theirs if c not in self]


def differing_buckets(mine: Sequence[bytes], theirs: Sequence[bytes]) -> list[int]:
    if len(mine) != SYNC_BUCKETS or len(theirs) != SYNC_BUCKETS:
        raise ValueError("a sync summary has exactly 256 digests")
    return [b for b in range(SYNC_BUCKETS) if mine[b] != theirs[b]]
