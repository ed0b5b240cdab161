"""`swarm-node ledger | stake | pool`: credits, staking and the verifier pool through a
running node. The node signs with its own identity: its account pays, stakes, joins.

Amounts on the command line are credits, decimals allowed ("12.5"; exact to the
smallest unit, 10^6 per credit by default). With --json, amounts are integers in the
smallest unit. Refusals print the ledger's reason and exit 1 ("insufficient balance:
have 40, need 55"; "unbonding completes in 2 h 13 min").

Every write is one operation, named by an op id and a validity limit the command picks
(or takes from --op-id and --valid-until). When the node does not answer (it died, it
restarted, no quorum in time), the command sends the same operation again for up to
RETRY_S seconds, re-reading HOME/api.json each time: the bucket applies it at most
once, and a retry answers the first outcome. If it still has no answer, it says how to
retry by hand with the same two values.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from swarm.node.client import (
    OUTCOME_MARGIN_S,
    OUTCOME_WAIT_S_DEFAULT,
    OUTCOME_WAIT_S_MAX,
    ApiError,
    Client,
    Unreachable,
)
from swarm.node.home import HomeError, resolve_home
from swarm.protocol.amounts import format_credits, format_duration
from swarm.protocol.verbs import OP_ID_BYTES

from .common import (
    OUTCOME_WAIT_S_MIN,
    HomeOpt,
    JsonOpt,
    add_row,
    call,
    client,
    emit_json,
    err,
    fail,
    new_table,
    out,
    say,
)

ledger_app = typer.Typer(help="Credits: balances, transfers, history, supply.",
                         no_args_is_help=True)
stake_app = typer.Typer(help="Stake of this node's account: add, remove (unbond), "
                             "complete unbonding, show.", no_args_is_help=True)
pool_app = typer.Typer(help="The verifier pool: register this node's account, leave, list.",
                       no_args_is_help=True)

AmountArg = Annotated[str, typer.Argument(
    help="Credits, decimals allowed (e.g. 12.5); exact to the smallest unit.",
    show_default=False)]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Seconds to wait for the outcome.", min=OUTCOME_WAIT_S_MIN,
    max=OUTCOME_WAIT_S_MAX)]
OpIdOpt = Annotated[str | None, typer.Option(
    "--op-id", help="Send an earlier attempt's operation again (32 hex digits, as that "
                    "attempt printed); with --valid-until. Applied at most once.")]
ValidUntilOpt = Annotated[int | None, typer.Option(
    "--valid-until", help="The operation's validity limit (bucket time, ms), as an "
                          "earlier attempt printed; with --op-id.", min=1)]
RETRY_S = 30.0  # how long a write keeps sending its operation to a node that is silent
RETRY_DELAY_S = 0.25  # before the first retry; doubled after each, up to the max
RETRY_DELAY_S_MAX = 4.0
# A new operation's validity limit, from now (here and `envelope make` of a ledger
# verb): long enough to send it, well within the swarm's `op_validity_ms_max` (1 h by
# default).
VALIDITY_MS = 10 * 60 * 1000
BALANCE_KEYS = ("account", "balance", "locked", "unbonding", "escrowed")
SUPPLY_KEYS = ("total", "circulating", "locked", "escrowed", "burned")


def _c(units: int, doc: dict[str, Any]) -> str:
    return format_credits(units, int(doc.get("unit_per_credit", 1_000_000)))


def _short(account: str) -> str:
    return account[:16] + "…" if len(account) > 16 else account


def _unbonding_lines(doc: dict[str, Any]) -> list[str]:
    now_ms = int(time.time() * 1000)
    lines = []
    for e in doc.get("unbonding_entries", []):
        left = e["complete_ms"] - now_ms
        when = f"completes in {format_duration(left)}" if left > 0 else "complete"
        lines.append(f"  unbonding {_c(e['amount'], doc)} credits: {when}")
    return lines


def _write(path: str, body: dict[str, Any], home: Any, as_json: bool, timeout_s: float,
           op_id: str | None = None, valid_until: int | None = None) -> dict[str, Any]:
    """POST one ledger operation and return its outcome, sending the same operation
    again while the node does not answer (see the module docstring)."""
    if (op_id is None) != (valid_until is None):
        fail("--op-id and --valid-until go together: the operation is both", as_json=as_json)
    op = {"op_id": op_id or os.urandom(OP_ID_BYTES).hex(),
          "valid_until_ms": valid_until or time.time_ns() // 1_000_000 + VALIDITY_MS}
    request = {**body, **op, "timeout_s": timeout_s}
    deadline = time.monotonic() + RETRY_S
    delay = RETRY_DELAY_S
    while True:
        try:
            # Read api.json each time: a restarted node listens on another port.
            c = Client(resolve_home(home), timeout_s=timeout_s + OUTCOME_MARGIN_S)
            try:
                doc: dict[str, Any] = c.post(path, request)
                return doc
            finally:
                c.close()
        except (Unreachable, HomeError) as exc:
            silence: Exception = exc
        except ApiError as exc:
            if not (isinstance(exc.detail, dict) and exc.detail.get("code") == "submit_failed"):
                fail(str(exc), as_json=as_json,
                     extra={"detail": exc.detail} if isinstance(exc.detail, dict) else None)
            silence = exc  # no quorum of the bucket in time: an answer worth retrying
        if time.monotonic() + delay > deadline:
            fail(f"{silence}. The operation may or may not have been applied; to send it "
                 f"again safely (it is applied at most once), run the same command with "
                 f"--op-id {op['op_id']} --valid-until {op['valid_until_ms']}",
                 as_json=as_json, extra=op)
        if not as_json:
            say(f"no answer ({silence}); sending operation {op['op_id']} again", console=err)
        time.sleep(delay)
        delay = min(delay * 2, RETRY_DELAY_S_MAX)


def _applied(doc: dict[str, Any]) -> str:
    return f"(bucket {doc['bucket']}, index {doc['index']}, op {doc['op_id'][:16]})"


# -- ledger --

@ledger_app.command("balance")
def balance(
    account: Annotated[str | None, typer.Argument(
        help="An account (64 hex digits); default: this node's.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Balance, stake (locked), unbonding and escrowed credits of an account."""
    c = client(home, as_json)
    path = "/ledger/balance" + (f"?account={account}" if account else "")
    doc: dict[str, Any] = call(lambda: c.get(path), as_json)
    if as_json:
        emit_json({k: doc[k] for k in BALANCE_KEYS})
        return
    say(f"account {doc['account']} (bucket {doc['bucket']}, {doc['source']})")
    for k in BALANCE_KEYS[1:]:
        say(f"  {k:<10} {_c(doc[k], doc)}")
    for line in _unbonding_lines(doc):
        say(line)


