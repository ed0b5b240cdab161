"""Deterministic simulation of one Raft group deciding NEEDs, with seeded faults.

Owns the simulated world: replicas (`protocol.raft.RawNode` over a `MemoryStorage`
that plays the disk, driving a `protocol.decide.DecideMachine`), a network that loses,
duplicates, delays and reorders messages and can be partitioned, crashes at any point
of the Ready loop (before persisting, after persisting but before sending, after
applying) with the disk kept, clock skew (replicas tick at different rates), leader
transfers, membership changes and snapshots with log compaction. Everything is drawn
from one `random.Random(seed)`, so a failing seed replays exactly.

After every step it checks Raft's safety properties (election safety, log matching,
leader completeness, state-machine safety) and P1 (one decision per NEED, the same on
every replica). At the end it heals the world and checks liveness: every NEED that was
submitted gets decided and every replica agrees.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from swarm.protocol.decide import DecideMachine, TryDecide, decode_command, encode_command
from swarm.protocol.raft import (
    ConfChange,
    Config,
    ConfOp,
    Message,
    ProposalDropped,
    RawNode,
    Ready,
    Role,
)
from swarm.protocol.raftlog import Compacted, EntryKind, MemoryStorage

from .simkit import (
    PROFILES,
    TICK_EVERY_CHOICES,
    Violation,
    crashes_and_restarts,
    heal_steps,
    need_ids,
    next_partition,
    run_then_heal,
    take_due,
)


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    nodes: int = 5
    initial_voters: int = 3
    steps: int = 1500
    heal_steps: int = 1000
    needs: int = 24
    propose_p: float = 0.25
    loss: float = 0.05
    duplicate: float = 0.03
    delay_max: int = 4
    crash_p: float = 0.004
    restart_p: float = 0.05
    partition_p: float = 0.004
    heal_p: float = 0.03
    conf_change_p: float = 0.004
    transfer_p: float = 0.004
    snapshot_every: int = 40
    election_tick: int = 10
    max_size_per_msg: int = 1 << 20
    write_delay_max: int = 2  # steps a disk write may take

    @classmethod
    def for_seed(cls, seed: int) -> SimConfig:
        """The schedule a seed stands for: its fault profile is part of the seed, so
        hundreds of seeds cover calm runs, storms of crashes and partitions, heavy loss,
        membership churn and one-entry messages (which split a new leader's no-op from
        the older entries it carries, exposing commit-rule bugs)."""
        profile = seed % PROFILES
        if profile == 0:
            return cls(seed=seed)
        if profile == 1:  # storm
            return cls(seed=seed, crash_p=0.02, restart_p=0.1, partition_p=0.02,
                       heal_p=0.05, transfer_p=0.01)
        if profile == 2:  # lossy, slow network
            return cls(seed=seed, loss=0.3, duplicate=0.1, delay_max=12)
        if profile == 3:  # membership churn, five voters to start
            return cls(seed=seed, initial_voters=5, conf_change_p=0.03, transfer_p=0.01,
                       snapshot_every=15)
        return cls(seed=seed, max_size_per_msg=1, crash_p=0.01, partition_p=0.01,
                   snapshot_every=10)


@dataclass
class SimNode:
    id: int
    disk: MemoryStorage
    tick_every: int
    raw: RawNode | None = None
    machine: DecideMachine = field(default_factory=lambda: DecideMachine(0))
    boots: int = 0
    writing: tuple[Ready, int] | None = None  # a disk write in progress, done at step N


@dataclass
class SimResult:
    seed: int
    steps: int
    decided: int
    needs: int
    elections: int
    crashes: int
    partitions: int
    conf_changes: int
    transfers: int
    snapshots_sent: int
    messages: int
    dropped: int
    leader_terms: dict[int, int]


class RaftSim:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        voters = list(range(1, config.initial_voters + 1))
        self.nodes: dict[int, SimNode] = {}
        for i in range(1, config.nodes + 1):
            tick_every = self.rng.choice(TICK_EVERY_CHOICES)  # clock skew
            self.nodes[i] = SimNode(i, MemoryStorage(voters), tick_every)
            self._boot(self.nodes[i])
        self.now = 0
        self.inflight: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.blocked: set[frozenset[int]] = set()
        self.healing = False
        # Checker state.
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data digest)
        self.decision: dict[bytes, bytes] = {}  # need -> proposal
        self.submitted: set[bytes] = set()
        self.need_ids = need_ids(config.needs)
        self.stats = {"crashes": 0, "partitions": 0, "conf_changes": 0, "transfers": 0,
                      "snapshots_sent": 0, "messages": 0, "dropped": 0, "elections": 0}

    # -- the world --

    def _boot(self, node: SimNode) -> None:
        snap = node.disk.snapshot()
        node.boots += 1
        node.raw = RawNode(Config(node.id, election_tick=self.cfg.election_tick,
                                  seed=self.rng.getrandbits(32), applied=snap.index,
                                  max_size_per_msg=self.cfg.max_size_per_msg),
                           node.disk)
        node.machine = DecideMachine.restore(snap.data, 0)

    def _crash(self, node: SimNode) -> None:
        if node.writing is not None and self.rng.random() < 0.5:
            self._persist(node, node.writing[0])  # the write reached the disk; nothing more
        node.writing = None
        node.raw = None
        self.stats["crashes"] += 1

    def _live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def _send(self, m: Message) -> None:
        self.stats["messages"] += 1
        if m.snapshot is not None:
            self.stats["snapshots_sent"] += 1
        loss = min(self.cfg.loss, 0.05) if self.healing else self.cfg.loss
        if frozenset((m.frm, m.to)) in self.blocked or self.rng.random() < loss:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < self.cfg.duplicate else 1
        for _ in range(copies):
            self.seq += 1
            self.inflight.append((self.now + self.rng.randint(1, self.cfg.delay_max),
                                  self.seq, m))

    def _deliver_due(self) -> None:
        due, self.inflight = take_due(self.inflight, self.now)
        if not due:
            return
        self.rng.shuffle(due)  # reordering
        for _, _, m in due:
            node = self.nodes.get(m.to)
            if node is None or node.raw is None or frozenset((m.frm, m.to)) in self.blocked:
                continue
            node.raw.step(m)

    def _faults(self) -> None:
        c, rng = self.cfg, self.rng
        crashes_and_restarts(rng, self.nodes.values(), lambda n: n.raw is not None,
                             self._crash, self._boot, c.crash_p, c.restart_p)
        blocked = next_partition(rng, self.nodes, self.blocked, c.partition_p, c.heal_p)
        if blocked is not None:
            self.blocked = blocked
            if blocked:  # a new cut, not a heal
                self.stats["partitions"] += 1
        leader = self._leader()
        if leader is not None and leader.raw is not None:
            raft = leader.raw.raft
            if rng.random() < c.conf_change_p:
                voters = sorted(raft.voters)
                others = [i for i in self.nodes if i not in raft.voters]
                if others and (len(voters) < 3 or rng.random() < 0.5):
                    cc = ConfChange(ConfOp.ADD_VOTER, rng.choice(others))
                elif len(voters) > 1:
                    cc = ConfChange(ConfOp.REMOVE_VOTER, rng.choice(voters))
                else:
                    cc = None
                if cc is not None:
                    try:
                        leader.raw.propose_conf_change(cc)
                        self.stats["conf_changes"] += 1
                    except ProposalDropped:
                        pass
            if rng.random() < c.transfer_p:
                targets = sorted(v for v in raft.voters if v != leader.id)
                if targets:
                    leader.raw.transfer_leader(rng.choice(targets))
                    self.stats["transfers"] += 1

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for n in self._live():
            assert n.raw is not None
            r = n.raw.raft
            if r.role == Role.LEADER and (best is None or best.raw is None
                                          or r.term > best.raw.raft.term):
                best = n
        return best

    def _propose(self, need: bytes | None = None, at: SimNode | None = None) -> None:
        live = self._live()
        if not live:
            return
        node = at or self.rng.choice(live)
        assert node.raw is not None
        need = need or self.rng.choice(self.need_ids)
        proposal = self.rng.getrandbits(64).to_bytes(8, "big")
        data = encode_command(TryDecide(need, proposal), self.now // node.tick_every)
        try:
            node.raw.propose(data)
            self.submitted.add(need)
        except ProposalDropped:
            pass

    # -- the Ready loop, with crash points --

    def _handle_ready(self, node: SimNode, crash_allowed: bool) -> None:
        """The shell's loop, as node/multiraft.py runs it: take a Ready, send its early
        messages, write to disk -- which takes `write_delay_max` steps at most, while
        messages keep being stepped in --, then send, apply and advance."""
        raw = node.raw
        assert raw is not None
        for _ in range(16):
            if node.writing is not None:
                rd, done_at = node.writing
                if self.now < done_at:
                    return
                node.writing = None
                if not self._finish(node, rd, crash_allowed):
                    return
                continue
            if not raw.has_ready():
                return
            rd = raw.ready()
            for m in rd.early_messages:
                self._send(m)  # a leader's appends go out while its own write runs
            if crash_allowed and self.rng.random() < self.cfg.crash_p / 4:
                self._crash(node)  # before the write started: this Ready is lost
                return
            node.writing = (rd, self.now + self.rng.randint(0, self.cfg.write_delay_max))

    def _finish(self, node: SimNode, rd: Ready, crash_allowed: bool) -> bool:
        raw = node.raw
        assert raw is not None
        self._persist(node, rd)
        if crash_allowed and self.rng.random() < self.cfg.crash_p / 4:
            self._crash(node)  # persisted, nothing sent
            return False
        for m in rd.messages:
            self._send(m)
        self._apply(node, rd)
        raw.advance(rd)
        self._maybe_compact(node)
        return True

    def _persist(self, node: SimNode, rd: Ready) -> None:
        disk = node.disk
        if rd.snapshot is not None:
            disk.apply_snapshot(rd.snapshot)
        disk.append(rd.entries)
        if rd.hard_state is not None:
            disk.set_hard_state(rd.hard_state)
        for e in rd.entries:
            self._check_log_matching(node, e.index, e.term, e.kind, e.data)
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            assert node.raw is not None
            self._check_new_leader(node, node.raw.raft.term)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.machine = DecideMachine.restore(rd.snapshot.data, 0)
        for e in rd.committed_entries:
            digest = hashlib.sha256(bytes([e.kind]) + e.data).digest()
            seen = self.committed.setdefault(e.index, (e.term, digest))
            if seen != (e.term, digest):
                raise Violation(f"state machine safety: node {node.id} applied a different "
                                f"entry at index {e.index} (term {e.term} vs {seen[0]})")
            if e.kind != EntryKind.NORMAL:
                continue
            if e.index <= node.machine.applied:
                continue  # already in the snapshot this machine was restored from
            d = node.machine.apply(e.index, e.term, e.data)
            if d is not None:
                first = self.decision.setdefault(d.need_id, d.proposal_id)
                if first != d.proposal_id:
                    raise Violation(f"P1: node {node.id} decided need {d.need_id.hex()} as "
                                    f"{d.proposal_id.hex()}, another replica as {first.hex()}")

    def _maybe_compact(self, node: SimNode) -> None:
        assert node.raw is not None
        raft = node.raw.raft
        applied = raft.log.applied
        if applied - node.disk.snapshot().index < self.cfg.snapshot_every:
            return
        if node.machine.applied < node.disk.snapshot().index:
            return
        node.disk.create_snapshot(applied, sorted(raft.voters), node.machine.snapshot())
        # Keep a short tail so slightly lagging followers still get entries.
        node.disk.compact(max(node.disk.snapshot().index - 10, node.disk.first_index() - 1))

    # -- checkers --

    def _check_log_matching(self, node: SimNode, index: int, term: int, kind: int,
                            data: bytes) -> None:
        try:
            prev_term = node.disk.term(index - 1)
        except Compacted:
            prev_term = -1
        digest = hashlib.sha256(bytes([kind]) + data).digest()
        seen = self.entry_at.get((index, term))
        if seen is None:
            self.entry_at[(index, term)] = (digest, prev_term)
            return
        if seen[0] != digest or (seen[1] != prev_term and -1 not in (seen[1], prev_term)):
            raise Violation(f"log matching: node {node.id} holds a different entry or "
                            f"history at index {index} term {term}")

    def _check_new_leader(self, node: SimNode, term: int) -> None:
        other = self.leader_of_term.setdefault(term, node.id)
        if other != node.id:
            raise Violation(f"election safety: nodes {other} and {node.id} both lead "
                            f"term {term}")
        self.stats["elections"] += 1
        assert node.raw is not None
        log = node.raw.raft.log
        for index, (cterm, _) in self.committed.items():
            if index < log.first_index():
                continue  # inside its snapshot
            if log.term_or_zero(index) != cterm:
                raise Violation(f"leader completeness: node {node.id} leads term {term} "
                                f"without committed entry {index} (term {cterm})")

    # -- the run --

    def step(self, faults: bool) -> None:
        self.now += 1
        if faults:
            self._faults()
            if self.rng.random() < self.cfg.propose_p:
                self._propose()
        for node in self._live():
            if self.now % node.tick_every == 0:
                assert node.raw is not None
                node.raw.tick()
        self._deliver_due()
        for node in self._live():
            self._handle_ready(node, crash_allowed=faults)

    def run(self, progress: Callable[[int], None] | None = None) -> SimResult:
        c = self.cfg
        run_then_heal(c.seed, lambda: self.now, self.step, c.steps, self._heal, progress)
        return SimResult(
            seed=c.seed, steps=self.now, decided=len(self.decision),
            needs=len(self.submitted), elections=self.stats["elections"],
            crashes=self.stats["crashes"], partitions=self.stats["partitions"],
            conf_changes=self.stats["conf_changes"], transfers=self.stats["transfers"],
            snapshots_sent=self.stats["snapshots_sent"], messages=self.stats["messages"],
            dropped=self.stats["dropped"], leader_terms=dict(self.leader_of_term))

    def _heal(self) -> None:
        """No more faults: every replica up, network whole. Every submitted NEED must be
        decided and every voter's state machine must agree."""
        self.blocked = set()
        self.healing = True
        for node in self.nodes.values():
            if node.raw is None:
                self._boot(node)
        if heal_steps(self.step, self._settled, self._retry, self.cfg.heal_steps,
                      retry_every=20, retry_at=10):
            return
        undecided = sorted(n.hex()[:8] for n in self.submitted - set(self.decision))
        raise Violation(f"liveness: after healing for {self.cfg.heal_steps} steps, "
                        f"undecided needs {undecided[:5]}, voters disagree or lag: "
                        f"{self._describe()}")

    def _retry(self) -> None:
        """Clients retry what is still undecided, at the current leader."""
        leader = self._leader()
        for need in sorted(self.submitted - set(self.decision)):
            if leader is not None:
                self._propose(need, at=leader)

    def _settled(self) -> bool:
        if self.submitted - set(self.decision):
            return False
        leader = self._leader()
        if leader is None or leader.raw is None:
            return False
        commit = leader.raw.raft.log.committed
        for vid in leader.raw.raft.voters:
            node = self.nodes[vid]
            if node.raw is None or node.raw.raft.log.applied < commit:
                return False
            for need, proposal in self.decision.items():
                d = node.machine.get(need)
                if d is None or d.proposal_id != proposal:
                    return False
        return True

    def _describe(self) -> str:
        parts = []
        for n in self.nodes.values():
            if n.raw is None:
                parts.append(f"{n.id}:down")
                continue
            r = n.raw.raft
            parts.append(f"{n.id}:{r.role.name.lower()} t{r.term} c{r.log.committed} "
                         f"a{r.log.applied} v{sorted(r.voters)}")
        return "; ".join(parts)


def run_seed(seed: int) -> SimResult:
    """Run one seed's schedule; raises Violation naming the seed and step on a failure."""
    return RaftSim(SimConfig.for_seed(seed)).run()


def decisions_of(node: SimNode) -> dict[bytes, bytes]:
    return {k: d.proposal_id for k, d in node.machine.decisions.items()}


__all__ = ["RaftSim", "SimConfig", "SimResult", "Violation", "decode_command", "run_seed"]
