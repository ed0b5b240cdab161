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
replicates, its certified read replica (node/ledger_raft.py) for the others, which a
node that is not a validator keeps by chain sync (node/chain_sync.py). A read
right after a write of another bucket may lag by a certification round trip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol

from swarm.protocol.amounts import parse_credits
from swarm.protocol.bucket_machine import (
    LEDGER_SUBMISSION_BYTES_MAX,
    LEDGER_SUBMISSION_TIMEOUT_MS_MAX,
    LedgerOutcome,
    bucket_for,
    decode_ledger_answer,
    decode_ledger_submission,
    encode_ledger_answer,
    encode_ledger_submission,
    ledger_command,
    view_json,
)
from swarm.protocol.buckets import bucket_of
from swarm.protocol.envelope import Envelope, decode_envelope
from swarm.protocol.errors import LocalProtocolError, RemoteProtocolError
from swarm.protocol.genesis import Genesis
from swarm.protocol.ledger import AuditRecord
from swarm.protocol.raft import NONE
from swarm.protocol.verbs import OP_ID_BYTES

from . import relay
from .chain_sync import ChainSync
from .client import OUTCOME_WAIT_S_DEFAULT
from .ledger_raft import LedgerRaft
from .multiraft import MultiRaft
from .pipeline import Verdict
from .policy import WasmPolicy
from .raft_kinds import SubmitError
from .raftstore import RaftStore

HISTORY_MAX = 1000
QUOTED_CHARS_MAX = 70  # of a malformed account, quoted back in the error
# How long an operation the node signs stays valid when the caller does not say: long
# enough for retries across a node restart, well within genesis `op_validity_ms_max`.
DEFAULT_VALIDITY_MS = 10 * 60 * 1000


class LedgerRefused(LocalProtocolError):
    """The ledger refused the operation when it applied it (an outcome with a code);
    `str()` is the reason alone, as users should see it."""

    def __init__(self, outcome: LedgerOutcome) -> None:
        super().__init__("ledger", outcome.reason, code=outcome.code)
        self.outcome = outcome

    def __str__(self) -> str:
        return self.reason


