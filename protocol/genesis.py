"""Genesis: the document that fixes a swarm, and the swarm id derived from it.

Owns the genesis schema, its canonical encoding and hash, and the default protocol
parameters. Every duration is in milliseconds and every amount in the smallest credit
unit (`unit_per_credit` of them make one credit), so a testnet can shrink seven days to
seconds by editing numbers, not code. The swarm id is SHA-256 of the canonical DAG-CBOR
encoding of the genesis; it goes into every envelope, topic name and protocol id, so
two swarms never mix.

On disk a genesis is JSON (bytes as hex), which people can read and diff; the hash is
taken over the canonical CBOR of the validated value, so whitespace and key order in the
JSON do not matter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import cbor
from .errors import LocalProtocolError, SchemaError
from .schema import Bytes, Enum, Int, List, Obj, Text, obj, to_json

UNIT_PER_CREDIT = 1_000_000
BP = 10_000  # basis points in a whole
SCORE_WEIGHTS = ("score_cost_bp", "score_eta_bp", "score_reputation_bp", "score_capability_bp")
ROUNDS_MAX = 16  # auction rounds any genesis may allow
BIDS_PER_ROUND_LIMIT = 1024  # bids kept per round that any genesis may allow
DAY_MS = 24 * 3600 * 1000

# Defaults from the roadmap (phase 6-9). Percentages are basis points (1/100 of a percent).
DEFAULT_PARAMS: dict[str, int] = {
    "unit_per_credit": UNIT_PER_CREDIT,
    "bucket_count": 256,
    "replicas": 3,
    "unbonding_ms": 7 * DAY_MS,
    "challenge_window_ms": DAY_MS,
    "escrow_hold_factor": 2,  # escrow is held for factor x challenge window
    "bounty_cap_simple": 10 * UNIT_PER_CREDIT,
    "bounty_cap_complex": 100 * UNIT_PER_CREDIT,
    "bounty_cap_critical": 1000 * UNIT_PER_CREDIT,
    "proof_bytes_max": 10 * 1024,
    "evidence_bytes_max": 64 * 1024 * 1024,
    "verify_fuel_max": 100_000,
    "min_verifier_stake": 100 * UNIT_PER_CREDIT,
    "slash_failed_challenge_bp": 5000,
    "slash_missed_heartbeat_bp": 100,
    "slash_policy_violation_bp": 1000,
    "payout_challenger_bp": 5000,
    "payout_honest_verifiers_bp": 4000,
    "payout_burn_bp": 1000,
    "reputation_decay_weekly_bp": 500,
    "reputation_decay_period_ms": 7 * DAY_MS,  # the "week" of the weekly decay
    "reputation_initial_bp": 5000,
    "reputation_upheld_challenge_bp": 1000,
    "reputation_failed_attestation_bp": 3000,
    "recency_window_ms": 7 * DAY_MS,  # committee weight falls linearly over this idle time
    "recency_floor_bp": 1000,  # ... to this floor, never to zero
    "cap_org_bp": 3000,
    "cap_asn_bp": 4000,
    "cap_region_bp": 5000,
    "bid_window_ms": 30_000,
    "lease_ttl_min_ms": 1_000,
    # The task market (docs/MARKET.md). Bids: rounds per auction, the improvement a
    # bidder's later-round bid must make, bids kept per round, the score's weights
    # (summing to 10 000) and the ETA at which the ETA part is half.
    "auction_rounds_max": 3,
    "bid_improve_bp": 100,
    "bids_per_round_max": 64,
    "score_cost_bp": 4000,
    "score_eta_bp": 2000,
    "score_reputation_bp": 3000,
    "score_capability_bp": 1000,
    "eta_ref_ms": 60_000,
    # After DECIDE the winner has this long to CLAIM.
    "claim_window_ms": 30_000,
    "lease_ttl_max_ms": DAY_MS,
    "heartbeat_interval_min_ms": 1_000,
    "heartbeat_misses_max": 3,  # misses that release a lease
    # Added to every lease and heartbeat deadline before the bucket acts on it.
    "lease_grace_ms": 5_000,
    # A stretch of bucket time this long with no entry is an outage (no leader, or a
    # partition): running leases and heartbeat deadlines are moved out by it.
    "outage_gap_ms": 10_000,
    # A replica refuses a Raft entry stamped further ahead of its own clock than this,
    # and stops following the leader that sent it (docs/RAFT.md, "Stamps").
    "stamp_ahead_max_ms": 5_000,
    "k_result_default": 3,
    # Approving ATTEST_PLANs a winning bid's plan patch needs (0: it joins the plan
    # once decided), for a NEED that names none.
    "k_plan_default": 0,
    "attest_window_ms": 600_000,
    # The leader proposes a timer entry at most this often per bucket.
    "tick_interval_ms": 1_000,
    # Reopens (yield, release, rejection, no claim) before a task is cancelled.
    "task_reopens_max": 8,
    # A cancelled or paid task is kept this long, then forgotten.
    "task_retention_ms": 7 * DAY_MS,
    "sender_rate_per_s": 100,
    # How far ahead of the bucket's clock a ledger operation's validity limit may lie
    # (`valid_until_ms`): the window of bucket time each bucket remembers decided
    # operation ids for (docs/LEDGER.md).
    "op_validity_ms_max": 3_600_000,
    # What one run of a WebAssembly job may use (docs/JOBS.md).
    "job_fuel_max": 2_000_000_000,
    "job_memory_bytes_max": 256 * 1024 * 1024,
    # Challenges (docs/MARKET.md "Challenges"). The bond by proof type; a challenger
    # posts it times a complexity multiplier (1, medium or high).
    "challenge_bond_schema_violation": 10 * UNIT_PER_CREDIT,
    "challenge_bond_missing_citation": 25 * UNIT_PER_CREDIT,
    "challenge_bond_semantic_contradiction": 50 * UNIT_PER_CREDIT,
    "challenge_bond_output_mismatch": 100 * UNIT_PER_CREDIT,
    "challenge_bond_policy_breach": 50 * UNIT_PER_CREDIT,
    "challenge_complexity_medium": 2,
    "challenge_complexity_high": 5,
    # The first panel's size; each escalation seats 2n+1 more; after this many rounds
    # a vote weighted by stake decides.
    "challenge_panel_k": 3,
    "challenge_rounds_max": 2,
    "challenge_vote_window_ms": 600_000,
    # A decided challenge keeps the window open at least this much longer.
    "challenge_extend_ms": 3_600_000,
    "challenge_withdraw_fee_bp": 1000,  # of the bond, burned
    "challenges_per_task_max": 8,  # over a task's whole life
    "challenge_rate_max": 10,  # challenges one account may open per rate window
    "challenge_rate_window_ms": 3_600_000,
    "reputation_rejected_challenge_bp": 500,
}

ACCOUNT = Bytes(32)
# Proof types with a WebAssembly verifier, whose module genesis may pin.
PINNED_PROOF_TYPES = ("schema_violation", "output_mismatch", "missing_citation",
                      "policy_breach")
GENESIS = obj(
    {
        "v": Int(min=1, max=1),
        "name": Text(max_bytes=64, min_bytes=1),
        "created_ms": Int(min=0),
        "accounts": List(obj({"account": ACCOUNT, "balance": Int(min=0)}), max_items=100_000),
        "validators": List(
            obj(
                {
                    "account": ACCOUNT,
                    "org": Text(max_bytes=64, min_bytes=1),
                    "asn": Int(min=0, max=2**32 - 1),
                    "region": Text(max_bytes=64, min_bytes=1),
                    "stake": Int(min=0),
                },
                # Where peers can reach it first: multiaddrs, informational.
                {"addrs": List(Text(max_bytes=256, min_bytes=1), max_items=8)},
            ),
            max_items=1024,
            min_items=1,
        ),
        # Every parameter is optional: an absent one has its default, so adding a
        # parameter to the protocol leaves every existing genesis valid and its swarm id
        # unchanged (the id hashes the file's value as written). A released default
        # never changes.
        "params": Obj({k: Int(min=0) for k in DEFAULT_PARAMS}),
    },
    {"policy_cid": Text(max_bytes=128, min_bytes=1), "network": Enum(("testnet", "mainnet")),
     # The proof verifiers' module CIDs (jobs/proofs.py), by proof type: a node whose
     # committed module differs judges no proof of that type.
     "proof_verifiers": obj({}, {t: Text(max_bytes=128, min_bytes=1)
                                 for t in PINNED_PROOF_TYPES})},
)


@dataclass(frozen=True, slots=True)
class Genesis:
    """A validated genesis and its identity."""

    value: Mapping[str, Any]
    encoded: bytes
    swarm_id: bytes
    params: Mapping[str, int]  # every parameter: the file's, else its default

    @property
    def short_id(self) -> str:
        """First 16 hex digits of the swarm id: enough for topic names and logs."""
        return self.swarm_id.hex()[:16]

    def to_json(self) -> str:
        return json.dumps(to_json(dict(self.value)), indent=2, sort_keys=True) + "\n"


def _check_consistency(value: Mapping[str, Any]) -> None:
    seen: set[bytes] = set()
    for i, entry in enumerate(value["accounts"]):
        if entry["account"] in seen:
            raise SchemaError(f"accounts[{i}].account", "duplicate account")
        seen.add(entry["account"])
    seen_v: set[bytes] = set()
    for i, entry in enumerate(value["validators"]):
        if entry["account"] in seen_v:
            raise SchemaError(f"validators[{i}].account", "duplicate validator")
        seen_v.add(entry["account"])
    params = params_of(value)
    if params["replicas"] < 1 or params["replicas"] > len(value["validators"]):
        raise SchemaError("params.replicas",
                          f"must be between 1 and the number of validators "
                          f"({len(value['validators'])})")
    if not 1 <= params["bucket_count"] <= 65536:
        raise SchemaError("params.bucket_count", "must be 1..65536")
    if params["unit_per_credit"] < 1:
        raise SchemaError("params.unit_per_credit", "must be >= 1")
    weights = sum(params[w] for w in SCORE_WEIGHTS)
    if weights != BP:
        raise SchemaError("params.score_cost_bp", f"the four score_*_bp weights sum to "
                                                  f"{weights}, not {BP}")
    if not 1 <= params["auction_rounds_max"] <= ROUNDS_MAX:
        raise SchemaError("params.auction_rounds_max", f"must be 1..{ROUNDS_MAX}")
    if not 1 <= params["bids_per_round_max"] <= BIDS_PER_ROUND_LIMIT:
        raise SchemaError("params.bids_per_round_max", f"must be 1..{BIDS_PER_ROUND_LIMIT}")
    if params["bid_improve_bp"] >= BP:
        raise SchemaError("params.bid_improve_bp", f"must be below {BP}")
    if not 1 <= params["k_result_default"] <= 64:
        raise SchemaError("params.k_result_default", "must be 1..64")
    if not 0 <= params["k_plan_default"] <= 64:
        raise SchemaError("params.k_plan_default", "must be 0..64")
    if params["lease_ttl_max_ms"] < params["lease_ttl_min_ms"]:
        raise SchemaError("params.lease_ttl_max_ms", "must be at least lease_ttl_min_ms")
    for name in ("heartbeat_misses_max", "tick_interval_ms", "outage_gap_ms",
                 "stamp_ahead_max_ms", "job_fuel_max", "job_memory_bytes_max",
                 "bid_window_ms", "claim_window_ms", "attest_window_ms",
                 "challenge_panel_k", "challenge_rounds_max", "challenge_vote_window_ms",
                 "challenge_complexity_medium", "challenge_complexity_high",
                 "challenges_per_task_max", "challenge_rate_max",
                 "challenge_rate_window_ms"):
        if params[name] < 1:
            raise SchemaError(f"params.{name}", "must be >= 1")
    if params["challenge_panel_k"] > 64 or params["challenge_rounds_max"] > 4:
        raise SchemaError("params.challenge_panel_k", "panels are at most 64 members "
                                                      "and 4 rounds")
    if params["challenge_withdraw_fee_bp"] > BP:
        raise SchemaError("params.challenge_withdraw_fee_bp", f"must be at most {BP}")
    if params["challenges_per_task_max"] > 64:
        raise SchemaError("params.challenges_per_task_max", "must be 1..64")
    total = sum(e["balance"] for e in value["accounts"]) + sum(
        e["stake"] for e in value["validators"])
    if total >= 2**63:
        raise SchemaError("accounts", "total supply must stay below 2^63 units")


def from_value(value: Any) -> Genesis:
    """Validate a genesis value (bytes as bytes); raises SchemaError naming the field."""
    GENESIS.check(value, "")
    _check_consistency(value)
    encoded = cbor.encode(value)
    return Genesis(value=value, encoded=encoded, swarm_id=hashlib.sha256(encoded).digest(),
                   params=params_of(value))


def params_of(value: Mapping[str, Any]) -> dict[str, int]:
    """A (checked) genesis value's parameters, each absent one at its default."""
    return {**DEFAULT_PARAMS, **value["params"]}


def from_json(text: str) -> Genesis:
    """Parse a genesis file's JSON (bytes as hex). Raises SchemaError naming the field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError("genesis", f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError("genesis", "must be a JSON object")
    return from_value(GENESIS.from_json(raw, ""))


def new(
    *,
    name: str,
    created_ms: int,
    validators: list[dict[str, Any]],
    accounts: list[dict[str, Any]] | None = None,
    params: Mapping[str, int] | None = None,
) -> Genesis:
    """Build a genesis from validators (with org/asn/region/stake) and funded accounts."""
    merged = dict(DEFAULT_PARAMS)
    for key, val in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise LocalProtocolError(f"params.{key}", "unknown parameter")
        merged[key] = val
    value = {
        "v": 1,
        "name": name,
        "created_ms": created_ms,
        "accounts": sorted(accounts or [], key=lambda a: a["account"]),
        "validators": sorted(validators, key=lambda v: v["account"]),
        "params": merged,
    }
    try:
        return from_value(value)
    except SchemaError as exc:
        raise LocalProtocolError(exc.field, exc.reason) from None
