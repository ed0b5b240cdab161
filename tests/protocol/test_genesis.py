"""Genesis parameters: an absent one has its default, the id hashes the file as written,
and parameters that cannot work together are refused naming the field."""

from __future__ import annotations

import json

import pytest

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.envelope import Identity
from swarm.protocol.errors import LocalProtocolError, SchemaError

VALIDATOR = {"account": Identity(b"\x31" * 32).public_key, "org": "o", "asn": 1,
             "region": "r", "stake": 0}


def written(params: dict[str, int]) -> str:
    """A genesis file as an operator (or an older release) wrote it."""
    gen = genesis_mod.new(name="t", created_ms=1, validators=[VALIDATOR],
                          params={"replicas": 1})
    doc = json.loads(gen.to_json())
    doc["params"] = params
    return json.dumps(doc)


def test_an_absent_parameter_has_its_default_and_the_id_hashes_the_file() -> None:
    old = {"bucket_count": 4, "replicas": 1}  # a file written before the market existed
    gen = genesis_mod.from_json(written(old))
    assert gen.params["bucket_count"] == 4
    assert gen.params["auction_rounds_max"] == genesis_mod.DEFAULT_PARAMS["auction_rounds_max"]
    assert gen.value["params"] == old  # hashed as written: defaults are not folded in
    assert gen.swarm_id == genesis_mod.from_json(written(old)).swarm_id
    explicit = genesis_mod.from_json(written({**old, "auction_rounds_max": 3}))
    assert explicit.params == gen.params and explicit.swarm_id != gen.swarm_id


def test_new_writes_every_parameter() -> None:
    gen = genesis_mod.new(name="t", created_ms=1, validators=[VALIDATOR],
                          params={"bid_window_ms": 2_000, "replicas": 1})
    assert set(gen.value["params"]) == set(genesis_mod.DEFAULT_PARAMS)
    assert gen.params["bid_window_ms"] == 2_000


@pytest.mark.parametrize(("params", "field"), [
    ({"score_cost_bp": 5_000}, "params.score_cost_bp"),
    ({"auction_rounds_max": 0}, "params.auction_rounds_max"),
    ({"bids_per_round_max": 0}, "params.bids_per_round_max"),
    ({"bid_improve_bp": 10_000}, "params.bid_improve_bp"),
    ({"k_result_default": 65}, "params.k_result_default"),
    ({"lease_ttl_max_ms": 10, "lease_ttl_min_ms": 20}, "params.lease_ttl_max_ms"),
    ({"tick_interval_ms": 0}, "params.tick_interval_ms"),
    ({"no_such_param": 1}, "params.no_such_param"),
])
def test_parameters_that_cannot_work_are_refused(params: dict[str, int], field: str) -> None:
    with pytest.raises(SchemaError) as info:
        genesis_mod.from_json(written({"replicas": 1, **params}))
    assert info.value.field == field
    with pytest.raises(LocalProtocolError):
        genesis_mod.new(name="t", created_ms=1, validators=[VALIDATOR],
                        params={"replicas": 1, **params})


def test_genesis_may_pin_the_proof_verifiers_by_type() -> None:
    doc = json.loads(written({"replicas": 1}))
    pins = {"schema_violation": "bafkreia", "missing_citation": "bafkreib"}
    gen = genesis_mod.from_json(json.dumps({**doc, "proof_verifiers": pins}))
    assert gen.value["proof_verifiers"] == pins
    assert gen.swarm_id != genesis_mod.from_json(json.dumps(doc)).swarm_id
    for bad in ({"semantic_contradiction": "bafkreia"}, {"schema_violation": ""}):
        with pytest.raises(SchemaError):
            genesis_mod.from_json(json.dumps({**doc, "proof_verifiers": bad}))
