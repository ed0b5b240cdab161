"""Control-API routes for jobs; `JobService` (node/job_service.py) does the work.

`POST /jobs/run` runs a module (a CID) on an input (a CID), both brought here from
peers if need be, and answers the output's CID and the fuel burnt; 422 with the job's
failure (`out_of_fuel`, `trap`, `bad_module`, `bad_output`, `unknown_job`), 404 when a
block cannot be found, 400 for bad input. `POST /jobs/host/run` runs a host job by name
and `POST /jobs/host/check` asks a host check about an output; `GET /jobs/host` lists
the registered host jobs and checks. A run or check given an output `schema` answers
`violation` (None when the output fits). `GET /jobs/builtins` names the built-in jobs'
module CIDs; `POST /jobs/builtins` stores those modules here as evidence, for peers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from swarm.jobs.host import JobError, builtin_cids
from swarm.protocol.errors import ProtocolError
from swarm.protocol.output_schema import CITES_MAX, DENY_MAX
from swarm.protocol.unixfs import BlockMissing

from .api_guard import StrictBody
from .job_service import JobService

SCHEMA = "The output schema to check the output against (FORMAT or FORMAT<=MAX_BYTES)."
CITES = "CIDs whose text the output must contain (the NEED's `cites`)."
DENY = "Strings the output must not contain (the NEED's `deny`)."


class RunBody(StrictBody):
    module: str = Field(description="The job's module, as an evidence CID.", max_length=128)
    input: str = Field(description="The input, as an evidence CID.", max_length=128)
    schema_: str | None = Field(default=None, alias="schema", max_length=64,
                                description=SCHEMA)
    cites: list[str] = Field(default_factory=list, max_length=CITES_MAX, description=CITES)
    deny: list[str] = Field(default_factory=list, max_length=DENY_MAX, description=DENY)


class HostRunBody(StrictBody):
    job: str = Field(description="The host job's registered name.", max_length=64)
    input: str = Field(description="The input, as an evidence CID.", max_length=128)
    schema_: str | None = Field(default=None, alias="schema", max_length=64,
                                description=SCHEMA)
    cites: list[str] = Field(default_factory=list, max_length=CITES_MAX, description=CITES)
    deny: list[str] = Field(default_factory=list, max_length=DENY_MAX, description=DENY)


class HostCheckBody(HostRunBody):
    output: str = Field(description="The output to check, as an evidence CID.",
                        max_length=128)
    check: str | None = Field(default=None, max_length=64,
                              description="The registered check (the job's own if absent).")


def job_router(service: Callable[[], JobService], dependencies: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=dependencies, tags=["jobs"])

    @router.post("/jobs/run")
    async def run(body: RunBody) -> dict[str, Any]:
        """Run a job; store its output as evidence; answer the output CID and fuel."""
        return await _answer(service().run(body.module, body.input, body.schema_,
                                                  body.cites, body.deny))

    @router.get("/jobs/host")
    async def host_jobs() -> dict[str, Any]:
        """The host jobs and checks registered in this node's Python."""
        return service().host_jobs()

    @router.post("/jobs/host/run")
    async def host_run(body: HostRunBody) -> dict[str, Any]:
        """Run a host job; store its output as evidence; answer the output CID."""
        return await _answer(service().run_host(body.job, body.input, body.schema_,
                                                       body.cites, body.deny))

    @router.post("/jobs/host/check")
    async def host_check(body: HostCheckBody) -> dict[str, Any]:
        """Whether an output is an acceptable result of a host job on an input."""
        return await _answer(service().check_host(body.job, body.check, body.input,
                                                  body.output, body.schema_,
                                                  body.cites, body.deny))

    @router.get("/jobs/builtins")
    async def builtins() -> dict[str, Any]:
        return {"jobs": {name: str(cid) for name, cid in builtin_cids().items()}}

    @router.post("/jobs/builtins")
    async def publish() -> dict[str, Any]:
        """Store the built-in jobs' modules here as evidence (pinned)."""
        return {"jobs": await service().publish_builtins()}

    return router


async def _answer(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await work
    except JobError as exc:
        raise HTTPException(status_code=422, detail=exc.to_dict()) from None
    except BlockMissing as exc:
        raise HTTPException(status_code=404, detail=exc.to_dict()) from None
    except ProtocolError as exc:
        raise HTTPException(status_code=400, detail=exc.to_dict()) from None
