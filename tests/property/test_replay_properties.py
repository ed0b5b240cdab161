"""P2, deterministic replay, as a property: a log replays to the same bytes every time,
and every causally valid delivery order of the same envelopes converges."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol.logformat import encode_log, iter_log
from swarm.protocol.replay import replay
from swarm.testnet.workload import TEST_SWARM, generate

WORKLOADS = {seed: [e.wire for e in generate(120, n_agents=3, seed=seed)] for seed in range(4)}
REFERENCE = {seed: replay(w, swarm=TEST_SWARM).plan.snapshot() for seed, w in WORKLOADS.items()}


@given(st.sampled_from(sorted(WORKLOADS)), st.randoms(use_true_random=False),
       st.integers(0, 30))
def test_any_delivery_order_with_duplicates_converges(seed: int, rnd: Any, dups: int) -> None:
    wires = list(WORKLOADS[seed])
    wires += [rnd.choice(wires) for _ in range(dups)]
    rnd.shuffle(wires)
    replica = replay(wires, swarm=TEST_SWARM)
    assert replica.pending == {}
    assert replica.plan.snapshot() == REFERENCE[seed]


@given(st.sampled_from(sorted(WORKLOADS)))
def test_replay_of_a_log_is_byte_identical(seed: int) -> None:
    log = encode_log(WORKLOADS[seed])
    a = replay(iter_log(log), swarm=TEST_SWARM)
    b = replay(iter_log(log), swarm=TEST_SWARM)
    assert a.plan.snapshot() == b.plan.snapshot() == REFERENCE[seed]
    assert a.summary() == b.summary()
