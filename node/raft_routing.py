"""How a command reaches its bucket, and how a replica answers one.

Owns the one road every kind of bucket command (node/raft_kinds.py) takes to its bucket
(`Router.route`: answered here if this replica applied it, proposed if this node leads
the bucket, else sent to the leader, or to a live replica, and retried until a
deadline), the table of requests this node sent and awaits (by request id), and the
table of requests it serves and answers once their command applies (by bucket and
command key). Waiting, retrying, serving, answering and giving up when leadership moves
are the same for every kind.

Synchronous where the shell simulation drives it (testnet/multiraft_sim.py: `propose`,
`next_hop`, `ask`, `has_answer`, `take`, `read`), so the simulation routes exactly as
the node does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from swarm.protocol.bucket_machine import Command, decode_command
from swarm.protocol.decide import TryDecide
from swarm.protocol.errors import RemoteProtocolError
from swarm.protocol.raft import NONE, Role
from swarm.protocol.raftwire import DecideRequest, SubmitRequest

from .raft_group import TICK_MS, Group
from .raft_kinds import (
    DECIDE,
    LEDGER,
    Kind,
    NoAnswer,
    NotLeader,
    Reason,
    Refused,
    Shell,
    leader_named,
)

log = logging.getLogger("swarm.raft")

C = TypeVar("C")  # a kind's command
T = TypeVar("T")  # a kind's answer: what applying the command gave

# One attempt: how long a proposal (ours) or a request (to a peer) is waited on before
# the route tries again.
ATTEMPT_TIMEOUT_S = 2.0
# Between attempts that got no answer and no leader's name: 50 ms more per attempt, at
# most 500 ms.
RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_S_MAX = 0.5
# How long `MultiRaft.try_decide` and `submit` route a command when the caller names no
# deadline (the node's services always name theirs: the API caller's).
ROUTE_TIMEOUT_S_DEFAULT = 15.0
PENDING_REMOTE_MAX = 10_000  # requests this node serves at once, for all peers


# -- the router ---------------------------------------------------------------------------


@dataclass
class _Asked:
    """A request this node sent: its answer, once it came."""

    event: trio.Event = field(default_factory=trio.Event)
    answer: Any = None


class Router:
    """The requests of one node, both ways."""

    def __init__(self, shell: Shell, first_req_id: int) -> None:
        self.shell = shell
        self.next_req = first_req_id
        self.asked: dict[int, _Asked] = {}  # request id -> its answer, once it came
        # (bucket, key) -> callers here waiting on the command's apply
        self.local: dict[tuple[int, bytes], list[trio.Event]] = defaultdict(list)
        # (bucket, key) -> (kind, peer, request id) waiting on it
        self.remote: dict[tuple[int, bytes], list[tuple[Kind[Any, Any], int, int]]] = \
            defaultdict(list)
        # (bucket, key) -> the tick a `once` kind's command was last proposed here
        self.proposed: dict[tuple[int, bytes], int] = {}

    # -- a caller here: the route ---------------------------------------------------------

    async def route(self, kind: Kind[C, T], cmd: C, timeout_s: float) -> T | None:
        """The way a command reaches its bucket: answered locally if this replica already
        applied it, proposed if we lead the bucket, else sent to the leader (known from
        the group, beats or a replica's `NotLeader` answer) or to a live replica;
        retried until `timeout_s`. None when nothing came in time; the kind's refusal
        error when the leader refused it at its door."""
        shell = self.shell
        bucket = kind.bucket(cmd, shell.placement)
        replicas = list(shell.placement.replicas(bucket))
        attempt = 0
        hint = NONE
        with trio.move_on_after(timeout_s):
            while True:
                g = shell.groups.get(bucket)
                if g is not None:
                    done = kind.known(g, cmd)
                    if done is not None:
                        return done
                    if g.raw.raft.role == Role.LEADER:
                        out = await self._propose_local(kind, g, cmd)
                        if out is not None:
                            return out
                        attempt += 1
                        continue
                target = self.next_hop(bucket, hint, attempt)
                hint = NONE
                attempt += 1
                if target == shell.id:
                    await trio.sleep(TICK_MS / 1000)  # a replica without a leader yet
                    continue
                req_id = self.ask(kind, target, cmd)
                await self._await_answer(target, self.asked[req_id].event)
                answer = self.read(kind, cmd, self.take(req_id))
                if isinstance(answer, Refused):
                    raise kind.refusal(answer)
                if not isinstance(answer, NotLeader | NoAnswer):
                    return answer
                hint = leader_named(answer, replicas)
                if not hint:
                    await trio.sleep(min(RETRY_BACKOFF_S * attempt, RETRY_BACKOFF_S_MAX))
        return None

    def next_hop(self, bucket: int, hint: int, attempt: int) -> int:
        """Where the next attempt for `bucket` goes when this node has no answer of its
        own: our id if we lead the bucket (propose here) or are a replica that knows no
        leader yet (wait a tick); else the leader (`hint`, from a replica's `NotLeader`
        answer, else the group's, else the beats') if alive, or a live replica (the
        `attempt`-th, so retries go round)."""
        shell = self.shell
        g = shell.groups.get(bucket)
        target = hint
        if g is not None:
            r = g.raw.raft
            if r.role == Role.LEADER:
                return shell.id
            target = target or r.lead
        if target and not shell.alive(target):
            target = NONE
        return (target or shell.leader_hint(bucket)
                or self.live_replica(list(shell.placement.replicas(bucket)), attempt))

    def live_replica(self, replicas: list[int], attempt: int) -> int:
        live = [r for r in replicas if self.shell.alive(r)] or replicas
        return live[attempt % len(live)]

    async def _propose_local(self, kind: Kind[C, T], g: Group, cmd: C) -> T | None:
        door = kind.door(self.shell, g, cmd)
        if isinstance(door, Refused):
            raise kind.refusal(door)
        if door is not None:
            return door
        key = (g.bucket, kind.key(cmd))
        ev = trio.Event()
        self.local[key].append(ev)
        try:
            if not self.propose(kind, g, cmd):
                await trio.sleep(TICK_MS / 1000)
                return None
            with trio.move_on_after(ATTEMPT_TIMEOUT_S):
                await ev.wait()
        finally:
            waiting = self.local.get(key)
            if waiting is not None and ev in waiting:
                waiting.remove(ev)
                if not waiting:
                    del self.local[key]
        return kind.applied(g, cmd) if ev.is_set() or not kind.once else None

    def propose(self, kind: Kind[C, Any], g: Group, cmd: C) -> bool:
        """Propose `cmd` in `g` (which we lead), stamped with our clock; a `once` kind's
        command not again within an attempt's time. False if Raft dropped it (e.g.
        during a leader transfer)."""
        shell = self.shell
        key = (g.bucket, kind.key(cmd))
        if kind.once:
            last = self.proposed.get(key)
            if last is not None and shell.now_tick - last < ATTEMPT_TIMEOUT_S * 1000 / TICK_MS:
                return True
        if not shell.propose(g, kind.entry(cmd, shell.clock_ms())):
            return False
        if kind.once:
            self.proposed[key] = shell.now_tick
        shell.stats[kind.stat] += 1
        return True

    def ask(self, kind: Kind[C, Any], peer: int, cmd: C) -> int:
        """Send `cmd` to `peer` now; returns the request id. The answer lands in
        `asked` until `take` takes it or gives up on it."""
        req_id = self.next_req
        self.next_req += 1
        self.asked[req_id] = _Asked()
        bucket = kind.bucket(cmd, self.shell.placement)
        kind.request(self.shell.outbox.to(peer), req_id, bucket, cmd)
        self.shell.flush()
        return req_id

    def take(self, req_id: int) -> Any:
        """The answer to request `req_id`, if it came; the request is forgotten either
        way (a later answer is dropped)."""
        asked = self.asked.pop(req_id, None)
        return asked.answer if asked is not None else None

    def read(self, kind: Kind[C, T], cmd: C, resp: Any) -> T | Reason:
        """What a replica's answer `resp` to `cmd` says (None: none came), typed. An
        answer stating another command's outcome is no answer, and counted. Raises the
        kind's error for an answer that states a malformed outcome."""
        answer = kind.read(cmd, resp) if resp is not None else NoAnswer("")
        if isinstance(answer, NoAnswer) and answer.why == "answers_mismatched":
            self.shell.stats["answers_mismatched"] += 1
        return answer

    def has_answer(self, req_id: int) -> bool:
        """Whether the answer to request `req_id` came (and was not taken yet)."""
        asked = self.asked.get(req_id)
        return asked is not None and asked.event.is_set()

    def answered(self, req_id: int, resp: Any) -> None:
        """An answer from a peer (dropped if we gave up on the request already)."""
        asked = self.asked.get(req_id)
        if asked is not None and not asked.event.is_set():
            asked.answer = resp
            asked.event.set()

    async def _await_answer(self, peer: int, ev: trio.Event) -> None:
        """Wait for a peer's answer for up to ATTEMPT_TIMEOUT_S, giving up early on a
        peer that died meanwhile (its connection dropped or its beats stopped)."""
        deadline = trio.current_time() + ATTEMPT_TIMEOUT_S
        while not ev.is_set() and trio.current_time() < deadline and self.shell.alive(peer):
            with trio.move_on_after(TICK_MS / 1000):
                await ev.wait()

    def send_nowait(self, kind: Kind[C, Any], cmd: C) -> None:
        """Hand a command to its bucket's leader and do not wait (effect delivery and
        acknowledgements: the sender retries until the source's outbox says done)."""
        shell = self.shell
        bucket = kind.bucket(cmd, shell.placement)
        g = shell.groups.get(bucket)
        if g is not None and g.raw.raft.role == Role.LEADER:
            self.propose(kind, g, cmd)
            return
        target = g.raw.raft.lead if g is not None else NONE
        if not target or not shell.alive(target):
            target = shell.leader_hint(bucket)
        if not target:
            target = self.live_replica(list(shell.placement.replicas(bucket)), shell.now_tick)
        if target and target != shell.id:
            kind.request(shell.outbox.to(target), 0, bucket, cmd)
            shell.stats["submits_forwarded"] += 1
            shell.wake.set()

    # -- a peer's request: serving -------------------------------------------------------

    def serve(self, kind: Kind[C, T], sender: int, req_id: int, bucket: int,
              cmd: C | Reason, forward: Callable[[int], None] | None = None) -> None:
        """A peer's request (`cmd` a Reason when it could not be read): answered now
        (what this replica knows, why it cannot), or once the command applies here.
        `forward(leader)` passes on a request nobody waits for (id 0) when we do not
        lead."""
        shell = self.shell
        q = shell.outbox.to(sender)
        if not isinstance(cmd, NotLeader | Refused | NoAnswer):
            g = shell.groups.get(bucket)
            if g is None or kind.bucket(cmd, shell.placement) != bucket:
                kind.answer(q, req_id, NoAnswer("wrong_bucket"))
                return
            known = kind.known_to_peer(g, cmd)
            if known is not None:
                kind.answer(q, req_id, known)
                return
            r = g.raw.raft
            if r.role != Role.LEADER:
                if not req_id and forward is not None:
                    if r.lead not in (NONE, sender, shell.id):
                        forward(r.lead)
                    return
                kind.answer(q, req_id, NotLeader(r.lead))
                return
            door = kind.door(shell, g, cmd)
            if door is not None:
                kind.answer(q, req_id, door)
                return
            key = (g.bucket, kind.key(cmd))
            if req_id and sum(len(v) for v in self.remote.values()) >= PENDING_REMOTE_MAX:
                kind.answer(q, req_id, NoAnswer("busy"))
                return
            if not self.propose(kind, g, cmd):
                kind.answer(q, req_id, NoAnswer("proposal dropped"))
                return
            if req_id:
                self.remote[key].append((kind, sender, req_id))
            return
        kind.answer(q, req_id, cmd)

    def applied(self, bucket: int, key: bytes, answer: Any) -> None:
        """A command applied in `bucket`: wake whoever waits on it here, and answer
        the peers that asked."""
        for ev in self.local.pop((bucket, key), []):
            ev.set()
        self.proposed.pop((bucket, key), None)
        for kind, peer, req_id in self.remote.pop((bucket, key), []):
            kind.answer(self.shell.outbox.to(peer), req_id, answer)

    def fail_remote(self, bucket: int, why: str) -> None:
        """Leadership of `bucket` moved (or it halted): what we served there will not
        be answered by us."""
        for key in [k for k in self.remote if k[0] == bucket]:
            for kind, peer, req_id in self.remote.pop(key):
                kind.answer(self.shell.outbox.to(peer), req_id, NoAnswer(why))
        for key in [k for k in self.proposed if k[0] == bucket]:
            del self.proposed[key]

    # -- reading requests off a frame ----------------------------------------------------

    def serve_decide(self, sender: int, req: DecideRequest) -> None:
        try:
            cmd: TryDecide | Reason = TryDecide(req.need_id, req.proposal_id, req.k_plan,
                                                req.epoch)
        except RemoteProtocolError as exc:
            cmd = NoAnswer(exc.reason)
        self.serve(DECIDE, sender, req.req_id, req.bucket, cmd)

    def serve_submit(self, sender: int, req: SubmitRequest) -> None:
        if req.bucket not in self.shell.groups:
            LEDGER.answer(self.shell.outbox.to(sender), req.req_id, NoAnswer("wrong_bucket"))
            return
        try:
            cmd: Command | Reason = decode_command(req.bucket, req.command)
        except RemoteProtocolError as exc:
            self.shell.stats["submits_rejected"] += 1
            cmd = Refused(exc.code, f"{exc.field}: {exc.reason}")

        def forward(leader: int) -> None:
            self.shell.outbox.to(leader).submits.append(req)

        self.serve(LEDGER, sender, req.req_id, req.bucket, cmd, forward)
