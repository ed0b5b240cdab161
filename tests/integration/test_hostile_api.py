"""The control API and the CLI against hostile and careless input, on real nodes.

Goal: whatever a client sends -- no token, a huge or endless body, wrong JSON types,
unknown fields, amounts of thousands of digits, addresses no node can be reached at,
ids that are no NEED, an upload cut short, text full of terminal escapes -- the node
answers 4xx naming the field, reads no more of a body than it allows, keeps no partial
state, logs no traceback; the CLI shows the swarm's text inert and sends its token only
to the node it belongs to; `swarm-testnet down` stops the node that runs now and no
other process. Method: in-process nodes (the `swarmlet` fixture) for the API, driven
over HTTP from a worker thread exactly as a client would; a 3-node process testnet for
the CLI, an impostor on a dead node's port, a node restarted by hand and a pid that
belongs to another program. After the attacks of each test, `swarm_works` (or
`cli_swarm_works`) checks that every node still posts NEEDs, transfers and decides,
and that plan and ledger roots agree.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import trio
from hostile_kit import cli_swarm_works, swarm_works
from libp2p.utils import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from swarm.node.home import HomeError, identity_proof, read_api, read_token, write_config
from swarm.node.service import Node, open_node
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.cid import Cid
from swarm.protocol.decide import (
    SUBMISSION_BYTES_MAX,
    TryDecide,
    decode_answer,
    encode_submission,
    request_payload,
)
from swarm.protocol.envelope import make_envelope
from swarm.protocol.errors import RemoteProtocolError
from swarm.testnet import cluster
from swarm.testnet.inproc import Swarmlet, make_homes, wait_for

BIN = Path(sys.executable).parent
MIB = 1024 * 1024
# A body far over any limit; the node may read only a little of it (what the kernel's
# socket buffers took before the node answered and closed the connection).
HUGE_BYTES = 256 * MIB
READ_BYTES_MAX = 64 * MIB


class Api:
    """HTTP to one in-process node, from a worker thread (the node runs on this loop)."""

    def __init__(self, node: Node) -> None:
        self.url = node.api_url
        self.auth = {"authorization": f"Bearer {read_token(node.settings.home)}"}

    async def call(self, method: str, path: str, *, auth: bool = True,
                   **kw: Any) -> httpx.Response:
        headers = {**(self.auth if auth else {}), **kw.pop("headers", {})}

        def go() -> httpx.Response:
            with httpx.Client(timeout=120) as c:
                return c.request(method, self.url + path, headers=headers, **kw)

        return await trio.to_thread.run_sync(go)

    async def send_huge(self, path: str, *, auth: bool, chunked: bool) -> tuple[Any, int]:
        """POST HUGE_BYTES, generated as sent; returns (status or the error, bytes the
        client got to send)."""
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            piece = b"x" * 65536
            while sent < HUGE_BYTES:
                sent += len(piece)
                yield piece

        headers = {} if chunked else {"content-length": str(HUGE_BYTES)}
        try:
            r = await self.call("POST", path, auth=auth, content=body(), headers=headers)
            return r.status_code, sent
        except httpx.HTTPError as exc:  # the node may close before the client reads
            return exc, sent


def detail(r: httpx.Response) -> dict[str, Any]:
    doc = r.json()["detail"]
    assert isinstance(doc, dict), doc
    return doc


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing the node logged carries a traceback or is an error of ours (py-libp2p
    logs each failed dial itself, as a warning)."""
    bad = [r for r in caplog.records if r.exc_info
           or (r.name.startswith("swarm") and r.levelno >= logging.ERROR)]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


