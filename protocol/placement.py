"""Which validators replicate which bucket, and the Raft node ids they go by.

Owns the placement rule: bucket b lives on the R validators with the highest
`sha256("can-swarm/placement/v1" || b || account)` (rendezvous hashing). Every node
computes the same answer from the genesis validator set alone, buckets spread evenly,
and when a validator joins or leaves only the buckets it wins or loses move (R/N of them),
which keeps re-homing by one-at-a-time membership changes small.

A validator's Raft node id is its position in the genesis validator list plus one (Raft
reserves 0 for "nobody"); ids are stable for the life of a validator set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .errors import LocalProtocolError
from .genesis import Genesis

_DOMAIN = b"can-swarm/placement/v1\0"


@dataclass(frozen=True)
class Placement:
    """The validator set as Raft sees it: accounts, node ids and bucket replicas."""

    accounts: tuple[bytes, ...]  # node id i+1 is accounts[i]
    replicas_per_bucket: int
    bucket_count: int

    def __post_init__(self) -> None:
        if not 1 <= self.replicas_per_bucket <= len(self.accounts):
            raise LocalProtocolError("params.replicas",
                                     f"must be 1..{len(self.accounts)} (the validators)")
        if len(set(self.accounts)) != len(self.accounts):
            raise LocalProtocolError("validators", "duplicate account")

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Placement:
        accounts = tuple(v["account"] for v in genesis.value["validators"])
        return cls(accounts, genesis.params["replicas"], genesis.params["bucket_count"])

    @cached_property
    def _ids(self) -> dict[bytes, int]:
        return {a: i + 1 for i, a in enumerate(self.accounts)}

    def node_id(self, account: bytes) -> int | None:
        return self._ids.get(account)

    def account(self, node_id: int) -> bytes:
        if not 1 <= node_id <= len(self.accounts):
            raise LocalProtocolError("node_id", f"no validator has Raft id {node_id}")
        return self.accounts[node_id - 1]

    @cached_property
    def _replicas(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self._place(b) for b in range(self.bucket_count))

    def _place(self, bucket: int) -> tuple[int, ...]:
        prefix = _DOMAIN + bucket.to_bytes(4, "big")
        scored = sorted(((hashlib.sha256(prefix + a).digest(), i + 1)
                         for i, a in enumerate(self.accounts)), reverse=True)
        return tuple(sorted(node for _, node in scored[:self.replicas_per_bucket]))

    def replicas(self, bucket: int) -> tuple[int, ...]:
        """The node ids that replicate `bucket` (sorted)."""
        if not 0 <= bucket < self.bucket_count:
            raise LocalProtocolError("bucket", f"must be 0..{self.bucket_count - 1}")
        return self._replicas[bucket]

    def buckets_of(self, node_id: int) -> list[int]:
        return [b for b, reps in enumerate(self._replicas) if node_id in reps]

    def quorum(self, bucket: int) -> int:
        return len(self.replicas(bucket)) // 2 + 1


def spread(placement: Placement) -> Sequence[int]:
    """How many buckets each node id replicates (index 0 is node 1)."""
    counts = [0] * len(placement.accounts)
    for b in range(placement.bucket_count):
        for n in placement.replicas(b):
            counts[n - 1] += 1
    return counts
