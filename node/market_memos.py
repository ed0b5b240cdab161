"""Decisions' explanation memos as evidence: pinned here, read back, fetched from peers.

Owns where a memo's bytes live once its decision is applied. A decision names its memo
by CID: one canonical DAG-CBOR block, built inside the step that made the decision, so
the same bytes on every replica (protocol/task.py). Every memo this node applies, as a
replica or a certified read replica of the bucket, is stored and pinned in the node's
evidence store (node/evidence_store.py) as an evidence object of one block
(protocol/unixfs.py): kept across restarts, spared by gc, served to peers by bitswap.

Theory of operation:

* `keep` is a ledger listener and runs inside the ledger's apply callbacks, so it only
  queues the memo (at most PENDING_MAX; past that the oldest is dropped with a warning,
  and stays fetchable from peers) and wakes the writer. It never touches the store.
* `run` is the writer: it takes the queue in order, skips a memo already pinned (a
  restart replays the log), and stores and pins any other as `Kind.EVIDENCE`
  (`put_dag`; the pin record is one synced write). It calls the embedded store on the
  event loop and a daemon in a worker thread. A memo that fails is logged and left to
  the peers; the writer goes on.
* `read` answers a memo's bytes: from the queue (applied, not written yet), else from
  the store, else, when the node exchanges blocks with peers, fetched by bitswap
  (within the evidence limit and FETCH_TIMEOUT_S), pinned, and copied into the daemon
  when evidence lives there. Whatever it answers hashes to the CID. When every source
  fails it raises `memo_unknown`, saying why.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError, ProtocolError
from swarm.protocol.task import Step

from .bitswap import Bitswap
from .blockstore import Kind
from .evidence_store import EvidenceStore, is_blocking

log = logging.getLogger("swarm.market")

# Memos applied and not written yet. A restart that replays a long log queues every
# decision's memo again (each is skipped if pinned), so this bounds that too.
PENDING_MAX = 4096
# How long `read` waits for peers to send a memo this node does not hold.
FETCH_TIMEOUT_S = 10.0
T = TypeVar("T")


class MarketMemos:
    """The memos of applied decisions, in `store`; `bitswap`, once the node's network
    runs, fetches those that are not here."""

    def __init__(self, store: EvidenceStore) -> None:
        self.store = store
        self.bitswap: Bitswap | None = None
        self.pending: OrderedDict[Cid, bytes] = OrderedDict()
        self._wake = trio.Event()

    # -- in: the ledger listener and the writer --

    def keep(self, bucket: int, steps: Sequence[Step]) -> None:
        """Queue the memos of an applied entry's steps for the writer."""
        for step in steps:
            for cid, data in step.memos:
                self.pending[cid] = data
                self.pending.move_to_end(cid)
        dropped = 0
        while len(self.pending) > PENDING_MAX:
            self.pending.popitem(last=False)
            dropped += 1
        if dropped:
            log.warning("memos not stored: %d dropped from a full queue (kept by peers)",
                        dropped)
        if self.pending:
            self._wake.set()

    async def run(self, bitswap: Bitswap | None = None, *,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued memos until cancelled; fetch missing ones through `bitswap`."""
        self.bitswap = bitswap
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.write_pending()

    async def write_pending(self) -> int:
        """Store and pin every queued memo (oldest first); how many it took."""
        taken = 0
        while self.pending:
            cid, data = next(iter(self.pending.items()))
            try:
                await self._call(self._store, cid, data)
            except Exception as exc:  # noqa: BLE001 - a memo not stored here is still with peers
                log.warning("memo not stored memo=%s error=%s", cid, exc)
            # Out of the queue only now, so `read` finds it somewhere all along.
            self.pending.pop(cid, None)
            taken += 1
            await trio.lowlevel.checkpoint()
        return taken

    def _store(self, cid: Cid, data: bytes) -> None:
        if self.store.is_pinned(cid):
            return
        # Hash-checked on the way in; a one-block object, its CBOR links not followed.
        self.store.put_dag(cid, Kind.EVIDENCE, {cid: data}.get)

    # -- out --

    async def read(self, cid: Cid) -> bytes:
        """The memo's bytes: queued, stored, or fetched from peers and pinned."""
        data = self.pending.get(cid)
        if data is not None:
            return data
        try:
            data = await self._call(self.store.get, cid)
        except Exception as exc:  # noqa: BLE001 - the store failing is one more reason to ask peers
            log.warning("memo not read from the evidence store memo=%s error=%s", cid, exc)
            data = None
        if data is not None and cid.matches(data):
            return data
        return await self._fetch(cid)

    async def _fetch(self, cid: Cid) -> bytes:
        bitswap = self.bitswap
        if bitswap is None:
            raise _unknown(cid, "it is not in this node's evidence store, and this node "
                                "fetches from no peers")
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                await bitswap.fetch(cid, Kind.EVIDENCE)
        except trio.TooSlowError:
            raise _unknown(cid, f"it is not in this node's evidence store, and no peer "
                                f"sent it within {FETCH_TIMEOUT_S:g} s") from None
        except ProtocolError as exc:
            raise _unknown(cid, f"it is not in this node's evidence store, and fetching "
                                f"it from peers failed: {exc}") from None
        embedded = bitswap.blockstore
        data = embedded.get(cid)
        if data is None or not cid.matches(data):
            raise _unknown(cid, "fetched from peers, it is not in the block store")
        if self.store is not embedded:
            # Evidence lives in the daemon: hand the memo over, as a fetch of evidence does.
            try:
                await self._call(self.store.put_dag, cid, Kind.EVIDENCE, embedded.get)
                embedded.unpin(cid)
            except Exception as exc:  # noqa: BLE001 - it stays pinned in the block store
                log.warning("fetched memo not copied to the evidence store memo=%s "
                            "error=%s", cid, exc)
        return data

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the event loop for the embedded store, in a worker thread for a
        daemon (whose every call is HTTP)."""
        if is_blocking(self.store):
            return await trio.to_thread.run_sync(functools.partial(fn, *args))
        return fn(*args)


def _unknown(cid: Cid, why: str) -> LocalProtocolError:
    return LocalProtocolError("memo", f"the memo {cid} is unknown here: {why}",
                              code="memo_unknown")
