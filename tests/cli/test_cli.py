"""The offline CLI end to end: keys, envelope make/inspect, log pack, plan replay.

Method: run the typer app in-process with a temporary home (and one run of the
installed console script), check exit codes, that --json prints exactly one JSON
document on stdout, and that errors go to stderr naming the field at fault.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swarm.cli.main import app
from swarm.testnet.workload import TEST_SWARM

SWARM_HEX = TEST_SWARM.hex()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWARM_ID", SWARM_HEX)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return invoke


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output + str(result.stderr)
    return json.loads(result.stdout)


def test_keys(run: Any, tmp_path: Path) -> None:
    created = as_json(run("keys", "new", "--json"))
    key_file = tmp_path / "home" / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    shown = as_json(run("keys", "show", "--json"))
    assert shown["public_key"] == created["public_key"] and len(shown["account"]) == 64
    again = run("keys", "new")
    assert again.exit_code == 1 and "already exists" in again.stderr
    os.chmod(key_file, 0o644)
    loose = run("keys", "show")
    assert loose.exit_code == 1 and "chmod 600" in loose.stderr


def test_keys_show_without_key(run: Any) -> None:
    result = run("keys", "show", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "keys new" in json.loads(result.stderr)["error"]


def test_make_inspect_pack_replay(run: Any, tmp_path: Path) -> None:
    run("keys", "new")
    need = as_json(run("envelope", "make", "NEED", "--payload",
                       '{"class": "simple", "budget": 10, "title": "demo"}', "--json",
                       "--append", "plan.log"))
    assert need["lamport"] == 1 and Path(need["file"]).exists()
    patch = json.dumps({"base_lamport": 1, "ops": [
        {"op": "ADD_TASK", "task_id": "sub", "title": "part"},
        {"op": "LINK", "from": need["id"], "to": "sub"},
        {"op": "LINK", "from": "sub", "to": need["id"]}]})
    upd = as_json(run("envelope", "make", "update_plan", "--payload", patch, "--ref", need["id"],
                      "-o", "upd.env", "--json"))
    assert upd["lamport"] == 2
    shown = as_json(run("envelope", "inspect", "upd.env", "--json", "--swarm", SWARM_HEX))
    assert shown["valid"] and shown["id"] == upd["id"] and shown["refs"] == [need["id"]]
    assert shown["payload"]["ops"][1]["to"] == "sub"
    human = run("envelope", "inspect", "upd.env")
    assert human.exit_code == 0 and "signature verified" in human.stdout
    packed = as_json(run("log", "pack", "plan.log", "upd.env", "--json"))
    assert packed["appended"] == 1
    replayed = as_json(run("plan", "replay", "plan.log", "--json", "--diff-from", "1"))
    assert replayed["accepted"] == 2 and replayed["tasks"] == 2
    assert replayed["links"] == 1 and replayed["links_rejected"] == 1
    assert replayed["diff"]["links_added"] == [[need["id"], "sub"]]
    at1 = as_json(run("plan", "replay", "plan.log", "--json", "--at", "1"))
    assert at1["at"]["tasks"] == 1 and at1["plan_root"] == replayed["plan_root"]
    human = run("plan", "replay", "plan.log")
    assert human.exit_code == 0 and replayed["plan_root"][:20] in human.stdout.replace("\n", "")


def test_bad_payload_names_the_field(run: Any) -> None:
    run("keys", "new")
    result = run("envelope", "make", "NEED", "--payload", '{"class": "simple", "budget": -3}',
                 "--json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)
    assert error["field"] == "payload.budget" and ">= 1" in error["reason"]
    for args, needle in [
        (("envelope", "make", "NEED", "--payload", "{oops"), "not valid JSON"),
        (("envelope", "make", "TELEPORT", "--payload", "{}"), "unknown verb"),
        (("envelope", "make", "NEED", "--payload", "{}", "--swarm", "abcd"), "64 hex"),
    ]:
        bad = run(*args)
        assert bad.exit_code == 1 and needle in bad.stderr, bad.stderr


def test_inspect_reports_exact_reason(run: Any, tmp_path: Path) -> None:
    run("keys", "new")
    stake = '{"amount": 5, "op_id": "' + "ab" * 16 + '", "valid_until_ms": 1}'
    made = as_json(run("envelope", "make", "STAKE", "--payload", stake, "--json"))
    data = bytearray(Path(made["file"]).read_bytes())
    data[12] ^= 0xFF
    (tmp_path / "bad.env").write_bytes(bytes(data))
    result = run("envelope", "inspect", "bad.env", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "valid": False, "code": "bad_signature", "field": "sig",
        "reason": json.loads(result.stdout)["reason"]}
    wrong = run("envelope", "inspect", made["file"], "--swarm", "00" * 32)
    assert wrong.exit_code == 1 and "wrong_swarm" in wrong.stderr
    (tmp_path / "junk.env").write_bytes(b"\xff\x00garbage")
    junk = run("envelope", "inspect", "junk.env")
    assert junk.exit_code == 1 and "invalid envelope" in junk.stderr
    missing = run("envelope", "inspect", "nope.env")
    assert missing.exit_code == 1 and "cannot read" in missing.stderr


def test_replay_reports_a_broken_log(run: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.log").write_bytes(b"definitely not a log")
    result = run("plan", "replay", "bad.log")
    assert result.exit_code == 1 and "not an envelope log" in result.stderr


def test_schema_lists_every_verb(run: Any) -> None:
    doc = as_json(run("envelope", "schema", "--json"))
    assert "NEED" in doc and "budget" in doc["NEED"]
    assert run("envelope", "schema", "claim").exit_code == 0


def test_console_script(tmp_path: Path) -> None:
    exe = shutil.which("swarm-node", path=str(Path(sys.executable).parent))
    assert exe is not None, "swarm-node is not installed next to this Python"
    env = {**os.environ, "SWARM_HOME": str(tmp_path / "h")}
    out = subprocess.run([exe, "keys", "new", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout)["home"] == str(tmp_path / "h")
