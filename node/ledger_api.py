"""Control-API routes for the ledger, staking and the verifier pool.

Owns the routes' shapes only; `LedgerService` (node/ledger_service.py) does the work.
Amounts sent to the node are credits as text ("12.5", exact to the smallest unit);
amounts it answers are integers in the smallest unit, with `unit_per_credit` alongside.

Every write may name its operation: `op_id` (32 hex digits) and `valid_until_ms` (bucket
time). A client that sends the same two again (a retry after a broken connection, a
timeout) gets the first outcome, never a second application; without them the node
picks a fresh op id and a limit ten minutes ahead, and answers both
(`client_op_id`, `valid_until_ms`) so that a client can retry with them.

Errors: 400 for bad input (detail names the field), 409 when the ledger refused the
operation as it applied it (detail: its `code`, its `reason` as users should see it,
e.g. "insufficient balance: have 40, need 55", and the full `outcome`), 503 when no
quorum of the account's bucket answered in time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from swarm.protocol.errors import LocalProtocolError, ProtocolError
from swarm.protocol.verbs import OP_ID_BYTES

from .api_guard import StrictBody
from .client import OUTCOME_WAIT_S_DEFAULT, OUTCOME_WAIT_S_MAX
from .ledger_service import LedgerRefused, LedgerService
from .raft_kinds import SubmitError

CREDITS = "Credits as text, decimals allowed (\"12.5\"); exact to the smallest unit."


class OperationBody(StrictBody):
    """What every ledger write takes: how long to wait, and the operation's identity."""

    timeout_s: float = Field(default=OUTCOME_WAIT_S_DEFAULT, gt=0, le=OUTCOME_WAIT_S_MAX)
    op_id: str | None = Field(default=None, min_length=2 * OP_ID_BYTES,
                              max_length=2 * OP_ID_BYTES,
                              description="The operation's id, 32 hex digits; reuse it "
                                          "(with valid_until_ms) to retry safely.")
    valid_until_ms: int | None = Field(default=None, ge=1, le=2**63 - 1,
                                       description="Bucket time (ms) after which the "
                                                   "operation is refused.")

    def operation(self) -> dict[str, Any]:
        """The keyword arguments `LedgerService.submit` takes for them."""
        if (self.op_id is None) != (self.valid_until_ms is None):
            raise LocalProtocolError("op_id" if self.op_id is None else "valid_until_ms",
                                     "op_id and valid_until_ms go together: the operation "
                                     "is both (send neither to have the node pick them)")
        op_id = None
        if self.op_id is not None:
            try:
                op_id = bytes.fromhex(self.op_id)
            except ValueError:
                raise LocalProtocolError("op_id", "must be 32 hex digits") from None
        return {"timeout_s": self.timeout_s, "op_id": op_id,
                "valid_until_ms": self.valid_until_ms}


class TransferBody(OperationBody):
    to: str = Field(description="The recipient's account (64 hex digits).")
    amount: str = Field(description=CREDITS)
    memo: str = Field(default="", max_length=256)
    to_self: bool = Field(default=False, description="Allow `to` to be this node's own "
                                                     "account (refused otherwise).")


class AmountBody(OperationBody):
    amount: str = Field(description=CREDITS)


class EmptyBody(OperationBody):
    pass


class PoolRegisterBody(OperationBody):
    org: str = Field(min_length=1, max_length=64)
    asn: int = Field(ge=0, le=2**32 - 1)
    region: str = Field(min_length=1, max_length=64)
    capabilities: list[str] = Field(default_factory=list, max_length=32)


async def write(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run a bucket write and map its failures: 409 when the bucket refused it as it
    applied it, 503 when no quorum answered in time, 400 for bad input."""
    try:
        result: dict[str, Any] = await fn()
        return result
    except LedgerRefused as exc:
        raise HTTPException(status_code=409, detail={
            "code": exc.code, "reason": exc.reason,
            "outcome": exc.outcome.to_json()}) from None
    except SubmitError as exc:
        status = 503 if exc.code == "submit_failed" else 400
        raise HTTPException(status_code=status, detail=exc.to_dict()) from None
    except ProtocolError as exc:
        raise HTTPException(status_code=400, detail=exc.to_dict()) from None


def ledger_router(service: Callable[[], LedgerService], dependencies: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=dependencies, tags=["ledger"])

    def read(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except ProtocolError as exc:
            raise HTTPException(status_code=400, detail=exc.to_dict()) from None

    @router.get("/ledger/balance")
    async def balance(account: str | None = None) -> dict[str, Any]:
        """An account's balance, stake, unbonding and escrows (default: this node's)."""
        return read(lambda: service().balance(account))

    @router.post("/ledger/transfer")
    async def transfer(body: TransferBody) -> dict[str, Any]:
        """Transfer from this node's account; answers the applied outcome."""
        return await write(lambda: service().transfer(body.to, body.amount, body.memo,
                                                      to_self=body.to_self,
                                                      **body.operation()))

    @router.get("/ledger/history")
    async def history(account: str | None = None, limit: int = 100) -> dict[str, Any]:
        """The audit trail of an account's bucket that concerns it (default: ours)."""
        return read(lambda: service().history(account, limit))

    @router.get("/ledger/supply")
    async def supply() -> dict[str, Any]:
        """Totals over every bucket: total = circulating + locked + escrowed; total +
        burned = the genesis supply."""
        return read(service().supply)

    @router.get("/ledger/status")
    async def status() -> dict[str, Any]:
        """The ledger root and the read replica's progress."""
        return read(service().status)

    @router.get("/stake")
    async def stake_show() -> dict[str, Any]:
        return read(service().stake)

    @router.post("/stake/add")
    async def stake_add(body: AmountBody) -> dict[str, Any]:
        svc = service()
        return await write(lambda: svc.submit("STAKE", {"amount": svc.amount(body.amount)},
                                              **body.operation()))

    @router.post("/stake/remove")
    async def stake_remove(body: AmountBody) -> dict[str, Any]:
        """Unstake: the amount unbonds for `unbonding_ms`, then `complete-unbonding`."""
        svc = service()
        return await write(lambda: svc.submit("UNSTAKE", {"amount": svc.amount(body.amount)},
                                              **body.operation()))

    @router.post("/stake/complete-unbonding")
    async def complete_unbonding(body: EmptyBody) -> dict[str, Any]:
        return await write(lambda: service().submit("COMPLETE_UNBONDING", {},
                                                    **body.operation()))

    @router.get("/pool")
    async def pool_list() -> dict[str, Any]:
        return read(service().pool)

    @router.post("/pool/register")
    async def pool_register(body: PoolRegisterBody) -> dict[str, Any]:
        payload = {"capabilities": sorted(set(body.capabilities)), "org": body.org,
                   "asn": body.asn, "region": body.region}
        return await write(lambda: service().submit("POOL_REGISTER", payload,
                                                    **body.operation()))

    @router.post("/pool/leave")
    async def pool_leave(body: EmptyBody) -> dict[str, Any]:
        return await write(lambda: service().submit("POOL_LEAVE", {}, **body.operation()))

    return router
