"""What the seeded simulations share: the failure they raise, the fault draws, the run.

Owns the parts of a simulated world that do not depend on what is simulated: the
`Violation` a failed check raises (naming the seed and the step), the clock skew and
the NEEDs every schedule uses, one step of the crash/restart and partition/heal
schedules, messages coming due, the faulty run then the heal, and the regression
seeds every test run replays. testnet/raftsim.py (one bare Raft group) and
testnet/multiraft_sim.py (the multi-raft shell) each own their world and checkers.

Every draw is made from the one `random.Random` the caller passes, in a fixed order:
a seed's schedule depends on that order, so changing a helper here changes every
seed's schedule (then say so, as changing a simulation does).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from swarm.protocol.raftlog import LogInvariant

# How often a node ticks, in steps, drawn per node: most every step, some every second
# or third (clock skew).
TICK_EVERY_CHOICES = (1, 1, 1, 2, 3)
# A seed's fault profile is seed % PROFILES (`for_seed` in each simulation).
PROFILES = 5

Item = TypeVar("Item", bound=tuple[Any, ...])
Node = TypeVar("Node")


class Violation(AssertionError):
    """A safety or liveness property failed: the seed and step say how to replay it."""


@contextlib.contextmanager
def named_violations(seed: int, now: Callable[[], int]) -> Iterator[None]:
    """Turn a failed check, or an invariant the code under test asserts, into a
    Violation naming the seed and the step, so the failure says how to replay it."""
    try:
        yield
    except (LogInvariant, AssertionError) as exc:
        if isinstance(exc, Violation):
            raise Violation(f"seed {seed} step {now()}: {exc}") from exc
        raise Violation(f"seed {seed} step {now()}: internal invariant: {exc!r}") from exc


def need_ids(count: int) -> list[bytes]:
    """The NEEDs a schedule decides: the same `count` ids in every run."""
    return [hashlib.sha256(b"need%d" % i).digest()[:16] for i in range(count)]


def crashes_and_restarts(rng: random.Random, nodes: Iterable[Node],
                         live: Callable[[Node], bool], crash: Callable[[Node], None],
                         boot: Callable[[Node], None], crash_p: float,
                         restart_p: float) -> None:
    """One step of the crash schedule: each live node crashes with `crash_p`, each
    crashed one restarts with `restart_p`."""
    for node in nodes:
        if live(node) and rng.random() < crash_p:
            crash(node)
        elif not live(node) and rng.random() < restart_p:
            boot(node)


def next_partition(rng: random.Random, ids: Iterable[int], blocked: set[frozenset[int]],
                   partition_p: float, heal_p: float) -> set[frozenset[int]] | None:
    """One step of the partition schedule: with `partition_p` a new cut into two sides
    (the links blocked, never empty), else with `heal_p` the heal of the current one
    (empty), else None: no change."""
    if rng.random() < partition_p:
        order = list(ids)
        rng.shuffle(order)
        cut = rng.randint(1, len(order) - 1)
        return {frozenset((a, b)) for a in order[:cut] for b in order[cut:]}
    if blocked and rng.random() < heal_p:
        return set()
    return None


def take_due(items: list[Item], now: int) -> tuple[list[Item], list[Item]]:
    """(due, later): the items whose first field, the step they are due at, is `now`
    or earlier, and the others; both in their original order."""
    due = [x for x in items if x[0] <= now]
    if not due:
        return due, items
    return due, [x for x in items if x[0] > now]


def run_then_heal(seed: int, now: Callable[[], int], step: Callable[[bool], None],
                  steps: int, heal: Callable[[], None],
                  progress: Callable[[int], None] | None = None,
                  progress_every: int = 100) -> None:
    """A schedule: `steps` faulty steps, then `heal`, every failed check a Violation
    naming the seed and the step."""
    with named_violations(seed, now):
        for i in range(steps):
            step(True)
            if progress is not None and i % progress_every == 0:
                progress(i)
        heal()


def heal_steps(step: Callable[[bool], None], settled: Callable[[], bool],
               retry: Callable[[], None], steps: int, retry_every: int,
               retry_at: int) -> bool:
    """Steps without faults until `settled` (True), or `steps` of them (False); clients
    `retry` what is undecided after the steps i with i % retry_every == retry_at."""
    for i in range(steps):
        step(False)
        if i % retry_every == retry_at:
            retry()
        if settled():
            return True
    return False


@dataclass(frozen=True)
class RegressionSeed:
    sim: str  # "raft": testnet/raftsim.py; "shell": multiraft_sim.py; "market": market_sim.py
    seed: int
    reason: str


# Seeds that catch a bug the shell simulation found, once its fix is taken out again:
# every test run replays them (tests/sim/test_regression_seeds.py; the range tests
# leave them out). A change to a simulation reshuffles its schedules, and a seed may
# stop catching its bug; so after such a change, take each fix out again, run seeds
# until one fails (`swarm-testnet sim --shell --start S --seeds N`) and list that one.
# Each reason names the bug, then the fix that, taken out, makes the seed fail. The
# Raft core simulation has none yet.
REGRESSION_SEEDS: tuple[RegressionSeed, ...] = (
    RegressionSeed("shell", 0, "certificates that do not verify: sign the entry's own "
                               "stamp, not the bucket's clock"),
    RegressionSeed("shell", 40, "a replica campaigning for good against a quiet leader: "
                                "the leader answers a (pre-)vote with one heartbeat"),
    RegressionSeed("shell", 49, "a decision whose replicas all restarted before a quorum "
                                "signed: co-sign shares, keep it out of snapshots (both)"),
    RegressionSeed("shell", 146, "the same in the storm profile"),
    RegressionSeed("shell", 54, "a bucket refusing proposals for good after a lost "
                                "TIMEOUT_NOW: a transferring leader keeps ticking"),
    RegressionSeed("shell", 83, "the same with frames reordered"),
    RegressionSeed("shell", 56, "a follower that missed a quiet leader's last commit: "
                                "the leader heartbeats a peer that comes back"),
    RegressionSeed("shell", 82, "a decision never certified: signature shares go again "
                                "until a DECIDE is out"),
    RegressionSeed("market", 2, "effects stuck for good: a timer firing on an "
                                "acknowledgement's entry emitted batches naming no "
                                "operation; such entries name the tick's operation id"),
    RegressionSeed("market", 3, "a chain entry never certified (a COMMIT never drawn, a "
                                "read replica stuck at the gap): compaction waits for "
                                "chain certificates, and replicas keep their signatures "
                                "on disk"),
    RegressionSeed("market", 13, "a follower that lost the append carrying a quiet "
                                 "leader's last commit index, its peer never gone: a "
                                 "follower holding entries past its commit index ticks, "
                                 "pre-votes, and the leader answers with a heartbeat"),
)


def regression_seeds(sim: str) -> frozenset[int]:
    """The regression seeds of one simulation ("raft", "shell" or "market")."""
    return frozenset(r.seed for r in REGRESSION_SEEDS if r.sim == sim)
