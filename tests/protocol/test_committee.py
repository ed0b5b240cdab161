"""Verifier pools and committees (protocol/committee.py): registration against the
minimum stake, P5 (active means staked above the minimum now), reputation and its
weekly decay, integer weights, and a deterministic, capped, seeded committee draw."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from swarm.protocol import cbor
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.committee import (
    AlreadyRegistered,
    CommitteeUnfillable,
    NotRegistered,
    PoolError,
    PoolLeave,
    PoolRegister,
    ReputationEvent,
    StakeTooLow,
    VerifierPool,
    decayed,
    decode_pool_op,
    encode_pool_op,
    recency_bp,
)
from swarm.protocol.errors import SchemaError
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.payout import Party

U = 1_000_000
DAY = 24 * 3600 * 1000
WEEK = 7 * DAY
MIN = DEFAULT_PARAMS["min_verifier_stake"]


def acct(i: int) -> bytes:
    return hashlib.sha256(b"verifier%d" % i).digest()


def pool_of(n: int, *, orgs: int | None = None, asns: int | None = None,
            regions: int | None = None, stake: int = MIN) -> tuple[VerifierPool, dict[bytes, int]]:
    pool = VerifierPool(DEFAULT_PARAMS)
    stakes = {}
    for i in range(n):
        pool.register(acct(i), stake=stake, capabilities=["python"], org=f"o{i % (orgs or n)}",
                      asn=i % (asns or n), region=f"r{i % (regions or n)}", ts_ms=0)
        stakes[acct(i)] = stake
    return pool, stakes


def test_register_needs_the_minimum_stake() -> None:
    pool = VerifierPool(DEFAULT_PARAMS)
    with pytest.raises(StakeTooLow) as err:
        pool.register(acct(1), stake=50 * U, capabilities=[], org="o", asn=1, region="r",
                      ts_ms=0)
    assert str(err.value) == "stake 50 is below the verifier minimum of 100"
    v = pool.register(acct(1), stake=MIN, capabilities=["b", "a", "a"], org="o", asn=1,
                      region="r", ts_ms=5)
    assert v.capabilities == ("a", "b") and v.reputation_bp == 5000 and v.registered_ms == 5
    with pytest.raises(AlreadyRegistered):
        pool.register(acct(1), stake=MIN, capabilities=[], org="o", asn=1, region="r",
                      ts_ms=6)
    with pytest.raises(PoolError, match="org"):
        pool.register(acct(2), stake=MIN, capabilities=[], org="", asn=1, region="r", ts_ms=0)


def test_deregister() -> None:
    pool, _ = pool_of(2)
    pool.deregister(acct(0))
    assert [v.account for v in pool.members()] == [acct(1)]
    with pytest.raises(NotRegistered):
        pool.deregister(acct(0))


def test_p5_only_verifiers_staked_above_the_minimum_are_active() -> None:
    pool, stakes = pool_of(3)
    stakes[acct(1)] = MIN - 1  # slashed or unstaked since registering
    active = {v.account for v in pool.active(stakes)}
    assert active == {acct(0), acct(2)}
    assert acct(1) not in pool.select(2, seed=b"s", stakes=stakes, now_ms=0)


def test_reputation_moves_by_events_and_decays_weekly() -> None:
    pool, _ = pool_of(1)
    a = acct(0)
    assert pool.reputation(a, 0) == 5000
    pool.record_challenge(a, upheld=True, ts_ms=0)
    assert pool.reputation(a, 0) == 6000
    pool.record_attestation(a, failed=True, ts_ms=0)
    assert pool.reputation(a, 0) == 3000
    # 5% per whole week without activity, floored each step; partial weeks do not count.
    assert pool.reputation(a, WEEK - 1) == 3000
    assert pool.reputation(a, WEEK) == 2850
    assert pool.reputation(a, 2 * WEEK) == 2707
    # Clamped to 0..10000.
    for _ in range(3):
        pool.record_attestation(a, failed=True, ts_ms=2 * WEEK)
    assert pool.reputation(a, 2 * WEEK) == 0
    for _ in range(12):
        pool.record_challenge(a, upheld=True, ts_ms=2 * WEEK)
    assert pool.reputation(a, 2 * WEEK) == 10_000
    assert decayed(10_000, 0, 10_000 * WEEK, DEFAULT_PARAMS) == 0  # bounded loop


def test_recency_falls_linearly_to_a_floor() -> None:
    assert recency_bp(0, 0, DEFAULT_PARAMS) == 10_000
    assert recency_bp(0, WEEK // 2, DEFAULT_PARAMS) == 5_500
    assert recency_bp(0, 10 * WEEK, DEFAULT_PARAMS) == 1_000


def test_weight_is_isqrt_stake_times_reputation_times_recency() -> None:
    pool, _ = pool_of(1)
    v = pool.members()[0]
    assert pool.weight(v, 400 * U, 0) == 20_000 * 5000 * 10_000
    assert pool.weight(v, 400 * U + 1, 0) == 20_000 * 5000 * 10_000  # integer sqrt


def test_selection_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    pool, stakes = pool_of(20)
    one = pool.select(5, seed=b"entry-1", stakes=stakes, now_ms=0)
    assert one == pool.select(5, seed=b"entry-1", stakes=stakes, now_ms=0)
    assert len(set(one)) == 5
    others = {tuple(pool.select(5, seed=b"entry-%d" % i, stakes=stakes, now_ms=0))
              for i in range(20)}
    assert len(others) > 10


def test_selection_respects_org_asn_and_region_caps() -> None:
    # 30 verifiers over 10 orgs, 4 ASNs, 2 regions. k=8 allows 2 per org (30%), 3 per
    # ASN (40%), 4 per region (50%): the regions are the binding cap.
    pool, stakes = pool_of(30, orgs=10, asns=4, regions=2)
    for seed in range(30):
        chosen = pool.select(8, seed=b"%d" % seed, stakes=stakes, now_ms=0)
        members = [m for m in (pool.member(a) for a in chosen) if m]
        assert len(set(chosen)) == 8
        assert max(Counter(m.org for m in members).values()) <= 2
        assert max(Counter(m.asn for m in members).values()) <= 3
        assert Counter(m.region for m in members) == {"r0": 4, "r1": 4}
    # k=9 still allows only 4 per region: two regions cannot seat nine.
    with pytest.raises(CommitteeUnfillable, match="only 8 of 9"):
        pool.select(9, seed=b"x", stakes=stakes, now_ms=0)


def test_selection_follows_weight() -> None:
    # One verifier with 100x the stake (10x the sqrt) and the best reputation is drawn
    # first far more often than any other; exact counts are fixed by the seeds.
    pool, stakes = pool_of(10)
    whale = acct(0)
    stakes[whale] = 100 * MIN
    firsts = Counter(pool.select(1, seed=b"%d" % s, stakes=stakes, now_ms=0)[0]
                     for s in range(300))
    assert firsts[whale] > 3 * max(n for a, n in firsts.items() if a != whale)


def test_selection_filters_by_capability_and_exclusions() -> None:
    pool, stakes = pool_of(6)
    pool.register(acct(99), stake=MIN, capabilities=["rust"], org="ox", asn=99, region="rx",
                  ts_ms=0)
    stakes[acct(99)] = MIN
    assert pool.select(1, seed=b"a", stakes=stakes, now_ms=0, capability="rust") == [acct(99)]
    chosen = pool.select(5, seed=b"b", stakes=stakes, now_ms=0, capability="python",
                         exclude={acct(0)})
    assert acct(0) not in chosen and acct(99) not in chosen
    with pytest.raises(PoolError):
        pool.select(0, seed=b"c", stakes=stakes, now_ms=0)


def test_pool_root_tracks_state() -> None:
    a, _ = pool_of(3)
    b, _ = pool_of(3)
    assert a.root() == b.root()
    a.record_challenge(acct(1), upheld=True, ts_ms=10)
    assert a.root() != b.root()


def test_genesis_validators_staking_the_minimum_start_in_the_pool() -> None:
    gen = genesis_mod.new(
        name="pool", created_ms=42,
        validators=[{"account": acct(1), "org": "a", "asn": 1, "region": "x", "stake": MIN},
                    {"account": acct(2), "org": "b", "asn": 2, "region": "y", "stake": 1}],
        params={"replicas": 1})
    pool = VerifierPool.from_genesis(gen)
    (v,) = pool.members()
    assert (v.account, v.org, v.asn, v.region, v.registered_ms) == (acct(1), "a", 1, "x", 42)


def test_pool_operations_round_trip_and_apply() -> None:
    oid = hashlib.sha256(b"op").digest()
    ops = [PoolRegister(oid, acct(1), ("a", "b"), "org", 7, "eu"), PoolLeave(oid, acct(1)),
           ReputationEvent(oid, acct(1), "upheld_challenge")]
    for op in ops:
        assert decode_pool_op(encode_pool_op(op)) == op
    pool = VerifierPool(DEFAULT_PARAMS)
    with pytest.raises(StakeTooLow):
        pool.apply(ops[0], ts_ms=0, stake=MIN - 1)
    pool.apply(ops[0], ts_ms=0, stake=MIN)
    pool.apply(ops[2], ts_ms=0, stake=MIN)
    pool.apply(ReputationEvent(oid, acct(1), "failed_attestation"), ts_ms=0, stake=MIN)
    assert pool.reputation(acct(1), 0) == 3000
    pool.apply(ops[1], ts_ms=1, stake=MIN)
    assert pool.members() == []
    with pytest.raises(SchemaError, match="event"):
        decode_pool_op(cbor.encode({"op": "reputation", "id": oid, "account": acct(1),
                                    "event": "bribed"}))


def test_verifiers_related_to_the_judged_parties_are_never_drawn() -> None:
    pool, stakes = pool_of(12, orgs=4, asns=6)
    worker = Party(hashlib.sha256(b"worker").digest(), "o1", 999)  # shares org o1
    payer = Party(hashlib.sha256(b"payer").digest(), "zz", 2,  # shares ASN 2
                  linked=frozenset({acct(0)}))  # and declares verifier 0 as its own
    for seed in range(20):
        # Left: verifiers 3, 4, 6, 7, 10, 11, in orgs o0, o2, o3: three seats.
        chosen = pool.select(3, seed=b"%d" % seed, stakes=stakes, now_ms=0,
                             unrelated_to=[worker, payer])
        assert len(chosen) == 3
        for a in chosen:
            m = pool.member(a)
            assert m is not None and m.org != "o1" and m.asn != 2 and a != acct(0)
