"""Host jobs: the registry, its failures as JobErrors, and the shipped jobs' checks."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.jobs.host import JobError
from swarm.jobs.hosted import (
    DEFLATE,
    SHA256,
    HostJob,
    HostJobs,
    inflates_to_input,
    sha256_matches,
)
from swarm.protocol.output_schema import parse


def test_the_installed_registry_has_this_packages_jobs_and_checks() -> None:
    hosted = HostJobs.installed()
    assert hosted.jobs["deflate"] is DEFLATE and hosted.jobs["sha256"] is SHA256
    assert {"inflates-to-input", "sha256"} <= set(hosted.checks)


@given(st.binary(max_size=2_000))
def test_each_shipped_job_passes_its_own_check_and_schema(data: bytes) -> None:
    hosted = HostJobs.installed()
    for name in ("deflate", "sha256"):
        out = hosted.run(name, data, 1 << 20)
        assert hosted.accepts(name, None, data, out)
        assert parse(hosted.jobs[name].output or "bytes").violation(out) is None
    assert not hosted.accepts("sha256", None, data + b"x", hosted.run("sha256", data, 99))


def test_the_inflate_check_refuses_other_data_trailing_bytes_and_bombs() -> None:
    data = b"hello host jobs\n" * 10
    good = zlib.compress(data)
    assert inflates_to_input(data, good)
    assert inflates_to_input(data, zlib.compress(data, 1))  # any zlib's output passes
    assert not inflates_to_input(data, good + b"\x00")
    assert not inflates_to_input(data, good[:-3])
    assert not inflates_to_input(data[:-1], good)
    assert not inflates_to_input(data, b"not zlib")
    bomb = zlib.compress(b"\x00" * (64 << 20))  # 64 MiB of zeros in 64 KiB
    assert not inflates_to_input(b"\x00" * 10, bomb)  # read no further than 11 bytes
    assert sha256_matches(b"", SHA256.run(b"")) and not sha256_matches(b"", b"00\n")


def _boom(data: bytes) -> bytes:
    raise RuntimeError("no model today")


def _refuses(data: bytes, output: bytes) -> bool:
    raise ValueError("cannot judge")


def test_failures_are_job_errors_naming_why() -> None:
    hosted = HostJobs(
        {"boom": HostJob(_boom, "judge"), "text": HostJob(lambda d: "str", "judge"),  # type: ignore[arg-type, return-value]
         "big": HostJob(lambda d: b"x" * 100, "missing")},
        {"judge": _refuses})
    for name, size, code in (("boom", 10, "trap"), ("text", 10, "bad_output"),
                             ("big", 99, "bad_output"), ("nope", 10, "unknown_job")):
        with pytest.raises(JobError) as exc:
            hosted.run(name, b"in", size)
        assert exc.value.code == code, name
    assert hosted.accepts("boom", None, b"in", b"out") is False  # a raising check says no
    with pytest.raises(JobError) as exc:
        hosted.accepts("big", None, b"in", b"out")  # its check is registered nowhere
    assert exc.value.code == "unknown_job"
