"""The testnet's challenge demo: a wrong result attested, challenged, upheld, its
attester slashed and the task redone right.

Owns one run against a testnet started with `swarm-testnet up --faulty`
(`cluster.faulty_role_options`): node4's worker commits made-up results and bids lowest,
node3's verifier attests node4's results valid without checking, node0's verifier
audits every attested result. node0 posts wordcount NEEDs with a committee of one, a
few at a time. Most of node4's wrong results meet an honest committee member, who
rejects them (the task is redone by another worker); one that meets node3 is attested,
node0 re-runs the job, finds another output and challenges it, and the panel (node1
and node2, the only ones left to draw) re-runs it too and upholds. `run` follows the
tasks until one such challenge is upheld and its task paid (or the rounds run out),
then checks what a user would: the challenge upheld, its attester slashed by the
genesis share of its stake with the challenger named, the task reopened and paid for
the right output (checked here against `jobs/reference.py`), credits conserved on
every node, the same ledger root everywhere. The NEEDs ask for `uint<=20` and deny
"made up", so a wrong result breaks more than its job: while one is attested, the demo
asks node0's judge about three proofs against it (`POST /challenges/check`:
`output_mismatch`, `schema_violation` at byte 0, `policy_breach` at byte 0) and shows
what each WebAssembly verifier said and the fuel it burnt.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm.jobs.reference import REFERENCE
from swarm.node.client import ApiError, Client
from swarm.protocol.amounts import format_credits

from .cluster import Member, TestnetError, wait_until
from .demo import Followed, demo_text

BATCH = 3  # NEEDs posted at once
ROUNDS_MAX = 6  # batches before the demo gives up finding a colluding committee
POLL_S = 0.5
DENIED = "made up"  # what node4's made-up results begin with (agent/roles.py)
PROOFS = (("output_mismatch", b'{"claim": "output_mismatch"}'),
          ("schema_violation", b'{"claim": "schema_violation", "offset": 0}'),
          ("policy_breach", b'{"claim": "policy_breach", "deny": "made up", "offset": 0}'))


@dataclass
class ChallengeTask(Followed):
    need: str
    text: bytes
    doc: dict[str, Any] = field(default_factory=dict)
    first_result: str = ""  # the first result committed, and who committed it
    first_worker: str = ""
    judged: str = ""  # the attested result the judge was asked about
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def upheld(self) -> dict[str, Any] | None:
        return next((r for r in self.doc.get("rulings", ()) if r["outcome"] == "UPHELD"),
                    None)

    @property
    def challenge(self) -> str:
        """The challenge's state, or how the last one ended; "" when none."""
        if self.doc.get("challenges"):
            return str(self.doc["challenges"][0]["state"])
        rulings = self.doc.get("rulings") or []
        return str(rulings[-1]["outcome"]) if rulings else ""


def run(members: list[Member], show: Callable[[list[ChallengeTask]], None],
        timeout_s: float, seed: int = 11) -> list[ChallengeTask]:
    """Post batches of NEEDs from node0 and follow them until a challenge is upheld
    and its task paid; every task posted, in order."""
    rng = random.Random(seed)
    client = Client(members[0].home)
    wordcount = client.post("/jobs/builtins", {})["jobs"]["wordcount"]
    tasks: list[ChallengeTask] = []
    deadline = time.monotonic() + timeout_s
    for _ in range(ROUNDS_MAX):
        batch = []
        for _ in range(BATCH):
            text = demo_text(rng)
            data = client.post_bytes("/evidence", text)["cid"]
            doc = client.post("/tasks", {"class": "simple", "budget": "4",
                                         "verify_bounty": "1", "k_result": 1,
                                         "title": f"wordcount #{len(tasks)}",
                                         "job": wordcount, "input": data,
                                         "output": "uint<=20", "deny": [DENIED]})
            batch.append(ChallengeTask(doc["need_id"], text))
        tasks += batch
        while not all(t.done for t in batch):
            _read(client, batch)
            show(tasks)
            if time.monotonic() > deadline:
                raise TestnetError(f"timed out after {timeout_s:.0f} s: "
                                   f"{sum(not t.done for t in tasks)} tasks not done")
            time.sleep(POLL_S)
        if any(t.upheld for t in tasks):
            break
    show(tasks)
    return tasks


