"""Chain sync: how a node that is not a validator follows every bucket's certified chain.

Owns one request/answer protocol (`/can-swarm/<swarm>/chain-sync/1.0.0`). Validators
receive certified chain entries inside Raft frames (node/ledger_raft.py); a plain node
has no Raft stream, so it asks: every `SYNC_INTERVAL_S` it sends a connected validator
(node/relay.py picks one, and another when one fails) the last chain index it applied
of every bucket, and the validator answers with the certified entries that follow,
from its store (its replicated buckets' and its read replica's alike), at most
`ENTRIES_MAX` of them and `ANSWER_BYTES_MAX` bytes. The plain node checks each
certificate against the genesis placement and applies entries in chain order
(`LedgerRaft.offer`), exactly as a validator's read replica does, so it shows the same
balances, ledger root and task states, a round trip or so behind.

A validator serves each peer a bounded number of requests at once (`relay.Server`);
a request is bounded by the bucket count, an answer by the limits above.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol

from swarm.protocol import cbor
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.raft import NONE
from swarm.protocol.raftwire import CertifiedEntry
from swarm.protocol.strict import array_max, bytes_max, decode_document, fields, int_in

from . import relay
from .ledger_raft import LedgerRaft

log = logging.getLogger("swarm.chain_sync")

SYNC_INTERVAL_S = 1.0
ASK_TIMEOUT_S = 10.0
ENTRIES_MAX = 256  # certified entries in one answer
ANSWER_BYTES_MAX = 2 * 1024 * 1024
ENTRY_BYTES_MAX = 256 * 1024  # one certified entry: its chain entry and signatures
SIGS_MAX = 64


def encode_request(after: list[tuple[int, int]]) -> bytes:
    return cbor.encode([[b, i] for b, i in after])


def decode_request(data: bytes, bucket_count: int) -> list[tuple[int, int]]:
    """(bucket, last index applied) pairs; RemoteProtocolError if malformed."""
    v = decode_document(data, cbor.Limits(size_bytes_max=request_bytes_max(bucket_count)),
                        "sync")
    pairs = []
    for i, item in enumerate(array_max(v, "sync", bucket_count)):
        b, last = fields(item, f"sync[{i}]", 2, "a bucket's position")
        pairs.append((int_in(b, f"sync[{i}].bucket", 0, bucket_count),
                      int_in(last, f"sync[{i}].last")))
    return pairs


def request_bytes_max(bucket_count: int) -> int:
    return 16 + 16 * bucket_count


def encode_answer(certs: list[CertifiedEntry]) -> bytes:
    return cbor.encode([[c.bucket, c.index, c.term, c.entry, [list(s) for s in c.sigs]]
                        for c in certs])


def decode_answer(data: bytes, bucket_count: int) -> list[CertifiedEntry]:
    """The certified entries of an answer, shape checked (certificates are checked when
    offered); RemoteProtocolError if malformed."""
    v = decode_document(data, cbor.Limits(size_bytes_max=ANSWER_BYTES_MAX), "answer")
    certs = []
    for i, item in enumerate(array_max(v, "answer", ENTRIES_MAX)):
        where = f"answer[{i}]"
        b, index, term, entry, sigs = fields(item, where, 5, "a certified entry")
        pairs = []
        for j, pair in enumerate(array_max(sigs, f"{where}.sigs", SIGS_MAX)):
            signer, sig = fields(pair, f"{where}.sigs[{j}]", 2, "a signature")
            pairs.append((bytes_max(signer, f"{where}.sigs[{j}].signer", 32),
                          bytes_max(sig, f"{where}.sigs[{j}].sig", 64)))
        certs.append(CertifiedEntry(int_in(b, f"{where}.bucket", 0, bucket_count),
                                    int_in(index, f"{where}.index", 1),
                                    int_in(term, f"{where}.term", 1),
                                    bytes_max(entry, f"{where}.entry", ENTRY_BYTES_MAX),
                                    tuple(pairs)))
    return certs


class ChainSync:
    """Serves chain sync on a validator; asks for it on a plain node."""

    def __init__(self, net: LedgerRaft, genesis: Genesis) -> None:
        self.net = net
        self.bucket_count = net.bucket_count
        self.protocol = TProtocol(f"/can-swarm/{genesis.short_id}/chain-sync/1.0.0")
        self.server = relay.Server(request_bytes_max(self.bucket_count), self._serve)
        self.stats: dict[str, int] = {"served": 0, "asked": 0, "received": 0,
                                      "applied": 0, "failed": 0}

    async def run(self, host: IHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        validator = self.net.raft.id != NONE
        if validator:
            host.set_stream_handler(self.protocol, self.server)
        task_status.started()
        if validator:
            return
        while True:
            await trio.sleep(SYNC_INTERVAL_S)
            await self.pull(host)

    async def pull(self, host: IHost) -> int:
        """Ask one validator for what follows our last entry of every bucket; returns
        how many entries were new here."""
        after = [(b, part.last) for b, part in sorted(self.net.read.items())]
        self.stats["asked"] += 1
        try:
            certs = await relay.ask_validators(
                host, self.net.placement, self.protocol, lambda _ms: encode_request(after),
                ANSWER_BYTES_MAX, lambda data: decode_answer(data, self.bucket_count),
                ASK_TIMEOUT_S, int(ASK_TIMEOUT_S * 1000))
        except (relay.NoValidator, TimeoutError) as exc:
            self.stats["failed"] += 1
            log.debug("chain sync: no answer (%r)", exc)
            return 0
        self.stats["received"] += len(certs)
        new = sum(1 for cert in certs if self.net.offer(cert))
        self.stats["applied"] += new
        return new

    async def _serve(self, data: bytes) -> bytes:
        try:
            wanted = decode_request(data, self.bucket_count)
        except RemoteProtocolError:
            return encode_answer([])
        self.stats["served"] += 1
        return encode_answer(self._collect(wanted))

    def _collect(self, wanted: list[tuple[int, int]]) -> list[CertifiedEntry]:
        """What follows each asked position, within the answer's limits (half the byte
        limit is counted, so the encoding's overhead always fits)."""
        certs: list[CertifiedEntry] = []
        size = 0
        for bucket, after in wanted:
            for cert in self.net.stored_after(bucket, after):
                size += len(cert.entry) + 100 * len(cert.sigs)
                if len(certs) == ENTRIES_MAX or size > ANSWER_BYTES_MAX // 2:
                    return certs
                certs.append(cert)
        return certs
