"""Which bucket (Raft group) owns a key: the one function the ledger and Raft share.

`bucket_of(key, n) = int(sha256(key)[:8], big-endian) mod n`. A key is an account id
(32 bytes, an Ed25519 public key) or any other byte string a bucket orders (a NEED's
id). SHA-256 spreads keys evenly and cannot be steered cheaply, so no one picks a
bucket for their account; the first 8 bytes are plenty for any `bucket_count` up to
65536 (the modulo bias is below 2^-47). `bucket_count` is the genesis parameter of
the same name; changing it moves every account, so it is fixed for a swarm's life.
"""

from __future__ import annotations

import hashlib

from .errors import LocalProtocolError

BUCKET_COUNT_MAX = 65536


def bucket_of(key: bytes, bucket_count: int) -> int:
    """The bucket that owns `key`: 0 <= result < bucket_count."""
    if not 1 <= bucket_count <= BUCKET_COUNT_MAX:
        raise LocalProtocolError("bucket_count", f"must be 1..{BUCKET_COUNT_MAX} "
                                                 f"(got {bucket_count})")
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % bucket_count
