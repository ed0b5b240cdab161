"""DECIDE across a real network partition: five `swarm-node` processes, each in its own
Linux network namespace, joined by veth pairs onto one bridge.

Goal (P1 under a partition, on real nodes and a real network): a bucket leader cut off
from everyone cannot decide anything (no split brain), the majority side elects a new
leader and keeps deciding, and after the partition heals the old leader rejoins, catches
up, and every node holds exactly one decision per NEED, the same everywhere.

Method: namespaces, veths and the bridge are made with iproute2 (names carry this
process's pid, so parallel or stale runs never collide; stale ones of dead runs are
removed, with any node processes left in them). The genesis names the namespace
addresses, so Raft dials them. The control API of a node binds 127.0.0.1 inside its
namespace, so the test decides and reads with the CLI run inside that namespace (`ip netns
exec NS swarm-node ... --json`), as an operator would, and polls through one long-lived
reader per namespace (the same control API, without a CLI start per poll). The partition:
the host side of the leader's veth is set down. TCP connections do not break, they stall;
the others notice when the leader's beats stop (PEER_DEAD_TICKS). After the heal, the
Raft transport's stall detection (nothing from a peer for STALL_S: close, dial afresh)
brings the connections back, rather than the kernel's retransmission backoff.

Skips where namespaces are not available (not root, no `ip`, `ip netns add` refused).
Namespaces, bridge and processes are always removed by the fixture's finalizer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.testnet import cluster

N = 5
TAG = str(os.getpid())
PREFIX = "swnt"  # namespaces swnt<pid>-<i>, bridge swnt<pid>br, veths swnt<pid>h<i>/n<i>
SUBNET = f"10.213.{os.getpid() % 250}"  # a /24 inside the namespaces only; the host has no
# address on the bridge, so it cannot clash with the host's own routes


def ip_binary() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None)


IP = ip_binary() or "ip"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def remove_stale() -> None:
    """Namespaces, bridges and veths left by runs whose process is gone (killed)."""
    names = sh("netns", "list", check=False).stdout.split()
    links = re.findall(rf"\d+: ({PREFIX}\d+(?:br|h\d+))[:@]",
                       sh("-o", "link", "show", check=False).stdout)
    for name in [*names, *links]:
        m = re.fullmatch(rf"{PREFIX}(\d+)(?:-\d+|br|h\d+)", name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # that run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if not name.startswith(f"{PREFIX}{m.group(1)}-"):  # a bridge or a host veth
            sh("link", "del", name, check=False)
            continue
        for pid in sh("netns", "pids", name, check=False).stdout.split():  # orphaned nodes
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("netns", "del", name, check=False)


@dataclass
class Node:
    index: int
    ns: str
    host_veth: str
    home: Path
    addr: str = ""
    pid: int = 0
    node_id: int = 0
    _reader: subprocess.Popen[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cli(self, *args: str, timeout_s: float = 60) -> tuple[int, Any, str]:
        """Run `swarm-node ARGS --home H --json` inside this node's namespace: (exit code,
        parsed stdout or None, stderr)."""
        cmd = [IP, "netns", "exec", self.ns, *cluster.node_cmd(), *args, "--home",
               str(self.home), "--json"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return 124, None, "timed out"
        try:
            doc = json.loads(r.stdout) if r.returncode == 0 else None
        except json.JSONDecodeError:
            doc = None
        return r.returncode, doc, r.stderr.strip()

    def get(self, *args: str) -> Any:
        """A read through the CLI: its JSON document, or None if it failed."""
        rc, doc, _ = self.cli(*args)
        return doc if rc == 0 else None

    def api(self, path: str) -> Any:
        """GET `path` from the control API inside the namespace, through one long-lived
        reader there (a CLI run per poll costs half a second of a shared CPU): its JSON
        document, or None on an error answer."""
        with self._lock:
            if self._reader is None or self._reader.poll() is not None:
                self._reader = subprocess.Popen(
                    [IP, "netns", "exec", self.ns, sys.executable, "-u", "-c", READER,
                     str(self.home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self._reader.stdin is not None and self._reader.stdout is not None
            try:
                self._reader.stdin.write(path + "\n")
                self._reader.stdin.flush()
            except BrokenPipeError:  # it exited (the API was not up): the next call restarts it
                return None
            return json.loads(self._reader.stdout.readline() or "null")

    def close_reader(self) -> None:
        if self._reader is not None:
            self._reader.kill()
            self._reader.wait()


# The reader run inside a namespace: a path per line in, its JSON (or null) per line out.
READER = """
import json, sys
from pathlib import Path
from swarm.node.client import ApiError, Client
client = Client(Path(sys.argv[1]), timeout_s=30)
for line in sys.stdin:
    try:
        doc = client.get(line.strip())
    except ApiError:
        doc = None
    print(json.dumps(doc), flush=True)
