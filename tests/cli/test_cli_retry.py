"""A ledger write survives a node that dies mid-request without paying twice.

Goal: when the node does not answer (here: it read the request, then the connection
broke, as under `kill -9` after the bucket applied the transfer), `swarm-node ledger
transfer` sends the same operation again (same op id, same validity limit), so the
bucket applies it at most once; and when no answer ever comes, it says how to send it
again by hand with those two values.

Method: the typer app against a small HTTP server that plays the node (it proves it
holds the home's token) and drops the connection of the first transfer it reads, or of
every one.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from swarm.cli import ledger as ledger_cli
from swarm.cli.main import app
from swarm.node.home import API_FILE, ensure_token, identity_proof, write_atomic

PEER_ID = "12D3KooWRetryRetryRetryRetryRetryRetryRetryRetry"
ME, TO = "aa" * 32, "bb" * 32
OUTCOME = {"op_id": "cc" * 32, "kind": "transfer", "bucket": 3, "index": 9, "ts_ms": 1,
           "ok": True, "code": "", "reason": "", "unit_per_credit": 1_000_000,
           "account": {"account": ME, "balance": 5_000_000, "locked": 0, "unbonding": 0,
                       "escrowed": 0, "unbonding_entries": [], "violations": 0},
           "changes": [{"account": ME, "field": "balance", "delta": -2_000_000}],
           "emitted": []}


class FlakyNode(http.server.BaseHTTPRequestHandler):
    token: ClassVar[str] = ""
    drops: ClassVar[int] = 0  # transfers to read and then drop without an answer
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        nonce = bytes.fromhex(parse_qs(url.query)["nonce"][0])
        self._answer({"peer_id": PEER_ID, "proof": identity_proof(self.token, nonce, PEER_ID)})

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        FlakyNode.bodies.append(json.loads(self.rfile.read(length)))
        if FlakyNode.drops > 0:
            FlakyNode.drops -= 1
            self.close_connection = True
            self.connection.shutdown(2)  # read, maybe applied, never answered
            return
        self._answer(OUTCOME)

    def _answer(self, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    FlakyNode.token = ensure_token(home)
    FlakyNode.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    write_atomic(home / API_FILE, json.dumps({
        "url": f"http://127.0.0.1:{server.server_address[1]}", "pid": os.getpid(),
        "peer_id": PEER_ID}).encode())
    try:
        yield home
    finally:
        server.shutdown()
        server.server_close()


def transfer(home: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["ledger", "transfer", TO, "2", "--home", str(home),
                                    *extra])


def test_a_transfer_whose_answer_is_lost_is_sent_again_as_the_same_operation(
        home: Path) -> None:
    FlakyNode.drops = 2
    result = transfer(home)
    assert result.exit_code == 0, result.output
    assert "transferred 2 credits" in result.stdout
    assert len(FlakyNode.bodies) == 3
    ops = {(b["op_id"], b["valid_until_ms"]) for b in FlakyNode.bodies}
    assert len(ops) == 1, "every attempt is the same operation"
    [(op_id, _)] = ops
    assert len(bytes.fromhex(op_id)) == 16


def test_without_an_answer_it_says_how_to_send_the_operation_again(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_cli, "RETRY_S", 1.0)
    FlakyNode.drops = 1_000
    result = transfer(home)
    assert result.exit_code == 1
    [(op_id, valid_until)] = {(b["op_id"], b["valid_until_ms"]) for b in FlakyNode.bodies}
    assert f"--op-id {op_id} --valid-until {valid_until}" in result.stderr
    FlakyNode.drops, FlakyNode.bodies = 0, []
    again = transfer(home, "--op-id", op_id, "--valid-until", str(valid_until))
    assert again.exit_code == 0, again.output
    assert [(b["op_id"], b["valid_until_ms"]) for b in FlakyNode.bodies] == [
        (op_id, valid_until)]
    half = transfer(home, "--op-id", op_id)
    assert half.exit_code == 1 and "go together" in half.stderr