class LedgerService:
    """`raft` and `store`: the node's multi-raft and its store (node/decide_service.py
    opens both). `account` is this node's account (its public key); `sign` makes an
    envelope signed by this node, with its next Lamport time and `ts_ms`; `policy` checks
    it, and judges envelopes other nodes hand us. The libp2p host comes to `run`."""

    def __init__(self, raft: MultiRaft, store: RaftStore, genesis: Genesis, account: bytes,
                 policy: WasmPolicy,
                 sign: Callable[[str, dict[str, Any], int], Envelope]) -> None:
        self.raft = raft
        self.genesis = genesis
        self.policy = policy
        self.sign = sign
        self.host: IHost | None = None
        self.net = LedgerRaft(raft, store, genesis)
        self.sync = ChainSync(self.net, genesis)  # a plain node follows the chains so
        self.unit = genesis.params["unit_per_credit"]
        self.bucket_count = raft.placement.bucket_count
        self.account_id = account
        self.submission_protocol = TProtocol(
            f"/can-swarm/{genesis.short_id}/ledger-submit/1.0.0")
        self.submissions = relay.Server(LEDGER_SUBMISSION_BYTES_MAX, self._serve_submission)

    async def run(self, host: IHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host = host
        if self.raft.id != NONE:
            host.set_stream_handler(self.submission_protocol, self.submissions)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.net.run)
            await nursery.start(self.sync.run, host)
            task_status.started()

    # -- writes --

    def amount(self, text: str | int) -> int:
        """An amount from the API: credits as text ("12.5"), exact."""
        return parse_credits(str(text), self.unit)

    async def submit(self, kind: str, payload: dict[str, Any],
                     timeout_s: float = OUTCOME_WAIT_S_DEFAULT,
                     op_id: bytes | None = None,
                     valid_until_ms: int | None = None) -> dict[str, Any]:
        """Sign `kind` with this node's identity, submit it to the account's bucket,
        and return the applied outcome; raises LedgerRefused if the ledger refused it,
        SubmitError if no outcome came in time.

        `op_id` and `valid_until_ms` make the operation (random, and now plus
        DEFAULT_VALIDITY_MS, when not given): a caller that retries with the same two
        gets the first outcome, never a second application."""
        now_ms = time.time_ns() // 1_000_000
        payload = {**payload, "op_id": op_id if op_id is not None else os.urandom(OP_ID_BYTES),
                   "valid_until_ms": (valid_until_ms if valid_until_ms is not None
                                      else now_ms + DEFAULT_VALIDITY_MS)}
        env = self.sign(kind, payload, now_ms)
        with self.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = self.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {kind}: "
                                     f"{checked.reason}", code=checked.reason)
        return await self._submit(env, timeout_s)

    async def submit_signed(self, env: Envelope,
                            timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """A ledger envelope signed elsewhere (a wallet holding its own key), submitted
        to its signer's bucket. It enters Raft here, so the swarm's policy judges it
        first, counted against its sender's rate like gossip; then as `submit`."""
        decision = self.policy.evaluate(env)
        if decision.verdict is not Verdict.ACCEPT:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {env.kind}: "
                                     f"{decision.reason}", code=decision.reason)
        return await self._submit(env, timeout_s)

    async def submit_judged(self, env: Envelope,
                            timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """An envelope signed elsewhere that the gossip path already judged, policy
        included (a NEED or a bid that is also gossiped): submitted as it is."""
        return await self._submit(env, timeout_s)

    async def submit_own(self, env: Envelope,
                         timeout_s: float = OUTCOME_WAIT_S_DEFAULT) -> dict[str, Any]:
        """An envelope this node signed (a NEED, a bid, a claim, ...): checked against
        the policy as before publishing, then submitted to the bucket that orders it."""
        with self.policy.rate_exempt():  # our own pace is the other nodes' business
            checked = self.policy.run(env)
        if not checked.allowed:
            raise LocalProtocolError("policy", f"the swarm's policy denies this {env.kind}: "
                                     f"{checked.reason}", code=checked.reason)
        return await self._submit(env, timeout_s)

    async def _submit(self, env: Envelope, timeout_s: float) -> dict[str, Any]:
        bucket = bucket_for(env, self.bucket_count)
        if self.raft.id == NONE:
            outcome = await self._submit_through_validator(bucket, env.wire, timeout_s)
        else:
            outcome = await self.raft.submit(ledger_command(bucket, env.wire),
                                             timeout_s=timeout_s)
        if not outcome.ok:
            raise LedgerRefused(outcome)
        answer = {**outcome.to_json(), "envelope": str(env.id), "unit_per_credit": self.unit}
        if "op_id" in env.payload:
            answer["client_op_id"] = env.payload["op_id"].hex()
            answer["valid_until_ms"] = env.payload["valid_until_ms"]
        return answer

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

        assert self.host is not None, "run() gives the host"
        try:
            return await relay.ask_validators(
                self.host, self.raft.placement, self.submission_protocol,
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
            env = decode_envelope(wire, swarm=self.genesis.swarm_id)
        except RemoteProtocolError as exc:
            return encode_ledger_answer(None, exc.code, f"{exc.field}: {exc.reason}")
        # Here the envelope enters Raft: the swarm's policy judges it as it judges
        # gossip (per-sender rate and per-verb limits), counted like any other.
        decision = self.policy.evaluate(env)
        if decision.verdict is not Verdict.ACCEPT:
            return encode_ledger_answer(None, decision.reason,
                                        f"the swarm's policy denies this {env.kind}: "
                                        f"{decision.reason}")
        try:
            outcome = await self.raft.submit(ledger_command(bucket, wire),
                                             timeout_s=timeout_ms / 1000)
        except SubmitError as exc:
            return encode_ledger_answer(None, exc.code, exc.reason)
        return encode_ledger_answer(outcome)

    async def transfer(self, to: str, amount: str | int, memo: str = "",
                       timeout_s: float = OUTCOME_WAIT_S_DEFAULT, *, to_self: bool = False,
                       op_id: bytes | None = None,
                       valid_until_ms: int | None = None) -> dict[str, Any]:
        """Transfer from this node's account to `to`, which must be given, and may be
        this node's own account only if `to_self` says that is meant (it moves
        nothing, so it is more likely a slip than a wish)."""
        if not to:
            raise LocalProtocolError("to", "must be an account: 64 hex digits (got nothing)")
        recipient = self.parse_account(to, "to")
        if recipient == self.account_id and not to_self:
            raise LocalProtocolError("to", "is this node's own account: a transfer to it "
                                           "moves nothing; say so explicitly (--to-self, "
                                           "or \"to_self\": true) if it is meant",
                                     code="to_self")
        payload: dict[str, Any] = {"to": recipient, "amount": self.amount(amount)}
        if memo:
            payload["memo"] = memo
        return await self.submit("TRANSFER", payload, timeout_s, op_id, valid_until_ms)

    # -- reads --

    def parse_account(self, text: str | None, fld: str = "account") -> bytes:
        if not text:
            return self.account_id
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            shown = text if len(text) <= QUOTED_CHARS_MAX else text[:QUOTED_CHARS_MAX] + "..."
            raise LocalProtocolError(fld, f"must be an account: 64 hex digits (got {shown!r})")
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
        return {**view, "min_verifier_stake": self.genesis.params["min_verifier_stake"],
                "unbonding_ms": self.genesis.params["unbonding_ms"],
                "verifier": member is not None}

    def pool(self) -> dict[str, Any]:
        need = self.genesis.params["min_verifier_stake"]
        return {"min_verifier_stake": need, "unit_per_credit": self.unit, "verifiers": [
            {"account": v.account.hex(), "org": v.org, "asn": v.asn, "region": v.region,
             "capabilities": list(v.capabilities), "stake": stake, "active": stake >= need,
             "reputation_bp": v.reputation_bp, "registered_ms": v.registered_ms}
            for v, stake in self.net.pool()]}

    def root_hex(self) -> str:
        return self.net.root().hex()

    def status(self) -> dict[str, Any]:
        return {"ledger_root": self.root_hex(), "task_root": self.net.task_root().hex(),
                **self.net.lag(),
                "stats": {**dict(self.net.stats)},
                "chain_sync": dict(self.sync.stats)}


def record_json(r: AuditRecord) -> dict[str, Any]:
    return {"index": r.index, "ts_ms": r.ts_ms, "op_id": r.op_id.hex(), "kind": r.kind,
            "account": r.account.hex(), "cause": r.cause, "ok": r.ok,
            "counterparty": r.counterparty.hex() or None, "memo": r.memo,
            "code": r.error_code, "reason": r.error,
            "changes": [{"account": c.account.hex(), "field": c.field, "delta": c.delta}
                        for c in r.changes],
            "emitted": [{"bucket": t, "seq": s} for t, s in r.emitted]}
