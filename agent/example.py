"""An example agent: it runs WebAssembly jobs for pay, and checks others' results.

A job is a module stored as evidence, named by its CID; a NEED that names a `job` and an
`input` asks for the job's output on that input (docs/JOBS.md). Following its node's
task events, the agent

* bids on every task that names a job and that it did not post, asking `price` of what
  the budget leaves after the verify bounty; after losing a task it waits a `Backoff`
  before bidding on that task again (when the task reopens);
* works the tasks it wins: claims, heartbeats, has its node run the job (fetching the
  module and the input from peers), and commits the output's CID;
* verifies when drawn into a committee: runs the same job on the same input and attests
  valid only if it gets the committed CID (a job's output is the same bytes
  everywhere).

Run it against a node of the testnet (it acts with that node's account):

    python -m swarm.agent.example --home .testnet/node1

and post work for it from another node (docs/AGENTS.md shows how).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from swarm.protocol.amounts import format_credits

from .sdk import Agent, AgentError, Backoff, Refused, TaskEvent

log = logging.getLogger("swarm.agent.example")



class JobRunner:
    """The agent's roles over one `Agent`; `run` until cancelled."""

    def __init__(self, agent: Agent, *, price: float = 0.5, backoff: Backoff | None = None,
                 lease_ms: int = 60_000, heartbeat_ms: int = 5_000) -> None:
        if not 0 < price <= 1:
            raise ValueError("price: a fraction of the budget, in (0, 1]")
        self.agent = agent
        self.price = price
        self.backoff = backoff or Backoff(bytes.fromhex(agent.account or "00"))
        self.lease_ms, self.heartbeat_ms = lease_ms, heartbeat_ms
        self.losses: Counter[str] = Counter()  # NEED -> auctions of it lost
        self.done: Counter[str] = Counter()  # what it did, for logs and tests

    async def run(self) -> None:
        """Follow the node's task events and act on them, resuming after a broken
        stream; each action runs on its own, so a slow one holds up no other."""
        async with trio.open_nursery() as nursery:
            await self.agent.follow(lambda event: self._dispatch(nursery, event))

    def _dispatch(self, nursery: trio.Nursery, event: TaskEvent) -> None:
        d = event.data
        if event.kind == "transition" and d.get("after") == "OPEN":
            nursery.start_soon(self._guarded, self.bid, event.need_id)
        elif event.kind == "decision":
            if d.get("winner") == self.agent.account:
                nursery.start_soon(self._guarded, self.work, event.need_id)
            else:
                self.losses[event.need_id] += 1
        elif event.kind == "transition" and str(d.get("cause", "")).startswith("committee"):
            nursery.start_soon(self._guarded, self.verify, event.need_id)

    async def _guarded(self, action: Callable[[str], Awaitable[None]], need: str) -> None:
        """One action; a refusal or a node error is logged, never fatal to the agent."""
        try:
            await action(need)
        except Refused as exc:
            self.done[f"refused:{exc.code}"] += 1
            log.info("%s on %s refused: %s", getattr(action, "__name__", "?"), need, exc)
        except AgentError as exc:
            self.done["errors"] += 1
            log.warning("%s on %s failed: %s", getattr(action, "__name__", "?"), need, exc)

    async def bid(self, need: str) -> None:
        task = await self.agent.task(need)
        if task["poster"] == self.agent.account or task["state"] != "OPEN" \
                or not task.get("job") or not task.get("input"):
            return
        if self.losses[need]:  # lost it before: let the others go first, at random
            await trio.sleep(self.backoff.delay_ms(need, self.losses[need]) / 1000)
        room = task["budget"] - task.get("verify_bounty", 0)
        cost = max(1, int(room * self.price))
        await self.agent.bid(need, format_credits(cost, self.agent.unit_per_credit),
                             eta_ms=1_000)
        self.done["bids"] += 1

    async def work(self, need: str) -> None:
        task = await self.agent.task(need)
        await self.agent.claim(need, ttl_ms=self.lease_ms, heartbeat_ms=self.heartbeat_ms)
        await self.agent.heartbeat(need, progress=10)
        ran = await self.agent.run_job(task["job"], task["input"])
        await self.agent.commit(need, ran["output"])
        self.done["commits"] += 1

    async def verify(self, need: str) -> None:
        task = await self.agent.task(need)
        commit = task.get("commit") or {}
        if self.agent.account not in commit.get("committee", ()):
            return
        if any(v["member"] == self.agent.account for v in commit.get("verdicts", ())):
            return
        try:
            again = (await self.agent.run_job(task["job"], task["input"]))["output"]
        except AgentError as exc:  # the job fails here: the result cannot be right
            log.info("re-running %s's job failed: %s", need, exc)
            again = ""
        await self.agent.attest(need, valid=again == commit["result"])
        self.done["attests"] += 1


async def _main(home: Path, price: float) -> None:
    async with Agent.open(home) as agent:
        log.info("running jobs for account %s", agent.account)
        await JobRunner(agent, price=price).run()


def main() -> None:
    parser = argparse.ArgumentParser(description="The job-running example agent.")
    parser.add_argument("--home", type=Path, required=True, help="the node's home")
    parser.add_argument("--price", type=float, default=0.5,
                        help="the bid, as a fraction of what the budget leaves after "
                             "the verify bounty")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        trio.run(_main, args.home, args.price)


if __name__ == "__main__":
    main()
