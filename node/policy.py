"""The pipeline's policy stage: the pinned WebAssembly policy, fed by this node's context.

Owns what the module cannot know by itself and must not compute: the sender's stake and
recent rate (a `PolicyContext`), the mapping of the module's answer onto the pipeline's
verdicts, and the per-sender denial counts in /metrics (meant for a policy-violation
slashing rule, which nothing runs yet: docs/GAPS.md).

Stake comes from the genesis validator set (`GenesisContext`), not from the ledger
(docs/GAPS.md); a context that reads the ledger's stakes would replace that class and
nothing else.
The rate is counted here, on the node's monotonic clock: envelopes from a sender that
reached the policy stage in the last second, this one included. Catch-up is exempt
(`rate_exempt()`): it is a pull this node paces itself, and counting it would starve a
node that is catching up on a busy sender's history.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from swarm.policy_wasm import abi
from swarm.policy_wasm.host import Evaluation, PolicyHost, load_for_genesis
from swarm.protocol.envelope import Envelope
from swarm.protocol.genesis import Genesis

from .metrics import Metrics
from .pipeline import PolicyDecision, Verdict

RATE_WINDOW_MS = 1000
# Bounds on what the rate counter keeps: timestamps per sender (the rate reads at most
# this many) and senders (idle ones are dropped first).
RATE_SAMPLES_MAX = 4096
RATE_SENDERS_MAX = 65536
# Distinct sender labels on the denial counter; further senders count as "other".
DENIAL_SENDERS_MAX = 1024

log = logging.getLogger("swarm.policy")

_VERDICTS = {"accept": Verdict.ACCEPT, "reject": Verdict.REJECT, "ignore": Verdict.IGNORE}


class PolicyContext(Protocol):
    """What the host tells the policy about a sender."""

    def stake_of(self, account: bytes) -> int:
        """The account's stake in the smallest unit (0 if none)."""
        ...

    def rate_of(self, sender: bytes, *, count: bool) -> int:
        """The sender's envelopes in the last second; `count` adds this one first."""
        ...


class RateWindow:
    """A sliding one-second window of arrivals per sender, on a clock given in ms."""

    def __init__(self, now_ms: Callable[[], int], window_ms: int = RATE_WINDOW_MS) -> None:
        self._now_ms = now_ms
        self._window_ms = window_ms
        self._seen: dict[bytes, deque[int]] = {}

    def rate_of(self, sender: bytes, *, count: bool) -> int:
        now = self._now_ms()
        times = self._seen.get(sender)
        if times is None:
            if not count:
                return 0
            if len(self._seen) >= RATE_SENDERS_MAX:
                self._forget_idle(now)
            times = self._seen[sender] = deque(maxlen=RATE_SAMPLES_MAX)
        horizon = now - self._window_ms
        while times and times[0] <= horizon:
            times.popleft()
        if count:
            times.append(now)
        return len(times)

    def _forget_idle(self, now: int) -> None:
        horizon = now - self._window_ms
        for sender in [s for s, t in self._seen.items() if not t or t[-1] <= horizon]:
            del self._seen[sender]
        if len(self._seen) >= RATE_SENDERS_MAX:  # all busy: drop the oldest-seen half
            for sender in sorted(self._seen, key=lambda s: self._seen[s][-1])[
                    : RATE_SENDERS_MAX // 2]:
                del self._seen[sender]


class GenesisContext:
    """Stake from the genesis validator set; rate from a window."""

    def __init__(self, genesis: Genesis, now_ms: Callable[[], int]) -> None:
        self._stakes: Mapping[bytes, int] = {
            v["account"]: v["stake"] for v in genesis.value["validators"]}
        self._rates = RateWindow(now_ms)

    def stake_of(self, account: bytes) -> int:
        return self._stakes.get(account, 0)

    def rate_of(self, sender: bytes, *, count: bool) -> int:
        return self._rates.rate_of(sender, count=count)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class WasmPolicy:
    """`PolicyStage` backed by the pinned module. Never raises on an envelope."""

    def __init__(self, host: PolicyHost, context: PolicyContext,
                 metrics: Metrics | None = None) -> None:
        self.host = host
        self.context = context
        self.metrics = metrics
        self._count_rate = True
        self._labelled: set[str] = set()

    @classmethod
    def for_genesis(cls, genesis: Genesis, metrics: Metrics | None = None,
                    now_ms: Callable[[], int] = monotonic_ms) -> WasmPolicy:
        """The committed module, refused (PolicyLoadError) if genesis pins another CID."""
        host = load_for_genesis(genesis.params, genesis.value.get("policy_cid"))
        return cls(host, GenesisContext(genesis, now_ms), metrics)

    @property
    def cid(self) -> str:
        return str(self.host.cid)

    @contextmanager
    def rate_exempt(self) -> Iterator[None]:
        """Within this block the sender rate is read as 0 and nothing is counted."""
        previous, self._count_rate = self._count_rate, False
        try:
            yield
        finally:
            self._count_rate = previous

    def run(self, env: Envelope) -> Evaluation:
        """The module's full answer (verdict, reason, fuel) for one envelope."""
        rate = (self.context.rate_of(env.sender, count=True) if self._count_rate else 0)
        view = abi.envelope_view(env, sender_stake=self.context.stake_of(env.sender),
                                 sender_rate=rate)
        return self.host.evaluate_view(view)

    def evaluate(self, envelope: Envelope) -> PolicyDecision:
        try:
            result = self.run(envelope)
        except Exception:  # a host bug must not take the node down (logged)
            log.exception("policy evaluation failed kind=%s id=%s", envelope.kind, envelope.id)
            result = Evaluation("reject", "policy_internal", 0)
        if result.verdict == "accept":
            return PolicyDecision(Verdict.ACCEPT)
        if self.metrics is not None:
            self.metrics.policy_denials.labels(self._label(envelope.sender),
                                               result.reason).inc()
        return PolicyDecision(_VERDICTS[result.verdict], result.reason)

    def _label(self, sender: bytes) -> str:
        label = sender.hex()
        if label in self._labelled:
            return label
        if len(self._labelled) >= DENIAL_SENDERS_MAX:
            return "other"
        self._labelled.add(label)
        return label
