"""This node's verdict on a challenge's proof: what `GET /challenges/{id}/verdict`,
`POST /challenges/check` and `swarm-node challenge check` answer, and what the verifier
role votes by.

Owns bringing the bytes a verdict needs here (the proof, the result, for an
`output_mismatch` the job's output on its input, re-run under the job's own fuel) and
handing one frame to the proof type's WebAssembly verifier (jobs/proofs.py) under the
genesis `verify_fuel_max`. A replica's apply cannot fetch evidence, so the bucket only
tallies the votes this produces; every judge runs the same committed modules on bytes
checked against their CIDs, hence reaches the same verdict; genesis pins the modules'
CIDs (`proof_verifiers`), and a node whose module differs gives no verdict of that
type. A proof over
`proof_bytes_max`, not a proof document, or about another claim does not hold. A
verifier module other than genesis pins, a host check not installed here, or bytes out
of reach give no verdict: an error, and the role does not vote. Also the routes that answer it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import Field

from swarm.jobs import proofs
from swarm.jobs.host import JobError
from swarm.protocol import verbs
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError, ProtocolError, SchemaError
from swarm.protocol.output_schema import parse as parse_schema
from swarm.protocol.task import Challenge, Task
from swarm.protocol.unixfs import BlockMissing, TooLarge

from .api_guard import StrictBody
from .blockstore import Kind
from .job_service import JobService
from .market_service import MarketService, parse_need

log = logging.getLogger("swarm.judge")

# A job failing on its input is a verdict on a result (no right one exists); these are
# the failures that do not depend on this machine.
JOB_FAILURES = frozenset({"bad_module", "trap", "out_of_fuel", "bad_output"})


class Judge:
    def __init__(self, market: MarketService, jobs: JobService, params: Mapping[str, int],
                 pinned: Mapping[str, str] | None = None) -> None:
        self.market = market
        self.jobs = jobs
        self.fuel = int(params["verify_fuel_max"])
        self.proof_bytes_max = int(params["proof_bytes_max"])
        self.pinned = dict(pinned or {})  # genesis `proof_verifiers`
        here = proofs.verifier_cids()
        self.unpinned = {t: f"this node's {proofs.VERIFIERS[t]} module is {here[t]}; genesis "
                            f"pins {cid}: run the build the swarm's genesis names"
                         for t, cid in self.pinned.items() if here.get(t) != cid}
        for why in self.unpinned.values():
            log.warning("judge: %s; no verdicts of that type here", why)

    async def verdict(self, challenge_id: str) -> dict[str, Any]:
        """This node's verdict on an open challenge's proof."""
        task, found = self.market.find_challenge(challenge_id)
        if not isinstance(found, Challenge):
            raise LocalProtocolError("challenge_id", f"challenge {challenge_id} is "
                                                     f"{found.outcome}; judge a proof by "
                                                     f"its CID instead (POST "
                                                     f"/challenges/check; `swarm-node "
                                                     f"challenge check TASK --type T "
                                                     f"--evidence PROOF`)",
                                     code="wrong_state")
        terms = found.terms
        doc = await self.judge(task, terms.proof_type, terms.evidence)
        return {"challenge_id": challenge_id, **doc}

    async def check(self, need: str, proof_type: str, evidence: str) -> dict[str, Any]:
        """The verdict a challenge of `need`'s result with this proof would get here:
        what a challenger asks before locking a bond."""
        if proof_type not in verbs.PROOF_TYPES:
            raise SchemaError("proof_type", f"must be one of {', '.join(verbs.PROOF_TYPES)}")
        need_id = parse_need(need)
        task = self.market.task_of(need_id)
        if task is None:
            raise LocalProtocolError("need", f"task {need_id} is not known here",
                                     code="unknown_task")
        return await self.judge(task, proof_type, Cid.parse(evidence, "evidence"))

    async def judge(self, task: Task, proof_type: str, proof: Cid) -> dict[str, Any]:
        if task.commit is None:
            raise LocalProtocolError("need", f"task {task.terms.need} has no result",
                                     code="wrong_state")
        started = time.monotonic()
        result = task.commit.result
        out = {"task_id": str(task.terms.need), "proof_type": proof_type,
               "proof": str(proof), "result": str(result), "fuel_max": self.fuel}
        try:
            verdict = await self._verdict(task, proof_type, proof, result)
        except proofs.ProofError as exc:
            verdict = proofs.Verdict(False, exc.reason, 0, "")
        return {**out, "holds": verdict.holds, "reason": verdict.reason,
                "fuel": verdict.fuel, "verifier": verdict.verifier or None,
                "ms": round((time.monotonic() - started) * 1000, 3)}

    async def _verdict(self, task: Task, proof_type: str, proof: Cid, result: Cid
                       ) -> proofs.Verdict:
        if proof_type in self.unpinned:
            raise LocalProtocolError("proof_type", self.unpinned[proof_type],
                                     code="no_verifier")
        try:
            data = await self.jobs.fetch(proof, Kind.PROOF)
        except TooLarge:
            raise proofs.ProofError("proof", f"the proof is over proof_bytes_max "
                                             f"({self.proof_bytes_max} bytes)") from None
        doc = proofs.ProofDoc.parse(data)
        doc.about(proof_type, str(task.terms.need), str(result))
        t = task.terms
        match proof_type:
            case "schema_violation":
                if t.output is None:
                    raise proofs.ProofError("proof_type", "the NEED names no output schema")
                schema = parse_schema(t.output)
                body = await self.jobs.fetch(result)
                where = "its length" if doc.offset is None else f"byte {doc.offset}"
                return proofs.verify(
                    proof_type, proofs.schema_frame(schema, body, doc.offset), fuel=self.fuel,
                    holds=f"the result breaks the schema {schema} at {where}",
                    fails=f"the result does not break the schema {schema} at {where}")
            case "output_mismatch":
                if t.job is None or t.input is None:
                    raise proofs.ProofError("proof_type", "the NEED names no WebAssembly "
                                                          "job to re-run (a host job's "
                                                          "result is challenged as a "
                                                          "semantic_contradiction)")
                try:
                    ran = await self.jobs.run(str(t.job), str(t.input))
                except JobError as exc:
                    if exc.code not in JOB_FAILURES:
                        raise
                    return proofs.verify(proof_type, proofs.mismatch_frame(result, None),
                                         fuel=self.fuel, holds=f"the job fails on its "
                                                               f"input: {exc.reason}")
                again = Cid.parse(ran["output"], "output")
                return proofs.verify(proof_type, proofs.mismatch_frame(result, again),
                                     fuel=self.fuel, holds=f"re-running gives {again}",
                                     fails="re-running gives the same output")
            case "missing_citation":
                if doc.cite is None:
                    raise proofs.ProofError("cite", "the proof names no CID (`cite`) the "
                                                    "result leaves out")
                cite = Cid.parse(doc.cite, "cite")
                if cite not in t.cites:
                    raise proofs.ProofError("cite", f"the NEED does not ask the result to "
                                                    f"cite {cite}")
                body = await self.jobs.fetch(result)
                return proofs.verify(proof_type, proofs.citation_frame(cite, body),
                                     fuel=self.fuel, holds=f"the result does not cite {cite}",
                                     fails=f"the result cites {cite}")
            case "policy_breach":
                if not t.deny:
                    raise proofs.ProofError("proof_type", "the NEED sets no content policy "
                                                          "(`deny`)")
                if doc.deny is None or doc.offset is None:
                    raise proofs.ProofError("deny", "the proof names no denied string "
                                                    "(`deny`) and where it is (`offset`)")
                if doc.deny not in t.deny:
                    raise proofs.ProofError("deny", f"the NEED does not deny {doc.deny!r}")
                body = await self.jobs.fetch(result)
                where = f"{doc.deny!r} at byte {doc.offset}"
                return proofs.verify(proof_type, proofs.policy_frame(doc.deny, body, doc.offset),
                                     fuel=self.fuel, holds=f"the result holds {where}",
                                     fails=f"the result does not hold {where}")
            case _:  # semantic_contradiction
                if t.host is None or t.input is None:
                    raise proofs.ProofError("proof_type", "a semantic_contradiction is "
                                                          "judged by a host job's check; "
                                                          "the NEED names none")
                checked = await self.jobs.check_host(t.host, t.check, str(t.input),
                                                     str(result))
                name = t.check or self.jobs.hosted.job(t.host).check
                return proofs.Verdict(not checked["valid"],
                                      f"the host check {name} "
                                      f"{'takes' if checked['valid'] else 'refuses'} it",
                                      0, f"host:{name}")


class CheckBody(StrictBody):
    task_id: str = Field(max_length=128, description="The task's id (its NEED's CID).")
    proof_type: Literal["schema_violation", "missing_citation", "semantic_contradiction",
                        "output_mismatch", "policy_breach"]
    evidence: str = Field(max_length=128, description="The proof's CID.")


def judge_router(judge: Callable[[], Judge], dependencies: list[Any]) -> APIRouter:
    """`GET /challenges/{id}/verdict` and `POST /challenges/check`: 404 for a challenge,
    task or block unknown here, 422 when no verdict can be had (`no_verifier`, the
    re-run failing on this machine), 400 for bad input."""
    router = APIRouter(dependencies=dependencies, tags=["market"])

    @router.post("/challenges/check")
    async def check(body: CheckBody) -> dict[str, Any]:
        """The verdict a challenge with this proof would get from this node."""
        return await _answer(judge().check(body.task_id, body.proof_type, body.evidence))

    @router.get("/challenges/{challenge_id}/verdict")
    async def verdict(challenge_id: str) -> dict[str, Any]:
        """This node's verdict on a challenge's proof (what its verifier role votes)."""
        return await _answer(judge().verdict(challenge_id))

    return router


async def _answer(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await work
    except (JobError, BlockMissing) as exc:
        raise HTTPException(status_code=422 if isinstance(exc, JobError) else 404,
                            detail=exc.to_dict()) from None
    except ProtocolError as exc:
        status = {"unknown_challenge": 404, "unknown_task": 404,
                  "no_verifier": 422}.get(exc.code, 400)
        raise HTTPException(status_code=status, detail=exc.to_dict()) from None
