"""The node's inbound pipeline with the WebAssembly policy wired in.

Goal: an envelope the policy denies is neither stored nor applied, its verdict and reason
come back from `judge`, and the denial is counted per sender and reason in the node's
metrics; allowed envelopes go through unchanged. Method: a real `Pipeline` over a real
store in a temporary folder, with the `WasmPolicy` a `Node` builds from genesis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_kit import OUTSIDER, STAKED, Clock, PolicyKit, make_genesis

from swarm.node.metrics import Metrics
from swarm.node.pipeline import Pipeline, Verdict
from swarm.node.policy import DENIAL_SENDERS_MAX, WasmPolicy
from swarm.node.store import Store
from swarm.testnet.workload import example_payloads, ledger_fields

LEDGER = ledger_fields(bytes(16))  # a ledger verb's op id and validity limit


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Pipeline, PolicyKit, Metrics]]:
    gen = make_genesis(sender_rate_per_s=1000)
    metrics = Metrics()
    policy = WasmPolicy.for_genesis(gen, metrics)
    store = Store(tmp_path / "store")
    try:
        pipeline = Pipeline.open(gen.swarm_id, store, policy)
        yield pipeline, PolicyKit(gen, Clock(), policy), metrics
    finally:
        store.close()


def denials(metrics: Metrics, sender: str, reason: str) -> float:
    value = metrics.registry.get_sample_value("swarm_policy_denials_total",
                                              {"sender": sender, "reason": reason})
    return value or 0.0


def test_a_policy_denied_envelope_is_rejected_and_counted(
        wired: tuple[Pipeline, PolicyKit, Metrics]) -> None:
    pipeline, kit, metrics = wired
    over = kit.envelope("NEED", {"class": "simple", "budget": 10**9,
                                 "verify_bounty": 10**9})
    outcome = pipeline.judge(over.wire)
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECT, "bounty_over_cap")
    assert over.id not in pipeline.ids and pipeline.store.count == 0
    attest = kit.envelope("ATTEST", example_payloads()["ATTEST"], sender=OUTSIDER)
    assert pipeline.judge(attest.wire).reason == "stake_required"
    assert denials(metrics, STAKED.public_key.hex(), "bounty_over_cap") == 1
    assert denials(metrics, OUTSIDER.public_key.hex(), "stake_required") == 1


def test_an_allowed_envelope_is_stored_and_applied(
        wired: tuple[Pipeline, PolicyKit, Metrics]) -> None:
    pipeline, kit, metrics = wired
    need = kit.envelope("NEED", {"class": "simple", "budget": 5, "title": "ok"})
    outcome = pipeline.judge(need.wire)
    assert outcome.verdict is Verdict.ACCEPT and outcome.envelope is not None
    assert pipeline.commit([outcome.envelope]).fresh == [need]
    assert need.id in pipeline.ids and pipeline.store.count == 1
    assert str(need.id) in pipeline.replica.plan.task_ids()
    # A duplicate stops before the policy: it is not evaluated, counted or rate-counted.
    assert pipeline.judge(need.wire).reason == "duplicate"
    assert metrics.registry.get_sample_value("swarm_policy_denials_total",
                                             {"sender": STAKED.public_key.hex(),
                                              "reason": "ok"}) is None


def test_denial_labels_are_bounded(wired: tuple[Pipeline, PolicyKit, Metrics]) -> None:
    from swarm.protocol.envelope import Identity

    pipeline, kit, metrics = wired
    for i in range(DENIAL_SENDERS_MAX + 3):
        sender = Identity(i.to_bytes(4, "big") + bytes(28))
        env = kit.envelope("ATTEST", example_payloads()["ATTEST"], sender=sender)
        assert pipeline.judge(env.wire).reason == "stake_required"
    assert denials(metrics, "other", "stake_required") == 3


def test_the_node_runs_the_pinned_module_and_refuses_another(tmp_path: Path) -> None:
    from swarm.node.home import NodeSettings
    from swarm.node.service import Node
    from swarm.policy_wasm.host import PolicyLoadError, committed_cid, module_cid
    from swarm.protocol import genesis as genesis_mod

    settings = NodeSettings(home=tmp_path, listen=[], bootstrap=[], api="127.0.0.1:0")
    gen = make_genesis()
    pinned = genesis_mod.from_value({**gen.value, "policy_cid": str(committed_cid())})
    node = Node(settings, pinned, STAKED)
    assert isinstance(node.policy, WasmPolicy) and node.policy.cid == str(committed_cid())
    assert node.policy.metrics is node.metrics
    unpinned = Node(settings, gen, STAKED)  # no pin: the committed module
    assert unpinned.policy.cid == str(committed_cid())
    other = genesis_mod.from_value({**gen.value, "policy_cid": str(module_cid(b"x"))})
    with pytest.raises(PolicyLoadError, match="not the one genesis pins"):
        Node(settings, other, STAKED)


class BrokenLedger:
    """A context whose stake look-up fails, as a buggy ledger might."""

    def stake_of(self, account: bytes) -> int:
        raise RuntimeError("ledger unavailable")

    def rate_of(self, sender: bytes, *, count: bool) -> int:
        return 1


def test_a_failing_context_is_a_denial_not_a_crash() -> None:
    metrics = Metrics()
    gen = make_genesis()
    policy = WasmPolicy(WasmPolicy.for_genesis(gen).host, BrokenLedger(), metrics)
    kit = PolicyKit(gen, Clock(), policy)
    decision = policy.evaluate(kit.envelope("STAKE", {"amount": 1, **LEDGER}))
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, "policy_internal")
    assert denials(metrics, STAKED.public_key.hex(), "policy_internal") == 1