"""


class Net:
    """The namespaces, the bridge, and the node processes in them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bridge = f"{PREFIX}{TAG}br"
        self.nodes = [Node(i, f"{PREFIX}{TAG}-{i}", f"{PREFIX}{TAG}h{i}", directory / f"node{i}")
                      for i in range(N)]
        self.made_ns: list[str] = []
        self.made_bridge = False

    def make_network(self) -> None:
        sh("link", "add", self.bridge, "type", "bridge")
        self.made_bridge = True
        sh("link", "set", self.bridge, "up")
        for n in self.nodes:
            sh("netns", "add", n.ns)
            self.made_ns.append(n.ns)
            inner = f"{PREFIX}{TAG}n{n.index}"
            sh("link", "add", n.host_veth, "type", "veth", "peer", "name", inner)
            sh("link", "set", inner, "netns", n.ns)
            sh("link", "set", n.host_veth, "master", self.bridge)
            sh("link", "set", n.host_veth, "up")
            sh("-n", n.ns, "addr", "add", f"{SUBNET}.{n.index + 1}/24", "dev", inner)
            sh("-n", n.ns, "link", "set", inner, "up")
            sh("-n", n.ns, "link", "set", "lo", "up")

    def start(self) -> None:
        # The test decides made-up NEED ids, chosen by bucket.
        plan = cluster.prepare(self.directory, N,
                               hosts=[f"{SUBNET}.{n.index + 1}" for n in self.nodes],
                               decide_unknown_needs=True)
        for n, (home, addr) in zip(self.nodes, plan, strict=True):
            assert home == n.home
            n.addr = addr
            n.pid = cluster.start_member(n.index, home, addr,
                                         prefix=[IP, "netns", "exec", n.ns]).pid

    def cut(self, n: Node) -> None:
        sh("link", "set", "dev", n.host_veth, "down")

    def heal(self, n: Node) -> None:
        sh("link", "set", "dev", n.host_veth, "up")

    def close(self) -> None:
        for n in self.nodes:
            n.close_reader()
            if n.ns in self.made_ns:  # a healed link lets the nodes close their connections
                sh("link", "set", "dev", n.host_veth, "up", check=False)
        for n in self.nodes:
            if n.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for n in self.nodes:
            while n.pid and cluster.Member(n.index, n.home, n.pid, n.addr).alive():
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(n.pid, signal.SIGKILL)
                    break
                time.sleep(0.1)
        for ns in self.made_ns:
            sh("netns", "del", ns, check=False)
        for n in self.nodes:
            # Deleting the namespace deletes its veth pair, but only once the kernel has
            # let go of it (sockets still retransmitting can hold it): delete ours now.
            sh("link", "del", n.host_veth, check=False)
        if self.made_bridge:
            sh("link", "del", self.bridge, check=False)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if ip_binary() is None:
        pytest.skip("no `ip` (iproute2) on this machine")
    remove_stale()
    probe = f"{PREFIX}{TAG}-probe"
    r = sh("netns", "add", probe, check=False)
    if r.returncode != 0:
        pytest.skip(f"`ip netns add` is refused here: {r.stderr.strip()}")
    sh("netns", "del", probe, check=False)
    net = Net(tmp_path / "tn")
    try:
        try:
            net.make_network()
        except RuntimeError as exc:
            pytest.skip(f"cannot build the veth/bridge network here: {exc}")
        net.start()
        yield net
    finally:
        net.close()
        for n in net.nodes:  # on failure, the nodes' own words are the best clue
            log = n.home / "stdio.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- node{n.index} ({n.ns}) stdio.log tail ---", *tail, sep="\n")


T0 = [time.monotonic()]


def phase(what: str) -> None:
    """A timeline in the captured output: what happened when, shown if the test fails."""
    print(f"[{time.monotonic() - T0[0]:6.1f} s] {what}", flush=True)


def need_cid(i: int) -> str:
    return str(dag_cbor_cid(b"partition-test-%d" % i))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.3)


