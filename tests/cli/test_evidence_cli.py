"""`swarm-node evidence`: CIDs without a node, and add/get/pin/unpin/ls/gc against one.

Method: `add --only-hash` runs in-process with no node and no home (it must need
neither) and prints what testdata/unixfs_vectors.json says Kubo prints, and nothing else
on stdout. Then one real `swarm-node` process (`swarm-testnet up -n 1`) serves the rest,
driven by the installed console script as a user would: what `add` stores, `get` gives
back byte for byte, a file over the proof limit is refused, and after `unpin` + `gc`
the object is gone while another pinned one stays; the node runs the built-in wordcount
job on a stored text through `swarm-node job`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swarm.cli.main import app
from swarm.protocol.genesis import DEFAULT_PARAMS

VECTORS = {v["name"]: v for v in json.loads(
    (Path(__file__).resolve().parents[2] / "testdata" / "unixfs_vectors.json").read_text()
)["vectors"]}
BIN = Path(sys.executable).parent


def recipe(size: int) -> bytes:
    pieces = (hashlib.shake_128(b"can-swarm/unixfs-vector/" + k.to_bytes(8, "big"))
              .digest(65536) for k in range(size // 65536 + 1))
    return b"".join(pieces)[:size]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    # A home that does not exist: --only-hash must not look at it.
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "no-such-home"))
    runner = CliRunner()

    def invoke(*args: str, stdin: bytes | None = None) -> Any:
        return runner.invoke(app, list(args), input=stdin)

    return invoke


@pytest.mark.parametrize("name", ["empty", "hello-world", "chunk-plus-1", "3-mb"])
def test_only_hash_prints_kubo_cid(run: Any, tmp_path: Path, name: str) -> None:
    vector = VECTORS[name]
    data = (bytes.fromhex(vector["content_hex"]) if "content_hex" in vector
            else recipe(vector["size"]))
    path = tmp_path / name
    path.write_bytes(data)
    for flags, key in (([], "cid_v0"), (["--cid-version", "1"], "cid_v1")):
        result = run("evidence", "add", "--only-hash", *flags, str(path))
        assert result.exit_code == 0, result.stderr
        assert result.stdout == vector[key] + "\n"
    assert not (tmp_path / "no-such-home").exists()


def test_only_hash_stdin_and_json(run: Any) -> None:
    result = run("evidence", "add", "-n", "-", stdin=b"hello world\n")
    assert result.stdout == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n"
    doc = json.loads(run("evidence", "add", "-n", "--json", "-", stdin=b"").stdout)
    assert doc == {"cid": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", "size": 0}


def test_only_hash_errors(run: Any, tmp_path: Path) -> None:
    missing = run("evidence", "add", "-n", str(tmp_path / "absent"))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
    assert missing.stdout == ""
    (tmp_path / "f").write_bytes(b"x")
    assert run("evidence", "add", "-n", "--cid-version", "2", str(tmp_path / "f")).exit_code == 2


def test_without_a_node_says_so(run: Any, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    result = run("evidence", "add", str(tmp_path / "f"))
    assert result.exit_code == 1 and result.stdout == ""
    assert "no-such-home" in result.stderr


# -- against a running node ---------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BIN / "swarm-node"), *args], capture_output=True, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[str]:
    directory = tmp_path / "tn"
    testnet = str(BIN / "swarm-testnet")
    up = subprocess.run([testnet, "up", "-n", "1", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    yield str(directory / "node0")
    subprocess.run([testnet, "down", "--dir", str(directory)], capture_output=True,
                   timeout=300)


def test_evidence_through_a_running_node(home: str, tmp_path: Path) -> None:
    data = recipe(3_000_000)
    src = tmp_path / "evidence.bin"
    src.write_bytes(data)
    added = cli("evidence", "add", str(src), "--home", home)
    assert added.returncode == 0, added.stderr
    cid = added.stdout.decode().strip()
    assert cid == VECTORS["3-mb"]["cid_v0"]
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello world\n")
    kept = cli("evidence", "add", "--cid-version", "1", str(small), "--home", home)
    assert kept.stdout.decode().strip() == VECTORS["hello-world"]["cid_v1"]

    pins = json.loads(cli("evidence", "ls", "--json", "--home", home).stdout)
    assert {p["cid"]: p["size"] for p in pins} == {cid: len(data), kept.stdout.decode()
                                                   .strip(): 12}
    out = tmp_path / "out.bin"
    got = cli("evidence", "get", cid, "-o", str(out), "--home", home)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    assert cli("evidence", "get", cid, "--home", home).stdout == data

    proof = tmp_path / "proof.bin"
    proof.write_bytes(recipe(DEFAULT_PARAMS["proof_bytes_max"] + 1))
    refused = cli("evidence", "add", "--kind", "proof", str(proof), "--home", home)
    assert refused.returncode == 1 and b"proof is more than" in refused.stderr

    assert cli("evidence", "unpin", cid, "--home", home).returncode == 0
    again = cli("evidence", "unpin", cid, "--home", home)
    assert again.returncode == 1 and b"not pinned" in again.stderr
    gc = json.loads(cli("evidence", "gc", "--json", "--home", home).stdout)
    assert gc["removed"] >= 13 and gc["kept"] == 1
    gone = cli("evidence", "get", cid, "-o", str(tmp_path / "gone"), "--home", home)
    assert gone.returncode == 1 and b"not available" in gone.stderr
    assert not (tmp_path / "gone").exists()
    assert cli("evidence", "get", kept.stdout.decode().strip(), "--home", home).stdout \
        == b"hello world\n"

    # A WebAssembly job on that evidence: the built-in wordcount, run by the node.
    jobs = json.loads(cli("job", "builtins", "--publish", "--json", "--home", home).stdout)
    wordcount = jobs["jobs"]["wordcount"]
    text = kept.stdout.decode().strip()
    ran = json.loads(cli("job", "run", wordcount, text, "--json", "--home", home).stdout)
    assert ran["size"] == 2 and ran["fuel"] > 0
    assert cli("evidence", "get", ran["output"], "--home", home).stdout == b"2\n"
    again = json.loads(cli("job", "run", wordcount, text, "--json", "--home", home).stdout)
    assert again["output"] == ran["output"]  # the same bytes, the same CID
    bad = cli("job", "run", text, text, "--home", home)  # a text is no module
    assert bad.returncode == 1 and b"does not compile" in bad.stderr
    assert b"wordcount" in cli("job", "builtins", "--home", home).stdout


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    directory = tmp_path / "tn2"
    testnet = str(BIN / "swarm-testnet")
    up = subprocess.run([testnet, "up", "-n", "2", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    yield str(directory / "node0"), str(directory / "node1")
    subprocess.run([testnet, "down", "--dir", str(directory)], capture_output=True,
                   timeout=300)


def test_get_fetches_from_a_peer(pair: tuple[str, str], tmp_path: Path) -> None:
    """Two node processes: what one adds, the other's `evidence get` fetches over
    bitswap, checks, pins and writes; a CID nobody has is a clear error."""
    owner, other = pair
    data = recipe(3_000_000)
    src = tmp_path / "evidence.bin"
    src.write_bytes(data)
    cid = cli("evidence", "add", "--cid-version", "1", str(src), "--home", owner)\
        .stdout.decode().strip()
    assert cid == VECTORS["3-mb"]["cid_v1"]
    out = tmp_path / "fetched.bin"
    got = cli("evidence", "get", cid, "-o", str(out), "--home", other)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    pins = json.loads(cli("evidence", "ls", "--json", "--home", other).stdout)
    assert [(p["cid"], p["size"]) for p in pins] == [(cid, len(data))]
    status = subprocess.run([str(BIN / "swarm-node"), "status", "--json", "--home", other],
                             capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["addrs"]
    absent = VECTORS["chunk"]["cid_v0"]  # nobody added it
    gone = cli("evidence", "get", absent, "-o", str(tmp_path / "absent"), "--home", other)
    assert gone.returncode == 1
    assert f"block {absent} of {absent} is not available".encode() in gone.stderr
    assert b"none of the 1 peers" in gone.stderr
    assert not (tmp_path / "absent").exists()


def test_ipfs_api_option_is_kept_and_checked(tmp_path: Path) -> None:
    """`init --ipfs-api` records the daemon in the config; `start --ipfs-api` with no
    daemon there stops at once with a clear error (the daemon itself is exercised in
    tests/integration/test_ipfs_api.py)."""
    from swarm.node.home import GENESIS_FILE, read_config
    from swarm.testnet.cluster import free_port
    from swarm.testnet.inproc import make_homes

    (home,), _ = make_homes(tmp_path, 1)
    other = tmp_path / "other"
    daemon = "/ip4/127.0.0.1/tcp/5001"
    init = cli("init", "--home", str(other), "--genesis", str(home / GENESIS_FILE),
               "--ipfs-api", daemon, "--json")
    assert init.returncode == 0, init.stderr
    assert read_config(other)["ipfs_api"] == daemon
    nowhere = f"/ip4/127.0.0.1/tcp/{free_port()}"
    start = cli("start", "--home", str(home), "--ipfs-api", nowhere)
    assert start.returncode == 1
    assert f"cannot reach the daemon at {nowhere}".encode() in start.stderr
