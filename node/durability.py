"""Group commit of the store's write-ahead log: one fsync for every write made meanwhile.

Owns when accepted envelopes reach the disk, as opposed to the operating system. Two
levels of durability, measured and chosen in docs/NETWORK.md ("Persistence"):

* Before an envelope is forwarded it is written through to the operating system
  (`Store.append(..., sync=False)`: RocksDB hands the WAL record to the kernel with
  write(2) before it returns). A process killed at any moment, `kill -9` included, loses
  nothing that was written; only losing the machine (power, kernel) can.
* A background task fsyncs the WAL in a worker thread, at most `SYNC_DELAY_S` after a
  write, or at once when someone waits for it: whoever acknowledges to a client (the
  control API's publish) waits for the fsync that covers its write (`wait_synced`).
  Writes made meanwhile share that fsync. The delay exists because each fsync costs a
  thread hand-off, which on a loaded machine costs more CPU than the fsync (measured:
  docs/NETWORK.md); what a power cut can take is at most that window of relayed
  envelopes, which the peers they were forwarded to hold and catch-up brings back.

A failed fsync is a storage failure: the caller's `on_error` stops the node, and every
waiter gets the error.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .store import Store

# How long a write may wait for its fsync when nobody is waiting for it.
SYNC_DELAY_S = 0.05


class WalSyncer:
    """Counts writes; fsyncs the WAL until every counted write is on disk."""

    def __init__(self, store: Store, on_error: Callable[[BaseException], None],
                 delay_s: float = SYNC_DELAY_S) -> None:
        self._store = store
        self._on_error = on_error
        self._delay_s = delay_s
        self._written = 0
        self._synced = 0
        self._error: BaseException | None = None
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._progress = trio.Event()
        self.syncs = 0  # fsyncs done; with `written`, how well writes were grouped

    @property
    def written(self) -> int:
        return self._written

    @property
    def synced(self) -> int:
        return self._synced

    def note_write(self) -> int:
        """Call after each unsynced write; returns the ticket to pass to `wait_synced`."""
        self._written += 1
        self._wake.set()
        return self._written

    async def wait_synced(self, ticket: int | None = None) -> None:
        """Return once the write numbered `ticket` (default: every write so far) is on
        disk; raises the storage error if the fsync failed."""
        target = self._written if ticket is None else ticket
        if self._synced < target:
            self._urgent.set()
        while self._synced < target:
            if self._error is not None:
                raise self._error
            await self._progress.wait()

    async def run(self) -> None:
        """The committer task; runs in the node's nursery until cancelled."""
        while True:
            await self._wake.wait()
            with trio.move_on_after(self._delay_s):
                await self._urgent.wait()
            self._wake = trio.Event()
            self._urgent = trio.Event()
            target = self._written
            try:
                # Not cancellable mid-call: the store is closed only after this returns.
                await trio.to_thread.run_sync(self._store.sync)
            except Exception as exc:  # noqa: BLE001 - any storage failure stops the node
                self._error = exc
                self._progress.set()
                self._on_error(exc)
                return
            self.syncs += 1
            self._synced = target
            progress, self._progress = self._progress, trio.Event()
            progress.set()
