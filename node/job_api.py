"""Control-API routes for WebAssembly jobs; `JobService` (node/job_service.py) does the work.

`POST /jobs/run` runs a module (a CID) on an input (a CID), both brought here from
peers if need be, and answers the output's CID and the fuel burnt; 422 with the job's
failure (`out_of_fuel`, `trap`, `bad_module`, `bad_output`), 404 when a block cannot be
found, 400 for bad input. `GET /jobs/builtins` names the built-in jobs' module CIDs;
`POST /jobs/builtins` stores those modules here as evidence, for peers to fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import Field

from swarm.jobs.host import JobError, builtin_cids
from swarm.protocol.errors import ProtocolError
from swarm.protocol.unixfs import BlockMissing

from .api_guard import StrictBody
from .job_service import JobService


class RunBody(StrictBody):
    module: str = Field(description="The job's module, as an evidence CID.", max_length=128)
    input: str = Field(description="The input, as an evidence CID.", max_length=128)


def job_router(service: Callable[[], JobService], dependencies: list[Any]) -> APIRouter:
    router = APIRouter(dependencies=dependencies, tags=["jobs"])

    @router.post("/jobs/run")
    async def run(body: RunBody) -> dict[str, Any]:
        """Run a job; store its output as evidence; answer the output CID and fuel."""
        try:
            return await service().run(body.module, body.input)
        except JobError as exc:
            raise HTTPException(status_code=422, detail=exc.to_dict()) from None
        except BlockMissing as exc:
            raise HTTPException(status_code=404, detail=exc.to_dict()) from None
        except ProtocolError as exc:
            raise HTTPException(status_code=400, detail=exc.to_dict()) from None

    @router.get("/jobs/builtins")
    async def builtins() -> dict[str, Any]:
        return {"jobs": {name: str(cid) for name, cid in builtin_cids().items()}}

    @router.post("/jobs/builtins")
    async def publish() -> dict[str, Any]:
        """Store the built-in jobs' modules here as evidence (pinned)."""
        return {"jobs": await service().publish_builtins()}

    return router