def decide(node: Node, need: str, proposal: str, timeout_s: float = 60) -> dict[str, Any]:
    """DECIDE through `node`, retrying (it is safe) until one attempt answers."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        rc, doc, err = node.cli("decide", need, proposal, "--timeout", "15")
        if rc == 0:
            return doc  # type: ignore[no-any-return]
        last = err
        phase(f"node{node.index} decide {need[-6:]}: {err}")
        time.sleep(0.5)
    raise AssertionError(f"node{node.index} could not decide {need}: {last}")


def test_partitioned_leader_cannot_decide_and_catches_up(net: Net) -> None:
    T0[0] = time.monotonic()
    nodes = net.nodes
    # Up and on the network: each answers, and Raft works (a first DECIDE commits).
    for n in nodes:
        def up(n: Node = n) -> bool:
            return n.get("status") is not None

        wait_for(up, 60, f"node{n.index} to start")
    phase("all nodes answer")
    bucket_count = nodes[0].api("/raft/status?bucket=0")["bucket_count"]
    for n in nodes:
        n.node_id = n.api("/raft/status?bucket=0")["node_id"]
    by_id = {n.node_id: n for n in nodes}

    def bucket(need: str) -> int:
        return bucket_of(Cid.parse(need).raw, int(bucket_count))

    target_need = need_cid(0)
    target = bucket(target_need)
    decided: dict[str, dict[str, Any]] = {}
    decided[target_need] = decide(nodes[0], target_need, "warmup-0", timeout_s=90)
    for k in range(1, 4):  # a few buckets get leaders
        need = need_cid(k)
        decided[need] = decide(nodes[k], need, f"warmup-{k}")

    # The target bucket's leader L, as all its replicas agree.
    replicas = nodes[0].api(f"/raft/status?bucket={target}")["buckets"][0]["replicas"]

    agreed: set[int | None] = set()

    def leader_agreed() -> bool:
        agreed.clear()
        for r in replicas:
            doc = by_id[r].api(f"/raft/status?bucket={target}")
            agreed.add(doc["buckets"][0]["leader"] if doc else None)
        return len(agreed) == 1 and None not in agreed

    wait_for(leader_agreed, 60, f"bucket {target}'s replicas to agree on a leader")
    leader_id = agreed.pop()
    assert leader_id is not None
    leader = by_id[leader_id]
    majority = [n for n in nodes if n is not leader]

    # NEEDs for the majority side: four in the target bucket, four elsewhere; and one
    # fresh NEED of the target bucket for the cut-off leader.
    same_bucket = [s for s in map(need_cid, range(20_000, 60_000)) if bucket(s) == target][:5]
    contested = [*map(need_cid, range(10_000, 10_004)), *same_bucket[:4]]
    isolated_need = same_bucket[4]

    phase(f"cutting off node{leader.index} (id {leader.node_id}), leader of bucket {target}")
    net.cut(leader)
    answers: dict[tuple[int, str], str] = {}
    errors: list[str] = []
    isolated: list[tuple[int, Any, str]] = []

    def compete(n: Node) -> None:
        for need in contested:
            try:
                answers[(n.index, need)] = decide(n, need, f"from-node{n.index}",
                                                  timeout_s=120)["proposal_id"]
            except AssertionError as exc:
                errors.append(str(exc))

    def from_isolated() -> None:
        isolated.append(leader.cli("decide", isolated_need, "isolated", "--timeout", "5"))

    threads = [threading.Thread(target=compete, args=(n,)) for n in majority]
    threads.append(threading.Thread(target=from_isolated))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    phase(f"majority side done; from node{leader.index}: {isolated[0]}")
    # No split brain: the cut-off leader could not decide...
    rc, doc, err = isolated[0]
    assert rc != 0, f"node{leader.index}, cut off, decided {isolated_need}: {doc}"
    assert "503" in err or "quorum" in err, err
    # ... while the majority side decided every contested NEED, one winner each.
    assert not errors, errors[:3]
    for need in contested:
        winners = {answers[(n.index, need)] for n in majority}
        assert len(winners) == 1, (need, winners)
    for n in nodes:
        assert n.api(f"/decisions/{isolated_need}") is None, f"node{n.index} knows it"
    # The cut-off leader stepped down (CheckQuorum): it does not go on claiming the bucket.
    wait_for(lambda: (leader.api(f"/raft/status?bucket={target}") or {"buckets": [{}]})
             ["buckets"][0].get("role") not in (None, "leader"), 30,
             f"node{leader.index}, cut off, to stop leading bucket {target}")
    status = majority[0].api(f"/raft/status?bucket={target}")["buckets"][0]
    assert status["leader"] not in (None, leader.node_id), status

    phase("healing")
    net.heal(leader)
    # Deciding in the old leader's bucket works again from it; its attempt from the
    # partition was never committed (the new leader's log replaced it).
    after = decide(leader, isolated_need, "after-heal", timeout_s=120)
    assert after["proposal_id"] == "after-heal", after
    for need in contested:
        decided[need] = {"proposal_id": answers[(majority[0].index, need)]}
    decided[isolated_need] = after

    phase(f"node{leader.index} decides again")
    # Every node, the healed one included, holds each decision, certified, the same.
    def converged() -> bool:
        for n in nodes:
            for need, d in decided.items():
                doc = n.api(f"/decisions/{need}")
                if doc is None or not doc["certified"]:
                    return False
                assert doc["proposal_id"] == d["proposal_id"], (n.index, need, doc, d)
        return True

    wait_for(converged, 120, "every node to hold every certified decision")
    phase("every node holds every certified decision")
    # The target bucket's replicas (the healed one included) applied the same log.
    in_bucket = sum(1 for need in decided if bucket(need) == target)

    def replicas_agree() -> bool:
        docs = [by_id[r].api(f"/raft/status?bucket={target}") for r in replicas]
        if None in docs:
            return False
        rows = [d["buckets"][0] for d in docs]
        return (len({(r["commit"], r["applied"]) for r in rows}) == 1
                and all(r["decisions"] == in_bucket for r in rows))

    wait_for(replicas_agree, 60, f"bucket {target}'s replicas to apply the same log")
    # And as an operator sees it, on every node: `swarm-node decision NEED`.
    for n in nodes:
        rc, doc, err = n.cli("decision", isolated_need)
        assert rc == 0 and doc["certified"] and doc["proposal_id"] == "after-heal", (doc, err)
    phase("done")
