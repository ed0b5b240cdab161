"""The testnet's market demo: real jobs posted, bid on, worked, verified and paid.

Owns one run against a running testnet whose nodes run their built-in roles
(`swarm-testnet up` spreads them): node0 publishes the built-in WebAssembly jobs, several
nodes store texts as evidence and post NEEDs naming a job (WebAssembly or host), its
input and an output schema; nobody drives them after that. `run` follows every task to
payout, calling `show` with each change, then checks what a user would: every task
finalized and paid, every result right (checked here against `jobs/reference.py` and
the host jobs' checks, apart from the swarm's own committees), credits conserved on
every node, and the same plan, task and ledger roots on every node.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm.jobs.hosted import inflates_to_input, sha256_matches
from swarm.jobs.reference import REFERENCE, pgm
from swarm.node.client import ApiError, Client
from swarm.protocol.amounts import format_credits

from .cluster import Member, TestnetError, wait_until

# (kind, job, output schema): what the demo's NEEDs ask for, in turn.
JOBS = (("wasm", "wordcount", "uint<=20"), ("host", "deflate", "bytes"),
        ("wasm", "checksum", "hex<=17"), ("wasm", "halve", "bytes<=65536"),
        ("host", "sha256", "hex<=65"), ("wasm", "sortlines", "utf8"))
WORDS = ("swarm", "peer", "gossip", "raft", "ledger", "bounty", "verifier", "lease",
         "escrow", "commit", "quorum", "epoch", "plan", "credit", "bucket", "agent")
BUDGET, BOUNTY, K_RESULT = "4", "1", 2
POLL_S = 0.5


class Followed:
    """A posted task as last read from a node (`doc`, the `GET /tasks/{need}` answer)."""

    doc: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.doc.get("state", "posted"))

    @property
    def done(self) -> bool:
        return bool(self.doc.get("paid")) or self.state == "CANCELLED"


@dataclass
class DemoTask(Followed):
    need: str
    kind: str
    job: str
    poster: int
    text: bytes
    doc: dict[str, Any] = field(default_factory=dict)


def demo_text(rng: random.Random) -> bytes:
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
             for _ in range(rng.randint(2, 6))]
    return ("\n".join(lines) + "\n").encode()


def demo_image(rng: random.Random) -> bytes:
    """A small grayscale image (binary PGM): a gradient with noise."""
    w, h = rng.randint(8, 64), rng.randint(8, 64)
    return pgm(w, h, bytes((x * 4 + y * 2 + rng.randrange(16)) % 256
                           for y in range(h) for x in range(w)))


def post_tasks(members: list[Member], count: int, seed: int = 7) -> list[DemoTask]:
    """Publish the built-in jobs at node0; post `count` NEEDs from node0, node2 and
    node4 (those present), each on a fresh text (an image for `halve`), jobs in
    turn."""
    rng = random.Random(seed)
    modules = Client(members[0].home).post("/jobs/builtins", {})["jobs"]
    posters = [m for m in members if m.index in (0, 2, 4)] or members[:1]
    tasks = []
    for k in range(count):
        m = posters[k % len(posters)]
        kind, job, schema = JOBS[k % len(JOBS)]
        text = demo_image(rng) if job == "halve" else demo_text(rng)
        client = Client(m.home)
        data = client.post_bytes("/evidence", text)["cid"]
        body: dict[str, Any] = {"class": "simple", "budget": BUDGET, "verify_bounty": BOUNTY,
                                "k_result": K_RESULT, "title": f"{job} #{k}",
                                "input": data, "output": schema}
        body["job" if kind == "wasm" else "host"] = modules[job] if kind == "wasm" else job
        doc = client.post("/tasks", body)
        tasks.append(DemoTask(doc["need_id"], kind, job, m.index, text))
    return tasks


def follow(members: list[Member], tasks: list[DemoTask], timeout_s: float,
           show: Callable[[list[DemoTask]], None]) -> None:
    """Read each task from its poster's node until all are paid or cancelled."""
    clients = {m.index: Client(m.home) for m in members}
    deadline = time.monotonic() + timeout_s
    while True:
        for t in tasks:
            if not t.done:
                # Not in its bucket yet, or the node is busy: read it next round.
                with contextlib.suppress(ApiError):
                    t.doc = clients[t.poster].get(f"/tasks/{t.need}")
        show(tasks)
        if all(t.done for t in tasks):
            return
        if time.monotonic() > deadline:
            raise TestnetError(f"timed out after {timeout_s:.0f} s: "
                               f"{sum(not t.done for t in tasks)} tasks not paid")
        time.sleep(POLL_S)


def check_result(client: Client, t: DemoTask) -> str | None:
    """Why `t`'s committed result is wrong, or None: a WebAssembly job's against the
    Python reference, a host job's by its registered check."""
    result = (t.doc.get("commit") or {}).get("result")
    if not result:
        return "no result"
    output = client.get_bytes(f"/evidence/{result}")
    if t.kind == "wasm":
        right = output == REFERENCE[t.job](t.text)
    elif t.job == "deflate":
        right = inflates_to_input(t.text, output)
    else:
        right = sha256_matches(t.text, output)
    return None if right else f"{t.job} gave {output[:40]!r}"


def summary(members: list[Member], tasks: list[DemoTask], timeout_s: float = 60
            ) -> dict[str, Any]:
    """What the run did, and every check's verdict (`ok` only if all pass)."""
    client0 = Client(members[0].home)
    unit = int(client0.get("/ledger/supply")["unit_per_credit"])
    paid = {"payout": 0, "bounty": 0, "refund": 0}
    for t in tasks:
        for p in t.doc.get("payouts", ()):
            paid[p["kind"]] = paid.get(p["kind"], 0) + int(p["amount"])
    wrong = {t.need: why for t in tasks if t.doc.get("paid")
             if (why := check_result(client0, t)) is not None}
    finalized = sum(1 for t in tasks if t.state == "FINALIZED" and t.doc.get("paid"))

    def roots() -> list[tuple[str, str, str]]:
        out = []
        for m in members:
            c = Client(m.home)
            ledger = c.get("/ledger/status")
            out.append((c.get("/status")["plan_root"], ledger["task_root"],
                        ledger["ledger_root"]))
        return out

    # Effects cross buckets after the payout: give every node time to apply them (the
    # checks below say if they never did).
    with contextlib.suppress(TestnetError):
        wait_until(lambda: len(set(roots())) == 1, timeout_s, "the same roots everywhere",
                   interval_s=0.5)
    final = roots()
    supplies = [Client(m.home).get("/ledger/supply") for m in members]
    checks = {
        "finalized": finalized == len(tasks),
        "results_right": not wrong,
        "supply_conserved": all(s["conserved"] for s in supplies),
        "same_plan_root": len({r[0] for r in final}) == 1,
        "same_task_root": len({r[1] for r in final}) == 1,
        "same_ledger_root": len({r[2] for r in final}) == 1,
    }
    return {
        "tasks": len(tasks), "finalized": finalized,
        "paid_to_workers": format_credits(paid["payout"], unit),
        "paid_to_verifiers": format_credits(paid["bounty"], unit),
        "refunded": format_credits(paid["refund"], unit),
        "burned": format_credits(int(supplies[0].get("burned", 0)), unit),
        "supply": format_credits(int(supplies[0].get("genesis_supply", 0)), unit),
        "roots": {"plan": final[0][0], "task": final[0][1], "ledger": final[0][2]},
        "wrong_results": wrong, "checks": checks, "ok": all(checks.values()),
    }
