"""Benchmarks of the protocol core: what one envelope costs, and how fast replay runs.

Prints percentiles (p50/p99 in microseconds) and rates, with the machine they ran on.
Each figure is measured here, on this run; nothing is a constant.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

from swarm.protocol.envelope import decode_envelope, make_envelope
from swarm.protocol.logformat import encode_log, iter_log
from swarm.protocol.plan import Plan
from swarm.protocol.replay import plan_ops, replay

from .workload import TEST_SWARM, agents, example_payloads, generate


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "implementation": platform.python_implementation()}


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] / 1000

    return {"p50_us": round(pct(0.50), 1), "p99_us": round(pct(0.99), 1),
            "n": len(s)}


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
    return {"encode_sign": percentiles(make_ns), "decode_verify": percentiles(decode_ns),
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
    return {"ops": len(ops), "ops_per_s": round(len(ops) / elapsed),
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
