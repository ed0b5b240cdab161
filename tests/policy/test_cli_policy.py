"""`swarm-node policy show|eval` and the pin `genesis new` writes, end to end in-process.

Method: a home with a key and a genesis made by the CLI itself; envelope files made by
`swarm-node envelope make`; --json output parsed as exactly one document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swarm.cli.main import app
from swarm.policy_wasm.host import committed_cid

ATTEST = ('{"task_id": "t", "commit_id": '
          '"bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "verdict": "valid"}')


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWARM_ID", raising=False)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def home(run: Any, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert run("keys", "new", "--home", str(home)).exit_code == 0
    made = run("genesis", "new", "--validator", str(home), "--out", "g.json", "--replicas", "1")
    assert made.exit_code == 0, made.output
    assert run("init", "--home", str(home), "--genesis", "g.json").exit_code == 0
    return home


def test_genesis_new_pins_the_committed_module(home: Path) -> None:
    doc = json.loads((home / "genesis.json").read_text())
    assert doc["policy_cid"] == str(committed_cid())


def test_policy_show_json(run: Any, home: Path) -> None:
    result = run("policy", "show", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cid"] == doc["pinned_cid"] == str(committed_cid())
    assert doc["usable"] and doc["abi_version"] == 1
    assert doc["rules"]["ATTEST"]["stake_required"] is True
    assert doc["rules"]["NEED"]["required_fields"] == ["class", "budget"]
    assert doc["params"]["proof_bytes_max"] == 10 * 1024
    assert doc["fuel_budget"] == 100_000


def test_policy_show_without_a_genesis_uses_defaults(run: Any, tmp_path: Path) -> None:
    result = run("policy", "show", "--home", str(tmp_path / "nowhere"))
    assert result.exit_code == 0 and str(committed_cid()) in result.stdout
    assert "default parameters" in result.stdout


def test_policy_eval_accepts_and_denies_envelope_files(run: Any, home: Path) -> None:
    assert run("envelope", "make", "ATTEST", "--payload", ATTEST, "-o", "a.env").exit_code == 0
    ok = run("policy", "eval", "a.env", "--json")
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert (doc["verdict"], doc["reason"], doc["kind"]) == ("accept", "ok", "ATTEST")
    assert doc["fuel"] > 0 and doc["sender_stake"] == 1000 * 10**6

    too_big = '{"class": "simple", "budget": 10000001, "verify_bounty": 10000001}'
    assert run("envelope", "make", "NEED", "--payload", too_big, "-o", "n.env").exit_code == 0
    denied = run("policy", "eval", "n.env", "--json")
    assert denied.exit_code == 1
    assert json.loads(denied.stdout)["reason"] == "bounty_over_cap"
    text = run("policy", "eval", "n.env")
    assert text.exit_code == 1 and "reject (bounty_over_cap)" in text.stdout


def test_policy_eval_of_a_bad_file_is_a_clear_error(run: Any, home: Path,
                                                     tmp_path: Path) -> None:
    (tmp_path / "junk.env").write_bytes(b"\xa1junk")
    result = run("policy", "eval", "junk.env", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "invalid envelope" in json.loads(result.stderr)["error"]
    missing = run("policy", "eval", "missing.env")
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
