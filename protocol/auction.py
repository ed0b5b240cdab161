"""The auction rule: which bids a NEED's bucket accepts, and which one wins.

Owns the bid (`Bid`), the score of a bid (`score`), the order that picks a winner
(`rank`) and the rule a later round's bid must meet (`improves`). It holds no state:
the task machine (`protocol/task.py`) keeps the bids and calls these at the round's
close. Everything is integer arithmetic on basis points, so every replica computes the
same winner.

The score
---------
Four parts, each in basis points (0..10 000), weighted by genesis parameters whose
weights sum to 10 000:

- cost:        ``BP * (budget - cost) // budget``: a free bid scores 10 000, a bid of the
               whole budget 0;
- ETA:         ``BP * eta_ref_ms // (eta_ref_ms + eta_ms)``: 10 000 now, 5 000 at the
               reference ETA, falling towards 0;
- reputation:  the bidder's reputation as its home bucket certified it (0..10 000);
- capability:  ``BP * |bid ∩ need| // |need|`` over the capabilities the NEED lists
               (10 000 when it lists none).

``score = w_cost*cost + w_eta*eta + w_reputation*reputation + w_capability*capability``
(no division, so no rounding between parts). The highest score wins; equal scores go
to the higher reputation, then to the smaller `ballot_hash` (SHA-256 of the NEED id and
the ballot, which the bidder fixed before the round closed and cannot tune afterwards).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .genesis import BP

BALLOT_DOMAIN = b"can-swarm/ballot/v1\x00"


@dataclass(frozen=True, slots=True)
class Bid:
    """One accepted PROPOSE: `proposal` is its envelope id (what a DECIDE names)."""

    proposal: bytes
    bidder: bytes
    proposal_id: str
    cost: int
    eta_ms: int
    capabilities: tuple[str, ...]
    ballot: str
    reputation_bp: int
    round: int
    index: int  # the entry that accepted it


@dataclass(frozen=True, slots=True)
class Score:
    """A bid's score and its parts, for the explanation memo."""

    total: int
    cost_bp: int
    eta_bp: int
    reputation_bp: int
    capability_bp: int


def ballot_hash(need: bytes, ballot: str) -> bytes:
    return hashlib.sha256(BALLOT_DOMAIN + need + b"\x00" + ballot.encode()).digest()


def score(bid: Bid, *, budget: int, wanted: Sequence[str], params: Mapping[str, int]) -> Score:
    """The documented score of `bid` for a NEED with `budget` and `wanted` capabilities."""
    cost_bp = BP * (budget - min(bid.cost, budget)) // budget
    ref = params["eta_ref_ms"]
    eta_bp = BP * ref // (ref + bid.eta_ms) if ref else 0
    rep_bp = max(0, min(BP, bid.reputation_bp))
    cap_bp = BP * len(set(wanted) & set(bid.capabilities)) // len(wanted) if wanted else BP
    total = (params["score_cost_bp"] * cost_bp + params["score_eta_bp"] * eta_bp
             + params["score_reputation_bp"] * rep_bp
             + params["score_capability_bp"] * cap_bp)
    return Score(total, cost_bp, eta_bp, rep_bp, cap_bp)


def rank(need: bytes, bids: Sequence[Bid], *, budget: int, wanted: Sequence[str],
         params: Mapping[str, int]) -> list[tuple[Bid, Score]]:
    """Every bid with its score, best first (the first one wins)."""
    scored = [(b, score(b, budget=budget, wanted=wanted, params=params)) for b in bids]
    scored.sort(key=lambda bs: (-bs[1].total, -bs[1].reputation_bp,
                                ballot_hash(need, bs[0].ballot)))
    return scored


def improves(cost: int, earlier: int, params: Mapping[str, int]) -> bool:
    """A bidder's bid in a later round must lower its earlier cost by at least
    `bid_improve_bp` (a free earlier bid cannot be improved on)."""
    return cost * BP <= earlier * (BP - params["bid_improve_bp"]) and cost < earlier