async def test_the_token_comes_before_the_body_and_every_body_has_a_limit(
        swarmlet: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = await swarmlet(2)
    node: Node = s.nodes[0]
    api = Api(node)
    # Unauthenticated, wrongly authenticated, then authenticated but over the limit;
    # with a Content-Length and chunked: the node reads almost none of it.
    for auth, chunked in ((False, False), (False, True), (True, False), (True, True)):
        outcome, sent = await api.send_huge("/needs", auth=auth, chunked=chunked)
        assert outcome in ((413,) if auth else (401,)) or isinstance(outcome, httpx.HTTPError)
        assert sent < READ_BYTES_MAX, (auth, chunked, sent)
    r = await api.call("GET", "/status", auth=False, headers={"authorization": "Bearer x"})
    assert r.status_code == 401 and detail(r)["field"] == "authorization"
    r = await api.call("POST", "/needs", content=b"{" + b" " * (70 * 1024) + b"}",
                       headers={"content-type": "application/json"})
    assert r.status_code == 413 and detail(r)["field"] == "body"
    assert "65536" in detail(r)["reason"]
    # The evidence import takes its kind's limit: a proof is small, evidence is not.
    proof_max = node.genesis.params["proof_bytes_max"]
    r = await api.call("POST", "/evidence?kind=proof", content=b"p" * (proof_max + 1))
    assert r.status_code == 413, r.text
    r = await api.call("POST", "/evidence?kind=evidence", content=b"e" * (256 * 1024))
    assert r.status_code == 200, r.text
    # Open routes need no token; the identity proof checks against the token.
    assert (await api.call("GET", "/metrics", auth=False)).status_code == 200
    nonce = os.urandom(32)
    r = await api.call("GET", f"/identity?nonce={nonce.hex()}", auth=False)
    assert r.json() == {"peer_id": node.peer_id.to_base58(), "proof": identity_proof(
        read_token(node.settings.home), nonce, node.peer_id.to_base58())}
    assert (await api.call("GET", "/identity?nonce=zz", auth=False)).status_code == 422
    no_tracebacks(caplog)
    await swarm_works(s)


async def test_requests_are_strictly_typed_and_errors_name_the_field_without_echo(
        swarmlet: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = await swarmlet(2)
    node: Node = s.nodes[0]
    api = Api(node)
    other = s.nodes[1].identity.public_key.hex()

    async def refused(path: str, body: Any, status: int, fld: str) -> dict[str, Any]:
        r = await api.call("POST", path, json=body)
        assert r.status_code == status, (body, r.text)
        d = detail(r)
        assert d["field"] == fld, (body, d)
        return d

    await refused("/needs", {"class": "simple", "budget": True}, 422, "budget")
    await refused("/needs", {"class": "simple", "budget": "5"}, 422, "budget")
    await refused("/needs", {"class": "simple", "budget": 5, "zzz": 1}, 422, "zzz")
    await refused("/needs", {"budget": 5}, 422, "class")
    await refused("/ledger/transfer", {"to": other, "amount": 5}, 422, "amount")
    await refused("/decide", {"need_id": "x", "proposal_id": "p", "timeout_s": True}, 422,
                  "timeout_s")
    d = await refused("/ledger/transfer", {"to": other, "amount": str(2**64)}, 400, "amount")
    assert "too large" in d["reason"]
    d = await refused("/ledger/transfer", {"to": other, "amount": "9" * 5000}, 400, "amount")
    assert "too large" in d["reason"] and "9999" not in d["reason"]
    await refused("/ledger/transfer", {"to": other, "amount": "1e3"}, 400, "amount")
    # An empty recipient is no recipient; one's own account only when meant.
    await refused("/ledger/transfer", {"to": "", "amount": "1"}, 400, "to")
    own = node.identity.public_key.hex()
    d = await refused("/ledger/transfer", {"to": own, "amount": "1"}, 400, "to")
    assert d["code"] == "to_self"
    r = await api.call("POST", "/ledger/transfer", json={"to": own, "amount": "1",
                                                         "to_self": True})
    assert r.status_code == 200 and r.json()["ok"], r.text
    # A large bad request gets a small answer, and never its own input back.
    big = {"title": "x" * 60_000, "budget": "5", "y" * 5_000: 1}
    r = await api.call("POST", "/needs", json=big)
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    assert "xxxx" not in r.text and "y" * 100 not in r.text
    assert {e["field"] for e in detail(r)["errors"]} >= {"class", "budget"}
    r = await api.call("POST", "/needs", content=b'{"class": "simple", "budget": ',
                       headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in detail(r)["reason"]
    no_tracebacks(caplog)
    await swarm_works(s)


async def test_peers_connect_answers_4xx_and_a_failed_dial_spoils_nothing(
        swarmlet: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = await swarmlet(3)  # connected in a line, 0 - 1 - 2: node0 has not met node2
    node: Node = s.nodes[0]
    api = Api(node)
    target = s.nodes[2]
    peer = target.peer_id.to_base58()
    closed = cluster.free_port()
    cases = {
        f"/ip4/127.0.0.1/tcp/{closed}/p2p/{peer}": "unreachable",
        f"/dns4/localhost/tcp/{closed}/p2p/{peer}": "unreachable",
        f"/ip6/::1/tcp/{closed}/p2p/{peer}": "unreachable",
        f"/ip4/127.0.0.1/udp/{closed}/quic-v1/p2p/{peer}": "unsupported_transport",
        f"/dns4/no-such-host.invalid/tcp/1/p2p/{peer}": "unresolvable",
        node.addrs()[0]: "own_peer",
        # Another node's address with node2's id: that node is not node2.
        s.nodes[1].addrs()[0].rsplit("/p2p/", 1)[0] + f"/p2p/{peer}": "unreachable",
        "/ip4/127.0.0.1/tcp/1": "bad_multiaddr",
        "not a multiaddr": "bad_multiaddr",
    }
    for addr, code in cases.items():
        r = await api.call("POST", "/peers/connect", json={"multiaddr": addr})
        assert r.status_code == 400, (addr, r.text)
        assert detail(r)["code"] == code and detail(r)["field"] == "multiaddr", (addr, r.text)
    # The right address works at once, by name too: no failure above is remembered.
    port = target.addrs()[0].split("/tcp/")[1].split("/")[0]
    r = await api.call("POST", "/peers/connect",
                       json={"multiaddr": f"/dns4/localhost/tcp/{port}/p2p/{peer}"})
    assert r.status_code == 200 and r.json()["connected"], r.text
    assert target.peer_id in node.host.get_connected_peers()
    no_tracebacks(caplog)
    await swarm_works(s)


async def test_only_a_need_known_here_is_decided(swarmlet: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    s = await swarmlet(3, validators=2)
    validator: Node = s.nodes[1]
    outsider: Node = s.nodes[2]  # not a validator: it submits through node1
    api = Api(validator)
    policy_cid = validator.policy.cid
    r = await api.call("POST", "/decide", json={"need_id": policy_cid, "proposal_id": "p",
                                                "timeout_s": 1})
    assert r.status_code == 404 and detail(r)["code"] == "unknown_need", r.text
    plan = await validator.publish("UPDATE_PLAN", {"base_lamport": 0, "ops": [
        {"op": "ADD_TASK", "task_id": "not-a-need"}]}, "", [])
    r = await api.call("POST", "/decide", json={"need_id": plan["id"], "proposal_id": "p"})
    assert r.status_code == 400 and detail(r)["code"] == "not_a_need", r.text
    r = await Api(outsider).call("POST", "/decide", json={"need_id": policy_cid,
                                                          "proposal_id": "p", "timeout_s": 1})
    assert r.status_code == 404, r.text
    # A node that is not a validator cannot get it decided by relaying it either.
    with trio.fail_after(60):
        stream = await outsider.host.new_stream(validator.peer_id,
                                                [validator.decider.submission_protocol])
        cmd = TryDecide(Cid.parse(policy_cid).raw, b"p")
        ask = make_envelope(outsider.identity, kind="DECIDE", swarm=s.genesis.swarm_id,
                            lamport=1, ts=0, payload=request_payload(cmd))
        await stream.write(encode_varint_prefixed(encode_submission(ask.wire, 1000)))
        answer = await read_varint_prefixed_bytes_limited(stream, SUBMISSION_BYTES_MAX)
        await stream.close()
    with pytest.raises(RemoteProtocolError, match="no NEED"):
        decode_answer(answer)
    # A NEED posted on the outsider and decided through it at once is decided: the
    # validator waits for the NEED to arrive.
    need = await outsider.publish("NEED", {"class": "simple", "budget": 1}, "", [])
    r = await Api(outsider).call("POST", "/decide", json={"need_id": need["id"],
                                                          "proposal_id": "fresh"})
    assert r.status_code == 200 and r.json()["proposal_id"] == "fresh", r.text
    for n in s.nodes.values():
        assert n.decider.decision(policy_cid) is None
        assert n.decider.decision(plan["id"]) is None
    no_tracebacks(caplog)
    # Checked on the validators: a plain node's ledger root differs from theirs even
    # when nothing hostile happened at all, which swarm_works would take for this.
    await s.stop(2)
    await swarm_works(s)


async def test_an_evidence_import_refused_or_cut_short_leaves_no_blocks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit = 2 * MIB
    homes, gen = make_homes(tmp_path, 2)
    gen = genesis_mod.from_value({**gen.value, "params": {**gen.value["params"],
                                                         "evidence_bytes_max": limit}})
    for h in homes:
        (h / "genesis.json").write_text(gen.to_json())
    async with trio.open_nursery() as nursery:
        s = Swarmlet(nursery, homes, gen)
        for i in range(2):
            await s.start(i)
        await s.connect_all()
        node: Node = s.nodes[0]
        api = Api(node)

        def blocks() -> int:
            return sum(1 for _ in node.blockstore.blocks())

        # A pinned object whose first block a refused upload will share.
        kept = os.urandom(MIB)
        r = await api.call("POST", "/evidence?cid_version=1", content=kept)
        assert r.status_code == 200, r.text
        kept_cid, base = r.json()["cid"], blocks()

        def pieces(total: int) -> Iterator[bytes]:
            yield kept[:256 * 1024]  # the same first block as the pinned object
            for _ in range((total - 256 * 1024) // (256 * 1024)):
                yield os.urandom(256 * 1024)

        r = await api.call("POST", "/evidence?cid_version=1", content=pieces(3 * MIB))
        assert r.status_code == 413, r.text
        assert blocks() == base
        r = await api.call("POST", "/evidence", content=b"z" * (3 * MIB))
        assert r.status_code == 413 and blocks() == base
        # An upload whose client goes away halfway, once the node has stored some of it.
        await trio.to_thread.run_sync(abandon_upload, node.api_url,
                                      read_token(node.settings.home), MIB,
                                      lambda: blocks() > base)
        await wait_for(lambda: blocks() == base, "the abandoned upload's blocks to go")
        r = await api.call("GET", f"/evidence/{kept_cid}")
        assert r.status_code == 200 and r.content == kept
        r = await api.call("POST", "/evidence/gc", json={})
        assert r.json()["removed"] == 0, r.text
        no_tracebacks(caplog)
        await swarm_works(s)
        nursery.cancel_scope.cancel()


def abandon_upload(url: str, token: str, size: int, stored: Callable[[], bool]) -> None:
    """Start a chunked upload, send `size` bytes of it, wait until `stored()`, and close
    the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /evidence HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                     f"{token}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(size // 65536):
            piece = os.urandom(65536)
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        cluster.wait_until(stored, 120, "the node to store part of the upload", 0.05)


async def test_the_token_file_and_the_api_address_are_checked_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    homes, gen = make_homes(tmp_path, 2)
    token = homes[0] / "api.token"
    token.chmod(0o644)
    with pytest.raises(HomeError, match="chmod 600"):
        open_node(homes[0])
    token.write_text("short\n")
    token.chmod(0o600)
    with pytest.raises(HomeError, match="fewer than 16"):
        open_node(homes[0])
    token.write_text("")
    open_node(homes[0])  # an empty token is replaced by a new one
    assert len(read_token(homes[0])) == 48 and token.stat().st_mode & 0o077 == 0
    config = json.loads((homes[0] / "config.json").read_text())
    write_config(homes[0], {**config, "api": "0.0.0.0:0"})
    with pytest.raises(HomeError, match="--api-public"):
        open_node(homes[0])
    async with trio.open_nursery() as nursery:
        s = Swarmlet(nursery, homes, gen)
        with caplog.at_level(logging.WARNING):
            node = open_node(homes[0], api_public=True)
            await nursery.start(node.run)
            s.nodes[0] = node
            await s.start(1)
        assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
        caplog.clear()
        await s.connect_all()
        await swarm_works(s)
        nursery.cancel_scope.cancel()


# --- process nodes and the CLI ------------------------------------------------------------

def node_cli(home: Path, *args: str, ok: bool | None = True
             ) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "swarm-node"), *args, "--home", str(home), ok=ok)


def run(*args: str, ok: bool | None = True) -> subprocess.CompletedProcess[str]:
    # Wide enough that no table cell is folded across lines.
    result = subprocess.run([*args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "400"})
    if ok is not None:
        assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
    return result


TERMINAL_ATTACK = "\x1b]0;owned\x07\x1b[2J\x9b31m\r[link=http://x]click[/link] :smile:"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\r")


class Impostor(http.server.BaseHTTPRequestHandler):
    """Whatever took a dead node's port: answers everything, keeps the headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_any(self) -> None:
        Impostor.seen.append(dict(self.headers))
        body = b'{"peer_id": "12D3KooWimpostor", "proof": "00"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_any

    def log_message(self, *args: Any) -> None:
        pass


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def wait(predicate: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    cluster.wait_until(predicate, timeout_s, what, interval_s=0.3)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "tn"
    run(str(BIN / "swarm-testnet"), "up", "-n", "3", "--dir", str(directory), "--json")
    yield directory
    run(str(BIN / "swarm-testnet"), "down", "--dir", str(directory), ok=None)


def test_the_cli_shows_swarm_text_inert_and_talks_only_to_its_node(net: Path) -> None:
    members = cluster.load_state(net)
    homes = [m.home for m in members]
    own = json.loads(node_cli(homes[0], "status", "--json").stdout)["account"]

    # Text from the swarm, shown on another node's terminal: every control character
    # escaped, no markup or emoji code taken as such; --json gives it back exactly.
    need = node_cli(homes[1], "need", "create", "--class", "simple", "--budget", "1",
                    "--title", TERMINAL_ATTACK).stdout.strip()
    wait(lambda: json.loads(node_cli(homes[0], "plan", "show", need, "--json").stdout)
         ["tasks"][0]["known"], "the NEED at node0")
    shown = node_cli(homes[0], "plan", "show", need).stdout
    assert not any(c in shown for c in RAW_CONTROLS), repr(shown)
    assert "\\x1b" in shown and "[link=http://x]click[/link]" in shown and ":smile:" in shown
    doc = json.loads(node_cli(homes[0], "plan", "show", need, "--json").stdout)
    assert doc["tasks"][0]["title"] == TERMINAL_ATTACK
    bad = node_cli(homes[0], "decide", TERMINAL_ATTACK, "p", ok=False)
    assert not any(c in bad.stderr for c in RAW_CONTROLS), repr(bad.stderr)

    # Careless transfers: no recipient, or oneself unless said so.
    empty = node_cli(homes[0], "ledger", "transfer", "", "1", ok=False)
    assert "to:" in empty.stderr and "transferred" not in empty.stdout
    mine = node_cli(homes[0], "ledger", "transfer", own, "1", ok=False)
    assert "own account" in mine.stderr
    node_cli(homes[0], "ledger", "transfer", own, "1", "--to-self")

    # Four unauthenticated 200 MB posts and two over-long authenticated ones at once:
    # the node's peak memory does not move by anything like their size.
    pid = int(read_api(homes[0])["pid"])
    url = str(read_api(homes[0])["url"])
    token = read_token(homes[0])
    peak_before = vm_kb(pid, "VmHWM")
    threads = [threading.Thread(target=post_huge, args=(url, auth, token))
               for auth in (False, False, False, False, True, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vm_kb(pid, "VmHWM") - peak_before < 200 * 1024, "the node read the bodies"

    # node2 dies; another program takes its port. The CLI asks it to prove it holds the
    # token, it cannot, and the token is never sent to it.
    victim = members[2]
    api = read_api(victim.home)
    port = int(str(api["url"]).rsplit(":", 1)[1])
    os.kill(victim.pid, signal.SIGKILL)
    servers: list[http.server.ThreadingHTTPServer] = []

    def take_port() -> bool:  # free once the dying process has closed its sockets
        with contextlib.suppress(OSError):
            servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", port), Impostor))
        return bool(servers)

    wait(take_port, "node2's port to be free")
    server = servers[0]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fooled = node_cli(victim.home, "status", ok=False)
        assert "not the node" in fooled.stderr, fooled.stderr
        assert Impostor.seen, "the CLI did not ask"
        assert not any("authorization" in {k.lower() for k in h} for h in Impostor.seen)
    finally:
        server.shutdown()
        server.server_close()

    # node2 restarted by hand, and node1's recorded pid now another program's.
    restarted = subprocess.Popen([str(BIN / "swarm-node"), "start", "--home",
                                  str(victim.home)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        wait(lambda: node_cli(victim.home, "status", ok=None).returncode == 0,
             "node2 to be back")
        node1_pid = members[1].pid
        cluster.save_state(net, [members[0], cluster.Member(1, members[1].home, bystander.pid,
                                                            members[1].addr), victim])
        cli_swarm_works(homes)

        down = run(str(BIN / "swarm-testnet"), "down", "--dir", str(net), "--json")
        results = {r["node"]: r for r in json.loads(down.stdout)}
        assert results[1]["pid"] == node1_pid and results[1]["result"] == "stopped"
        assert results[2]["pid"] == restarted.pid and results[2]["result"] == "stopped"
        assert restarted.wait(timeout=60) == 0
        assert bystander.poll() is None, "swarm-testnet down signalled another program"
        for i in range(3):
            assert not cluster.runs_node(results[i]["pid"], homes[i])
    finally:
        for proc in (restarted, bystander):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=60)


def post_huge(url: str, auth: bool, token: str) -> None:
    headers = {"authorization": f"Bearer {token}"} if auth else {}

    def body() -> Iterator[bytes]:
        piece = b"x" * 65536
        for _ in range(200 * MIB // len(piece)):
            yield piece

    with contextlib.suppress(httpx.HTTPError), httpx.Client(timeout=120) as c:
        c.post(url + "/needs", content=body(),
               headers={**headers, "content-length": str(200 * MIB)} if not auth else headers)
