"""Evidence in a real IPFS daemon (`--ipfs-api`), through ipfshttpclient: js-ipfs 0.66.1.

Goal: with a daemon, evidence is added, pinned, listed, read back (every block checked)
and collected in that daemon, under the CIDs Kubo's `ipfs add` prints; a node keeping
its evidence there still serves it to swarm peers over bitswap, and what it fetches from
them ends up pinned in the daemon. Method: the test installs js-ipfs from
tests/ipfs_daemon/package-lock.json with npm (once, into a cache folder, since it is
about 200 MB) and starts a daemon of its own in a temporary repository: offline (no
libp2p networking), no bootstrap peers, no preload nodes, API on a free loopback port.
No mocks: the store, the nodes and the daemon are real. Skipped, saying why, when Node
or npm is missing or the packages cannot be installed (no registry).

js-ipfs 0.66.1 needs four packages pinned back through npm `overrides` (newer releases
of them break its daemon) and `Promise.withResolvers` (Node 22) polyfilled on Node 20;
both are in tests/ipfs_daemon/.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipfshttpclient
import pytest
import trio

from swarm.node.blockstore import Kind
from swarm.node.client import Client
from swarm.node.home import read_config, write_config
from swarm.node.ipfs_api import IpfsApiError, IpfsApiStore
from swarm.protocol import cbor
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.unixfs import BlockMissing, TooLarge, add_bytes
from swarm.testnet import cluster
from swarm.testnet.inproc import Swarmlet, make_homes

HERE = Path(__file__).resolve().parent
JS = HERE.parent / "ipfs_daemon"
VECTORS = {v["name"]: v for v in json.loads(
    (HERE.parents[1] / "testdata" / "unixfs_vectors.json").read_text())["vectors"]}
DEADLINE_S = 180
# urllib3 2.x warns on every request about an argument ipfshttpclient 0.7 passes.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")


def recipe(size: int) -> bytes:
    pieces = (hashlib.shake_128(b"can-swarm/unixfs-vector/" + k.to_bytes(8, "big"))
              .digest(65536) for k in range(size // 65536 + 1))
    return b"".join(pieces)[:size]


def js_ipfs() -> Path:
    """node_modules with js-ipfs, installed once per lockfile; or skip, saying why.

    Installed into a fresh folder that is renamed into place only when complete, under
    a file lock, so two test runs at once (the suite and one of its files) neither
    install twice nor see half an install."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("js-ipfs needs Node.js and npm, which are not installed")
    lock = (JS / "package-lock.json").read_bytes()
    default = Path.home() / ".cache" / "can-swarm" / \
        f"js-ipfs-{hashlib.sha256(lock).hexdigest()[:16]}"
    folder = Path(os.environ.get("SWARM_JSIPFS_DIR", default))
    cli = Path("node_modules") / "ipfs" / "src" / "cli.js"
    if (folder / cli).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if (folder / cli).exists():
            return folder  # another run installed it while we waited
        fresh = folder.parent / f"{folder.name}.part-{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, fresh / name)
        # `npm install` with the lockfile, not `npm ci`: an optional dependency deep in
        # js-ipfs (electron-eval's `headless`) is a GitHub tarball that npm leaves out
        # of the lock, and `npm ci` then refuses the lock as out of sync. Optional
        # packages are left out (the daemon runs without them, and that one is not on
        # a registry).
        try:
            done = subprocess.run(["npm", "install", "--omit=optional", "--no-audit",
                                   "--no-fund", "--silent"],
                                  cwd=fresh, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            shutil.rmtree(fresh, ignore_errors=True)
            pytest.skip("installing js-ipfs 0.66.1 with npm took more than 20 minutes")
        if done.returncode != 0 or not (fresh / cli).exists():
            shutil.rmtree(fresh, ignore_errors=True)
            pytest.skip("js-ipfs 0.66.1 could not be installed from the npm registry "
                        f"(offline?): {done.stderr.strip()[-400:]}")
        shutil.rmtree(folder, ignore_errors=True)
        fresh.rename(folder)
    return folder


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A js-ipfs daemon of our own; yields its API multiaddr."""
    folder = js_ipfs()
    repo = tmp_path_factory.mktemp("jsipfs") / "repo"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    node = ["node", "--require", str(JS / "polyfill.cjs"),
            str(folder / "node_modules" / "ipfs" / "src" / "cli.js")]
    subprocess.run([*node, "init", "--empty-repo"], env=env, check=True,
                   capture_output=True, timeout=120)
    config = json.loads((repo / "config").read_text())
    api = f"/ip4/127.0.0.1/tcp/{cluster.free_port()}"
    config["Bootstrap"] = []
    config["Addresses"].update({"Swarm": ["/ip4/127.0.0.1/tcp/0"], "API": api,
                                "Gateway": "", "RPC": "", "Delegates": []})
    config["Discovery"] = {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}}
    (repo / "config").write_text(json.dumps(config))
    log = (repo.parent / "daemon.log").open("wb")
    proc = subprocess.Popen([*node, "daemon", "--offline", "--enable-preload=false"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError("js-ipfs daemon exited: "
                                     + (repo.parent / "daemon.log").read_text()[-2000:])
            try:
                ipfshttpclient.Client(api, timeout=2).version()
            except ipfshttpclient.exceptions.Error:
                return False
            return True

        cluster.wait_until(ready, 120, "the js-ipfs daemon to answer")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def store(daemon: str, tmp_path: Path) -> Iterator[IpfsApiStore]:
    params = {**DEFAULT_PARAMS, "proof_bytes_max": 10_240}
    s = IpfsApiStore(daemon, params, tmp_path)
    s.pin_timeout_s = s.read_timeout_s = 3  # for blocks that exist nowhere
    yield s
    s.close()


def test_connect_refuses_the_daemon_so_we_do_not_use_it(daemon: str, store: IpfsApiStore
                                                         ) -> None:
    with pytest.raises(ipfshttpclient.exceptions.VersionMismatch):
        ipfshttpclient.connect(daemon)
    assert store.daemon_version == "0.18.1"  # ipfs-core's version in npm ipfs 0.66.1


@pytest.mark.parametrize(("name", "version"), [("3-mb", 0), ("3-mb", 1), ("hello-world", 0),
                                               ("empty", 1)])
def test_import_gives_kubos_cids_and_reads_back_checked(store: IpfsApiStore, name: str,
                                                        version: int) -> None:
    vector = VECTORS[name]
    data = (bytes.fromhex(vector["content_hex"]) if "content_hex" in vector
            else recipe(vector["size"]))
    session = store.begin_import(Kind.EVIDENCE, version)
    for i in range(0, len(data), 100_000):
        session.feed(data[i:i + 100_000])
    pin = session.finish()
    assert str(pin.root) == vector["cid_v1" if version else "cid_v0"]
    assert pin.size == len(data)
    assert store.is_pinned(pin.root)
    assert b"".join(store.read(pin.root)) == data
    assert store.missing(pin.root) is None and store.size_of(pin.root) == len(data)
    assert pin in store.pins()


def test_pins_kinds_limits_and_gc(store: IpfsApiStore) -> None:
    kept = store.begin_import(Kind.PROOF, 1)
    kept.feed(b"a small challenge proof")
    proof = kept.finish()
    dropped = store.begin_import(Kind.EVIDENCE, 0)
    dropped.feed(recipe(600_000)[::-1])  # shares no chunk with the pinned vectors
    evidence = dropped.finish()
    assert {(p.root, p.kind) for p in store.pins()} >= {(proof.root, Kind.PROOF),
                                                        (evidence.root, Kind.EVIDENCE)}
    too_big = store.begin_import(Kind.PROOF, 0)
    with pytest.raises(TooLarge):
        too_big.feed(bytes(10_241))
    assert store.unpin(evidence.root) and not store.unpin(evidence.root)
    result = store.gc()
    assert result.removed >= 4 and result.removed_bytes > 500_000  # the daemon's estimate
    assert not store.has(evidence.root) and store.has(proof.root)
    assert evidence.root not in {p.root for p in store.pins()}
    # An object nobody has: pinning it ends in an error naming it, not a wait.
    nowhere, _ = add_bytes(b"in no daemon\n", 0)
    with pytest.raises(BlockMissing):
        store.pin(nowhere)
    assert store.missing(nowhere) == nowhere


def test_a_dag_cbor_block_is_pinned_directly(store: IpfsApiStore) -> None:
    # A decision memo's shape: one dag-cbor block linking (tag 42) to blocks that are
    # not part of it and exist nowhere; a recursive pin would search for them.
    nowhere = dag_cbor_cid(cbor.encode("a need in no daemon"))
    memo = cbor.encode({"v": "memo", "need": nowhere, "bids": [{"cost": 7}]})
    cid = dag_cbor_cid(memo)
    assert not store.is_pinned(cid)
    pin = store.put_dag(cid, Kind.EVIDENCE, {cid: memo}.get)
    assert (pin.root, pin.kind, pin.size, pin.blocks) == (cid, Kind.EVIDENCE, len(memo), 1)
    assert store.is_pinned(cid) and pin in store.pins()
    assert b"".join(store.read(cid)) == memo and store.missing(cid) is None
    store.gc()
    assert store.get(cid) == memo
    assert store.unpin(cid) and not store.is_pinned(cid)
    store.gc()
    assert not store.has(cid)


def test_a_daemon_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IpfsApiError, match="cannot reach the daemon"):
        IpfsApiStore(f"/ip4/127.0.0.1/tcp/{cluster.free_port()}", DEFAULT_PARAMS, tmp_path)
    with pytest.raises(IpfsApiError, match="not a daemon API multiaddr"):
        IpfsApiStore("not-a-multiaddr", DEFAULT_PARAMS, tmp_path)


async def test_nodes_with_and_without_a_daemon(daemon: str, tmp_path: Path) -> None:
    """node0 keeps its evidence in the daemon, node1 in its embedded store. What node0
    adds lives in the daemon only and node1 fetches it over bitswap (node0 serves it
    from the daemon); what node1 adds, node0's `GET /evidence` fetches over bitswap
    and pins in the daemon."""
    homes, gen = make_homes(tmp_path, 2)
    config = read_config(homes[0])
    write_config(homes[0], {**config, "ipfs_api": daemon})
    client = ipfshttpclient.Client(daemon)

    def daemon_pins() -> set[str]:
        # js-ipfs lists CIDv1 in base58btc (zdj7...): compare parsed CIDs.
        return {str(Cid.parse(k)) for k in client.pin.ls(type="recursive")["Keys"]}

    def api(i: int, method: str, path: str, body: Any = None) -> Any:
        c = Client(homes[i], timeout_s=DEADLINE_S)
        try:
            if method == "POST_STREAM":
                return c.post_stream(path, iter([body]), params={"cid_version": 1})
            if method == "GET_BYTES":
                with c.stream_get(path) as (_, pieces):
                    return b"".join(pieces)
            return c.post(path, body) if method == "POST" else c.get(path)
        finally:
            c.close()

    async with trio.open_nursery() as nursery:
        s = Swarmlet(nursery, homes, gen)
        await s.start(0)
        await s.start(1)
        await s.connect_all()
        node0, node1 = s.nodes[0], s.nodes[1]
        assert isinstance(node0.evidence, IpfsApiStore) and node1.evidence is node1.blockstore

        ours = recipe(1_500_000)
        added = await trio.to_thread.run_sync(api, 0, "POST_STREAM", "/evidence", ours)
        root = Cid.parse(added["cid"])
        assert added["cid"] in daemon_pins()
        assert not node0.blockstore.has(root)  # in the daemon only
        assert await trio.to_thread.run_sync(api, 0, "GET_BYTES", f"/evidence/{root}") == ours
        with trio.fail_after(DEADLINE_S):
            await node1.bitswap.fetch(root)
        assert b"".join(node1.blockstore.read(root)) == ours

        theirs = recipe(900_000)[::-1]
        pin = node1.blockstore.add([theirs], Kind.EVIDENCE, 0)
        got = await trio.to_thread.run_sync(api, 0, "GET_BYTES", f"/evidence/{pin.root}")
        assert got == theirs
        assert str(pin.root) in daemon_pins()
        assert not node0.blockstore.is_pinned(pin.root)  # handed over to the daemon
        pins = await trio.to_thread.run_sync(api, 0, "GET", "/evidence/pins")
        assert {p["cid"] for p in pins} == {str(root), str(pin.root)}
        nursery.cancel_scope.cancel()
