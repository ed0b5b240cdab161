"""Policy benchmark: evaluation time through the pipeline's policy stage, and fuel per verb.

What is timed is `WasmPolicy.evaluate(envelope)`, the call `Pipeline.judge` makes for
every new envelope: the context look-ups (stake, rate), building the view, one call into
the module and decoding its answer. To show where the time goes it also times the parts
alone: the view (`abi.envelope_view`), the module call (`PolicyHost.evaluate_view`), and
the same module call made through wasmtime's `Func.__call__` instead of the lower-level
path the host uses. Envelopes are every verb's example payload, signed by a validator
with enough stake, in a seeded shuffled order; the genesis lifts the rate limit so every
verb runs its full rule path. Timings are wall clock on a shared machine: read the
percentiles, not single samples.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from swarm.node.policy import GenesisContext, WasmPolicy
from swarm.policy_wasm import abi
from swarm.policy_wasm.host import load_for_genesis
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.envelope import Envelope, Identity, make_envelope

from .bench import machine
from .benchrecord import Figure, num, pcts
from .stats import percentiles_us
from .workload import example_payloads

TARGET_P99_US = 100.0


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    """testnet/stats.py's p50 / p95 / p99 in microseconds, the largest, and the count."""
    out = percentiles_us(samples_ns, ndigits=2)
    n = out.pop("n")
    return {**out, "max_us": round(max(samples_ns) / 1000, 2), "samples": n}


def _time(fn: Callable[[], object], rounds: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def run(per_verb: int = 2000, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    sender = Identity(rng.randbytes(32))
    gen = genesis_mod.new(
        name="policybench", created_ms=0,
        validators=[{"account": sender.public_key, "org": "o", "asn": 1, "region": "r",
                     "stake": genesis_mod.DEFAULT_PARAMS["min_verifier_stake"]}],
        params={"replicas": 1, "sender_rate_per_s": 10**12},
    )
    host = load_for_genesis(gen.params, None)
    policy = WasmPolicy(host, GenesisContext(gen, lambda: time.monotonic_ns() // 1_000_000))
    envelopes: list[Envelope] = []
    for kind, payload in example_payloads().items():
        for k in range(per_verb):
            envelopes.append(make_envelope(sender, kind=kind, swarm=gen.swarm_id,
                                           lamport=k + 1, ts=k, payload=payload))
    rng.shuffle(envelopes)
    for env in envelopes[:200]:  # warm up caches and the allocator
        policy.evaluate(env)

    stage: list[int] = []
    per_kind: dict[str, list[int]] = {}
    fuel: dict[str, int] = {}
    clock = time.perf_counter_ns
    for env in envelopes:
        t0 = clock()
        decision = policy.evaluate(env)
        elapsed = clock() - t0
        assert decision.reason == "ok", (env.kind, decision)
        stage.append(elapsed)
        per_kind.setdefault(env.kind, []).append(elapsed)
    for kind, payload in example_payloads().items():
        fuel[kind] = policy.run(make_envelope(sender, kind=kind, swarm=gen.swarm_id,
                                              lamport=1, ts=0, payload=payload)).fuel

    sample = envelopes[0]
    view = abi.envelope_view(sample, sender_stake=1, sender_rate=1)
    rounds = min(len(envelopes), 20_000)
    views = [abi.envelope_view(e, sender_stake=1, sender_rate=1) for e in envelopes[:rounds]]
    it = iter(envelopes)
    view_ns = _time(lambda: abi.envelope_view(next(it), sender_stake=1, sender_rate=1),
                    rounds)
    vit = iter(views)
    call_ns = _time(lambda: host.evaluate_view(next(vit)), rounds)
    slow_ns = _time(lambda: host.evaluate_view_func_call(view), min(rounds, 5000))
    return {
        "machine": machine(),
        "policy_cid": str(host.cid),
        "envelopes": len(envelopes),
        "target_p99_us": TARGET_P99_US,
        "stage": _percentiles(stage),
        "meets_target": _percentiles(stage)["p99_us"] < TARGET_P99_US,
        "per_verb": {kind: {**_percentiles(ns), "fuel": fuel[kind]}
                     for kind, ns in sorted(per_kind.items())},
        "parts": {
            "view_build": _percentiles(view_ns),
            "module_call_unchecked": _percentiles(call_ns),
            "module_call_func_call": _percentiles(slow_ns),
        },
        "init_fuel": host.init_fuel,
    }



def figures(doc: dict[str, Any]) -> list[Figure]:
    """The rows of `swarm-testnet policybench --markdown`; per verb, the range."""
    per_verb = doc["per_verb"]

    def spread(key: str, unit: str) -> str:
        low = min(per_verb, key=lambda k: per_verb[k][key])
        high = max(per_verb, key=lambda k: per_verb[k][key])
        return (f"{num(per_verb[low][key])}{unit} ({low}) to "
                f"{num(per_verb[high][key])}{unit} ({high})")

    parts = doc["parts"]
    return [
        Figure("policy stage (`WasmPolicy.evaluate`)", pcts(doc["stage"], "µs")),
        Figure("policy stage p50, per verb", spread("p50_us", " µs")),
        Figure("fuel per evaluation, per verb", spread("fuel", "")),
        Figure("view build (`abi.envelope_view`)", pcts(parts["view_build"], "µs")),
        Figure("module call, unchecked path (the host's)",
               pcts(parts["module_call_unchecked"], "µs")),
        Figure("module call, `Func.__call__` (for comparison)",
               pcts(parts["module_call_func_call"], "µs")),
    ]
