"""Deterministic simulation of the task market on the multi-raft shell under seeded faults.

Owns a market world on top of testnet/multiraft_sim.py's: the same validators running
the real `MultiRaft` on real `RaftStore`s over a simulated network (loss, delay,
duplication and reordering by profile, partitions that heal, kill -9 between rounds or
inside one, clock skew, garbage frames), each node also running the real ledger shell
(`LedgerRaft`: effects between bucket leaders, task ticks, pool views and committee
draws, the certified chain and its read replica). Market agents drive tasks through it
with signed envelopes submitted at a random live node (`MultiRaft.submit_nowait`, as a
relay would): a poster posts NEEDs, three agents bid, the winner claims, heartbeats and
commits, the validators (the verifier pool) attest when drawn. Agents act on what a
random live node's replica or read replica shows, so they act on stale views too.
Faults of their own: a worker that crashes mid-lease (never heartbeats again), a
committee member that stays silent, a faulty worker that commits a wrong result, a
validator that colludes (attests every result valid and votes to reject every
challenge), and a frivolous challenger that challenges right results. The poster
challenges every wrong result it sees attested; panel members vote by the truth.

Checked during the run: everything ShellSim checks, and P1 per round (one decision per
(NEED, epoch), the same wherever it is seen). After healing (every node up, the network
whole): every NEED funded ends FINALIZED and paid or CANCELLED and refunded; every
replica of a bucket holds the same ledger part; every node, through its read replica,
computes the same ledger root; no effect is left in flight; the supply is conserved
(`genesis supply = balances + locked + unbonding + escrowed + burned + task escrow`),
through every bond, slash and burn; every challenge of a wrong result was upheld (or
made moot by another one upheld first), none of a right result was; no honest
validator lost stake.
A failing seed replays exactly: every draw comes from the seed's `random.Random`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from swarm.node.ledger_raft import EFFECT_TICKS, SYNC_TICKS, LedgerRaft
from swarm.node.multiraft import MultiRaft
from swarm.node.raft_group import TICK_MS
from swarm.protocol import cbor, genesis
from swarm.protocol.bucket_machine import bucket_for, ledger_command, op_id_of
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.ledger import Totals, genesis_supply
from swarm.protocol.task import CANCELLED, MOOT, UPHELD, Task

from .multiraft_sim import ShellSim, ShellSimConfig, SimNode
from .simkit import PROFILES, Violation

U = genesis.UNIT_PER_CREDIT
AGENTS = 5  # one poster, three bidders and workers, one frivolous challenger
ACT_EVERY = 6  # steps between an agent's looks at the world (300 ms)
BUDGET = 10 * U
BOUNTY = 2 * U


@dataclass(frozen=True)
class MarketSimConfig:
    seed: int = 1
    heal_steps: int = 8000  # after the shell's own heal, for the tasks to end
    needs: int = 6
    post_p: float = 0.02  # per step, until `needs` are posted
    worker_crash_p: float = 0.15  # per claim: the worker stops, mid-lease
    silent_p: float = 0.15  # per committee member and task: it never attests
    faulty_p: float = 0.3  # per (task, epoch): the worker commits a wrong result
    frivolous_p: float = 0.2  # per right result attested: a frivolous challenge
    shell: ShellSimConfig = field(default_factory=ShellSimConfig)

    @classmethod
    def for_seed(cls, seed: int) -> MarketSimConfig:
        """The shell's fault profile for the seed, without its DECIDE clients."""
        shell = replace(ShellSimConfig.for_seed(seed), needs=0, submit_p=0.0,
                        buckets=8)
        return cls(seed=seed, shell=shell)


@dataclass
class MarketSimResult:
    seed: int
    steps: int
    posted: int
    finalized: int
    cancelled: int
    reopens: int
    crashes: int
    partitions: int
    worker_crashes: int
    silent: int
    wrong: int  # wrong results committed
    upheld: int
    rejected: int
    envelopes: int
    digest: str  # the final ledger root: two runs of a seed must agree on it