def _read(client: Client, tasks: list[ChallengeTask]) -> None:
    for t in tasks:
        if t.done:
            continue
        with contextlib.suppress(ApiError):  # not in its bucket yet, or the node is busy
            t.doc = client.get(f"/tasks/{t.need}")
        commit = t.doc.get("commit") or {}
        if commit and not t.first_result:
            t.first_result, t.first_worker = commit["result"], commit["worker"]
        if t.doc.get("state") == "ATTESTED" and commit and t.judged != commit["result"]:
            t.judged = commit["result"]
            with contextlib.suppress(ApiError):  # gone on already: the verdicts are a view
                if not is_right(client, t, commit["result"]):
                    t.verdicts = _verdicts(client, t.need)


def _verdicts(client: Client, need: str) -> list[dict[str, Any]]:
    """What node0's judge says of each of `PROOFS` against the task's result."""
    out = []
    for proof_type, proof in PROOFS:
        cid = client.post_bytes("/evidence", proof)["cid"]
        doc = client.post("/challenges/check", {"task_id": need, "proof_type": proof_type,
                                                "evidence": cid})
        out.append({k: doc[k] for k in ("proof_type", "holds", "fuel", "verifier",
                                        "reason")})
    return out


def is_right(client: Client, t: ChallengeTask, result: str) -> bool:
    return client.get_bytes(f"/evidence/{result}") == REFERENCE["wordcount"](t.text)


def summary(members: list[Member], tasks: list[ChallengeTask], timeout_s: float = 60
            ) -> dict[str, Any]:
    """What the run did, and every check's verdict (`ok` only if all pass)."""
    client = Client(members[0].home)
    supply0 = client.get("/ledger/supply")
    unit = int(supply0["unit_per_credit"])
    upheld = next((t for t in tasks if t.upheld), None)
    ruling = upheld.upheld if upheld is not None else None
    slash: dict[str, Any] = {}
    if ruling is not None:
        with contextlib.suppress(TestnetError):
            wait_until(lambda: any(s["evidence"] == ruling["challenge_id"]
                                   for s in client.get("/slashes")["slashes"]), timeout_s,
                       "the attester's slash", interval_s=0.5)
        slash = next((s for s in client.get("/slashes")["slashes"]
                      if s["evidence"] == ruling["challenge_id"]), {})
    final = (upheld.doc.get("commit") or {}).get("result") if upheld is not None else None
    wrong_first = upheld is not None and not is_right(client, upheld, upheld.first_result)

    def roots() -> list[str]:
        return [Client(m.home).get("/ledger/status")["ledger_root"] for m in members]

    with contextlib.suppress(TestnetError):
        wait_until(lambda: len(set(roots())) == 1, timeout_s, "the same ledger root",
                   interval_s=0.5)
    supplies = [Client(m.home).get("/ledger/supply") for m in members]
    account0 = client.get("/status")["account"]
    checks = {
        "challenge_upheld": ruling is not None,
        "challenged_result_wrong": wrong_first,
        "attester_slashed": bool(slash) and slash.get("reason") == "failed_challenge"
        and int(slash.get("amount", 0)) > 0,
        "challenger_rewarded": slash.get("challenger") == account0,
        "redone_and_paid": upheld is not None and bool(upheld.doc.get("paid"))
        and final is not None and is_right(client, upheld, final),
        "supply_conserved": all(s["conserved"] for s in supplies),
        "same_ledger_root": len(set(roots())) == 1,
    }
    return {
        "tasks": len(tasks), "task": upheld.need if upheld else None,
        "challenge": ruling, "slash": slash,
        "slashed": format_credits(int(slash.get("amount", 0)), unit) if slash else "0",
        "burned": format_credits(int(supplies[0].get("burned", 0)), unit),
        "rulings": [r["outcome"] for t in tasks for r in t.doc.get("rulings", ())],
        "verdicts": next((t.verdicts for t in tasks if t.verdicts), []),
        "ledger_root": roots()[0], "checks": checks, "ok": all(checks.values()),
    }
