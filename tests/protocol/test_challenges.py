"""Challenges in the task machine (protocol/task.py): opening one against an attested
result, the panel's votes, escalation, the outcomes and where every credit goes, both
sides of each rule, and P7 (never outside the window) as a property."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_task import (
    ALICE,
    BOB,
    CAROL,
    NEED,
    POSTER,
    TASK,
    V1,
    V2,
    V3,
    V4,
    Book,
    attest,
    cid,
    claim,
    commit,
    committed,
    env,
    lease_of,
)

from swarm.protocol.cid import Cid
from swarm.protocol.envelope import Identity
from swarm.protocol.task import (
    ATTESTED,
    DECIDED,
    FINALIZED,
    LAPSED,
    MOOT,
    REJECTED,
    UPHELD,
    WITHDRAWN,
    ChallengeTerms,
    Step,
    TaskError,
    restore,
    task_json,
)

P1, P2, P3, P4, P5, P6, P7_, X1, X2 = (Identity(bytes([0x80 + i]) * 32) for i in range(9))
BOND = 100


class ChallengeBook(Book):
    """A Book whose task is ATTESTED (V1, V2, V3 valid), with challenge helpers."""

    def __init__(self, **params: int) -> None:
        super().__init__(**{"challenge_vote_window_ms": 2_000, "challenge_extend_ms": 1_000,
                            **params})
        self.commit_id = committed(self, [V1, V2, V3])
        for v in (V1, V2, V3):
            self.send(attest(v, self.commit_id))
        assert self.task.state == ATTESTED
        self.bonds_in = 0
        self.window_was_open = False

    def challenge(self, who: Identity, bond: int = BOND, tag: str = "",
                  commit_id: Cid | None = None, related: bool = False) -> Cid:
        i = self._entry()
        # The window as the bucket judges it: after this entry's timers fired and any
        # outage moved the deadlines out.
        t = self.task
        self.window_was_open = t.state == ATTESTED and self.ts < t.finalize_ms
        challenge_id = cid(f"challenge {who.public_key.hex()} {tag}")
        terms = ChallengeTerms(challenge_id, who.public_key, NEED,
                               commit_id or self.commit_id, "output_mismatch",
                               cid("proof"), bond)
        self.bonds_in += bond
        self.steps.append(self.book.challenge(terms, i, self.ts, related=related))
        return challenge_id

    def panel(self, members: list[Identity], stakes: dict[Identity, int] | None = None
              ) -> Step:
        self._entry()
        step = self.book.draw(NEED, [m.public_key for m in members], self.ts,
                              commit_index=self.task.draw_index, index=self.index,
                              stakes={m.public_key: (stakes or {}).get(m, 1_000)
                                      for m in members})
        self.steps.append(step)
        return step

    def vote(self, who: Identity, challenge_id: Cid, uphold: bool) -> Step:
        return self.send(env(who, "ATTEST", {
            "task_id": TASK, "commit_id": self.commit_id, "evidence": challenge_id,
            "verdict": "invalid" if uphold else "valid"}))

    def withdraw(self, who: Identity, challenge_id: Cid) -> Step:
        return self.send(env(who, "WITHDRAW", {"task_id": TASK,
                                               "challenge_id": challenge_id}))

    def bond_flows(self) -> int:
        """Bonds paid back or shared, plus what the book burned."""
        return sum(p.amount for s in self.steps for p in s.payments
                   if p.kind in ("bond", "bond_share")) + sum(s.burned for s in self.steps)

    def outcomes(self) -> list[str]:
        return [r.outcome for r in self.task.rulings]


def test_an_upheld_challenge_invalidates_slashes_the_attesters_and_reopens() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    other = b.challenge(X1, bond=50)
    t = b.task
    assert [c.terms.challenge_id for c in t.challenges] == [ch, other]
    assert t.active is not None and t.active.terms.challenge_id == ch
    assert t.draw_index  # the head awaits its panel
    b.panel([P1, P2, P3])
    assert b.task.draw_index == 0 and len(b.task.active.panel) == 3
    b.vote(P1, ch, True)
    b.vote(P2, ch, True)
    assert b.task.state == ATTESTED
    step = b.vote(P3, ch, True)
    t = b.task
    slashed = sorted(s.account for s in step.challenge_slashes)
    assert slashed == sorted(v.public_key for v in (V1, V2, V3))
    assert all(s.challenger == CAROL.public_key for s in step.challenge_slashes)
    assert {h for s in step.challenge_slashes for h in s.honest} == {
        p.public_key for p in (P1, P2, P3)}
    # The bond back, the moot one's too; the result's payout never happens.
    assert b.paid()[(CAROL.public_key, "bond")] == BOND
    assert b.paid()[(X1.public_key, "bond")] == 50
    assert (ALICE.public_key, "payout") not in b.paid()
    assert b.outcomes() == [UPHELD, MOOT]
    # Reopened: a new epoch without the worker, BOB's next-best bid decided, k + 2.
    assert t.state == DECIDED and t.epoch == 1 and t.decision.winner == BOB.public_key
    assert ALICE.public_key in t.excluded and t.k_result == 5 and t.upheld == 1
    assert any(r.challenge and not r.failed and r.account == CAROL.public_key
               for r in step.reputation)
    assert {r.account for r in step.reputation if r.failed} >= {
        v.public_key for v in (V1, V2, V3)}
    assert b.bond_flows() == b.bonds_in


def test_a_rejected_challenge_forfeits_the_bond_and_extends_the_window() -> None:
    b = ChallengeBook()
    window = b.task.finalize_ms
    ch = b.challenge(CAROL)
    b.panel([P1, P2, P3])
    for p in (P1, P2, P3):
        step = b.vote(p, ch, False)
    t = b.task
    assert b.outcomes() == [REJECTED] and not t.challenges
    shares = {a: n for (a, k), n in b.paid().items() if k == "bond_share"}
    assert sum(shares.values()) == BOND * 4_000 // 10_000
    assert set(shares) == {p.public_key for p in (P1, P2, P3)}
    assert sum(s.burned for s in b.steps) == BOND - sum(shares.values())
    assert any(r.challenge and r.failed for r in step.reputation)
    assert t.finalize_ms == max(window, b.ts + 1_000) and t.pay_ms >= t.finalize_ms
    b.at(t.finalize_ms)
    assert b.task.state == FINALIZED
    b.at(b.task.pay_ms)
    assert b.task.paid and b.paid()[(ALICE.public_key, "payout")] == 300
    assert b.bond_flows() == b.bonds_in


def test_no_challenge_outside_the_window_nor_against_another_result() -> None:
    """P7: a bond that reaches the bucket after the window closed, or before the result
    was attested, comes back and changes nothing else."""
    b = ChallengeBook()
    b.challenge(CAROL, commit_id=cid("another result"))
    b.ts = b.task.finalize_ms
    b.challenge(X1)
    assert b.task.state == FINALIZED and not b.task.challenges and not b.task.rulings
    assert b.paid()[(CAROL.public_key, "bond")] == BOND
    assert b.paid()[(X1.public_key, "bond")] == BOND
    early = Book()
    commit_id = committed(early, [V1, V2, V3])
    i = early._entry()
    step = early.book.challenge(ChallengeTerms(cid("c"), CAROL.public_key, NEED, commit_id,
                                               "output_mismatch", cid("p"), BOND), i,
                                early.ts)
    assert [p.kind for p in step.payments] == ["bond"] and not early.task.challenges
    assert "only an attested result" in step.transitions[0].cause


@pytest.mark.parametrize("who", [ALICE, V1])
def test_the_worker_and_the_committee_cannot_challenge_their_result(who: Identity) -> None:
    b = ChallengeBook()
    b.challenge(who)
    assert not b.task.challenges and b.paid()[(who.public_key, "bond")] == BOND


def test_the_poster_may_challenge_but_never_sits_on_the_panel() -> None:
    b = ChallengeBook()
    b.challenge(POSTER)
    assert b.task.challenges
    with pytest.raises(TaskError) as info:
        b.panel([P1, POSTER])
    assert info.value.code == "related_member"


def test_related_challengers_and_repeat_challengers_are_refused() -> None:
    b = ChallengeBook()
    b.challenge(CAROL, related=True)
    assert not b.task.challenges
    b.challenge(X1)
    b.challenge(X1, tag="again")
    assert len(b.task.challenges) == 1
    assert b.bond_flows() == 2 * BOND


def test_a_task_takes_at_most_challenges_per_task_max() -> None:
    b = ChallengeBook(challenges_per_task_max=2)
    b.challenge(X1)
    b.challenge(X2)
    b.challenge(CAROL)
    assert len(b.task.challenges) == 2 and (CAROL.public_key, "bond") in b.paid()


def test_the_largest_bond_goes_first_once_the_head_is_done() -> None:
    b = ChallengeBook()
    first = b.challenge(X1, bond=10)
    small = b.challenge(X2, bond=20)
    big = b.challenge(CAROL, bond=500)
    assert [c.terms.challenge_id for c in b.task.challenges] == [first, big, small]
    b.withdraw(X1, first)
    assert b.task.active.terms.challenge_id == big and b.task.draw_index == b.index


def test_withdrawal_returns_the_bond_less_the_fee() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.refused(env(X1, "WITHDRAW", {"task_id": TASK, "challenge_id": ch}), "not_challenger")
    b.refused(env(CAROL, "WITHDRAW", {"task_id": TASK, "challenge_id": cid("none")}),
              "unknown_challenge")
    b.withdraw(CAROL, ch)
    assert b.outcomes() == [WITHDRAWN]
    assert b.paid()[(CAROL.public_key, "bond")] == BOND - BOND * 1_000 // 10_000
    assert sum(s.burned for s in b.steps) == BOND * 1_000 // 10_000
    b.refused(env(CAROL, "WITHDRAW", {"task_id": TASK, "challenge_id": ch}),
              "unknown_challenge")


def test_votes_are_bound_to_the_panel_and_the_challenge() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.refused(env(P1, "ATTEST", {"task_id": TASK, "commit_id": b.commit_id, "evidence": ch,
                                 "verdict": "invalid"}), "wrong_state")  # no panel yet
    with pytest.raises(TaskError) as info:
        b.panel([P1, V1])
    assert info.value.code == "related_member"
    with pytest.raises(TaskError) as info:
        b.panel([P1, CAROL])
    assert info.value.code == "related_member"
    b.panel([P1, P2, P3])
    b.refused(env(P1, "ATTEST", {"task_id": TASK, "commit_id": b.commit_id,
                                 "verdict": "invalid"}), "wrong_challenge")
    b.refused(env(P4, "ATTEST", {"task_id": TASK, "commit_id": b.commit_id, "evidence": ch,
                                 "verdict": "invalid"}), "not_in_committee")
    b.vote(P1, ch, True)
    b.refused(env(P1, "ATTEST", {"task_id": TASK, "commit_id": b.commit_id, "evidence": ch,
                                 "verdict": "valid"}), "already_attested")
    b.ts = b.task.active.vote_by_ms + 1
    b.refused(env(P2, "ATTEST", {"task_id": TASK, "commit_id": b.commit_id, "evidence": ch,
                                 "verdict": "invalid"}), "attest_window_closed")


def test_disagreement_escalates_then_the_stake_weighted_vote_decides() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.panel([P1, P2, P3])
    b.vote(P1, ch, True)
    b.vote(P2, ch, False)  # no side can reach 3 of 3 any more
    t = b.task
    assert t.active.round == 2 and t.draw_index == b.index and not t.active.panel
    with pytest.raises(TaskError):
        b.panel([P1, P4])  # seated before
    b.panel([P4, P5, P6, P7_, X1, X2, BOB], stakes={P4: 9_000})
    ch_now = b.task.active
    assert len(ch_now.panel) == 7 and ch_now.round == 2
    b.vote(P4, ch, True)
    for p in (P5, P6, X1):
        b.vote(p, ch, False)
    assert b.task.state == ATTESTED  # 4 of 7 is no quorum (5)
    b.at(ch_now.vote_by_ms)  # the rest stay silent: last round, the stake decides
    # uphold: P1 1000 + P4 9000; reject: P2, P5, P6, X1 at 1000 each
    assert b.outcomes() == [UPHELD] and b.task.rulings[0].weighted
    assert b.task.state == DECIDED and b.bond_flows() == b.bonds_in


def test_a_challenge_nobody_votes_on_lapses_and_the_bond_comes_back() -> None:
    b = ChallengeBook(challenge_rounds_max=1)
    ch = b.challenge(CAROL)
    b.panel([P1, P2, P3])
    step = b.at(b.task.active.vote_by_ms)
    assert {r.account for r in step.reputation if r.failed} == {
        p.public_key for p in (P1, P2, P3)}
    assert b.outcomes() == [LAPSED] and b.paid()[(CAROL.public_key, "bond")] == BOND
    assert ch not in [c.terms.challenge_id for c in b.task.challenges]


def test_an_empty_panel_lets_the_votes_so_far_decide() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.panel([P1, P2, P3])
    b.vote(P1, ch, False)
    b.vote(P2, ch, True)
    b.panel([])  # nobody left to seat
    assert b.outcomes() == [REJECTED] and b.task.rulings[0].weighted


def test_payout_waits_while_a_challenge_is_open() -> None:
    b = ChallengeBook()
    b.challenge(CAROL)
    end = b.task.finalize_ms
    b.at(end + 10)
    b.at(b.task.pay_ms + 10)
    assert b.task.state == ATTESTED and not b.task.paid
    b.withdraw(CAROL, b.task.challenges[0].terms.challenge_id)
    b.at(b.ts + 1)
    assert b.task.state == FINALIZED


def test_a_second_upheld_challenge_doubles_k() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.panel([P1, P2, P3])
    for p in (P1, P2, P3):
        b.vote(p, ch, True)
    assert b.task.k_result == 5 and b.task.state == DECIDED
    b.send(claim(BOB))
    b.send(commit(BOB, lease_of(b)))
    members = [V1, V2, V3, V4, X1]
    b.draw(members)
    b.commit_id = b.task.commit.commit_id
    for v in members:
        b.send(attest(v, b.commit_id))
    assert b.task.state == ATTESTED
    again = b.challenge(X2)
    b.panel([P4, P5, P6])
    for p in (P4, P5, P6):
        b.vote(p, again, True)
    assert b.task.k_result == 10 and b.task.terms.k_result == 3 and b.task.upheld == 2


def test_challenges_survive_a_snapshot_and_show_in_json() -> None:
    b = ChallengeBook()
    ch = b.challenge(CAROL)
    b.challenge(X1, bond=20)
    b.panel([P1, P2, P3])
    b.vote(P1, ch, True)
    again = restore(b.book.params, b.book.state_value(), b.book.clock_ms)
    assert again.root() == b.book.root()
    doc: dict[str, Any] = task_json(b.task)
    assert [c["state"] for c in doc["challenges"]] == ["voting", "queued"]
    assert doc["challenges"][0]["votes"][0]["uphold"] is True
    b.withdraw(X1, b.task.challenges[1].terms.challenge_id)
    assert task_json(b.task)["rulings"][0]["outcome"] == WITHDRAWN
    assert restore(b.book.params, b.book.state_value(), b.book.clock_ms).root() == \
        b.book.root()


# --- properties ---------------------------------------------------------------------

ACTORS = [CAROL, X1, X2, P1]
BY_KEY = {i.public_key: i for i in (CAROL, X1, X2, P1, P2, P3, P4, P5, P6, P7_, BOB)}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["challenge", "tick", "withdraw", "panel",
                                           "vote"]),
                          st.integers(0, 3), st.integers(0, 4_000), st.booleans()),
                max_size=30))
def test_p7_and_bonds_are_conserved_under_any_sequence(ops: list[Any]) -> None:
    """P7: a challenge is taken only while the result is ATTESTED and its window open;
    every bond taken in comes out exactly once (back, shared or burned) once no
    challenge is open; and the task never pays while one is open."""
    b = ChallengeBook()
    voters = [P2, P3, P4, P5, P6, P7_, BOB]
    for n, (op, who, dt, flag) in enumerate(ops):
        b.ts += dt
        t = b.task
        if op == "challenge":
            before = len(t.challenges) + len(t.rulings)
            b.challenge(ACTORS[who], bond=10 + who, tag=str(n))
            t2 = b.task
            opened = len(t2.challenges) + len(t2.rulings) > before
            assert not opened or b.window_was_open  # P7
        elif op == "tick":
            b.at(b.ts)
        elif op == "withdraw" and t.challenges:
            c = t.challenges[who % len(t.challenges)]
            with contextlib.suppress(TaskError):  # its timers may end it first
                b.withdraw(BY_KEY[c.terms.challenger], c.terms.challenge_id)
        elif op == "panel" and t.draw_index and t.state == ATTESTED:
            seated = set(t.active.seated)
            with contextlib.suppress(TaskError):  # its round may have moved on first
                b.panel([v for v in voters if v.public_key not in seated][:3])
        elif op == "vote" and t.state == ATTESTED and t.active and t.active.panel:
            ch = t.active
            said = {m for m, _, _, r in ch.votes if r == ch.round}
            free = [m for m, _ in ch.panel if m not in said]
            if free:
                with contextlib.suppress(TaskError):  # the vote may close first
                    b.vote(BY_KEY[free[0]], ch.terms.challenge_id, flag)
        t = b.task
        if t.challenges:
            assert not t.paid and t.state == ATTESTED
    if not b.task.challenges:
        assert b.bond_flows() == b.bonds_in
