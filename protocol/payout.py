"""Bounties and payouts: who gets a verification bounty, and how much.

Owns: bounty caps by task class (P6), related-party detection (P8), and turning a
task's outcome into the ledger `Release` that pays it. It only builds operations; the
ledger checks and applies them (and enforces the caps and the escrow hold again).

* **No challenge**: the whole bounty goes to the committee, split equally among the
  members not related to the payer or the worker; remainder units go one each to the
  first members in account order (`ledger.split_equally`).
* **Upheld challenge**: payout_challenger_bp (50%) to the challenger,
  payout_honest_verifiers_bp (40%) shared by the honest verifiers, the rest burned
  (10%, plus rounding). The verifiers who attested the wrong result are slashed
  (slash_failed_challenge_bp of their stake, in their own buckets), and their slashed
  stake is split the same way.
* **Related parties are never paid.** Two parties are related when they share an org or
  an ASN, or when either lists the other as a linked identity. A payee related to an
  interested party (the payer, the worker, a slashed verifier; and, for honest
  verifiers, the challenger) is dropped, and its share is burned rather than handed to
  anyone else who might be related to it. No one is ever paid for their own task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .amounts import format_credits
from .cid import Cid
from .ledger import InvalidOp, OpenEscrow, OverCap, split_challenge, split_equally
from .ledger_ops import TASK_CLASSES, Bounty, Release, SlashOrder


@dataclass(frozen=True, slots=True)
class Party:
    """An account with what links it to others: org, ASN and declared linked identities."""

    account: bytes
    org: str = ""
    asn: int | None = None
    linked: frozenset[bytes] = field(default_factory=frozenset)


def related(a: Party, b: Party) -> bool:
    """Same account, same org, same ASN, or a declared link either way."""
    return (a.account == b.account
            or (bool(a.org) and a.org == b.org)
            or (a.asn is not None and a.asn == b.asn)
            or b.account in a.linked or a.account in b.linked)


def unrelated(candidates: Iterable[Party], interested: Iterable[Party]) -> list[Party]:
    """The candidates related to none of the interested parties (P8), in account order."""
    against = list(interested)
    return sorted((c for c in candidates if not any(related(c, x) for x in against)),
                  key=lambda p: p.account)


def bounty_cap(task_class: str, params: Mapping[str, int]) -> int:
    if task_class not in TASK_CLASSES:
        raise InvalidOp("task_class", f"must be one of {', '.join(TASK_CLASSES)} "
                                      f"(got {task_class!r})")
    return params[f"bounty_cap_{task_class}"]


def bounty(op_id: bytes, payer: bytes, escrow_id: bytes, amount: int, task_class: str,
           params: Mapping[str, int]) -> Bounty:
    """The escrow for a verification bounty; refuses one over its class cap (P6)."""
    cap = bounty_cap(task_class, params)
    if amount > cap:
        unit = params["unit_per_credit"]
        raise OverCap("amount", f"bounty {format_credits(amount, unit)} is over the "
                                f"{task_class} cap of {format_credits(cap, unit)}")
    return Bounty(op_id, payer, escrow_id, amount, task_class)


def payout_no_challenge(op_id: bytes, escrow: OpenEscrow, committee: Sequence[Party], *,
                        payer: Party, worker: Party | None = None) -> Release:
    """The challenge window passed quietly: 100% to the (unrelated) committee."""
    interested = [payer] + ([worker] if worker else [])
    paid = unrelated(committee, interested)
    if not paid:
        return Release(op_id, escrow.payer, escrow.escrow_id, (), escrow.amount)
    shares = split_equally(escrow.amount, [p.account for p in paid])
    return Release(op_id, escrow.payer, escrow.escrow_id, shares, 0)


def payout_upheld(op_id: bytes, escrow: OpenEscrow, *, challenger: Party,
                  honest: Sequence[Party], slashed: Sequence[Party], evidence: Cid,
                  payer: Party, worker: Party | None,
                  params: Mapping[str, int]) -> Release:
    """A challenge was upheld: split the bounty 50/40/10 and slash the wrong attesters."""
    interested = [payer, *slashed] + ([worker] if worker else [])
    paid_challenger = challenger if unrelated([challenger], interested) else None
    honest_paid = unrelated(honest, [*interested, challenger])
    honest_accounts = [p.account for p in honest_paid]
    shares, burn = split_challenge(
        escrow.amount, paid_challenger.account if paid_challenger else None,
        honest_accounts, params)
    slashes = tuple(
        SlashOrder(p.account, "failed_challenge", evidence,
                   challenger=paid_challenger.account if paid_challenger else None,
                   honest=tuple(a for a in honest_accounts if a != p.account))
        for p in sorted(slashed, key=lambda p: p.account))
    return Release(op_id, escrow.payer, escrow.escrow_id, shares, burn, slashes)
