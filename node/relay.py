"""Submissions of nodes that are not validators, relayed by a validator.

Owns the request/response plumbing shared by DECIDE and ledger submissions: a node
without Raft streams (validators accept those only from validators) asks the validators
it is connected to, one after another, until one answers or the deadline passes; a
validator serves such requests one per stream, a bounded number at a time per asking
peer. What a request and an answer mean, and how they are decoded strictly, is the
caller's (`protocol/decide.py`, `protocol/bucket_machine.py`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.protocol.placement import Placement

from .p2p import peer_id_of_account
from .streamlimits import Slots

log = logging.getLogger("swarm.relay")
T = TypeVar("T")

PER_PEER_MAX = 32  # requests served at once for one asking peer
TOTAL_MAX = 256  # and for all peers together
READ_TIMEOUT_S = 5.0
# An asker goes round the validators it is connected to at most ASK_ROUNDS times, pausing
# RETRY_BACKOFF_S times the attempt's number (at most RETRY_BACKOFF_S_MAX) after a
# failed one. A validator is given the request's own timeout plus STREAM_GRACE_S to
# open the stream and answer.
ASK_ROUNDS = 3
RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_S_MAX = 0.5
STREAM_GRACE_S = 1.0
LEFT_MS_MIN = 1  # a request always offers its validator at least this long


class NoValidator(Exception):
    """Not connected to any validator."""


class Retry(Exception):
    """This validator had no answer; ask another."""


async def ask_validators(host: IHost, placement: Placement, protocol: TProtocol,
                         request: Callable[[int], bytes], answer_bytes_max: int,
                         parse: Callable[[bytes], T], timeout_s: float,
                         timeout_ms_max: int) -> T:
    """Send `request(timeout_ms)` to connected validators in turn; return the first
    answer `parse` accepts. `parse` raises Retry (or anything else) to move on to the
    next validator, or an exception it wants the caller to see as-is by raising it
    wrapped in `Final`. Raises NoValidator, or TimeoutError with the last reasons."""
    connected = set(host.get_connected_peers())
    validators = [p for p in (peer_id_of_account(a) for a in placement.accounts)
                  if p in connected]
    if not validators:
        raise NoValidator()
    random.shuffle(validators)
    reasons: list[str] = []
    with trio.move_on_after(timeout_s) as scope:
        for attempt in range(len(validators) * ASK_ROUNDS):
            peer = validators[attempt % len(validators)]
            left_ms = max(LEFT_MS_MIN, int((scope.deadline - trio.current_time()) * 1000))
            timeout_ms = min(left_ms, timeout_ms_max)
            try:
                with trio.fail_after(timeout_ms / 1000 + STREAM_GRACE_S):
                    stream = await host.new_stream(peer, [protocol])
                    try:
                        await stream.write(encode_varint_prefixed(request(timeout_ms)))
                        data = await read_varint_prefixed_bytes_limited(stream,
                                                                        answer_bytes_max)
                    finally:
                        await stream.close()
                return parse(data)
            except Final as final:
                raise final.error from None
            except Exception as exc:  # noqa: BLE001 - any other failure: ask another
                reasons.append(f"{peer.to_base58()[-8:]}: {exc}")
                await trio.sleep(min(RETRY_BACKOFF_S * (attempt + 1), RETRY_BACKOFF_S_MAX))
    raise TimeoutError("; ".join(reasons[-3:]) or "no validator answered")


class Final(Exception):
    """Raised by a `parse` callback: stop asking, raise `error` to the caller."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Server:
    """Serves one protocol's relayed requests: `handle(request bytes) -> answer bytes`."""

    def __init__(self, request_bytes_max: int,
                 handle: Callable[[bytes], Awaitable[bytes]]) -> None:
        self.request_bytes_max = request_bytes_max
        self.handle = handle
        self.slots = Slots(PER_PEER_MAX, TOTAL_MAX)
        self.served = 0

    async def __call__(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if not self.slots.take(peer):
            await stream.reset()
            return
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                data = await read_varint_prefixed_bytes_limited(stream,
                                                                self.request_bytes_max)
            answer = await self.handle(data)
            self.served += 1
            with trio.fail_after(READ_TIMEOUT_S):
                await stream.write(encode_varint_prefixed(answer))
                await stream.close()
        except Exception as exc:  # noqa: BLE001 - a peer's bad request ends its stream only
            log.debug("relayed request from %s failed: %r", peer, exc)
            await stream.reset()
        finally:
            self.slots.give(peer)
