"""`swarm-testnet up` on a directory that holds another swarm's nodes says so instead of
starting nodes whose stores belong to a different genesis."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.protocol import genesis
from swarm.testnet import cluster


def test_testnet_refuses_to_reuse_a_directory_of_another_swarm(tmp_path: Path) -> None:
    other = genesis.new(name="other", created_ms=0, params={"replicas": 1}, validators=[{
        "account": b"\x01" * 32, "org": "o", "asn": 1, "region": "r", "stake": 1}])
    (tmp_path / "node0" / "store").mkdir(parents=True)
    (tmp_path / "genesis.json").write_text(other.to_json())
    with pytest.raises(cluster.TestnetError, match="another genesis"):
        cluster.prepare(tmp_path, 1)
