"""Lamport clocks (P3: Lamport ordering, no reversals) and how far ahead one may run.

Owns the logical clock a node stamps on what it sends, the rule that relates an
envelope to what it references, and the ceiling a receiver puts on Lamport times. A
clock never goes backwards: `observe()` takes the maximum, `tick()` adds one. An
envelope must carry a Lamport time greater than every envelope it names in `refs`;
`check_refs()` enforces that for the references we know.

The ceiling (`lamport_ceiling`, `check_not_future`): a receiver refuses an envelope
whose Lamport time is above `(now_ms + LAMPORT_SKEW_MS) * LAMPORT_PER_MS`, with `now_ms`
its own wall clock, which the caller passes in (this module reads no clock). Honest
clocks count envelopes and stay far below it (today's wall time in ms times 2^16 is
about 2^57); a sender can push the clocks of others at most up to it, and it moves on
with wall time, 65,536 per millisecond, so no clock can be pinned at the maximum or run
out (docs/PROTOCOL.md, section 7).
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import LamportFuture, LamportReversal, LocalProtocolError

LAMPORT_MAX = 2**63 - 1
# Lamport times the ceiling grows by per millisecond of wall time: room for 65,536
# envelopes per millisecond on one clock, and 2^63 is reached in the year ~6400.
LAMPORT_PER_MS = 2**16
# How far ahead of the receiver's wall clock a sender's may be before its envelopes
# wait: the clock skew between nodes that costs nothing.
LAMPORT_SKEW_MS = 60_000


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


def lamport_ceiling(now_ms: int) -> int:
    """The highest Lamport time a receiver whose wall clock reads `now_ms` accepts."""
    return min(LAMPORT_MAX, (max(now_ms, 0) + LAMPORT_SKEW_MS) * LAMPORT_PER_MS)


def check_not_future(lamport: int, now_ms: int) -> None:
    """Raise LamportFuture if `lamport` is above the ceiling at `now_ms`. Not the
    sender's fault alone (an honest forwarder's wall clock may run ahead): the envelope
    is refused for now and accepted once the receiver's clock has caught up."""
    ceiling = lamport_ceiling(now_ms)
    if lamport > ceiling:
        raise LamportFuture("lamport", f"{lamport} is above this node's ceiling {ceiling} "
                                       f"(wall clock {now_ms} ms)")


def check_refs(lamport: int, ref_lamports: Iterable[int]) -> None:
    """Raise LamportReversal unless `lamport` exceeds every referenced time."""
    for ref in ref_lamports:
        if ref >= lamport:
            raise LamportReversal(
                "lamport", f"{lamport} is not after a referenced envelope's lamport {ref}"
            )
