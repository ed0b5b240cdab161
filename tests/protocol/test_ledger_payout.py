"""Bounties and payouts (protocol/payout.py): caps by task class (P6), the quiet and the
upheld-challenge splits, and related parties never paid (P8). Each payout is applied to
a real single-bucket ledger, so the ledger's own checks run on what payout.py builds."""

from __future__ import annotations

import hashlib

import pytest

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.ledger import BucketLedger, InvalidOp, OpenEscrow, OverCap, genesis_supply
from swarm.protocol.ledger_ops import LedgerEntry, Share
from swarm.protocol.payout import (
    Party,
    bounty,
    bounty_cap,
    payout_no_challenge,
    payout_upheld,
    related,
    unrelated,
)

U = 1_000_000
DAY = 24 * 3600 * 1000
EVIDENCE = dag_cbor_cid(b"proof")


def acct(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


PAYER = Party(acct("payer"), "acme", 100)
WORKER = Party(acct("worker"), "workco", 200)
V1 = Party(acct("v1"), "org1", 1)
V2 = Party(acct("v2"), "org2", 2)
V3 = Party(acct("v3"), "org3", 3)
CHAL = Party(acct("chal"), "orgc", 9)


def oid(n: int) -> bytes:
    return hashlib.sha256(b"op%d" % n).digest()


class Bucket:
    """A single-bucket ledger with a funded payer and three staked verifiers."""

    def __init__(self) -> None:
        self.genesis = genesis_mod.new(
            name="payout", created_ms=0,
            validators=[{"account": p.account, "org": p.org, "asn": p.asn or 0, "region": "r",
                         "stake": 200 * U} for p in (V1, V2, V3)],
            accounts=[{"account": PAYER.account, "balance": 5000 * U}],
            params={"replicas": 1, "bucket_count": 1},
        )
        self.led = BucketLedger.from_genesis(self.genesis, 0)
        self.index = 0

    def apply(self, op: object, ts_ms: int):  # type: ignore[no-untyped-def]
        self.index += 1
        result = self.led.apply(LedgerEntry(self.index, ts_ms, op))  # type: ignore[arg-type]
        assert result.error is None, result.error
        return result

    def open_bounty(self, amount: int, task_class: str = "critical") -> OpenEscrow:
        self.apply(bounty(oid(1), PAYER.account, oid(99), amount, task_class,
                          self.genesis.params), 0)
        esc = self.led.escrow(PAYER.account, oid(99))
        assert esc is not None
        return esc

    def balance(self, p: Party) -> int:
        return self.led.account(p.account).balance


def test_caps_by_task_class() -> None:
    params = genesis_mod.DEFAULT_PARAMS
    assert [bounty_cap(c, params) for c in ("simple", "complex", "critical")] == [
        10 * U, 100 * U, 1000 * U]
    assert bounty(oid(1), PAYER.account, oid(2), 10 * U, "simple", params).amount == 10 * U
    with pytest.raises(OverCap, match=r"bounty 100\.000001 is over the complex cap of 100"):
        bounty(oid(1), PAYER.account, oid(2), 100 * U + 1, "complex", params)
    with pytest.raises(InvalidOp):
        bounty_cap("epic", params)


def test_relations_by_org_asn_and_linked_identity() -> None:
    assert related(Party(acct("x"), "o"), Party(acct("y"), "o"))
    assert related(Party(acct("x"), "", 7), Party(acct("y"), "", 7))
    assert related(Party(acct("x"), linked=frozenset({acct("y")})), Party(acct("y")))
    assert related(Party(acct("y")), Party(acct("x"), linked=frozenset({acct("y")})))
    assert not related(Party(acct("x"), "o", 1), Party(acct("y"), "p", 2))
    assert not related(Party(acct("x")), Party(acct("y")))  # empty org is no org
    assert unrelated([V1, V2], [Party(acct("z"), "org1")]) == [V2]


def test_quiet_payout_goes_to_the_committee_in_equal_shares() -> None:
    b = Bucket()
    esc = b.open_bounty(100 * U + 1)
    release = payout_no_challenge(oid(2), esc, [V1, V2, V3], payer=PAYER, worker=WORKER)
    assert release.burn == 0 and sum(s.amount for s in release.shares) == esc.amount
    b.apply(release, 2 * DAY)
    got = sorted(b.balance(p) for p in (V1, V2, V3))
    assert got == [33_333_333, 33_333_334, 33_333_334]
    assert b.led.totals().held == genesis_supply(b.genesis)


def test_quiet_payout_skips_related_members_and_burns_if_none_is_left() -> None:
    b = Bucket()
    esc = b.open_bounty(90 * U)
    friend_of_worker = Party(V2.account, V2.org, WORKER.asn)  # same ASN as the worker
    release = payout_no_challenge(oid(2), esc, [V1, friend_of_worker, V3], payer=PAYER,
                                  worker=WORKER)
    assert {s.account for s in release.shares} == {V1.account, V3.account}
    assert all(s.amount == 45 * U for s in release.shares)
    everyone_related = [Party(v.account, PAYER.org) for v in (V1, V2, V3)]
    burnt = payout_no_challenge(oid(3), esc, everyone_related, payer=PAYER)
    assert burnt.shares == () and burnt.burn == esc.amount


def test_upheld_challenge_pays_challenger_and_honest_and_slashes_the_wrong() -> None:
    b = Bucket()
    esc = b.open_bounty(100 * U)
    release = payout_upheld(oid(2), esc, challenger=CHAL, honest=[V1, V2], slashed=[V3],
                            evidence=EVIDENCE, payer=PAYER, worker=WORKER,
                            params=b.genesis.params)
    honest = sorted([Share(V1.account, 20 * U), Share(V2.account, 20 * U)],
                    key=lambda s: s.account)
    assert release.shares == (Share(CHAL.account, 50 * U), *honest)
    assert release.burn == 10 * U
    (order,) = release.slashes
    assert (order.account, order.reason, order.evidence, order.challenger) == (
        V3.account, "failed_challenge", EVIDENCE, CHAL.account)
    b.apply(release, 2 * DAY)
    # Bounty: 50 to CHAL, 20 each to V1 and V2. Slash of V3 (100 of 200): 50 / 20 / 20.
    assert b.balance(CHAL) == 100 * U
    assert b.balance(V1) == b.balance(V2) == 40 * U
    assert b.led.account(V3.account).locked == 100 * U
    assert b.led.totals().burned == 20 * U
    assert b.led.totals().held == genesis_supply(b.genesis)


def test_a_related_challenger_is_not_paid_and_its_share_burns() -> None:
    b = Bucket()
    esc = b.open_bounty(100 * U)
    sock_puppet = Party(CHAL.account, "orgc", 9, linked=frozenset({V3.account}))
    release = payout_upheld(oid(2), esc, challenger=sock_puppet, honest=[V1, V2],
                            slashed=[V3], evidence=EVIDENCE, payer=PAYER, worker=WORKER,
                            params=b.genesis.params)
    assert CHAL.account not in {s.account for s in release.shares}
    assert release.burn == 60 * U and release.slashes[0].challenger is None
    b.apply(release, 2 * DAY)
    assert b.balance(CHAL) == 0
    assert b.led.totals().held == genesis_supply(b.genesis)
