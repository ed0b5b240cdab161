"""Commit certificates: proof, checkable by anyone, that a bucket committed an entry.

Owns what a replica signs when it has applied a committed entry, and the rule for
accepting a certificate: at least a quorum of the bucket's replicas (by the genesis
placement) have signed `(swarm, bucket, index, term, entry_hash)`, each signer a distinct
replica, each signature valid. A node that is not a replica of a bucket learns its
decisions only through certificates, so a single lying peer cannot make it apply
anything; a quorum of a bucket's replicas would have to sign two different entries at
one index, which Raft's safety rules out for honest replicas.

For a DECIDE, the entry is the canonical encoding of the decide command stamped with
the leader's time (`decide.encode_command`), so a verifier rebuilds the entry from the
DECIDE envelope's payload and the certificate's `ts_ms` and checks its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .buckets import bucket_of
from .decide import TryDecide, encode_command
from .envelope import Identity, verify_signature
from .errors import RemoteProtocolError
from .placement import Placement
from .raftwire import Announcement

CERT_DOMAIN = b"can-swarm/raft-cert/v1\0"


class CertificateError(RemoteProtocolError):
    code = "bad_certificate"


def entry_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def signing_message(swarm_id: bytes, bucket: int, index: int, term: int,
                    digest: bytes) -> bytes:
    return (CERT_DOMAIN + swarm_id + bucket.to_bytes(4, "big") + index.to_bytes(8, "big")
            + term.to_bytes(8, "big") + digest)


@dataclass(frozen=True, slots=True)
class CertSig:
    signer: bytes  # the replica's account
    sig: bytes


def sign(identity: Identity, swarm_id: bytes, bucket: int, index: int, term: int,
         digest: bytes) -> CertSig:
    return CertSig(identity.public_key,
                   identity.sign(signing_message(swarm_id, bucket, index, term, digest)))


def valid_sig(swarm_id: bytes, bucket: int, index: int, term: int, digest: bytes,
              s: CertSig) -> bool:
    return verify_signature(s.signer, signing_message(swarm_id, bucket, index, term, digest),
                            s.sig)


def check(cert: Mapping[str, Any], swarm_id: bytes, placement: Placement,
          expected_bucket: int, expected_digest: bytes, path: str = "payload.cert") -> None:
    """Raise CertificateError unless `cert` (the DECIDE payload's `cert` map, found at
    `path`) proves that `expected_bucket` committed an entry hashing to
    `expected_digest`."""
    bucket, index, term = cert["bucket"], cert["index"], cert["term"]
    if bucket != expected_bucket:
        raise CertificateError(f"{path}.bucket",
                               f"this NEED belongs to bucket {expected_bucket}, not {bucket}")
    if cert["entry_hash"] != expected_digest:
        raise CertificateError(f"{path}.entry_hash",
                               "does not match the decision this envelope states")
    replicas = {placement.account(n) for n in placement.replicas(bucket)}
    signers: set[bytes] = set()
    for i, raw in enumerate(cert["sigs"]):
        s = CertSig(raw["signer"], raw["sig"])
        if s.signer not in replicas:
            raise CertificateError(f"{path}.sigs[{i}].signer",
                                   f"is not a replica of bucket {bucket}")
        if s.signer in signers:
            raise CertificateError(f"{path}.sigs[{i}].signer", "signs twice")
        if not valid_sig(swarm_id, bucket, index, term, expected_digest, s):
            raise CertificateError(f"{path}.sigs[{i}].sig", "does not verify")
        signers.add(s.signer)
    if len(signers) < placement.quorum(bucket):
        raise CertificateError(f"{path}.sigs",
                               f"{len(signers)} replica signatures, a quorum is "
                               f"{placement.quorum(bucket)}")


def announced(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The decisions a DECIDE payload states: its own, then each one in `also`."""
    return [payload, *payload.get("also", ())]


def check_announcement(payload: Mapping[str, Any], swarm_id: bytes,
                       placement: Placement) -> None:
    """Raise CertificateError unless every decision a (schema-checked) DECIDE payload
    states carries a certificate by a quorum of its NEED's bucket's replicas over
    exactly that decision, and no NEED is stated twice."""
    for _ in checking_announcement(payload, swarm_id, placement):
        pass


def checking_announcement(payload: Mapping[str, Any], swarm_id: bytes,
                          placement: Placement) -> Iterator[int]:
    """`check_announcement` one decision at a time: yields each decision's position once
    its certificate is checked, and raises CertificateError at the first bad one. A
    full DECIDE is some fifty signature checks, milliseconds of CPU; a node that drives
    this from its event loop can let other work run between decisions."""
    seen: set[bytes] = set()
    for i, d in enumerate(announced(payload)):
        path = "payload" if i == 0 else f"payload.also[{i - 1}]"
        cert = d.get("cert")
        if cert is None:
            raise CertificateError(f"{path}.cert", "a DECIDE must be certified")
        need = d["need_id"].raw
        if need in seen:
            raise CertificateError(f"{path}.need_id", "this NEED is stated twice")
        seen.add(need)
        try:
            TryDecide(need, d["proposal_id"].encode(), d["k_plan"], d["epoch"])
        except RemoteProtocolError as exc:
            raise CertificateError(f"{path}.{exc.field.rsplit('.', 1)[-1]}", exc.reason) \
                from None
        check(cert, swarm_id, placement, bucket_of(need, placement.bucket_count),
              decide_digest(d), f"{path}.cert")
        yield i


def check_relayed(a: Announcement, swarm_id: bytes, placement: Placement) -> dict[str, Any]:
    """The `cert` map for a certified decision another validator relayed to the
    announcer (`raftwire.Announcement`), once it checks like one stated in a DECIDE;
    raises CertificateError (or RemoteProtocolError for a malformed decision)."""
    cmd = TryDecide(a.need_id, a.proposal_id, a.k_plan, a.epoch)
    expected = bucket_of(a.need_id, placement.bucket_count)
    digest = entry_hash(encode_command(cmd, a.ts_ms))
    cert = cert_payload(a.bucket, a.index, a.term, a.ts_ms, digest,
                        [CertSig(signer, sig) for signer, sig in a.sigs])
    check(cert, swarm_id, placement, expected, digest, "announcement.cert")
    return cert


def decide_digest(payload: Mapping[str, Any]) -> bytes:
    """The entry hash a DECIDE payload (with its cert's ts_ms) stands for."""
    cmd = TryDecide(payload["need_id"].raw, payload["proposal_id"].encode(),
                    payload["k_plan"], payload["epoch"])
    return entry_hash(encode_command(cmd, payload["cert"]["ts_ms"]))


def cert_payload(bucket: int, index: int, term: int, ts_ms: int, digest: bytes,
                 sigs: list[CertSig]) -> dict[str, Any]:
    """The `cert` map of a DECIDE payload."""
    return {"bucket": bucket, "index": index, "term": term, "ts_ms": ts_ms,
            "entry_hash": digest,
            "sigs": [{"signer": s.signer, "sig": s.sig}
                     for s in sorted(sigs, key=lambda s: s.signer)]}
