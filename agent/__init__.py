"""The agent SDK: a program that trades work through a running `swarm-node`.

An agent talks to one node over its control API and acts with that node's account:
it follows the node's task events (server-sent, no polling), posts NEEDs, bids,
claims, heartbeats, commits results as evidence and attests. Every refusal by a rule
is a `Refused` naming the rule's code (`bid_window_closed`, `not_winner`, ...);
`Backoff` spaces an agent's retries after a lost auction, randomised but reproducible
per agent. docs/AGENTS.md walks through writing one; `swarm.agent.example` is a whole
agent (it bids, works and verifies a small job).
"""

from .sdk import (
    Agent,
    AgentError,
    Backoff,
    Refused,
    TaskEvent,
    Unavailable,
)

__all__ = ["Agent", "AgentError", "Backoff", "Refused", "TaskEvent", "Unavailable"]
