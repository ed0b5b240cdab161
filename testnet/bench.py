"""Benchmarks of the protocol core: what one envelope costs, and how fast replay runs.

Prints percentiles (p50/p95/p99 in microseconds) and rates, with the machine they ran on.
Each figure is measured here, on this run; nothing is a constant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from swarm.protocol.envelope import decode_envelope, make_envelope
from swarm.protocol.logformat import encode_log, iter_log
from swarm.protocol.plan import Plan
from swarm.protocol.replay import plan_ops, replay

from . import benchrecord
from .benchrecord import Figure, num, pcts
from .stats import percentiles_us
from .workload import TEST_SWARM, agents, example_payloads, generate


def machine() -> dict[str, Any]:
    """This machine (benchrecord.machine): CPU, cores, memory, Python, load average."""
    return benchrecord.machine()


def bench_envelopes(n: int) -> dict[str, Any]:
    import random

    rng = random.Random(7)
    agent = agents(1, rng)[0]
    payloads = list(example_payloads().items())
    make_ns: list[int] = []
    wires = []
    for i in range(n):
        kind, payload = payloads[i % len(payloads)]
        t0 = time.perf_counter_ns()
        env = make_envelope(agent.identity, kind=kind, swarm=TEST_SWARM, lamport=i + 1,
                            ts=1_700_000_000_000, payload=payload)
        make_ns.append(time.perf_counter_ns() - t0)
        wires.append(env.wire)
    decode_ns: list[int] = []
    for w in wires:
        t0 = time.perf_counter_ns()
        decode_envelope(w, swarm=TEST_SWARM)
        decode_ns.append(time.perf_counter_ns() - t0)
    return {"encode_sign": percentiles_us(make_ns), "decode_verify": percentiles_us(decode_ns),
            "mean_size_bytes": sum(map(len, wires)) // len(wires)}


def bench_plan_ops(n_envelopes: int) -> dict[str, Any]:
    ops = [op for env in generate(n_envelopes, seed=3) for op in plan_ops(env)]
    plan = Plan()
    t0 = time.perf_counter()
    plan.apply_all(ops)
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    plan.root()
    root_s = time.perf_counter() - t1
    return {"envelopes": n_envelopes, "ops": len(ops), "ops_per_s": round(len(ops) / elapsed),
            "root_ms": round(root_s * 1000, 1)}


def bench_replay(n: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    if progress:
        progress(f"generating {n} envelopes")
    log = encode_log(env.wire for env in generate(n, seed=11))
    out: dict[str, Any] = {"envelopes": n, "log_bytes": len(log)}
    for verify in (True, False):
        if progress:
            progress(f"replaying {n} envelopes ({'with' if verify else 'without'} signatures)")
        t0 = time.perf_counter()
        replica = replay(iter_log(log), swarm=TEST_SWARM, verify=verify)
        root = replica.plan.root()
        elapsed = time.perf_counter() - t0
        key = "verify" if verify else "no_verify"
        out[key] = {"seconds": round(elapsed, 3), "envelopes_per_s": round(n / elapsed)}
        out["plan_root"] = root.hex()
        out["tasks"] = len(replica.plan.task_ids())
    return out


def bench_jobs(size: int = 1 << 20, runs: int = 20) -> list[dict[str, Any]]:
    """Each built-in WebAssembly job on `size` bytes of text (sortlines on a 64th of
    it: an insertion sort; halve on a 1024-pixel-wide image of about `size` bytes),
    `runs` times: wall time per run and the fuel it burns."""
    import random

    from swarm.jobs import host
    from swarm.jobs.reference import pgm

    rng = random.Random(11)
    words = [b"".join(bytes([rng.randrange(97, 123)]) for _ in range(rng.randint(1, 9)))
             for _ in range(2_000)]
    text = bytearray()
    while len(text) < size:
        text += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    out = []
    for name in host.BUILTIN:
        data = bytes(text[: size // 64 if name == "sortlines" else size])
        if name == "halve":
            data = pgm(1024, size // 1024, rng.randbytes(size))
        module = host.builtin_module(name)
        host.run(module, data)  # compile once, outside the timing
        ns, fuel = [], 0
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            fuel = host.run(module, data).fuel
            ns.append(time.perf_counter_ns() - t0)
        out.append({"job": name, "input_bytes": len(data), "fuel": fuel,
                    "input": "image" if name == "halve" else "text",
                    "run": percentiles_us(ns)})
    return out


def bench_challenges(size: int = 64 * 1024, runs: int = 200) -> list[dict[str, Any]]:
    """What judging a challenge's proof costs, per proof type, without the fetches
    (node/judge.py): each proof type's WebAssembly verifier on its frame under the
    genesis `verify_fuel_max`, and for `output_mismatch` also the job re-run that
    precedes it (wordcount on `size` bytes of text, under the job's own fuel). Wall
    time per verdict and the fuel it burns. The citation case is the worst the rules
    allow: a result of `CITED_OUTPUT_BYTES_MAX` bytes made of near misses."""
    import random

    from swarm.jobs import host, proofs
    from swarm.protocol.genesis import DEFAULT_PARAMS
    from swarm.protocol.output_schema import CITED_OUTPUT_BYTES_MAX, OutputSchema
    from swarm.protocol.unixfs import Importer

    def cid_of(data: bytes) -> Any:
        importer = Importer(1)
        importer.feed(data)
        importer.finish()
        return importer.root

    fuel_max = DEFAULT_PARAMS["verify_fuel_max"]
    rng = random.Random(13)
    text = bytes(rng.choice(b"abcdefgh  \n") for _ in range(size))
    module = host.builtin_module("wordcount")
    claimed = cid_of(b"a made-up result")
    cite = cid_of(b"a source")
    near = (str(cite)[:-1].encode() * CITED_OUTPUT_BYTES_MAX)[:CITED_OUTPUT_BYTES_MAX]
    bad_utf8 = text[:size // 2] + b"\xe2\x82" + text[size // 2:]

    def verifier(proof_type: str, frame: bytes) -> Callable[[], tuple[bool, int]]:
        def run() -> tuple[bool, int]:
            verdict = proofs.verify(proof_type, frame, fuel=fuel_max)
            return verdict.holds, verdict.fuel
        return run

    def rerun_and_compare() -> tuple[bool, int]:
        ran = host.run(module, text)
        verdict = proofs.verify("output_mismatch",
                                proofs.mismatch_frame(claimed, cid_of(ran.output)),
                                fuel=fuel_max)
        return verdict.holds, ran.fuel + verdict.fuel

    checks = [
        ("schema_violation", f"utf8 witness in {size} bytes",
         verifier("schema_violation", proofs.schema_frame(OutputSchema("utf8"), bad_utf8,
                                                          size // 2))),
        ("schema_violation", "uint<=20 length witness",
         verifier("schema_violation", proofs.schema_frame(OutputSchema("uint", 20),
                                                          b"1" * 40, None))),
        ("missing_citation", f"{CITED_OUTPUT_BYTES_MAX} bytes of near misses",
         verifier("missing_citation", proofs.citation_frame(cite, near))),
        ("policy_breach", f"a 64-byte denied string at the middle of {size} bytes",
         verifier("policy_breach", proofs.policy_frame(
             "x" * 64, text[:size // 2] + b"x" * 64 + text[size // 2:], size // 2))),
        ("output_mismatch", "compare two output CIDs",
         verifier("output_mismatch", proofs.mismatch_frame(claimed, cite))),
        ("output_mismatch", f"wordcount re-run on {size} bytes, then compare",
         rerun_and_compare),
    ]
    out = []
    for proof_type, what, check in checks:
        check()  # compile the modules once, outside the timing
        ns, fuel, held = [], 0, False
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            held, fuel = check()
            ns.append(time.perf_counter_ns() - t0)
        out.append({"proof_type": proof_type, "check": what, "fuel": fuel, "holds": held,
                    "fuel_max": fuel_max, "run": percentiles_us(ns)})
    return out


def figures(doc: dict[str, Any]) -> list[Figure]:
    """The rows of `swarm-testnet bench --markdown`."""
    env, plan = doc["envelope"], doc["plan"]
    out = [Figure("encode + sign one envelope (the verb examples in turn)",
                  f"{pcts(env['encode_sign'], 'µs')}; {env['mean_size_bytes']} bytes mean"),
           Figure("decode + verify one envelope (bounded canonical decode, schema, id, "
                  "Ed25519)", pcts(env["decode_verify"], "µs")),
           Figure(f"plan ops applied ({num(plan['envelopes'])}-envelope workload)",
                  f"{num(plan['ops_per_s'])} ops/s ({num(plan['ops'])} ops)"),
           Figure("Merkle root of that plan, from cold", f"{plan['root_ms']} ms")]
    for r in doc["replay"]:
        name = f"replay {num(r['envelopes'])} envelopes"
        out.append(Figure(f"log of {num(r['envelopes'])} envelopes / the plan it makes",
                          f"{r['log_bytes'] / 1e6:.2f} MB / {num(r['tasks'])} tasks"))
        for key, suffix in (("verify", ""), ("no_verify", ", without signature checks")):
            out.append(Figure(name + suffix, f"{r[key]['seconds']} s "
                                             f"({num(r[key]['envelopes_per_s'])} env/s)"))
    for j in doc.get("jobs", ()):
        out.append(Figure(f"job `{j['job']}` on {num(j['input_bytes'])} bytes of "
                          f"{j.get('input', 'text')}",
                          f"{pcts(j['run'], 'µs')}; {num(j['fuel'])} fuel"))
    for c in doc.get("challenges", ()):
        out.append(Figure(f"proof verdict `{c['proof_type']}`: {c['check']}",
                          f"{pcts(c['run'], 'µs')}; {num(c['fuel'])} fuel"
                          + (f" of {num(c['fuel_max'])}" if c["fuel"] <= c["fuel_max"]
                             else "")))
    return out
