"""Amounts and waits as people write and read them: credits as exact decimal text, and
durations rounded up.

Owns the one text form of an amount: `parse_credits` reads what a user typed (the
control API's amounts), `format_credits` writes units back exactly, `format_duration`
writes a wait. The ledger's refusal reasons use the latter two ("insufficient balance:
have 40, need 55"), and every replica must write a reason alike, so they are pure and
live in the protocol; the CLI prints balances with the same functions.
"""

from __future__ import annotations

from .errors import LocalProtocolError
from .schema import INT_MAX


def format_credits(units: int, unit_per_credit: int) -> str:
    """Exact decimal credits: 40_000_000 -> "40", 1_500_000 -> "1.5" (never rounded)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), unit_per_credit)
    if frac == 0:
        return f"{sign}{whole}"
    digits = len(str(unit_per_credit)) - 1
    if unit_per_credit == 10**digits:
        return f"{sign}{whole}." + f"{frac:0{digits}d}".rstrip("0")
    return f"{sign}{whole} {frac}/{unit_per_credit}"


def parse_credits(text: str, unit_per_credit: int, fld: str = "amount") -> int:
    """A positive amount typed in credits ("12", "0.5", "1.000001") as units, exactly;
    refuses what the unit cannot hold (too many decimals), signs, exponents and zero."""
    t = text.strip() if isinstance(text, str) else ""
    whole, dot, frac = t.partition(".")
    digits = len(str(unit_per_credit)) - 1
    # Quoted back at most this long: the text may be anything a client sent.
    got = repr(t if len(t) <= 40 else t[:40] + "...")
    if (not t or not (whole or frac) or not (whole or "0").isdigit()
            or (dot and not frac.isdigit()) or not whole.isascii() or not frac.isascii()):
        raise LocalProtocolError(fld, f"must be an amount in credits such as 12 or 0.5 "
                                      f"(got {got})")
    if unit_per_credit != 10**digits:
        digits = 0  # decimals cannot be exact: whole credits only
    if len(frac) > digits:
        raise LocalProtocolError(fld, f"at most {digits} decimals: one credit is "
                                      f"{unit_per_credit} units (got {got})")
    too_large = LocalProtocolError(fld, f"is too large: at most "
                                        f"{format_credits(INT_MAX, unit_per_credit)} credits")
    # Counted before converting: int() of thousands of digits is slow, and refused
    # beyond 4300 (CPython's limit) with an error that is no answer for a user.
    whole = whole.lstrip("0")
    if len(whole) > len(str(INT_MAX)):
        raise too_large
    units = int(whole or "0") * unit_per_credit + (int(frac.ljust(digits, "0")) if frac else 0)
    if units <= 0:
        raise LocalProtocolError(fld, f"must be more than 0 (got {got})")
    if units > INT_MAX:
        raise too_large
    return units


def format_duration(ms: int) -> str:
    """A wait for people: "2 h 13 min", "7 d", "45 s". Rounded up, never promising early."""
    if ms <= 0:
        return "0 s"
    s = -(-ms // 1000)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r} s" if r else f"{m} min"
    mins = -(-s // 60)
    if mins < 1440:
        h, m = divmod(mins, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    hours = -(-s // 3600)
    d, h = divmod(hours, 24)
    return f"{d} d {h} h" if h else f"{d} d"
