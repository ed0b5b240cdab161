"""The CLI's defences, without a real node: text from elsewhere is shown inert, the
token goes only to a program that proves it holds it, and `swarm-testnet down` knows a
node's process from any other.

Method: `safe` and `fail` directly; the typer app against a small HTTP server that
plays a node (it answers the identity challenge with the home's token) or an impostor
(it cannot); `runs_node` on processes started here with chosen command lines.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
import typer
from typer.testing import CliRunner

from swarm.cli.common import fail, safe
from swarm.cli.main import app
from swarm.node.client import ApiError, Client
from swarm.node.home import API_FILE, TOKEN_FILE, ensure_token, identity_proof, write_atomic
from swarm.testnet.cluster import runs_node

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\r\t\x7f\u202eevil[bold]x[/bold] :smile: é 中"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\t", "\x7f", "\u202e")
PEER_ID = "12D3KooWRealNodeRealNodeRealNodeRealNodeRealNode"


def test_safe_escapes_every_control_character_and_nothing_else() -> None:
    shown = safe(HOSTILE)
    assert not any(c in shown for c in RAW)
    assert shown.startswith("\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x0d\\x09\\x7f\\u202eevil")
    assert shown.endswith("[bold]x[/bold] :smile: é 中")
    assert safe("a\nb") == "a\\x0ab"
    assert safe("a\nb\x1b", newlines=True) == "a\nb\\x1b"


def test_fail_prints_an_inert_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        fail(f"the node said: {HOSTILE}")
    err = capsys.readouterr().err
    assert not any(c in err for c in RAW)
    assert "[bold]x[/bold]" in err and ":smile:" in err  # neither markup nor emoji


class FakeNode(http.server.BaseHTTPRequestHandler):
    """A node (proves it holds `token`) or an impostor (`token` None); keeps headers."""

    token: ClassVar[str | None] = None
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        FakeNode.seen.append({k.lower(): v for k, v in self.headers.items()})
        url = urlparse(self.path)
        if url.path == "/identity":
            nonce = bytes.fromhex(parse_qs(url.query)["nonce"][0])
            proof = identity_proof(self.token, nonce, PEER_ID) if self.token else "00" * 32
            doc: Any = {"peer_id": PEER_ID, "proof": proof}
        elif url.path.startswith("/plan/threads/"):
            doc = {"thread": "t", "tasks": [{"task_id": "t", "known": True, "title": HOSTILE,
                                             "class": "simple", "state": "OPEN",
                                             "depends_on": [HOSTILE]}]}
        else:
            doc = {"detail": {"code": "x", "field": "f", "reason": HOSTILE}}
        body = json.dumps(doc).encode()
        self.send_response(200 if "detail" not in doc else 400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A home whose api.json points at a FakeNode; yields (home, its token)."""
    home = tmp_path / "home"
    home.mkdir()
    token = ensure_token(home)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    write_atomic(home / API_FILE, json.dumps({
        "url": f"http://127.0.0.1:{server.server_address[1]}", "pid": os.getpid(),
        "peer_id": PEER_ID}).encode())
    FakeNode.seen = []
    try:
        yield home, token
    finally:
        server.shutdown()
        server.server_close()


def authorised(seen: list[dict[str, str]]) -> list[str]:
    return [h["authorization"] for h in seen if "authorization" in h]


def test_the_token_goes_only_to_a_program_that_proves_it_holds_it(
        served: tuple[Path, str]) -> None:
    home, token = served
    FakeNode.token = None  # an impostor on the recorded port
    with pytest.raises(ApiError, match="not the node"):
        Client(home).get("/status")
    assert FakeNode.seen and not authorised(FakeNode.seen)
    FakeNode.token = "another token, not this home's"
    with pytest.raises(ApiError, match="not the node"):
        Client(home).get("/status")
    assert not authorised(FakeNode.seen)
    FakeNode.token = token  # the node itself
    c = Client(home)
    c.get("/plan/threads/t")
    c.get("/plan/threads/t")
    assert authorised(FakeNode.seen) == [f"Bearer {token}"] * 2
    assert sum(1 for h in FakeNode.seen if "authorization" not in h) == 3  # one challenge each


def test_nothing_listening_is_reported_as_a_node_not_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ensure_token(home)
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_atomic(home / API_FILE, json.dumps({"url": f"http://127.0.0.1:{port}",
                                              "pid": 1, "peer_id": PEER_ID}).encode())
    with pytest.raises(ApiError, match="cannot reach"):
        Client(home).get("/status")


def test_the_cli_shows_a_nodes_text_inert(served: tuple[Path, str]) -> None:
    home, token = served
    FakeNode.token = token
    runner = CliRunner()
    shown = runner.invoke(app, ["plan", "show", "t", "--home", str(home)],
                          env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert not any(c in shown.stdout for c in RAW), repr(shown.stdout)
    assert "[bold]x[/bold]" in shown.stdout and ":smile:" in shown.stdout
    as_json = runner.invoke(app, ["plan", "show", "t", "--home", str(home), "--json"])
    assert json.loads(as_json.stdout)["tasks"][0]["title"] == HOSTILE
    refused = runner.invoke(app, ["status", "--home", str(home)])
    assert refused.exit_code == 1 and not any(c in refused.stderr for c in RAW)


def test_token_files_others_may_read_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "home"
    home.mkdir()
    ensure_token(home)
    (home / TOKEN_FILE).chmod(0o640)
    write_atomic(home / API_FILE, b'{"url": "http://127.0.0.1:9", "pid": 1, "peer_id": "x"}')
    result = runner.invoke(app, ["status", "--home", str(home)])
    assert result.exit_code == 1 and "chmod 600" in result.stderr


def test_runs_node_knows_a_nodes_process_from_any_other(tmp_path: Path) -> None:
    home = tmp_path / "node0"
    home.mkdir()
    # Processes whose command lines are, or are not, `swarm-node start` of this home.
    sleeper = "import time; time.sleep(120)"
    lookalikes = {
        "by --home": ([sys.executable, "-c", sleeper, "swarm-node", "start", "--home",
                       str(home)], None, True),
        "relative, from its cwd": ([sys.executable, "-c", sleeper, "swarm-node", "start",
                                    "--home=node0"], tmp_path, True),
        "by SWARM_HOME": ([sys.executable, "-c", sleeper, "swarm-node", "start"], None, True),
        "another home": ([sys.executable, "-c", sleeper, "swarm-node", "start", "--home",
                          str(tmp_path)], None, False),
        "not start": ([sys.executable, "-c", sleeper, "swarm-node", "status", "--home",
                       str(home)], None, False),
        "another program": ([sys.executable, "-c", sleeper, "--home", str(home)], None, False),
    }
    procs = {name: subprocess.Popen(args, cwd=cwd, env={**os.environ, "SWARM_HOME": str(home)}
                                    if name == "by SWARM_HOME" else None)
             for name, (args, cwd, _) in lookalikes.items()}
    try:
        for name, (_, _, expected) in lookalikes.items():
            assert runs_node(procs[name].pid, home) is expected, name
        assert not runs_node(os.getpid(), home)
        victim = procs["by --home"]
        victim.kill()
        deadline = time.monotonic() + 60
        while runs_node(victim.pid, home) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not runs_node(victim.pid, home)  # dead (a zombie until reaped) is not running
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=60)