@ledger_app.command("transfer")
def transfer(
    to: Annotated[str, typer.Argument(help="The recipient's account (64 hex digits).")],
    amount: AmountArg,
    memo: Annotated[str, typer.Option("--memo", help="A note, up to 256 bytes.")] = "",
    to_self: Annotated[bool, typer.Option(
        "--to-self", help="TO may be this node's own account (refused otherwise).")] = False,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    op_id: OpIdOpt = None,
    valid_until: ValidUntilOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Transfer AMOUNT credits from this node's account to TO.

    Prints the outcome once the payer's bucket has applied it."""
    doc = _write("/ledger/transfer", {"to": to, "amount": amount, "memo": memo,
                                      "to_self": to_self}, home, as_json, timeout_s,
                 op_id, valid_until)
    if as_json:
        emit_json(doc)
        return
    moved = -sum(ch["delta"] for ch in doc["changes"]
                 if ch["field"] == "balance" and ch["account"] == doc["account"]["account"])
    say(f"transferred {_c(moved, doc)} credits to {_short(to)}; balance now "
        f"{_c(doc['account']['balance'], doc)} {_applied(doc)}")


@ledger_app.command("history")
def history(
    account: Annotated[str | None, typer.Argument(
        help="An account (64 hex digits); default: this node's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail of an account, oldest first.

    What it submitted (refusals too) and what changed it."""
    c = client(home, as_json)
    query = f"?limit={limit}" + (f"&account={account}" if account else "")
    doc: dict[str, Any] = call(lambda: c.get("/ledger/history" + query), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"account {_short(doc['account'])} (bucket {doc['bucket']})")
    for col in ("index", "kind", "change", "counterparty", "memo", "outcome", "cause"):
        table.add_column(col, justify="right" if col == "index" else "left")
    for r in doc["records"]:
        mine = [ch for ch in r["changes"] if ch["account"] == doc["account"]]
        change = ", ".join(f"{ch['field']} {'+' if ch['delta'] > 0 else ''}"
                           f"{_c(ch['delta'], doc)}" for ch in mine)
        add_row(table, str(r["index"]), r["kind"], change, _short(r["counterparty"] or ""),
                r["memo"], "ok" if r["ok"] else r["reason"], r["cause"])
    out.print(table)


@ledger_app.command("supply")
def supply(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Credits over every bucket.

    total = circulating + locked + escrowed; total + burned is the genesis supply."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get("/ledger/supply"), as_json)
    if as_json:
        emit_json({k: doc[k] for k in SUPPLY_KEYS})
        return
    for k in SUPPLY_KEYS:
        say(f"{k:<12} {_c(doc[k], doc)}")
    note = "" if doc["conserved"] else "  (NOT conserved: report this)"
    say(f"{'genesis':<12} {_c(doc['genesis_supply'], doc)}{note}")


# -- stake --

@stake_app.command("add")
def stake_add(amount: AmountArg, timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
              op_id: OpIdOpt = None, valid_until: ValidUntilOpt = None,
              home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Stake AMOUNT credits of this node's balance."""
    doc = _write("/stake/add", {"amount": amount}, home, as_json, timeout_s, op_id,
                 valid_until)
    if as_json:
        emit_json(doc)
        return
    a = doc["account"]
    say(f"staked {_c(-_delta(doc, 'balance'), doc)} credits; now locked "
        f"{_c(a['locked'], doc)}, balance {_c(a['balance'], doc)} {_applied(doc)}")


@stake_app.command("remove")
def stake_remove(amount: AmountArg, timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
                 op_id: OpIdOpt = None, valid_until: ValidUntilOpt = None,
                 home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Unstake AMOUNT credits (they unbond first).

    They stay slashable for the swarm's unbonding period; then `stake
    complete-unbonding` returns them to the balance."""
    doc = _write("/stake/remove", {"amount": amount}, home, as_json, timeout_s, op_id,
                 valid_until)
    if as_json:
        emit_json(doc)
        return
    say(f"unstaking {_c(_delta(doc, 'unbonding'), doc)} credits {_applied(doc)}")
    for line in _unbonding_lines(doc["account"] | {"unit_per_credit":
                                                   doc["unit_per_credit"]}):
        say(line)


@stake_app.command("complete-unbonding")
def stake_complete(timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT, op_id: OpIdOpt = None,
                   valid_until: ValidUntilOpt = None, home: HomeOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Return every unbonding amount whose period is over to the balance."""
    doc = _write("/stake/complete-unbonding", {}, home, as_json, timeout_s, op_id,
                 valid_until)
    if as_json:
        emit_json(doc)
        return
    say(f"unbonded {_c(_delta(doc, 'balance'), doc)} credits; balance now "
        f"{_c(doc['account']['balance'], doc)} {_applied(doc)}")


@stake_app.command("show")
def stake_show(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """This node's stake, unbonding amounts and verifier status."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get("/stake"), as_json)
    if as_json:
        emit_json(doc)
        return
    say(f"account {doc['account']}")
    say(f"  locked     {_c(doc['locked'], doc)} (verifier minimum "
        f"{_c(doc['min_verifier_stake'], doc)}; "
        f"{'registered verifier' if doc['verifier'] else 'not in the pool'})")
    say(f"  unbonding  {_c(doc['unbonding'], doc)} (period "
        f"{format_duration(doc['unbonding_ms'])})")
    for line in _unbonding_lines(doc):
        say(line)
    say(f"  balance    {_c(doc['balance'], doc)}")


def _delta(doc: dict[str, Any], fld: str) -> int:
    me = doc["account"]["account"]
    return sum(ch["delta"] for ch in doc["changes"]
               if ch["field"] == fld and ch["account"] == me)


# -- pool --

@pool_app.command("register")
def pool_register(
    org: Annotated[str, typer.Option("--org", help="Your organisation (committee caps).")],
    asn: Annotated[int, typer.Option("--asn", help="Your network's AS number.", min=0,
                                     max=2**32 - 1)],
    region: Annotated[str, typer.Option("--region", help="Where you run.")],
    capability: Annotated[list[str] | None, typer.Option(
        "--capability", help="A capability you verify (repeatable).")] = None,
    timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT,
    op_id: OpIdOpt = None,
    valid_until: ValidUntilOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register this node's account as a verifier (needs the minimum stake)."""
    body = {"org": org, "asn": asn, "region": region, "capabilities": capability or []}
    doc = _write("/pool/register", body, home, as_json, timeout_s, op_id, valid_until)
    if as_json:
        emit_json(doc)
        return
    say(f"registered as a verifier {_applied(doc)}")


@pool_app.command("leave")
def pool_leave(timeout_s: TimeoutOpt = OUTCOME_WAIT_S_DEFAULT, op_id: OpIdOpt = None,
               valid_until: ValidUntilOpt = None, home: HomeOpt = None,
               as_json: JsonOpt = False) -> None:
    """Leave the verifier pool (the stake stays staked)."""
    doc = _write("/pool/leave", {}, home, as_json, timeout_s, op_id, valid_until)
    if as_json:
        emit_json(doc)
        return
    say(f"left the verifier pool {_applied(doc)}")


@pool_app.command("list")
def pool_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every registered verifier, its stake and whether it is active (P5)."""
    c = client(home, as_json)
    doc: dict[str, Any] = call(lambda: c.get("/pool"), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"verifier pool (minimum stake {_c(doc['min_verifier_stake'], doc)})")
    for col in ("account", "org", "asn", "region", "stake", "active", "reputation"):
        table.add_column(col)
    for v in doc["verifiers"]:
        add_row(table, _short(v["account"]), v["org"], str(v["asn"]), v["region"],
                _c(v["stake"], doc), "yes" if v["active"] else "no",
                f"{v['reputation_bp'] / 100:g}%")
    out.print(table)
