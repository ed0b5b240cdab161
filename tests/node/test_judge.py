"""The node's judge of challenge proofs (node/judge.py) on a real evidence store and job
runner: every proof type's rule, both ways, and the proofs it refuses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from swarm.jobs import proofs
from swarm.jobs.host import builtin_module
from swarm.node.blockstore import Blockstore, Kind
from swarm.node.job_service import JobService
from swarm.node.judge import Judge
from swarm.node.market_service import MarketService
from swarm.policy_wasm.host import module_cid
from swarm.protocol.cid import Cid
from swarm.protocol.errors import LocalProtocolError
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.task import Commit, Task, Terms

PARAMS = {**DEFAULT_PARAMS, "proof_bytes_max": 512}
NEED = Cid(bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(b"need").digest())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Blockstore]:
    s = Blockstore(tmp_path / "blocks", PARAMS)
    yield s
    s.close()


@pytest.fixture
def judge(store: Blockstore) -> Judge:
    jobs = JobService(store, dict(PARAMS), lambda: None)
    # The market is only asked to find a challenge or task by id (the routes, tested
    # with real nodes in tests/integration/test_challenge_market.py); here the tests
    # hand the judge its task.
    return Judge(cast(MarketService, None), jobs, dict(PARAMS))


def put(store: Blockstore, data: bytes, kind: Kind = Kind.EVIDENCE) -> Cid:
    return store.add([data], kind, cid_version=1).root


def task(result: Cid, **terms: Any) -> Task:
    t = Terms(NEED, b"p" * 32, 10, "simple", 0, 1_000, 1, **terms)
    return Task(t, "ATTESTED", 0, commit=Commit(NEED, b"w" * 32, result, 1))


def proof(store: Blockstore, **doc: Any) -> Cid:
    return put(store, json.dumps(doc).encode())


async def test_schema_violation_by_witness(judge: Judge, store: Blockstore) -> None:
    bad = put(store, b"12x\n")
    t = task(bad, output="uint<=20")
    doc = await judge.judge(t, "schema_violation", proof(store, offset=2))
    assert doc["holds"] and "byte 2" in doc["reason"]
    assert doc["verifier"] == proofs.verifier_cids()["schema_violation"]
    assert 0 < doc["fuel"] < doc["fuel_max"] == PARAMS["verify_fuel_max"]
    assert not (await judge.judge(t, "schema_violation", proof(store, offset=0)))["holds"]
    assert not (await judge.judge(t, "schema_violation", proof(store)))["holds"]  # length
    outside = await judge.judge(t, "schema_violation", proof(store, offset=9))
    assert not outside["holds"] and "outside" in outside["reason"]
    unschemed = await judge.judge(task(bad), "schema_violation", proof(store, offset=2))
    assert not unschemed["holds"] and "no output schema" in unschemed["reason"]


async def test_a_proof_over_the_limit_or_not_a_document_does_not_hold(
        judge: Judge, store: Blockstore) -> None:
    t = task(put(store, b"x"), output="uint")
    big = put(store, json.dumps({"offset": 0, "pad": "z" * 600}).encode())
    over = await judge.judge(t, "schema_violation", big)
    assert not over["holds"] and "proof_bytes_max" in over["reason"]
    prose = await judge.judge(t, "schema_violation", put(store, b"it is wrong, trust me"))
    assert not prose["holds"] and "JSON" in prose["reason"]
    other = await judge.judge(t, "schema_violation", proof(store, result=str(NEED), offset=0))
    assert not other["holds"] and "about result" in other["reason"]


async def test_output_mismatch_re_runs_the_job(judge: Judge, store: Blockstore) -> None:
    module = builtin_module("wordcount")
    job = put(store, module)
    assert job == module_cid(module)
    text = put(store, b"one two three\n")
    right, wrong = put(store, b"3\n"), put(store, b"4\n")
    doc = await judge.judge(task(wrong, job=job, input=text), "output_mismatch",
                            proof(store, claim="output_mismatch"))
    assert doc["holds"] and str(right) in doc["reason"]
    doc = await judge.judge(task(right, job=job, input=text), "output_mismatch",
                            proof(store))
    assert not doc["holds"] and "same output" in doc["reason"]
    halve = put(store, builtin_module("halve"))  # traps on text: no right result exists
    doc = await judge.judge(task(right, job=halve, input=text), "output_mismatch",
                            proof(store))
    assert doc["holds"] and "fails on its input" in doc["reason"]
    doc = await judge.judge(task(right, host="sha256", input=text), "output_mismatch",
                            proof(store))
    assert not doc["holds"] and "semantic_contradiction" in doc["reason"]


async def test_missing_citation_reads_the_result(judge: Judge, store: Blockstore) -> None:
    source = put(store, b"a source")
    cited = put(store, b"as " + str(source).encode() + b" says")
    bare = put(store, b"as everyone says")
    terms = {"output": "utf8<=4096", "cites": (source,)}
    doc = await judge.judge(task(bare, **terms), "missing_citation",
                            proof(store, cite=str(source)))
    assert doc["holds"] and doc["verifier"] == proofs.verifier_cids()["missing_citation"]
    doc = await judge.judge(task(cited, **terms), "missing_citation",
                            proof(store, cite=str(source)))
    assert not doc["holds"] and "cites" in doc["reason"]
    unasked = await judge.judge(task(bare, **terms), "missing_citation",
                                proof(store, cite=str(bare)))
    assert not unasked["holds"] and "does not ask" in unasked["reason"]
    unnamed = await judge.judge(task(bare, **terms), "missing_citation", proof(store))
    assert not unnamed["holds"] and "names no CID" in unnamed["reason"]


async def test_semantic_contradiction_asks_the_host_check(judge: Judge,
                                                          store: Blockstore) -> None:
    data = b"hash me"
    text = put(store, data)
    right = put(store, judge.jobs.hosted.run("sha256", data, 1 << 20))
    wrong = put(store, b"0" * 64 + b"\n")
    doc = await judge.judge(task(wrong, host="sha256", input=text), "semantic_contradiction",
                            proof(store))
    assert doc["holds"] and doc["verifier"].startswith("host:")
    doc = await judge.judge(task(right, host="sha256", input=text), "semantic_contradiction",
                            proof(store))
    assert not doc["holds"] and "takes it" in doc["reason"]
    job = put(store, builtin_module("wordcount"))
    doc = await judge.judge(task(wrong, job=job, input=text), "semantic_contradiction",
                            proof(store))
    assert not doc["holds"] and "host job" in doc["reason"]


async def test_policy_breach_by_witness(judge: Judge, store: Blockstore) -> None:
    leaky = put(store, b"the code is hunter2, as asked")
    clean = put(store, b"the code is withheld")
    terms = {"deny": ("hunter2", "password")}
    doc = await judge.judge(task(leaky, **terms), "policy_breach",
                            proof(store, deny="hunter2", offset=12))
    assert doc["holds"] and doc["verifier"] == proofs.verifier_cids()["policy_breach"]
    assert doc["fuel"] < 1_000
    for said, why in (({"deny": "hunter2", "offset": 11}, "does not hold"),
                      ({"deny": "hunter2"}, "where it is"),
                      ({"deny": "secret", "offset": 12}, "does not deny"),
                      ({"deny": "hunter2", "offset": 99}, "outside")):
        doc = await judge.judge(task(leaky, **terms), "policy_breach", proof(store, **said))
        assert not doc["holds"] and why in doc["reason"], (said, doc)
    doc = await judge.judge(task(clean, **terms), "policy_breach",
                            proof(store, deny="hunter2", offset=12))
    assert not doc["holds"]
    doc = await judge.judge(task(leaky), "policy_breach",
                            proof(store, deny="hunter2", offset=12))
    assert not doc["holds"] and "no content policy" in doc["reason"]


async def test_a_run_says_when_its_output_leaves_out_a_citation(judge: Judge,
                                                                store: Blockstore) -> None:
    """What the worker checks before committing and a committee member before
    attesting: the schema, then the NEED's cites."""
    job = put(store, builtin_module("wordcount"))
    text = put(store, b"one two\n")
    source = put(store, b"a source")
    ran = await judge.jobs.run(str(job), str(text), "uint<=20")
    assert ran["violation"] is None
    ran = await judge.jobs.run(str(job), str(text), "uint<=20", [str(source)])
    assert ran["violation"] == f"it does not cite {source}"
    ran = await judge.jobs.run(str(job), str(text), "uint<=1", [str(source)])
    assert "over the schema" in str(ran["violation"])  # the schema speaks first
    ran = await judge.jobs.run(str(job), str(text), None, (), ["2"])
    assert ran["violation"] == "it contains '2', which the NEED denies"


async def test_a_node_whose_verifier_genesis_does_not_pin_gives_no_verdict(
        judge: Judge, store: Blockstore) -> None:
    pins = proofs.verifier_cids()
    pinned = Judge(judge.market, judge.jobs, PARAMS, pins)
    bad = put(store, b"12x\n")
    doc = await pinned.judge(task(bad, output="uint"), "schema_violation",
                             proof(store, offset=2))
    assert doc["holds"] and doc["verifier"] == pins["schema_violation"]
    other = Judge(judge.market, judge.jobs, PARAMS,
                  {**pins, "schema_violation": str(module_cid(b"another build"))})
    with pytest.raises(LocalProtocolError) as info:
        await other.judge(task(bad, output="uint"), "schema_violation",
                          proof(store, offset=2))
    assert info.value.code == "no_verifier" and "genesis pins" in info.value.reason
    job, text = put(store, builtin_module("wordcount")), put(store, b"a b\n")
    doc = await other.judge(task(bad, job=job, input=text), "output_mismatch",
                            proof(store))  # the other types' modules still match
    assert doc["holds"]
