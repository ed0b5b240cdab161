"""The task lifecycle (protocol/task.py): every transition, both sides of every rule,
and the hostile cases: each refused step changes nothing and the task goes on."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from swarm.protocol import cbor
from swarm.protocol.auction import Bid, ballot_hash, improves, rank, score
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Envelope, Identity, make_envelope
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.task import (
    ATTESTED,
    CANCELLED,
    CLAIMED,
    COMMITTED,
    DECIDED,
    FINALIZED,
    OPEN,
    Step,
    Task,
    TaskBook,
    TaskError,
    Terms,
    restore,
    task_json,
)

SWARM = b"\x07" * 32
PARAMS = {**DEFAULT_PARAMS, "bid_window_ms": 1_000, "claim_window_ms": 1_000,
          "attest_window_ms": 2_000, "challenge_window_ms": 5_000, "lease_grace_ms": 100,
          "outage_gap_ms": 3_000, "heartbeat_interval_min_ms": 100, "lease_ttl_min_ms": 100}
POSTER, ALICE, BOB, CAROL, V1, V2, V3, V4 = (Identity(bytes([0x60 + i]) * 32)
                                             for i in range(8))
_lamport = itertools.count(1)


def env(who: Identity, kind: str, payload: dict[str, Any]) -> Envelope:
    return make_envelope(who, kind=kind, swarm=SWARM, lamport=next(_lamport), ts=1,
                         payload=payload)


def cid(tag: str) -> Cid:
    return dag_cbor_cid(cbor.encode(tag))


NEED = cid("need-1")
TASK = str(NEED)


class Book:
    """A TaskBook with a clock and an index, as a bucket drives it."""

    def __init__(self, **params: int) -> None:
        self.book = TaskBook({**PARAMS, **params})
        self.ts = 1_000
        self.index = 0
        self.steps: list[Step] = []

    def _entry(self) -> int:
        self.index += 1
        self.steps.append(self.book.advance(self.ts, self.index))
        return self.index

    def at(self, ts: int) -> Step:
        """An entry that only moves time (a tick)."""
        self.ts = ts
        self._entry()
        return self.steps[-1]

    def fund(self, budget: int = 1_000, bounty: int = 90, k: int = 3,
             caps: tuple[str, ...] = ()) -> Step:
        i = self._entry()
        step = self.book.fund(Terms(NEED, POSTER.public_key, budget, "simple", bounty, 0, k,
                                    caps), i, self.ts)
        self.steps.append(step)
        return step

    def send(self, e: Envelope, reputation_bp: int = 5_000) -> Step:
        i = self._entry()
        step = self.book.submit(e, i, self.ts, reputation_bp=reputation_bp)
        self.steps.append(step)
        return step

    def draw(self, members: list[Identity]) -> Step:
        self._entry()
        step = self.book.draw(NEED, [m.public_key for m in members], self.ts,
                              commit_index=self.task.commit.index)
        self.steps.append(step)
        return step

    @property
    def task(self) -> Any:
        return self.book.get(NEED)

    def paid(self) -> dict[tuple[bytes, str], int]:
        out: dict[tuple[bytes, str], int] = {}
        for s in self.steps:
            for p in s.payments:
                out[(p.account, p.kind)] = out.get((p.account, p.kind), 0) + p.amount
        return out

    def refused(self, e: Envelope, code: str) -> None:
        before = self.book.state_value()
        with pytest.raises(TaskError) as info:
            self.book.submit(e, self.index + 1, self.ts)
        assert info.value.code == code, info.value
        assert self.book.state_value() == before


def propose(who: Identity, cost: int, eta_ms: int = 1_000, ballot: str = "",
            caps: tuple[str, ...] = ()) -> Envelope:
    payload: dict[str, Any] = {"need_id": NEED, "proposal_id": f"p-{who.public_key[:2].hex()}",
                               "cost": cost, "eta_ms": eta_ms,
                               "ballot": ballot or f"b-{next(_lamport)}"}
    if caps:
        payload["capabilities"] = list(caps)
    return env(who, "PROPOSE", payload)


def claim(who: Identity, ttl: int = 10_000, hb: int = 500) -> Envelope:
    return env(who, "CLAIM", {"task_id": TASK, "lease_ttl_ms": ttl,
                              "heartbeat_interval_ms": hb})


def lease_of(b: Book) -> Cid:
    lease: Cid = b.task.lease.lease_id
    return lease


def heartbeat(who: Identity, lease: Cid, progress: int = 10) -> Envelope:
    return env(who, "HEARTBEAT", {"task_id": TASK, "lease_id": lease, "progress": progress})


def commit(who: Identity, lease: Cid, **extra: Any) -> Envelope:
    return env(who, "COMMIT", {"task_id": TASK, "lease_id": lease, "result": cid("result"),
                               **extra})


def attest(who: Identity, commit_id: Cid, verdict: str = "valid") -> Envelope:
    return env(who, "ATTEST", {"task_id": TASK, "commit_id": commit_id, "verdict": verdict})


def decided(b: Book, *bids: tuple[Identity, int]) -> None:
    b.fund()
    for who, cost in bids:
        b.send(propose(who, cost))
    b.at(b.ts + 1_000)
    assert b.task.state == DECIDED


def claimed(b: Book) -> Cid:
    decided(b, (ALICE, 300), (BOB, 500))
    b.send(claim(ALICE))
    return lease_of(b)


def committed(b: Book, members: list[Identity]) -> Cid:
    lease = claimed(b)
    b.send(commit(ALICE, lease))
    b.draw(members)
    commit_id: Cid = b.task.commit.commit_id
    return commit_id


# --- the auction ------------------------------------------------------------------------


def test_the_best_score_wins_and_the_memo_explains_it() -> None:
    b = Book()
    b.fund()
    b.send(propose(ALICE, 400))
    b.send(propose(BOB, 300))
    b.send(propose(CAROL, 300, eta_ms=100_000))
    step = b.at(b.ts + 1_000)
    (decision,) = step.decisions
    assert decision.winner == BOB.public_key and decision.epoch == 0
    assert b.task.state == DECIDED
    (memo_cid, memo), = step.memos
    assert dag_cbor_cid(memo) == memo_cid == decision.memo
    doc = cbor.decode(memo)
    assert [x["bidder"] for x in doc["bids"]] == [BOB.public_key, ALICE.public_key,
                                                  CAROL.public_key]
    assert doc["bids"][0]["score"] > doc["bids"][1]["score"] > doc["bids"][2]["score"]


def test_the_score_is_the_documented_formula() -> None:
    bid = Bid(b"p", b"a", "p", cost=250, eta_ms=60_000, capabilities=("gpu",), ballot="x",
              reputation_bp=8_000, round=1, index=1)
    s = score(bid, budget=1_000, wanted=("gpu", "wasm"), params=DEFAULT_PARAMS)
    assert (s.cost_bp, s.eta_bp, s.reputation_bp, s.capability_bp) == (7_500, 5_000, 8_000,
                                                                        5_000)
    assert s.total == 4_000 * 7_500 + 2_000 * 5_000 + 3_000 * 8_000 + 1_000 * 5_000


def test_ties_go_to_reputation_then_to_the_ballot_hash() -> None:
    def bid(name: bytes, rep: int, ballot: str) -> Bid:
        return Bid(name, name, "p", 100, 0, (), ballot, rep, 1, 1)
    # Equal scores need equal parts: set the reputation weight to 0.
    params = {**DEFAULT_PARAMS, "score_cost_bp": 7_000, "score_reputation_bp": 0}
    a, c = bid(b"a", 9_000, "x"), bid(b"c", 1_000, "y")
    assert rank(b"n", [c, a], budget=1_000, wanted=(), params=params)[0][0] is a
    x, y = bid(b"x", 5_000, "x"), bid(b"y", 5_000, "y")
    first = min((x, y), key=lambda q: ballot_hash(b"n", q.ballot))
    assert rank(b"n", [x, y], budget=1_000, wanted=(), params=params)[0][0] is first


def test_capabilities_the_need_wants_raise_the_score() -> None:
    b = Book()
    b.fund(caps=("gpu", "wasm"))
    b.send(propose(ALICE, 300))
    b.send(propose(BOB, 300, caps=("gpu", "wasm")))
    (decision,) = b.at(b.ts + 1_000).decisions
    assert decision.winner == BOB.public_key


def test_bids_are_refused_outside_the_rules() -> None:
    b = Book()
    b.fund(budget=1_000, bounty=100)
    b.refused(propose(POSTER, 10), "own_need")
    b.refused(propose(ALICE, 901), "over_budget")  # 901 + the bounty 100 > 1000
    b.send(propose(ALICE, 900, ballot="mine"))
    b.refused(propose(ALICE, 800), "already_bid")
    b.ts = b.book.get(NEED).close_ms
    b.refused(propose(BOB, 100), "bid_window_closed")
    other = env(ALICE, "PROPOSE", {"need_id": cid("nope"), "proposal_id": "p", "cost": 1,
                                   "eta_ms": 1, "ballot": "z"})
    b.refused(other, "unknown_task")


def test_a_ballot_is_used_once_per_task() -> None:
    b = Book()
    b.fund()
    b.send(propose(ALICE, 500, ballot="same"))
    b.refused(propose(BOB, 500, ballot="same"), "ballot_reused")


def test_no_bids_opens_new_rounds_then_cancels_and_refunds() -> None:
    b = Book(auction_rounds_max=3)
    b.fund(budget=700)
    for r in (2, 3):
        b.at(b.task.close_ms)
        assert (b.task.state, b.task.round) == (OPEN, r)
    b.at(b.task.close_ms)
    assert b.task.state == CANCELLED
    assert b.paid() == {(POSTER.public_key, "refund"): 700}


def test_a_later_bid_from_the_same_bidder_must_improve_by_the_minimum() -> None:
    assert improves(99, 100, DEFAULT_PARAMS) and not improves(100, 100, DEFAULT_PARAMS)
    assert not improves(995, 1_000, DEFAULT_PARAMS) and improves(990, 1_000, DEFAULT_PARAMS)
    assert not improves(0, 0, DEFAULT_PARAMS)
    b = Book()
    decided(b, (ALICE, 500))
    b.at(b.task.claim_by_ms)  # ALICE never claims: excluded, a new auction
    assert (b.task.state, b.task.epoch) == (OPEN, 1)
    b.send(propose(BOB, 400))
    b.at(b.task.close_ms)
    b.at(b.task.claim_by_ms)  # BOB never claims either
    b.refused(propose(BOB, 399), "excluded")
    b.refused(propose(ALICE, 450), "excluded")


# --- the lease ----------------------------------------------------------------------


def test_only_the_winner_claims_within_the_lease_limits() -> None:
    b = Book()
    decided(b, (ALICE, 300), (BOB, 500))
    b.refused(claim(BOB), "not_winner")
    b.refused(claim(ALICE, ttl=50), "lease_ttl")
    b.refused(claim(ALICE, ttl=DEFAULT_PARAMS["lease_ttl_max_ms"] + 1), "lease_ttl")
    b.refused(claim(ALICE, hb=50), "heartbeat_interval")
    b.refused(claim(ALICE, ttl=1_000, hb=2_000), "heartbeat_interval")
    b.send(claim(ALICE))
    assert b.task.state == CLAIMED and b.task.lease.worker == ALICE.public_key
    b.refused(claim(ALICE), "wrong_state")


def test_heartbeats_only_from_the_lease_holder_on_its_lease() -> None:
    b = Book()
    lease = claimed(b)
    b.refused(heartbeat(BOB, lease), "not_lease_holder")
    b.refused(heartbeat(ALICE, cid("other lease")), "wrong_lease")
    b.ts += 400
    b.send(heartbeat(ALICE, lease, 40))
    assert b.task.lease.progress == 40 and b.task.lease.heartbeat_due_ms == b.ts + 500


def test_missed_heartbeats_release_the_lease_slash_and_go_to_the_next_bid() -> None:
    b = Book(heartbeat_misses_max=3)
    claimed(b)
    due = b.task.lease.heartbeat_due_ms
    b.at(due + 100)  # the first miss (grace 100)
    assert b.task.state == CLAIMED and b.task.lease.misses == 1
    step = b.at(due + 100 + 2 * 500)  # two more intervals
    (slash,) = step.slashes
    assert (slash.account, slash.misses) == (ALICE.public_key, 3)
    (decision,) = step.decisions
    assert decision.winner == BOB.public_key and decision.epoch == 1
    assert ALICE.public_key in b.task.excluded


def test_a_lease_that_expires_is_released_without_a_slash() -> None:
    b = Book()
    lease = claimed(b)
    expires = b.task.lease.expires_ms
    t = b.ts
    while t + 400 < expires:
        t += 400
        b.ts = t
        b.send(heartbeat(ALICE, lease))
    step = b.at(expires + 100)
    assert not step.slashes and step.decisions[0].winner == BOB.public_key


def test_yield_gives_the_task_to_the_next_best_bid() -> None:
    b = Book()
    lease = claimed(b)
    b.refused(env(BOB, "YIELD", {"task_id": TASK, "reason": "x"}), "not_lease_holder")
    step = b.send(env(ALICE, "YIELD", {"task_id": TASK, "reason": "busy", "lease_id": lease}))
    assert step.decisions[0].winner == BOB.public_key and b.task.epoch == 1


def test_a_task_reopened_too_often_is_cancelled_and_refunded() -> None:
    b = Book(task_reopens_max=1)
    claimed(b)
    b.send(env(ALICE, "YIELD", {"task_id": TASK, "reason": "busy"}))
    b.send(claim(BOB))
    b.send(env(BOB, "YIELD", {"task_id": TASK, "reason": "busy"}))
    assert b.task.state == CANCELLED
    assert b.paid() == {(POSTER.public_key, "refund"): 1_000}


# --- commit, committee, payout ------------------------------------------------------


def test_commit_only_by_the_lease_holder_within_the_bounty() -> None:
    b = Book()
    lease = claimed(b)
    b.refused(commit(BOB, lease), "not_lease_holder")
    b.refused(commit(ALICE, cid("other")), "wrong_lease")
    b.refused(commit(ALICE, lease, verify_bounty=91), "over_bounty")
    b.send(commit(ALICE, lease, verify_bounty=90))
    assert b.task.state == COMMITTED


def test_the_committee_attests_once_each_then_finalize_and_pay_once() -> None:
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    with pytest.raises(TaskError):
        b.book.draw(NEED, [V4.public_key], b.ts,
                    commit_index=b.task.commit.index)  # seated already
    b.refused(attest(V4, commit_id), "not_in_committee")
    b.refused(attest(V1, cid("other commit")), "wrong_commit")
    b.send(attest(V1, commit_id))
    b.refused(attest(V1, commit_id), "already_attested")
    b.send(attest(V2, commit_id))
    assert b.task.state == COMMITTED
    b.send(attest(V3, commit_id))
    assert b.task.state == ATTESTED
    b.at(b.task.finalize_ms)
    assert b.task.state == FINALIZED and not b.task.paid
    b.at(b.task.pay_ms)
    assert b.task.paid
    assert b.paid() == {(ALICE.public_key, "payout"): 300, (V1.public_key, "bounty"): 30,
                        (V2.public_key, "bounty"): 30, (V3.public_key, "bounty"): 30,
                        (POSTER.public_key, "refund"): 610}
    b.at(b.ts + 10 * 5_000)
    assert sum(p.amount for s in b.steps for p in s.payments) == 1_000  # paid once
    # Every state the task entered, with the entry that moved it (its certificate's).
    states = [st for _, st in b.task.history]
    assert states == [OPEN, DECIDED, CLAIMED, COMMITTED, ATTESTED, FINALIZED]
    indexes = [i for i, _ in b.task.history]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)


def test_the_worker_and_poster_never_sit_on_the_committee() -> None:
    b = Book()
    lease = claimed(b)
    b.send(commit(ALICE, lease))
    with pytest.raises(TaskError) as info:
        b.book.draw(NEED, [V1.public_key, ALICE.public_key], b.ts,
                    commit_index=b.task.commit.index)
    assert info.value.code == "related_member"


def test_attesting_after_the_window_is_refused_and_silence_redraws_the_committee() -> None:
    """Silent members fail and never sit again on this task; the worker keeps its
    result, which waits for a new committee."""
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    b.send(attest(V1, commit_id))
    deadline = b.task.commit.attest_by_ms
    b.ts = deadline + 1
    b.refused(attest(V2, commit_id), "attest_window_closed")
    step = b.at(deadline)
    failed = {r.account for r in step.reputation if r.failed}
    assert failed == {V2.public_key, V3.public_key}
    t = b.task
    assert (t.state, t.epoch, t.reopens, t.commit.committee, t.commit.verdicts) == (
        COMMITTED, 0, 1, (), ())
    assert t.silent == tuple(sorted((V2.public_key, V3.public_key)))
    assert ALICE.public_key not in t.excluded and t.commit.commit_id == commit_id
    assert "silent" in step.transitions[-1].cause
    with pytest.raises(TaskError) as info:
        b.draw([V1, V3])
    assert info.value.code == "silent_member"
    b.draw([V1, V4])
    b.send(attest(V1, commit_id))
    b.send(attest(V4, commit_id))
    assert b.task.state == ATTESTED


def test_silence_beside_an_invalid_verdict_reopens_without_the_worker() -> None:
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    b.send(attest(V1, commit_id, "invalid"))
    step = b.at(b.task.commit.attest_by_ms)
    assert b.task.epoch == 1 and step.decisions[0].winner == BOB.public_key
    assert ALICE.public_key in b.task.excluded


def test_redraws_count_as_reopens_and_end_in_a_reopen() -> None:
    b = Book(task_reopens_max=1)
    commit_id = committed(b, [V1, V2, V3])
    b.at(b.task.commit.attest_by_ms)  # all silent: a new committee
    assert b.task.state == COMMITTED and b.task.reopens == 1
    b.draw([V4])
    assert b.task.commit.commit_id == commit_id
    b.at(b.task.commit.attest_by_ms)  # silent again, and the reopens are spent
    assert b.task.state == CANCELLED and b.paid()[(POSTER.public_key, "refund")] == 1_000


def test_a_rejecting_majority_reopens_and_costs_the_wrong_members() -> None:
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    b.send(attest(V1, commit_id, "valid"))
    b.send(attest(V2, commit_id, "invalid"))
    step = b.send(attest(V3, commit_id, "invalid"))
    assert {r.account for r in step.reputation if r.failed} == {V1.public_key}
    assert ALICE.public_key in b.task.excluded and b.task.state == DECIDED


def test_an_unfillable_committee_cancels_and_refunds() -> None:
    b = Book()
    lease = claimed(b)
    b.send(commit(ALICE, lease))
    b.draw([])
    assert b.task.state == CANCELLED
    assert b.paid() == {(POSTER.public_key, "refund"): 1_000}


# --- time -----------------------------------------------------------------------------


def test_an_outage_moves_every_pending_deadline_out() -> None:
    b = Book()
    claimed(b)
    lease = b.task.lease
    step = b.at(b.ts + 20_000)  # nothing heard for 20 s: the bucket was down
    assert step.outage_ms == 20_000 and not step.slashes
    assert b.task.state == CLAIMED
    assert b.task.lease.expires_ms == lease.expires_ms + 20_000


def test_a_quiet_bucket_ticking_at_its_deadline_is_no_outage() -> None:
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    for v in (V1, V2, V3):
        b.send(attest(v, commit_id))
    step = b.at(b.task.finalize_ms)  # 5 s of silence, then the tick on time
    assert step.outage_ms == 0 and b.task.state == FINALIZED


def test_a_refused_step_or_a_bug_leaves_the_book_as_it_was() -> None:
    b = Book()
    claimed(b)
    before = b.book.state_value()

    class Boom(Exception):
        pass

    def explode(*_: Any) -> None:
        raise Boom

    b.book._cancel = explode  # type: ignore[method-assign]
    b.book.params["task_reopens_max"] = 0
    with pytest.raises(Boom):
        b.book.submit(env(ALICE, "YIELD", {"task_id": TASK, "reason": "x"}), 99, b.ts)
    assert b.book.state_value() == before


def test_ended_tasks_are_forgotten_after_the_retention() -> None:
    b = Book(task_retention_ms=10_000, auction_rounds_max=1)
    b.fund()
    b.at(b.task.close_ms)
    assert b.task.state == CANCELLED
    b.at(b.ts + 10_001)
    assert b.task is None


def test_the_book_survives_a_snapshot() -> None:
    b = Book()
    commit_id = committed(b, [V1, V2, V3])
    b.send(attest(V1, commit_id))
    again = restore(b.book.params, cbor.decode(cbor.encode(b.book.state_value())),
                    b.book.clock_ms)
    assert again.root() == b.book.root()
    assert again.next_due_ms() == b.book.next_due_ms()


def test_the_fund_of_a_need_already_known_is_refunded() -> None:
    b = Book()
    b.fund()
    step = b.fund(budget=55)
    assert [(p.account, p.amount, p.kind) for p in step.payments] == [
        (POSTER.public_key, 55, "refund")]
    assert b.task.terms.budget == 1_000


def test_p1_one_decision_per_need_and_epoch() -> None:
    b = Book()
    lease = claimed(b)
    b.send(env(ALICE, "YIELD", {"task_id": TASK, "reason": "x", "lease_id": lease}))
    b.send(claim(BOB))
    b.send(env(BOB, "YIELD", {"task_id": TASK, "reason": "x"}))
    b.send(propose(CAROL, 100))
    b.at(b.task.close_ms)
    epochs = [d.epoch for s in b.steps for d in s.decisions]
    assert epochs == sorted(set(epochs)) == [0, 1, 2]
    assert OPEN  # the states are plain names


def test_transactions_nest_an_inner_refusal_undoes_only_itself() -> None:
    b = Book()
    claimed(b)
    book = b.book
    before = book.state_value()
    with pytest.raises(RuntimeError), book.transaction():
        book.advance(b.ts + 2_000, 99)  # heartbeats missed: the lease is released
        assert book.get(NEED).state != CLAIMED
        with pytest.raises(TaskError):
            book.submit(claim(CAROL), 100, b.ts)  # refused inside: nothing of it stays
        raise RuntimeError("the entry fails later")
    assert book.state_value() == before
    with book.transaction():
        book.advance(b.ts + 2_000, 99)
        with pytest.raises(TaskError):
            book.submit(claim(CAROL), 100, b.ts)
    assert book.get(NEED).epoch == 1


def test_terms_carry_their_optional_parts_through_effects_and_snapshots() -> None:
    """k_plan, a job and its input go with the terms from the poster's bucket (its
    PostNeed entry, then the Fund effect) into the task book and its snapshots."""
    from swarm.protocol.ledger_ops import PostNeed, decode_body, encode_body

    full = Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, ("nlp",), 2,
                 cid("module"), cid("input"), output="uint<=20")
    cited = Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, (), 0, cid("module"),
                  cid("input"), output="utf8<=4096", cites=(cid("a"), cid("b")),
                  deny=("a secret", "b"))
    hosted = Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, (), 0, None,
                   cid("input"), "deflate", "inflates", "bytes")
    bare = Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3)
    for terms in (full, cited, hosted, bare):
        posted = PostNeed(bytes(32), terms)
        assert decode_body(encode_body(posted)) == posted
        book = TaskBook(PARAMS)
        book.fund(terms, 1, 0)
        again = restore(book.params, cbor.decode(cbor.encode(book.state_value())),
                        book.clock_ms)
        assert again.tasks[NEED].terms == terms and again.root() == book.root()
    shown = task_json(_funded(full))
    assert (shown["job"], shown["input"], shown["k_plan"], shown["output"]) == (
        str(cid("module")), str(cid("input")), 2, "uint<=20")
    shown = task_json(_funded(hosted))
    assert (shown["job"], shown["host"], shown["check"]) == (None, "deflate", "inflates")
    assert task_json(_funded(cited))["cites"] == [str(cid("a")), str(cid("b"))]
    assert task_json(_funded(cited))["deny"] == ["a secret", "b"]


def test_a_need_names_one_kind_of_job_a_check_only_for_a_host_job_and_cites_only_with_a_bound(
        ) -> None:
    for terms, problem in (
            (Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, (), 0, cid("m"),
                   cid("i"), "deflate"), "not both"),
            (Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, (), 0, cid("m"),
                   cid("i"), None, "inflates"), "a check is for a host job"),
            (Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3, (), 0, cid("m"),
                   cid("i"), output="utf8", cites=(cid("a"),)), "bounds its output")):
        book = TaskBook(PARAMS)
        step = book.fund(terms, 1, 0)
        assert [t.after for t in step.transitions] == [CANCELLED]
        assert problem in step.transitions[0].cause
        assert [p.kind for p in step.payments] == ["refund"]


def _funded(terms: Terms) -> Task:
    book = TaskBook(PARAMS)
    book.fund(terms, 1, 0)
    return book.tasks[NEED]