class MarketSim(ShellSim):
    def __init__(self, config: MarketSimConfig) -> None:
        self.mcfg = config
        self.agents = [Identity(hashlib.sha256(b"market-sim agent %d" % i).digest())
                       for i in range(AGENTS)]
        self.ledgers: dict[int, LedgerRaft] = {}
        super().__init__(config.shell)
        self.lamport = 0
        self.posted: list[Envelope] = []
        self.crashed_workers: set[tuple[bytes, bytes]] = set()  # (need, worker)
        self.silent: set[tuple[bytes, int, bytes]] = set()  # (need, epoch, member)
        self.judged: set[tuple[bytes, int, bytes]] = set()  # members whose silence is drawn
        self.claimed: set[tuple[bytes, int]] = set()  # (need, epoch) claims decided on
        self.decided: dict[tuple[bytes, int], tuple[bytes, bytes, int]] = {}
        self.market_stats = {"worker_crashes": 0, "silent": 0, "envelopes": 0, "wrong": 0}
        self.faulty: dict[tuple[bytes, int], bool] = {}  # (need, epoch) -> commits wrong
        # Challenges sent: id -> (the envelope, whether the result it names is wrong).
        self.challenges: dict[bytes, tuple[Envelope, bool]] = {}
        self.challenged: set[tuple[bytes, bytes, bytes]] = set()  # (need, commit, who)

    # -- the world: ShellSim's, with the ledger shell on every node --

    def _make_genesis(self, ids: list[Identity]) -> genesis.Genesis:
        c = self.cfg
        return genesis.new(
            name="marketsim", created_ms=0,
            validators=[{"account": i.public_key, "org": f"o{k}", "asn": k,
                         "region": f"r{k % 3}", "stake": 200 * U}
                        for k, i in enumerate(ids)],
            accounts=[{"account": a.public_key, "balance": 1_000 * U} for a in self.agents],
            # Windows of seconds: the whole lifecycle runs within the schedule.
            params={"bucket_count": c.buckets, "replicas": c.replicas,
                    "bid_window_ms": 2_000, "claim_window_ms": 4_000,
                    "lease_grace_ms": 1_000, "heartbeat_interval_min_ms": 500,
                    "attest_window_ms": 6_000, "challenge_window_ms": 8_000,
                    "challenge_vote_window_ms": 6_000, "challenge_extend_ms": 2_000,
                    "challenge_bond_output_mismatch": U,
                    "escrow_hold_factor": 1, "tick_interval_ms": 500,
                    "outage_gap_ms": 5_000, "reputation_decay_weekly_bp": 0,
                    "unbonding_ms": 10_000})

    def _shell_kwargs(self) -> dict[str, Any]:
        return {"genesis": self.genesis}

    def _booted(self, n: SimNode) -> None:
        assert n.mr is not None and n.store is not None
        self.ledgers[n.id] = LedgerRaft(n.mr, n.store, self.genesis)

    def step(self, faults: bool) -> None:
        super().step(faults)
        for n in self._live():
            led = self.ledgers[n.id]
            if self.now % EFFECT_TICKS == 0:
                self._run(n, "deliver", led.deliver)
                self._run(n, "tick_tasks", led.tick_tasks)
                self._run(n, "draw_committees", led.draw_committees)
            if self.now % SYNC_TICKS == 0:
                self._run(n, "request_missing", led.request_missing)
        if faults and len(self.posted) < self.mcfg.needs \
                and self.rng.random() < self.mcfg.post_p:
            self._post()
        if self.now % ACT_EVERY == 0:
            self._act()
        self._check_rounds()

    def _run(self, n: SimNode, what: str, fn: Callable[[], None]) -> None:
        self._call(n, what, lambda _mr: fn())

    # -- agents --

    def _sign(self, who: Identity, kind: str, payload: dict[str, Any]) -> Envelope:
        self.lamport += 1
        return make_envelope(who, kind=kind, swarm=self.swarm_id, lamport=self.lamport,
                             ts=self.now * TICK_MS, payload=payload)

    def _send_env(self, env: Envelope) -> None:
        live = self._live()
        if not live:
            return
        n = self.rng.choice(live)
        cmd = ledger_command(bucket_for(env, self.cfg.buckets), env.wire)
        self.market_stats["envelopes"] += 1
        self._call(n, "submit_nowait", MultiRaft.submit_nowait, cmd)

    def _post(self) -> None:
        poster = self.agents[0]
        # A committee of one can be the colluder alone: a wrong result attested.
        env = self._sign(poster, "NEED", {"class": "simple", "budget": BUDGET,
                                          "verify_bounty": BOUNTY,
                                          "k_result": 1 + len(self.posted) % 2,
                                          "title": f"task {len(self.posted)}"})
        self.posted.append(env)
        self._send_env(env)

    def _view(self, need: Cid) -> Task | None:
        """The task as a random live node's replica or read replica shows it."""
        live = self._live()
        if not live:
            return None
        n = self.rng.choice(live)
        led = self.ledgers[n.id]
        return led.part(bucket_of(need.raw, self.cfg.buckets)).ledger.tasks.get(need)

    def _act(self) -> None:
        for env in self.posted:
            task = self._view(env.id)
            if task is None:
                if self.rng.random() < 0.1:
                    self._send_env(env)  # not funded yet as far as we see: again
                continue
            self._act_on(task)

    def _act_on(self, task: Task) -> None:
        need, rng, mc = task.terms.need, self.rng, self.mcfg
        n_id = str(need)
        if task.state == "OPEN":
            for a in self.agents[1:]:
                if a.public_key in task.excluded or any(
                        b.bidder == a.public_key for b in task.bids):
                    continue
                cost = rng.randint(2, 7) * U
                self._send_env(self._sign(a, "PROPOSE", {
                    "need_id": need, "proposal_id": "p", "cost": cost,
                    "eta_ms": rng.randint(1, 60) * 1_000, "ballot": rng.randbytes(4).hex()}))
        elif task.state == "DECIDED" and task.decision is not None:
            key = (need.raw, task.epoch)
            worker = self._agent(task.decision.winner)
            if worker is not None and (need.raw, worker.public_key) not in \
                    self.crashed_workers:
                if key not in self.claimed:
                    self.claimed.add(key)
                    if rng.random() < mc.worker_crash_p:
                        # Claims, then crashes: never heartbeats or commits again.
                        self.crashed_workers.add((need.raw, worker.public_key))
                        self.market_stats["worker_crashes"] += 1
                self._send_env(self._sign(worker, "CLAIM", {
                    "task_id": n_id, "lease_ttl_ms": 20_000,
                    "heartbeat_interval_ms": 1_000}))
        elif task.state == "CLAIMED" and task.lease is not None:
            worker = self._agent(task.lease.worker)
            if worker is None or (need.raw, worker.public_key) in self.crashed_workers:
                return
            lease = task.lease
            if lease.progress < 100:
                self._send_env(self._sign(worker, "HEARTBEAT", {
                    "task_id": n_id, "lease_id": lease.lease_id,
                    "progress": min(100, lease.progress + 40)}))
            else:
                key = (need.raw, task.epoch)
                if key not in self.faulty:
                    self.faulty[key] = rng.random() < mc.faulty_p
                    self.market_stats["wrong"] += self.faulty[key]
                result = wrong_result(need, task.epoch) if self.faulty[key] else need
                self._send_env(self._sign(worker, "COMMIT", {
                    "task_id": n_id, "lease_id": lease.lease_id, "result": result}))
        elif task.state == "ATTESTED" and task.commit is not None:
            self._challenge_and_vote(task)
        elif task.state == "COMMITTED" and task.commit is not None:
            said = {m for m, _ in task.commit.verdicts}
            for m in task.commit.committee:
                if m in said:
                    continue
                key3 = (need.raw, task.epoch, m)
                if key3 not in self.judged and key3 not in self.silent:
                    if rng.random() < mc.silent_p:
                        self.silent.add(key3)
                        self.market_stats["silent"] += 1
                    self.judged.add(key3)
                if key3 in self.silent:
                    continue
                member = self._validator(m)
                if member is not None:
                    right = task.commit.result == need or m == self.colluder
                    self._send_env(self._sign(member, "ATTEST", {
                        "task_id": n_id, "commit_id": task.commit.commit_id,
                        "verdict": "valid" if right else "invalid"}))

    @property
    def colluder(self) -> bytes:
        """The validator that attests everything valid and rejects every challenge."""
        return self.nodes[1].identity.public_key

    def _challenge_and_vote(self, task: Task) -> None:
        """The poster challenges a wrong result, the frivolous agent sometimes a right
        one (each once per result, the envelope sent again while the task does not show
        it); the panel under way votes by the truth, the colluder to reject."""
        c, need, rng = task.commit, task.terms.need, self.rng
        assert c is not None
        wrong = c.result != need
        who = self.agents[0] if wrong else self.agents[4]
        key = (need.raw, c.commit_id.raw, who.public_key)
        if key not in self.challenged and (wrong or rng.random() < self.mcfg.frivolous_p):
            self.challenged.add(key)
            env = self._sign(who, "CHALLENGE", {
                "task_id": str(need), "commit_id": c.commit_id,
                "proof_type": "output_mismatch", "evidence": wrong_result(need, -1),
                "bond_amount": U, "size_bytes": 100})
            self.challenges[env.id.raw] = (env, wrong)
        known = {x.terms.challenge_id.raw for x in task.challenges} | {
            r.challenge_id.raw for r in task.rulings}
        for cid, (env, _) in self.challenges.items():
            if cid not in known and env.payload["task_id"] == str(need) \
                    and env.payload["commit_id"] == c.commit_id and rng.random() < 0.2:
                self._send_env(env)  # not seen yet: lost, or on its way
        ch = task.active
        if ch is None or not ch.panel:
            return
        said = {m for m, _, _, r in ch.votes if r == ch.round}
        for m, _ in ch.panel:
            member = self._validator(m)
            if m in said or member is None:
                continue
            uphold = wrong and m != self.colluder
            self._send_env(self._sign(member, "ATTEST", {
                "task_id": str(need), "commit_id": c.commit_id,
                "evidence": ch.terms.challenge_id,
                "verdict": "invalid" if uphold else "valid"}))

    def _agent(self, account: bytes) -> Identity | None:
        return next((a for a in self.agents if a.public_key == account), None)

    def _validator(self, account: bytes) -> Identity | None:
        return next((n.identity for n in self.nodes.values()
                     if n.identity.public_key == account), None)

    # -- checkers --

    def _check_rounds(self) -> None:
        """P1 per round: one decision per (NEED, epoch), the same on every replica and
        read replica that shows it."""
        if self.now % 10:
            return
        for n in self._live():
            led = self.ledgers[n.id]
            for b in range(self.cfg.buckets):
                for need, task in led.part(b).ledger.tasks.tasks.items():
                    d = task.decision
                    if d is None:
                        continue
                    seen = (d.winner, d.proposal.raw, d.cost)
                    first = self.decided.setdefault((need.raw, d.epoch), seen)
                    if first != seen:
                        raise Violation(f"P1: node {n.id} shows another decision for NEED "
                                        f"{str(need)[:16]} epoch {d.epoch}")

    def _heal(self) -> None:
        super()._heal()
        for _ in range(self.mcfg.heal_steps):
            if not self._market_unsettled():
                break
            self.step(faults=False)
        else:
            raise Violation(f"liveness: after healing: {self._market_unsettled()}")
        self._check_end()

    def _market_unsettled(self) -> str:
        """What keeps the market from its end state, as node 1 sees it once every node
        agrees on the ledger root; "" when settled."""
        roots = {self.ledgers[n.id].root() for n in self._live()}
        if len(self._live()) != len(self.nodes) or len(roots) != 1:
            return f"{len(roots)} ledger roots among {len(self._live())} nodes"
        led = self.ledgers[1]
        for b in range(self.cfg.buckets):
            if led.part(b).ledger.outbox():
                return f"bucket {b} has effects in flight"
        for env in self.posted:
            task = led.part(bucket_of(env.id.raw, self.cfg.buckets)).ledger.tasks.get(env.id)
            if task is None:
                if led.part(bucket_of(env.sender, self.cfg.buckets)).ledger.is_decided(
                        op_id_of(env)):
                    continue  # refused when posted: nothing was escrowed
                return f"NEED {str(env.id)[:16]} not funded"
            if not (task.state == CANCELLED or task.paid):
                return f"NEED {str(env.id)[:16]} is {task.state}"
        return ""

    def _check_end(self) -> None:
        """Every replica of a bucket holds the same part; supply conserved."""
        for b in range(self.cfg.buckets):
            roots = {self.ledgers[n].part(b).root() for n in self.placement.replicas(b)}
            if len(roots) != 1:
                raise Violation(f"replicas of bucket {b} hold different ledger parts")
        led = self.ledgers[1]
        total = Totals()
        for b in range(self.cfg.buckets):
            total = total + led.part(b).ledger.totals()
        if total.held != genesis_supply(self.genesis):
            raise Violation(f"supply: {total.held} held, genesis made "
                            f"{genesis_supply(self.genesis)}")
        self._check_challenges()

    def _check_challenges(self) -> None:
        """Every challenge of a wrong result upheld (or moot: another was upheld first),
        none of a right one; no honest validator lost stake."""
        led = self.ledgers[1]
        for env in self.posted:
            task = led.part(bucket_of(env.id.raw, self.cfg.buckets)).ledger.tasks.get(env.id)
            for r in task.rulings if task is not None else ():
                _, wrong = self.challenges[r.challenge_id.raw]
                if wrong and r.outcome not in (UPHELD, MOOT):
                    raise Violation(f"a challenge of a wrong result of NEED "
                                    f"{str(env.id)[:16]} ended {r.outcome}")
                if not wrong and r.outcome == UPHELD:
                    raise Violation(f"a challenge of a right result of NEED "
                                    f"{str(env.id)[:16]} was upheld")
        stake = 200 * U
        for n in self.nodes.values():
            account = n.identity.public_key
            if account == self.colluder:
                continue
            locked = led.part(bucket_of(account, self.cfg.buckets)).ledger.account(
                account).locked
            if locked != stake:
                raise Violation(f"honest validator {n.id} holds {locked} staked, not "
                                f"{stake}")

    def _rulings(self) -> list[str]:
        led = self.ledgers[1]
        return [r.outcome for env in self.posted
                if (t := led.part(bucket_of(env.id.raw, self.cfg.buckets)).ledger.tasks.get(
                    env.id)) is not None for r in t.rulings]

    def market_run(self) -> MarketSimResult:
        self.run()
        # `run` closed the stores; the parts stay readable in memory.
        led = self.ledgers[1]
        led_tasks = [t for env in self.posted if (t := led.part(
            bucket_of(env.id.raw, self.cfg.buckets)).ledger.tasks.get(env.id)) is not None]
        return MarketSimResult(
            seed=self.mcfg.seed, steps=self.now, posted=len(self.posted),
            finalized=sum(1 for t in led_tasks if t.paid),
            cancelled=sum(1 for t in led_tasks if t.state == CANCELLED),
            reopens=sum(t.reopens for t in led_tasks), crashes=self.stats["crashes"],
            partitions=self.stats["partitions"],
            worker_crashes=self.market_stats["worker_crashes"],
            silent=self.market_stats["silent"], wrong=self.market_stats["wrong"],
            upheld=self._rulings().count(UPHELD),
            rejected=self._rulings().count("REJECTED"),
            envelopes=self.market_stats["envelopes"], digest=led.root().hex()[:16])


def wrong_result(need: Cid, epoch: int) -> Cid:
    """A result that is not the task's right one (the right one is the NEED's own id)."""
    return dag_cbor_cid(cbor.encode(b"wrong result %s %d" % (need.raw, epoch)))


def run_market_seed(seed: int) -> MarketSimResult:
    """Run one seed's market schedule; raises Violation naming the seed and step."""
    return MarketSim(MarketSimConfig.for_seed(seed)).market_run()


__all__ = ["PROFILES", "MarketSim", "MarketSimConfig", "MarketSimResult", "run_market_seed"]
