"""The Raft log: entries, snapshots, the storage contract, and the unstable tail.

Owns what a Raft replica knows about its log and how that knowledge is split between
what the shell has persisted (`Storage`) and what the core has appended but the shell
has not yet written (`Unstable`). Mirrors etcd-io/raft's `log.go`, `log_unstable.go` and
`storage.go`: the core reads persisted entries only through the narrow `Storage`
interface, and the shell learns what to write from `Ready` (see `raft.py`).

Indexes start at 1. Every storage keeps a "dummy" position at the index of its last
snapshot (0 for a fresh log) whose term is the snapshot's term, so `term(first - 1)` is
always answerable; asking for anything older raises `Compacted`.

Nothing here does I/O: `MemoryStorage` is the storage of the simulation and the tests;
the node implements the same interface over RocksDB.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import LocalProtocolError


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF = 1  # data is an encoded ConfChange (see raft.py)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash before any message that depends on it is sent."""

    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at `index`, and the voters in force there."""

    index: int = 0
    term: int = 0
    voters: tuple[int, ...] = ()
    data: bytes = b""


class Compacted(LocalProtocolError):
    code = "raft_compacted"

    def __init__(self, index: int) -> None:
        super().__init__("raft.log", f"index {index} is compacted into a snapshot")


class Unavailable(LocalProtocolError):
    code = "raft_unavailable"

    def __init__(self, index: int) -> None:
        super().__init__("raft.log", f"index {index} is not in the log yet")


class LogInvariant(AssertionError):
    """A bug in the caller or the core: the log was asked to do something impossible."""


class Storage(Protocol):
    """The persisted part of a Raft log. Returned sequences belong to the caller."""

    def initial_state(self) -> tuple[HardState, tuple[int, ...]]:
        """The hard state and the voters as of the last snapshot (or bootstrap)."""
        ...

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        """Entries [lo, hi), at least one if any, cut at `max_size` bytes."""
        ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_size: int) -> list[Entry]:
    """Cut `entries` so their total size is at most `max_size`, keeping at least one."""
    if not entries:
        return entries
    total = entries[0].size()
    for i in range(1, len(entries)):
        total += entries[i].size()
        if total > max_size:
            return entries[:i]
    return entries


class MemoryStorage:
    """Storage in memory: the simulation's "disk" and the unit tests' double.

    `ents[0]` is the dummy entry at the snapshot index. The node's RocksDB storage keeps
    the same shape on disk.
    """

    def __init__(self, voters: Sequence[int] = ()) -> None:
        self.hard_state = HardState()
        self.snap = Snapshot(voters=tuple(sorted(voters)))
        self.ents: list[Entry] = [Entry(0, 0)]

    # -- read side (Storage) --

    def initial_state(self) -> tuple[HardState, tuple[int, ...]]:
        return self.hard_state, self.snap.voters

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        offset = self.ents[0].index
        if index < offset:
            raise Compacted(index)
        if index - offset >= len(self.ents):
            raise Unavailable(index)
        return self.ents[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        offset = self.ents[0].index
        if lo <= offset:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise LogInvariant(f"entries hi {hi} beyond last {self.last_index()}")
        return limit_size(self.ents[lo - offset:hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self.snap

    # -- write side (the shell's) --

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index <= self.snap.index:
            return
        self.snap = snap
        self.ents = [Entry(snap.term, snap.index)]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, replacing any conflicting suffix (entries after the first's index)."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted
        if entries[0].index < first:
            entries = entries[first - entries[0].index:]
        offset = entries[0].index - self.ents[0].index
        if offset > len(self.ents):
            raise LogInvariant(f"append leaves a gap: {entries[0].index} after "
                               f"{self.last_index()}")
        self.ents = self.ents[:offset] + list(entries)

    def create_snapshot(self, index: int, voters: Sequence[int], data: bytes) -> Snapshot:
        """Record the state machine at `index` (which must be applied by the caller)."""
        if index <= self.snap.index:
            return self.snap
        if index > self.last_index():
            raise LogInvariant(f"snapshot {index} beyond last {self.last_index()}")
        self.snap = Snapshot(index, self.term(index), tuple(sorted(voters)), data)
        return self.snap

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (which a snapshot must cover)."""
        offset = self.ents[0].index
        if index <= offset:
            return
        if index > self.snap.index:
            raise LogInvariant(f"compact {index} beyond snapshot {self.snap.index}")
        self.ents = [Entry(self.ents[index - offset].term, index), *self.ents[index - offset + 1:]]


@dataclass
class Unstable:
    """Appended by the core, not yet persisted by the shell: entries from `offset` on,
    and possibly an incoming snapshot that precedes them."""

    offset: int
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.index == index:
                return self.snapshot.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        if self.maybe_term(index) == term and index >= self.offset:
            self.entries = self.entries[index + 1 - self.offset:]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replacing everything unstable; the shell will overwrite the persisted
            # suffix too when it writes these.
            self.offset = after
            self.entries = list(entries)
        else:
            self.entries = self.entries[:after - self.offset] + list(entries)


class RaftLog:
    """Persisted entries (through `Storage`) + the unstable tail + commit/applied marks."""

    def __init__(self, storage: Storage, max_apply_size: int = 1 << 24) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(offset=last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_apply_size = max_apply_size

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def stable_last_index(self) -> int:
        """The last index the shell has persisted (entries still unstable excluded)."""
        if self.unstable.snapshot is not None:
            return 0
        return min(self.last_index(), self.unstable.offset - 1)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """The term at `index`; raises Compacted/Unavailable outside the log."""
        dummy = self.first_index() - 1
        if index < dummy:
            raise Compacted(index)
        if index > self.last_index():
            raise Unavailable(index)
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        my_term = self.last_term()
        return term > my_term or (term == my_term and last_index >= self.last_index())

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, and that term.

        Lets a follower's rejection skip a whole term of divergent entries at once
        (the optimisation in etcd-io/raft's `findConflictByTerm`)."""
        while index > 0:
            try:
                t = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(self, index: int, log_term: int, committed: int,
                     entries: Sequence[Entry]) -> int | None:
        """Append a leader's entries after (index, log_term) if our log matches there.
        Returns the last index the leader now knows we have, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            if ci <= self.committed:
                raise LogInvariant(f"entry {ci} conflicts with committed entry "
                                   f"(committed {self.committed})")
            self.append(entries[ci - index - 1:])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: Sequence[Entry]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise LogInvariant(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogInvariant(f"commit {index} beyond last {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        # Only entries of the leader's own term are committed by counting (Raft §5.4.2).
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise LogInvariant(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.index
        self.unstable.restore(snap)

    def entries_from(self, lo: int, max_size: int) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        """Entries [lo, hi) from storage and the unstable tail; raises Compacted."""
        if lo > hi:
            raise LogInvariant(f"slice [{lo}, {hi})")
        first = self.first_index()
        if lo < first:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise LogInvariant(f"slice hi {hi} beyond last {self.last_index()}")
        if lo == hi:
            return []
        out: list[Entry] = []
        offset = self.unstable.offset
        if lo < offset:
            out = self.storage.entries(lo, min(hi, offset), max_size)
            if len(out) < min(hi, offset) - lo:
                return out  # cut by size
        if hi > offset:
            start = max(lo, offset)
            out = out + self.unstable.entries[start - offset:hi - offset]
        return limit_size(out, max_size)

    def next_committed_entries(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1, self.max_apply_size)
        return []

    def has_next_committed_entries(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)
