"""Lamport clocks (P3: Lamport ordering, no reversals).

Owns the logical clock a node stamps on what it sends and the rule that relates an
envelope to what it references. A clock never goes backwards: `observe()` takes the
maximum, `tick()` adds one. An envelope must carry a Lamport time greater than every
envelope it names in `refs`; `check_refs()` enforces that for the references we know.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import LamportReversal, LocalProtocolError

LAMPORT_MAX = 2**63 - 1


class LamportClock:
    __slots__ = ("_time",)

    def __init__(self, time: int = 0) -> None:
        if not 0 <= time <= LAMPORT_MAX:
            raise LocalProtocolError("lamport", f"clock value {time} out of range")
        self._time = time

    @property
    def time(self) -> int:
        return self._time

    def observe(self, remote: int) -> int:
        """Merge a time seen on the wire; returns the (never smaller) local time."""
        if remote > self._time:
            self._time = min(remote, LAMPORT_MAX)
        return self._time

    def tick(self) -> int:
        """Advance for a local event (sending); returns the time to stamp."""
        if self._time >= LAMPORT_MAX:
            raise LocalProtocolError("lamport", "clock exhausted")
        self._time += 1
        return self._time

    def __repr__(self) -> str:
        return f"LamportClock({self._time})"


def check_refs(lamport: int, ref_lamports: Iterable[int]) -> None:
    """Raise LamportReversal unless `lamport` exceeds every referenced time."""
    for ref in ref_lamports:
        if ref >= lamport:
            raise LamportReversal(
                "lamport", f"{lamport} is not after a referenced envelope's lamport {ref}"
            )
