"""Running jobs in the node: what `POST /jobs/run`, `/jobs/host/*` and `swarm-node job` do.

Owns bringing a job's module and input here (from this node's evidence store, else from
peers by bitswap, every block checked), running it in a worker thread under the
genesis' `job_fuel_max` and `job_memory_bytes_max` (jobs/host.py), and storing the
output as evidence, pinned: its CID is what a worker commits and what a verifier,
re-running the same module on the same input, must get again. Host jobs (jobs/hosted.py)
run the same way, their outputs checked by their registered check instead. A run given
an output schema also says whether the output fits it. Also publishes the built-in jobs'
modules as evidence, so that peers can fetch them by CID.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from swarm.jobs import host
from swarm.jobs.hosted import HostJobs
from swarm.policy_wasm.host import module_cid
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.output_schema import denied_text, missing_cite
from swarm.protocol.output_schema import parse as parse_schema
from swarm.protocol.unixfs import BlockMissing

from .bitswap import Bitswap
from .blockstore import Kind
from .evidence_store import EvidenceStore, is_blocking

FETCH_TIMEOUT_S = 60.0
SCHEMA_ON_LOOP_BYTES_MAX = 64 * 1024
T = TypeVar("T")


class JobService:
    def __init__(self, store: EvidenceStore, params: dict[str, int],
                 bitswap: Callable[[], Bitswap | None],
                 hosted: HostJobs | None = None) -> None:
        self.store = store
        self.hosted = hosted if hosted is not None else HostJobs.installed()
        self.fuel = int(params["job_fuel_max"])
        self.memory_bytes_max = int(params["job_memory_bytes_max"])
        self.bitswap = bitswap
        self.runs = 0

    async def run(self, module: str, data: str, schema: str | None = None,
                  cites: Sequence[str] = (), deny: Sequence[str] = ()) -> dict[str, Any]:
        """Run the job `module` (a CID) on the evidence `data` (a CID); store the
        output as evidence. Raises JobError (the job failed) or LocalProtocolError.
        With an output `schema`, `violation` says why the output does not fit (None
        when it does, contains every CID of `cites` and no string of `deny`)."""
        module_id = Cid.parse(module, "module")
        input_id = Cid.parse(data, "input")
        check = _contract(schema, cites, deny)
        module_bytes = await self.fetch(module_id)
        input_bytes = await self.fetch(input_id)
        limit = self.store.limits[Kind.EVIDENCE]
        result = await trio.to_thread.run_sync(functools.partial(
            host.run, module_bytes, input_bytes, fuel=self.fuel,
            memory_bytes_max=self.memory_bytes_max, output_bytes_max=limit))
        output = await self._call(self._add, result.output)
        self.runs += 1
        return {"module": str(module_id), "input": str(input_id), "output": str(output),
                "size": len(result.output), "fuel": result.fuel,
                "violation": await _off_loop(check, result.output)}

    async def run_host(self, job: str, data: str, schema: str | None = None,
                       cites: Sequence[str] = (), deny: Sequence[str] = ()
                       ) -> dict[str, Any]:
        """Run the host job `job` on the evidence `data`; store the output as evidence.
        JobError when no such job is registered here or it fails."""
        input_id = Cid.parse(data, "input")
        check = _contract(schema, cites, deny)
        self.hosted.job(job)  # unknown here: refused before anything is fetched
        input_bytes = await self.fetch(input_id)
        out = await trio.to_thread.run_sync(functools.partial(
            self.hosted.run, job, input_bytes, self.store.limits[Kind.EVIDENCE]))
        output = await self._call(self._add, out)
        self.runs += 1
        return {"host": job, "input": str(input_id), "output": str(output),
                "size": len(out), "violation": await _off_loop(check, out)}

    async def check_host(self, job: str, check: str | None, data: str, output: str,
                         schema: str | None = None, cites: Sequence[str] = (),
                         deny: Sequence[str] = ()) -> dict[str, Any]:
        """Whether `output` (evidence) is an acceptable result of the host job `job` on
        `data`: it fits the output schema and the check (the job's own when `check` is
        None) takes it."""
        input_id, output_id = Cid.parse(data, "input"), Cid.parse(output, "output")
        fits = _contract(schema, cites, deny)
        self.hosted.check_of(job, check)  # unknown here: refused before any fetch
        input_bytes = await self.fetch(input_id)
        output_bytes = await self.fetch(output_id)
        violation = await _off_loop(fits, output_bytes)
        if violation is None and not await trio.to_thread.run_sync(functools.partial(
                self.hosted.accepts, job, check, input_bytes, output_bytes)):
            violation = f"the check {check or self.hosted.job(job).check} refuses it"
        return {"host": job, "input": str(input_id), "output": str(output_id),
                "valid": violation is None, "violation": violation}

    def host_jobs(self) -> dict[str, Any]:
        return {"jobs": {name: {"check": j.check, "output": j.output, "about": j.about}
                         for name, j in sorted(self.hosted.jobs.items())},
                "checks": sorted(self.hosted.checks)}

    async def publish_builtins(self) -> dict[str, str]:
        """Store and pin the built-in jobs' modules as evidence; name -> CID. Each is
        added as one raw block, so its evidence CID is its module CID."""
        out: dict[str, str] = {}
        for name in host.BUILTIN:
            data = host.builtin_module(name)
            cid = module_cid(data)
            await self._call(self.store.put_dag, cid, Kind.EVIDENCE, {cid: data}.get)
            out[name] = str(cid)
        return out

    def _add(self, data: bytes) -> Cid:
        session = self.store.begin_import(Kind.EVIDENCE, 1)
        try:
            session.feed(data)
            return session.finish().root
        finally:
            session.close()

    async def fetch(self, cid: Cid, kind: Kind = Kind.EVIDENCE) -> bytes:
        """The whole object `cid`, from here or fetched from peers (every block checked,
        within `kind`'s limit: TooLarge past it)."""
        store = self.store
        if await self._call(store.missing, cid) is not None:
            bitswap = self.bitswap()
            if bitswap is None:
                raise BlockMissing(cid)
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    await bitswap.fetch(cid, kind)
            except trio.TooSlowError:
                raise LocalProtocolError("cid", f"no peer sent {cid} within "
                                                f"{FETCH_TIMEOUT_S:g} s",
                                         code="fetch_timeout") from None
            if store is not bitswap.blockstore:  # evidence lives in a daemon: copy it
                await self._call(store.put_dag, cid, kind, bitswap.blockstore.get)
        pieces = await self._call(lambda: list(store.read(cid, kind)))
        return b"".join(pieces)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if is_blocking(self.store):
            return await trio.to_thread.run_sync(functools.partial(fn, *args))
        return fn(*args)


def _schema(text: str | None) -> Callable[[bytes], str | None]:
    """The output check `text` names (nothing to check when None); LocalProtocolError
    for a schema that does not parse."""
    if not text:
        return lambda _: None
    try:
        return parse_schema(text).violation
    except ValueError as exc:
        raise LocalProtocolError("schema", str(exc), code="bad_schema") from None


def _contract(schema: str | None, cites: Sequence[str], deny: Sequence[str] = ()
              ) -> Callable[[bytes], str | None]:
    """The output's whole check: the schema, the citations, the content policy."""
    fits = _schema(schema)
    wanted = [str(Cid.parse(c, "cites")) for c in cites]

    def check(data: bytes) -> str | None:
        problem = fits(data)
        if problem is None and wanted:
            missing = missing_cite(data, wanted)
            if missing is not None:
                problem = f"it does not cite {missing}"
        if problem is None and deny:
            found = denied_text(data, deny)
            if found is not None:
                problem = f"it contains {found!r}, which the NEED denies"
        return problem
    return check


async def _off_loop(check: Callable[[bytes], str | None], data: bytes) -> str | None:
    """A schema check; in a worker thread when the output is large (it reads every
    byte, up to the evidence limit)."""
    if len(data) <= SCHEMA_ON_LOOP_BYTES_MAX:
        return check(data)
    return await trio.to_thread.run_sync(check, data)
