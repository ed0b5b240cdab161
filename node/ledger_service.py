"""The ledger in the node: what the control API's ledger, stake and pool routes do.

Owns turning a user's request into a signed ledger envelope and its outcome: the node
signs a TRANSFER / STAKE / UNSTAKE / COMPLETE_UNBONDING / POOL_REGISTER / POOL_LEAVE
envelope with its identity (the node's account is the account that pays), checks it
against the swarm's policy as it would before publishing, submits it to the bucket that
owns the account (`MultiRaft.submit`: the bucket's leader orders it; elsewhere it is
forwarded; a node that is not a validator hands the signed envelope to a validator it is
connected to, which submits it, node/relay.py), and answers the outcome every replica
computed -- a refusal by the ledger's
rules ("insufficient balance: have 40, need 55") is an outcome too (`LedgerRefused`).

Reads come from this node's own state: its replicas' machines for buckets it
replicates, its certified read replica (node/ledger_raft.py) for the others. A read
right after a write of another bucket may lag by a certification round trip.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio
from libp2p.custom_types import TProtocol

from swarm.protocol.bucket_machine import (
    LEDGER_SUBMISSION_BYTES_MAX,
    LEDGER_SUBMISSION_TIMEOUT_MS_MAX,
    LedgerOutcome,
    decode_ledger_answer,
    decode_ledger_submission,
    encode_ledger_answer,
    encode_ledger_submission,
    ledger_command,
    view_json,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import make_envelope
from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.ledger import AuditRecord, parse_credits
from swarm.protocol.raft import NONE

from . import relay
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
        self.submission_protocol = TProtocol(
            f"/can-swarm/{node.genesis.short_id}/ledger-submit/1.0.0")
        self.submissions = relay.Server(LEDGER_SUBMISSION_BYTES_MAX, self._serve_submission)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.raft.id != NONE:
            self.node.host.set_stream_handler(self.submission_protocol, self.submissions)
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
        node = self.node
        env = make_envelope(node.identity, kind=kind, swarm=node.genesis.swarm_id,
                            lamport=node.clock.tick(), ts=time.time_ns() // 1_000_000,
                            payload=payload)
        with node.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = node.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {kind}: "
                                     f"{checked.reason}", code=checked.reason)
        bucket = bucket_of(self.account_id, self.bucket_count)
        if self.raft.id == NONE:
            outcome = await self._submit_through_validator(bucket, env.wire, timeout_s)
        else:
            outcome = await self.raft.submit(ledger_command(bucket, env.wire),
                                             timeout_s=timeout_s)
        if not outcome.ok:
            raise LedgerRefused(outcome)
        return {**outcome.to_json(), "envelope": str(env.id), "unit_per_credit": self.unit}

    async def _submit_through_validator(self, bucket: int, wire: bytes,
                                        timeout_s: float) -> LedgerOutcome:
        """A node that is not a validator hands its signed envelope to a connected
        validator, which submits it and answers the outcome."""

        def parse(data: bytes) -> LedgerOutcome:
            answer = decode_ledger_answer(data)
            if isinstance(answer, LedgerOutcome):
                return answer
            code, reason = answer
            if code == SubmitError.code:  # no quorum in time there: ask another
                raise relay.Retry(reason)
            raise relay.Final(SubmitError("command", reason, code=code))

        try:
            return await relay.ask_validators(
                self.node.host, self.raft.placement, self.submission_protocol,
                lambda ms: encode_ledger_submission(bucket, wire, ms),
                LEDGER_SUBMISSION_BYTES_MAX, parse, timeout_s, LEDGER_SUBMISSION_TIMEOUT_MS_MAX)
        except relay.NoValidator:
            raise SubmitError("node", "this node is not a validator and is connected to "
                                      "none; connect to a validator or use a validator's "
                                      "control API") from None
        except TimeoutError as exc:
            raise SubmitError("command", f"no validator answered an outcome within "
                                         f"{timeout_s:g} s ({exc})") from None

    async def _serve_submission(self, data: bytes) -> bytes:
        """A node that is not a validator asks us to submit its signed ledger envelope."""
        try:
            bucket, wire, timeout_ms = decode_ledger_submission(data, self.bucket_count)
        except RemoteProtocolError as exc:
            return encode_ledger_answer(None, "invalid", f"{exc.field}: {exc.reason}")
        try:
            outcome = await self.raft.submit(ledger_command(bucket, wire),
                                             timeout_s=timeout_ms / 1000)
        except SubmitError as exc:
            return encode_ledger_answer(None, exc.code, exc.reason)
        return encode_ledger_answer(outcome)

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
