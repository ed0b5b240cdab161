"""The ledger in the node: what the control API's ledger, stake and pool routes do.

Owns turning a user's request into a signed ledger envelope and its outcome: the node
signs a TRANSFER / STAKE / UNSTAKE / COMPLETE_UNBONDING / POOL_REGISTER / POOL_LEAVE
envelope with its identity (the node's account is the account that pays), checks it
against the swarm's policy as it would before publishing, submits it to the bucket that
owns the account (`MultiRaft.submit`: the bucket's leader orders it; elsewhere it is
forwarded), and answers the outcome every replica computed -- a refusal by the ledger's
rules ("insufficient balance: have 40, need 55") is an outcome too (`LedgerRefused`).

Reads come from this node's own state: its replicas' machines for buckets it
replicates, its certified read replica (node/ledger_raft.py) for the others. A read
right after a write of another bucket may lag by a certification round trip.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from swarm.protocol.bucket_machine import LedgerOutcome, ledger_command, view_json
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import make_envelope
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.ledger import AuditRecord, parse_credits

from .ledger_raft import LedgerRaft
from .multiraft import SubmitError

if TYPE_CHECKING:
    from .service import Node

HISTORY_MAX = 1000


class LedgerRefused(LocalProtocolError):
    """The ledger refused the operation when it applied it (an outcome with a code);
    `str()` is the reason alone, as users should see it."""

    def __init__(self, outcome: LedgerOutcome) -> None:
        super().__init__("ledger", outcome.reason, code=outcome.code)
        self.outcome = outcome

    def __str__(self) -> str:
        return self.reason


class LedgerService:
    def __init__(self, node: Node) -> None:
        self.node = node
        raft = node.decider.raft
        self.raft = raft
        self.net = LedgerRaft(raft, node.decider.store, node.genesis)
        self.unit = node.genesis.params["unit_per_credit"]
        self.bucket_count = raft.placement.bucket_count
        self.account_id = node.identity.public_key

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.net.run)
            task_status.started()

    # -- writes --

    def amount(self, text: str | int) -> int:
        """An amount from the API: credits as text ("12.5"), exact."""
        return parse_credits(str(text), self.unit)

    async def submit(self, kind: str, payload: dict[str, Any],
                     timeout_s: float = 15.0) -> dict[str, Any]:
        """Sign `kind` with this node's identity, submit it to the account's bucket,
        and return the applied outcome; raises LedgerRefused if the ledger refused it,
        SubmitError if no outcome came in time."""
        if self.raft.id == 0:
            raise SubmitError("node", "this node is not a validator, so it cannot reach the "
                                      "buckets; use a validator's control API")
        node = self.node
        env = make_envelope(node.identity, kind=kind, swarm=node.genesis.swarm_id,
                            lamport=node.clock.tick(), ts=time.time_ns() // 1_000_000,
                            payload=payload)
        with node.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = node.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {kind}: "
                                     f"{checked.reason}", code=checked.reason)
        cmd = ledger_command(bucket_of(self.account_id, self.bucket_count), env.wire)
        outcome = await self.raft.submit(cmd, timeout_s=timeout_s)
        if not outcome.ok:
            raise LedgerRefused(outcome)
        return {**outcome.to_json(), "envelope": str(env.id), "unit_per_credit": self.unit}

    async def transfer(self, to: str, amount: str | int, memo: str = "",
                       timeout_s: float = 15.0) -> dict[str, Any]:
        payload: dict[str, Any] = {"to": self.parse_account(to, "to"),
                                   "amount": self.amount(amount)}
        if memo:
            payload["memo"] = memo
        return await self.submit("TRANSFER", payload, timeout_s)

    # -- reads --

    def parse_account(self, text: str | None, fld: str = "account") -> bytes:
        if not text:
            return self.account_id
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise LocalProtocolError(fld, f"must be an account: 64 hex digits (got {text!r})")
        return raw

    def balance(self, account: str | None = None) -> dict[str, Any]:
        acct = self.parse_account(account)
        bucket = bucket_of(acct, self.bucket_count)
        part = self.net.part(bucket)
        return {**view_json(part.ledger.account(acct)), "bucket": bucket,
                "source": "replica" if self.net.replicated(bucket) else "read_replica",
                "as_of_index": part.last, "unit_per_credit": self.unit}

    def history(self, account: str | None = None, limit: int = 100) -> dict[str, Any]:
        acct = self.parse_account(account)
        records = self.net.history(acct)[-min(max(limit, 1), HISTORY_MAX):]
        return {"account": acct.hex(), "bucket": bucket_of(acct, self.bucket_count),
                "unit_per_credit": self.unit, "records": [record_json(r) for r in records]}

    def supply(self) -> dict[str, Any]:
        t = self.net.totals()
        return {**t.supply(), "genesis_supply": self.net.supply, "in_flight": t.in_flight,
                "conserved": t.held == self.net.supply, "unit_per_credit": self.unit}

    def stake(self) -> dict[str, Any]:
        acct = self.account_id
        view = self.balance(None)
        member = self.net.part(bucket_of(acct, self.bucket_count)).pool.member(acct)
        return {**view, "min_verifier_stake": self.node.genesis.params["min_verifier_stake"],
                "unbonding_ms": self.node.genesis.params["unbonding_ms"],
                "verifier": member is not None}

    def pool(self) -> dict[str, Any]:
        need = self.node.genesis.params["min_verifier_stake"]
        return {"min_verifier_stake": need, "unit_per_credit": self.unit, "verifiers": [
            {"account": v.account.hex(), "org": v.org, "asn": v.asn, "region": v.region,
             "capabilities": list(v.capabilities), "stake": stake, "active": stake >= need,
             "reputation_bp": v.reputation_bp, "registered_ms": v.registered_ms}
            for v, stake in self.net.pool()]}

    def root_hex(self) -> str:
        return self.net.root().hex()

    def status(self) -> dict[str, Any]:
        return {"ledger_root": self.root_hex(), **self.net.lag(),
                "stats": {**dict(self.net.stats)}}


def record_json(r: AuditRecord) -> dict[str, Any]:
    return {"index": r.index, "ts_ms": r.ts_ms, "op_id": r.op_id.hex(), "kind": r.kind,
            "account": r.account.hex(), "cause": r.cause, "ok": r.ok,
            "code": r.error_code, "reason": r.error,
            "changes": [{"account": c.account.hex(), "field": c.field, "delta": c.delta}
                        for c in r.changes],
            "emitted": [{"bucket": t, "seq": s} for t, s in r.emitted]}
