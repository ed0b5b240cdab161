"""Challenges across buckets: a CHALLENGE debits its challenger's bucket and opens the
challenge in the task's bucket by an authenticated `Bond` effect; the panel is drawn
like a committee; an upheld challenge slashes the attesters in their own buckets and
pays the challenger and the honest panel; credits are conserved throughout and a read
replica fed only certified chain entries holds the same state."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_bucket_machine import GENESIS, V2, U, identity_in
from test_market_bucket import (
    A0,
    A1,
    B0,
    C3,
    X1,
    Swarm,
    committed_in_bucket_3,
    seat_committee,
    signed,
)

from swarm.protocol.bucket_machine import (
    BucketMachine,
    LedgerPart,
    draw_command,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cbor import encode
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity
from swarm.protocol.ledger_ops import PoolRow
from swarm.protocol.payout import Party, related
from swarm.protocol.task import ATTESTED, OPEN, REJECTED, UPHELD, ChallengeSlash

BOND = GENESIS.params["challenge_bond_schema_violation"]


def challenge(who: Identity, need: Envelope, commit_id: Cid, *, bond: int = BOND,
              size: int = 512, kind: str = "schema_violation", task: str = "") -> Envelope:
    return signed(who, "CHALLENGE", {
        "task_id": task or str(need.id), "commit_id": commit_id, "proof_type": kind,
        "evidence": dag_cbor_cid(encode("proof")), "bond_amount": bond, "size_bytes": size})


def attested(s: Swarm) -> tuple[Envelope, Cid, Identity, Identity]:
    """A NEED in bucket 3 won and committed by A1, attested by a committee of one drawn
    from V2 (bucket 2) and X1 (bucket 1). Returns the NEED, the commit id, the
    committee member and the other verifier."""
    need, _ = committed_in_bucket_3(s, k=1)
    seat_committee(s, need)
    (member,) = s.task(need).commit.committee
    seated, other = (V2, X1) if member == V2.public_key else (X1, V2)
    commit_id = s.task(need).commit.commit_id
    assert s.submit(3, signed(seated, "ATTEST", {"task_id": str(need.id),
                                                 "commit_id": commit_id,
                                                 "verdict": "valid"})).ok
    assert s.task(need).state == ATTESTED
    return need, commit_id, seated, other


def vote(s: Swarm, who: Identity, need: Envelope, commit_id: Cid, challenge_id: Cid,
         uphold: bool) -> Any:
    return s.submit(3, signed(who, "ATTEST", {
        "task_id": str(need.id), "commit_id": commit_id, "evidence": challenge_id,
        "verdict": "invalid" if uphold else "valid"}))


def draw_panel(s: Swarm, need: Envelope) -> Any:
    b3 = s.b[3]
    return s.command(3, draw_command(3, need.id, b3.proof(s.task(need).draw_index)).stamp(
        s.ts))


def stake(s: Swarm, who: Identity) -> int:
    return s.b[bucket_of(who.public_key, 4)].machine.ledger.account(who.public_key).locked


def test_an_upheld_challenge_slashes_across_buckets_and_conserves_credits() -> None:
    s = Swarm()
    need, commit_id, seated, panelist = attested(s)
    before = s.balance(B0)
    ch = challenge(B0, need, commit_id)
    out = s.submit(0, ch)
    assert out.ok, out
    assert s.balance(B0) == before - BOND
    task = s.task(need)
    assert [c.terms.challenge_id for c in task.challenges] == [ch.id]
    assert s.b[3].machine.ledger.totals().tasks == 10 * U + BOND
    s.conserved()
    assert draw_panel(s, need).ok
    panel = s.task(need).active.panel
    assert [m for m, _ in panel] == [panelist.public_key]  # all the pool has left
    assert panel[0][1] == stake(s, panelist)
    staked = stake(s, seated)
    assert vote(s, panelist, need, commit_id, ch.id, True).ok
    task = s.task(need)
    assert [r.outcome for r in task.rulings] == [UPHELD]
    # Reopened without the worker, the only bidder: a new auction, k_result + 2.
    assert task.state == OPEN and task.epoch == 1 and A1.public_key in task.excluded
    assert task.k_result == 3
    slash = staked * GENESIS.params["slash_failed_challenge_bp"] // 10_000
    assert stake(s, seated) == staked - slash
    challenger_share = slash * 5_000 // 10_000
    assert s.balance(B0) == before + challenger_share  # the bond back, and half the slash
    s.conserved()
    burned = sum(b.machine.ledger.totals().burned for b in s.b)
    assert burned == slash - challenger_share - slash * 4_000 // 10_000


def test_a_rejected_challenge_burns_and_shares_the_bond() -> None:
    s = Swarm()
    need, commit_id, _, panelist = attested(s)
    before = s.balance(C3)
    ch = challenge(C3, need, commit_id)  # the task's own bucket: no effect needed
    assert s.submit(3, ch).ok
    assert draw_panel(s, need).ok
    panel_before = s.balance(panelist)
    assert vote(s, panelist, need, commit_id, ch.id, False).ok
    assert [r.outcome for r in s.task(need).rulings] == [REJECTED]
    assert s.balance(C3) == before - BOND
    assert s.balance(panelist) == panel_before + BOND * 4_000 // 10_000
    s.tick(3, s.task(need).finalize_ms)
    s.tick(3, s.task(need).pay_ms)
    assert s.task(need).paid
    s.conserved()


def test_the_challengers_bucket_checks_bond_size_balance_and_rate() -> None:
    s = Swarm()
    need, commit_id, _, _ = attested(s)
    assert s.submit(0, challenge(B0, need, commit_id, bond=BOND + 1)).code == "invalid_op"
    assert s.submit(0, challenge(B0, need, commit_id, bond=BOND * 2)).ok  # complexity 2x
    assert s.submit(0, challenge(A0, need, commit_id,
                                 size=GENESIS.params["proof_bytes_max"] + 1)).code == \
        "invalid_op"
    poor = identity_in(0, 2)
    assert s.submit(0, challenge(poor, need, commit_id)).code == "insufficient_balance"
    # The rate limit: refused challenges (no such task) still count, their bonds back.
    rate = GENESIS.params["challenge_rate_max"]
    for i in range(rate):
        nowhere = str(dag_cbor_cid(encode(f"no such need {i}")))
        assert s.submit(3, challenge(C3, need, commit_id, task=nowhere)).ok
    out = s.submit(3, challenge(C3, need, commit_id, task=str(need.id)))
    assert out.code == "rate_limited", out
    s.conserved()


def test_a_challenge_of_a_missing_task_comes_back_to_the_challenger() -> None:
    s = Swarm()
    need, commit_id, _, _ = attested(s)
    other = dag_cbor_cid(encode("no such need"))
    before = s.balance(B0)
    assert s.submit(0, challenge(B0, need, commit_id, task=str(other))).ok
    assert s.balance(B0) == before
    s.conserved()


def test_challenges_survive_a_bucket_snapshot() -> None:
    s = Swarm()
    need, commit_id, _, _ = attested(s)
    assert s.submit(0, challenge(B0, need, commit_id)).ok
    assert draw_panel(s, need).ok
    for b in (s.b[0], s.b[3]):
        m = b.machine
        again = BucketMachine.restore(m.snapshot(), m.bucket, GENESIS.swarm_id,
                                      GENESIS.params, GENESIS)
        assert again.part.root() == m.part.root()


# --- P8: nobody related to the challenged is paid ----------------------------------

def _accounts_in(bucket: int, n: int) -> list[bytes]:
    found, i = [], 0
    while len(found) < n:
        a = hashlib.sha256(b"p8 %d" % i).digest()
        i += 1
        if bucket_of(a, 4) == bucket:
            found.append(a)
    return found


P8_ACCOUNTS = _accounts_in(1, 8)


@settings(max_examples=150, deadline=None)
@given(orgs=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=8, max_size=8),
       asns=st.lists(st.integers(1, 4), min_size=8, max_size=8),
       roles=st.permutations(range(8)), honest_n=st.integers(0, 4))
def test_p8_a_slash_never_pays_a_party_related_to_the_challenged(
        orgs: list[str], asns: list[int], roles: list[int], honest_n: int) -> None:
    rows = tuple(sorted((PoolRow(a, 10 * U, (), orgs[i], asns[i], "r", 0, 5_000, 0, 0)
                         for i, a in enumerate(P8_ACCOUNTS)), key=lambda r: r.account))
    part = LedgerPart.empty(GENESIS.params, 0)
    part.ledger._views[1] = (1, rows)
    who = [P8_ACCOUNTS[i] for i in roles]
    slashed, challenger, poster, worker, *rest = who
    cause = ChallengeSlash(slashed, dag_cbor_cid(encode("n")), dag_cbor_cid(encode("c")),
                           challenger, tuple(sorted(rest[:honest_n])), poster, worker)
    order = part.slash_order(cause)
    party = {r.account: Party(r.account, r.org, r.asn) for r in rows}
    if order.challenger is not None:
        assert not any(related(party[order.challenger], party[x]) for x in (slashed, worker))
    for h in order.honest:
        assert h in cause.honest
        assert not any(related(party[h], party[x])
                       for x in (slashed, worker, poster, challenger))
    # And whoever is unrelated keeps its share.
    dropped = set(cause.honest) - set(order.honest)
    assert all(any(related(party[h], party[x]) for x in (slashed, worker, poster, challenger))
               for h in dropped)
