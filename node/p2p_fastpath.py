"""Per-message work that py-libp2p 0.8.1 repeats needlessly, removed without changing
what goes over the wire or what is checked.

Owns three patches, applied once (`apply()`, from node/p2p.py) before any host starts.
Each was found by profiling a node under gossip load (docs/NETWORK.md, "Where the time
goes"):

* Yamux credit on every read. py-libp2p sends a WINDOW_UPDATE frame after every read of
  every stream (its "partial slack" rule fires whenever any credit is owed), and pubsub
  reads each message's varint length prefix a byte at a time, so each gossip message
  cost the receiver several extra encrypted frames back to the sender, and the sender as
  many to decrypt. We use go-yamux's rule (`sendWindowUpdate`): credit goes back once at
  least half the receive window has been consumed, in one frame, with py-libp2p's own
  window auto-tuning applied at that moment. The window and the frames are the standard
  ones, so any yamux peer interoperates.
* The signed peer record attached to every outgoing pubsub RPC. py-libp2p rebuilds the
  host's address list from its sockets (multiaddr parsing) for every RPC to decide
  whether its cached record is still current. We keep the record it returns for
  `RECORD_REUSE_S` seconds; the record bytes on the wire are the same.
* The same record received on every incoming RPC. py-libp2p verifies its signature and
  rewrites the peer's addresses each time. A record byte-identical to the one this peer
  sent last, accepted less than `RECORD_REUSE_S` seconds ago, cannot verify differently,
  so it is accepted without doing that again; a different record, or an old acceptance,
  goes through py-libp2p's full check (which also refreshes the address TTL).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from libp2p.abc import IHost
from libp2p.peer import peerstore as peerstore_module
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub as gossipsub_module
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub import utils as pubsub_utils
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.stream_muxer.yamux.yamux import YamuxStream

RECORD_REUSE_S = 30.0
RECEIVED_RECORDS_MAX = 4096

_issue_record = peerstore_module.env_to_send_in_RPC
_consume_record = pubsub_utils.maybe_consume_signed_record

# host -> (record bytes, monotonic time issued)
_outgoing: weakref.WeakKeyDictionary[Any, tuple[bytes, float]] = weakref.WeakKeyDictionary()
# host -> {peer id -> (record bytes, monotonic time accepted)}
_incoming: weakref.WeakKeyDictionary[Any, dict[ID, tuple[bytes, float]]] = (
    weakref.WeakKeyDictionary())


def env_to_send_in_rpc(host: IHost) -> tuple[bytes, bool]:
    """py-libp2p's `env_to_send_in_RPC`, asked at most once per `RECORD_REUSE_S`."""
    now = time.monotonic()
    cached = _outgoing.get(host)
    if cached is not None and now - cached[1] < RECORD_REUSE_S:
        return cached[0], False
    record, fresh = _issue_record(host)
    _outgoing[host] = (record, now)
    return record, fresh


def maybe_consume_signed_record(msg: RPC, host: IHost, peer_id: ID) -> bool:
    """py-libp2p's check of an RPC's sender record, skipped for a repeat it accepted."""
    if not msg.HasField("senderRecord"):
        return True
    now = time.monotonic()
    seen = _incoming.setdefault(host, {})
    last = seen.get(peer_id)
    if last is not None and last[0] == msg.senderRecord and now - last[1] < RECORD_REUSE_S:
        return True
    ok = _consume_record(msg, host, peer_id)
    if ok:
        if len(seen) >= RECEIVED_RECORDS_MAX:
            seen.clear()
        seen[peer_id] = (bytes(msg.senderRecord), now)
    return ok


async def credit_in_batches(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """`YamuxStream._auto_tune_and_send_window_update` with go-yamux's threshold."""
    increment = 0
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        owed = self.target_recv_window - (self.recv_window + buffered)
        # Half the target window, as go-yamux (py-libp2p's _grow_threshold() reads two
        # environment variables on every call to say the same).
        if owed > 0 and owed >= self.target_recv_window // 2:
            increment = self._grow_to_delta(buffered)
            increment += self._apply_autotune_epoch(buffered)
    if increment > 0:
        # Outside the lock, as py-libp2p requires: inbound WINDOW_UPDATEs take it too.
        await self.send_window_update(increment, skip_lock=True)


def apply() -> None:
    YamuxStream._auto_tune_and_send_window_update = (  # type: ignore[method-assign]
        credit_in_batches)
    # Both modules imported the functions by name, so each binding is replaced.
    for module in (gossipsub_module, pubsub_module):
        module.env_to_send_in_RPC = env_to_send_in_rpc  # type: ignore[attr-defined]
        module.maybe_consume_signed_record = (  # type: ignore[attr-defined]
            maybe_consume_signed_record)
