"""Host jobs: work that cannot run as WebAssembly (a model call, a web fetch, a library
of the host's), as Python callables registered by name, each with the check that
verifies its results.

Registration is by entry points, so any installed package can add jobs:

    [project.entry-points."swarm.host_jobs"]
    deflate = "swarm.jobs.hosted:DEFLATE"          # a HostJob
    [project.entry-points."swarm.host_checks"]
    inflates-to-input = "swarm.jobs.hosted:inflates_to_input"   # (input, output) -> bool

A NEED names the job (`host`) and, if not the job's own, the check (`check`). A host job
need not be deterministic: its verifier does not re-run it but asks the check whether the
output is an acceptable answer to the input (`deflate`'s output differs between zlib
builds; the check inflates it and compares). Runs and checks are bounded by the caller:
the input and output are evidence, within the evidence limit, and each runs in a worker
thread.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .host import JobError

log = logging.getLogger("swarm.jobs.hosted")

JOBS_GROUP = "swarm.host_jobs"
CHECKS_GROUP = "swarm.host_checks"

T = TypeVar("T")
Run = Callable[[bytes], bytes]
Check = Callable[[bytes, bytes], bool]  # (input, output) -> the output is acceptable


@dataclass(frozen=True, slots=True)
class HostJob:
    run: Run
    check: str  # the registered check that verifies its output
    output: str | None = None  # the output schema it promises (protocol/output_schema.py)
    about: str = ""


class HostJobs:
    """The host jobs and checks one process can run, by name."""

    def __init__(self, jobs: Mapping[str, HostJob], checks: Mapping[str, Check]) -> None:
        self.jobs = dict(jobs)
        self.checks = dict(checks)

    @classmethod
    def installed(cls) -> HostJobs:
        """What the installed packages register; an entry point that fails to load or
        is of the wrong kind is logged and left out, never fatal."""
        jobs = _load(JOBS_GROUP, "host job", lambda x: isinstance(x, HostJob))
        checks = _load(CHECKS_GROUP, "host check", callable)
        return cls(jobs, checks)

    def job(self, name: str) -> HostJob:
        return _named(self.jobs, name, "host", "host job")

    def check_of(self, job: str, check: str | None) -> Check:
        return _named(self.checks, check or self.job(job).check, "check", "host check")

    def run(self, name: str, data: bytes, output_bytes_max: int) -> bytes:
        """The job's output on `data`; JobError (`trap`, `bad_output`) when it raises or
        answers something that is not bytes within the bound."""
        job = self.job(name)
        try:
            out = job.run(data)
        except Exception as exc:  # noqa: BLE001 - the job's own failure is its verdict
            raise JobError("host", f"host job {name} raised {type(exc).__name__}: {exc}",
                           code="trap") from None
        if not isinstance(out, bytes) or len(out) > output_bytes_max:
            raise JobError("host", f"host job {name} must answer bytes, at most "
                                   f"{output_bytes_max}", code="bad_output")
        return out

    def accepts(self, job: str, check: str | None, data: bytes, output: bytes) -> bool:
        """Whether the check takes `output` as an answer to `data`; a check that raises
        says no."""
        fn = self.check_of(job, check)
        try:
            return fn(data, output) is True
        except Exception as exc:  # noqa: BLE001
            log.info("host check %s raised %s: %s", check or job, type(exc).__name__, exc)
            return False


def _load(group: str, what: str, fits: Callable[[Any], bool]) -> dict[str, Any]:
    """The entry points of `group` that load and fit; the others are logged."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        try:
            value = ep.load()
        except Exception as exc:  # noqa: BLE001 - a third party's import error
            log.warning("%s %s did not load: %s", what, ep.name, exc)
            continue
        if fits(value):
            found[ep.name] = value
        else:
            log.warning("%s %s is not one (%s)", what, ep.name, type(value).__name__)
    return found


def _named(table: Mapping[str, T], name: str, field: str, what: str) -> T:
    found = table.get(name)
    if found is None:
        raise JobError(field, f"no {what} {name!r} here (registered: "
                              f"{', '.join(sorted(table)) or 'none'})", code="unknown_job")
    return found


# -- the host jobs this package registers ----------------------------------------------

def _deflate(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def inflates_to_input(data: bytes, output: bytes) -> bool:
    """`output` is a zlib stream that inflates to exactly `data` (read no further than
    one byte past it, so a bomb costs what the input costs)."""
    inflater = zlib.decompressobj()
    try:
        got = inflater.decompress(output, len(data) + 1)
    except zlib.error:
        return False
    return got == data and inflater.eof and not inflater.unconsumed_tail \
        and not inflater.unused_data


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\n"


def sha256_matches(data: bytes, output: bytes) -> bool:
    return output == _sha256(data)


DEFLATE = HostJob(_deflate, "inflates-to-input", "bytes",
                  "zlib-compress the input; any zlib's output that inflates back passes")
SHA256 = HostJob(_sha256, "sha256", "hex<=65", "the input's SHA-256, in hex")
