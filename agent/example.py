"""An example agent: it counts words for pay, and checks others' counts.

Its job is a NEED titled "count words: <text>"; the result is the number of words in
<text> as decimal digits and a newline, stored as evidence. Following its node's task
events, the agent

* bids on every such task it did not post, asking `price` of what the budget leaves
  after the verify bounty; after losing a task it waits a `Backoff` before bidding on
  that task again (when the task reopens);
* works the tasks it wins: claims, heartbeats, counts, stores the result as evidence
  and commits its CID;
* verifies when drawn into a committee: fetches the committed evidence (from the
  worker's node, by bitswap, through its own node), counts again and attests.

Run it against a node of the testnet (it acts with that node's account):

    python -m swarm.agent.example --home .testnet/node1

and post work for it from another node:

    swarm-node task post --budget 2 --bounty 0.5 --window 5s \\
        --title "count words: the quick brown fox" --home .testnet/node0
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

from .sdk import Agent, AgentError, Backoff, Refused, TaskEvent, Unavailable

log = logging.getLogger("swarm.agent.example")

JOB_PREFIX = "count words: "
RECONNECT_S = 1.0
PLAN_WAIT_TRIES, PLAN_WAIT_S = 20, 0.25


def count_words(title: str) -> bytes | None:
    """The result of the job a NEED's title asks for, or None if it asks another."""
    if not title.startswith(JOB_PREFIX):
        return None
    return b"%d\n" % len(title[len(JOB_PREFIX):].split())


class WordCounter:
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
        self.titles: dict[str, str] = {}

    async def run(self) -> None:
        """Follow the node's task events and act on them, resuming after a broken
        stream; each action runs on its own, so a slow one holds up no other."""
        seen = 0
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    async for event in self.agent.events(after=seen):
                        seen = max(seen, event.seq)
                        self._dispatch(nursery, event)
                except Unavailable as exc:
                    log.warning("event stream broke (%s); resuming after %d", exc, seen)
                    await trio.sleep(RECONNECT_S)

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

    async def _title(self, need: str) -> str:
        title = self.titles.get(need)
        if title is None:  # the NEED reaches the plan by gossip, the task book by Raft
            for _ in range(PLAN_WAIT_TRIES):
                try:
                    title = str((await self.agent.plan_task(need))["title"])
                    break
                except AgentError:
                    await trio.sleep(PLAN_WAIT_S)
            else:
                raise AgentError(f"{need} has not reached this node's plan")
            self.titles[need] = title
        return title

    async def bid(self, need: str) -> None:
        task = await self.agent.task(need)
        if task["poster"] == self.agent.account or task["state"] != "OPEN":
            return
        if count_words(await self._title(need)) is None:
            return
        if self.losses[need]:  # lost it before: let the others go first, at random
            await trio.sleep(self.backoff.delay_ms(need, self.losses[need]) / 1000)
        room = task["budget"] - task.get("verify_bounty", 0)
        cost = max(1, int(room * self.price))
        await self.agent.bid(need, format_credits(cost, self.agent.unit_per_credit),
                             eta_ms=1_000)
        self.done["bids"] += 1

    async def work(self, need: str) -> None:
        result = count_words(await self._title(need))
        if result is None:
            return
        await self.agent.claim(need, ttl_ms=self.lease_ms, heartbeat_ms=self.heartbeat_ms)
        await self.agent.heartbeat(need, progress=50)
        cid = await self.agent.put_evidence(result)
        await self.agent.commit(need, cid)
        self.done["commits"] += 1

    async def verify(self, need: str) -> None:
        task = await self.agent.task(need)
        commit = task.get("commit") or {}
        if self.agent.account not in commit.get("committee", ()):
            return
        if any(v["member"] == self.agent.account for v in commit.get("verdicts", ())):
            return
        expected = count_words(await self._title(need))
        got = await self.agent.get_evidence(commit["result"], max_bytes=64)
        await self.agent.attest(need, valid=expected is not None and got == expected)
        self.done["attests"] += 1


async def _main(home: Path, price: float) -> None:
    async with Agent.open(home) as agent:
        log.info("counting words for account %s", agent.account)
        await WordCounter(agent, price=price).run()


def main() -> None:
    parser = argparse.ArgumentParser(description="The word-counting example agent.")
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
