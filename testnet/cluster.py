"""Real node processes on loopback: generate a testnet, start, watch, stop.

Owns the testnet layout, which scripts rely on: node i's home is `DIR/node{i}` (its log
`DIR/node{i}/node.log`, its stdout/stderr `DIR/node{i}/stdio.log`), the genesis is
`DIR/genesis.json`, and `DIR/testnet.json` records pids and API addresses. Nodes are
driven only through the CLI's own modules and the control API, like any user would.

A recorded pid is only a hint: the node may have been restarted by hand since (its pid
is then in its home's `api.json`), and the pid of a node that exited may belong to any
other program by now. So a process is taken for a member's node, and signalled, only
if it is a live `swarm-node start` of that member's home (`runs_node`, from /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.jobs.proofs import verifier_cids
from swarm.node.client import ApiError, Client
from swarm.node.home import (
    DEFAULT_HOME,
    HomeError,
    create_identity,
    load_identity,
    read_api,
    read_config,
    write_atomic,
    write_config,
)
from swarm.node.p2p import key_pair, peer_id_of
from swarm.policy_wasm.host import committed_cid
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.errors import ProtocolError

STATE_FILE = "testnet.json"


class TestnetError(Exception):
    """Something about the testnet needs the user's attention; the message says what."""


def free_port(preferred: int = 0) -> int:
    """A free loopback port: `preferred` if it is free, else any."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As trio's listeners do: a port whose old connections linger in TIME_WAIT
            # (a testnet just stopped) can be listened on again.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise TestnetError("no free port on 127.0.0.1")


def _previous_port(home: Path) -> int:
    """The TCP port a home listened on before, so that re-running `up` keeps the
    validators' addresses, hence the genesis and the swarm id."""
    try:
        listen = json.loads((home / "config.json").read_text()).get("listen", [])
        return int(str(listen[0]).split("/tcp/")[1].split("/")[0])
    except (OSError, ValueError, IndexError, KeyError, AttributeError):
        return 0


def node_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "swarm-node"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "swarm.cli.main"]


def _home_of(args: list[str], environ: dict[str, str], cwd: Path) -> Path:
    """The home a `swarm-node` command line runs on, as the CLI resolves it."""
    home: str | None = None
    for i, arg in enumerate(args):
        if arg == "--home" and i + 1 < len(args):
            home = args[i + 1]
        elif arg.startswith("--home="):
            home = arg.removeprefix("--home=")
    if home is None:
        home = environ.get("SWARM_HOME") or DEFAULT_HOME
    if home.startswith("~"):
        home = environ.get("HOME", "~") + home[1:]
    return cwd / home  # an absolute home stays as it is


def runs_node(pid: int, home: Path) -> bool:
    """Whether process `pid` is a live (not zombie) `swarm-node start` of `home`."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no /proc here: ask the node (identity checked)
        return _api_pid(home) == pid
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False  # exited, not yet reaped
        args = [a.decode(errors="replace")
                for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
        if not (any(Path(a).name == "swarm-node" or a == "swarm.cli.main" for a in args)
                and "start" in args):
            return False
        environ = dict(item.decode(errors="replace").partition("=")[::2]
                       for item in (proc / "environ").read_bytes().split(b"\0") if item)
        return _home_of(args, environ, (proc / "cwd").resolve()).resolve() == home.resolve()
    except OSError:  # gone meanwhile, or not ours to read
        return False


def _api_pid(home: Path) -> int | None:
    try:
        c = Client(home, timeout_s=5)
        try:
            return int(c.get("/status")["pid"])
        finally:
            c.close()
    except (HomeError, ApiError, KeyError, TypeError, ValueError):
        return None


@dataclass
class Member:
    index: int
    home: Path
    pid: int
    addr: str

    def alive(self) -> bool:
        """Whether the recorded process is still this member's node."""
        return runs_node(self.pid, self.home)

    def running_pids(self) -> list[int]:
        """The processes running this member's node now: the recorded one, and the one
        its home's api.json names (a node restarted by hand), if they still are."""
        pids = [self.pid]
        with contextlib.suppress(HomeError, KeyError, TypeError, ValueError):
            pids.append(int(read_api(self.home)["pid"]))
        return [pid for pid in dict.fromkeys(pids) if runs_node(pid, self.home)]


def load_state(directory: Path) -> list[Member]:
    path = directory / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise TestnetError(f"no testnet in {directory} (no {STATE_FILE}); start one with "
                           f"`swarm-testnet up --dir {directory}`") from None
    except json.JSONDecodeError:
        raise TestnetError(f"{path} is damaged; stop any nodes by hand and run "
                           f"`swarm-testnet up --dir {directory}` again") from None
    try:
        return [Member(m["index"], Path(m["home"]), m["pid"], m["addr"])
                for m in raw["nodes"]]
    except (KeyError, TypeError):
        raise TestnetError(f"{path} is damaged; stop any nodes by hand and run "
                           f"`swarm-testnet up --dir {directory}` again") from None


def save_state(directory: Path, members: list[Member]) -> None:
    doc = {"nodes": [{"index": m.index, "home": str(m.home), "pid": m.pid, "addr": m.addr}
                     for m in members]}
    write_atomic(directory / STATE_FILE, json.dumps(doc, indent=2).encode())


def testnet_roles(index: int) -> list[str]:
    """The built-in roles node `index` runs: every node verifies (every validator is in
    the genesis verifier pool, and a committee member that stays silent costs its task a
    reopen); all but node0 also plan and work, so node0 is a pure client."""
    return ["verifier"] if index == 0 else ["planner", "worker", "verifier"]


# Leases and heartbeats short enough that a dead worker's task moves on while you watch.
TESTNET_ROLE_OPTIONS = {"lease_ms": 30_000, "heartbeat_ms": 2_000}


def faulty_role_options(index: int, n: int, accounts: list[str]) -> dict[str, Any]:
    """`up --faulty`: the last node's worker commits made-up results and bids lowest,
    the one before it attests the last one's results valid unchecked (and rejects
    challenges of them), node0 audits every attested result and challenges wrong ones
    (docs/AGENTS.md, fault injection)."""
    options: dict[str, Any] = dict(TESTNET_ROLE_OPTIONS)
    if index == n - 1:
        options.update(fault_bp=10_000, fee="0.001", cpu_second_price="0.001")
    elif index == n - 2:
        options.update(collude_with=[accounts[n - 1]])
    elif index == 0:
        options.update(audit=True)
    return options


def prepare(directory: Path, n: int, hosts: list[str] | None = None,
            port: int = 4001, *, decide_unknown_needs: bool = False, roles: bool = False,
            params: Mapping[str, int] | None = None,
            faulty: bool = False) -> list[tuple[Path, str]]:
    """Keys, a genesis naming all nodes as validators, and each home's config.

    By default every node listens on its own free loopback port. With `hosts`, node i
    listens on `hosts[i]`:`port` instead (nodes in their own network namespaces, each
    with its own address, can all use the same port). `decide_unknown_needs` goes into
    each config (see `up`); with `roles`, each node runs `testnet_roles`, and with
    `faulty` (5 nodes or more) the faults of `faulty_role_options`. `params` override
    the testnet's genesis parameters (tests shorten windows with it)."""
    if hosts is not None and len(hosts) != n:
        raise TestnetError(f"{n} nodes need {n} hosts, not {len(hosts)}")
    if faulty and (n < 5 or not roles):
        raise TestnetError("a faulty testnet needs 5 nodes or more, with their roles")
    directory.mkdir(parents=True, exist_ok=True)
    homes = [directory / f"node{i}" for i in range(n)]
    identities = []
    for home in homes:
        try:
            identities.append(load_identity(home))
        except HomeError:
            identities.append(create_identity(home))
    plan = []
    for i, (home, ident) in enumerate(zip(homes, identities, strict=True)):
        peer_id = peer_id_of(key_pair(ident.seed).public_key).to_base58()
        if hosts is None:
            plan.append((home, f"/ip4/127.0.0.1/tcp/{free_port(_previous_port(home))}"
                               f"/p2p/{peer_id}"))
        else:
            plan.append((home, f"/ip4/{hosts[i]}/tcp/{port}/p2p/{peer_id}"))
    unit = genesis_mod.UNIT_PER_CREDIT
    gen = genesis_mod.new(
        name=f"testnet-{directory.resolve().name}",
        created_ms=0,  # a fixed genesis for a fixed set of keys: re-running `up` keeps it
        # Each validator's address is in genesis: Raft dials the replicas of its buckets
        # directly, whoever gossip happens to connect.
        validators=[{"account": ident.public_key, "org": f"org{i}", "asn": 64512 + i,
                     "region": f"region{i % 3}", "stake": 1000 * unit, "addrs": [addr]}
                    for i, (ident, (_, addr)) in enumerate(zip(identities, plan,
                                                               strict=True))],
        accounts=[{"account": ident.public_key, "balance": 10_000 * unit}
                  for ident in identities],
        # Windows in seconds, so a whole task lifecycle runs while you watch.
        params={"replicas": min(3, n), "unbonding_ms": 10_000, "challenge_window_ms": 10_000,
                "bid_window_ms": 3_000, "claim_window_ms": 15_000, "lease_grace_ms": 2_000,
                "heartbeat_interval_min_ms": 500, "attest_window_ms": 30_000,
                "outage_gap_ms": 10_000, "escrow_hold_factor": 1,
                "challenge_vote_window_ms": 30_000, "challenge_extend_ms": 10_000,
                # No reputation decay: the genesis is dated 0, and weeks of decay since
                # then would leave its validators no weight in a committee draw.
                "reputation_decay_weekly_bp": 0, **(params or {})},
    )
    # Pin the committed policy module, as `swarm-node genesis new` does: every node then
    # refuses to run any other.
    gen = genesis_mod.from_value({**gen.value, "policy_cid": str(committed_cid()),
                                  "proof_verifiers": verifier_cids()})
    old = directory / "genesis.json"
    if old.exists() and any((h / "store").exists() for h in homes):
        try:
            same = genesis_mod.from_json(old.read_text()).swarm_id == gen.swarm_id
        except (OSError, ProtocolError):
            same = False
        if not same:
            raise TestnetError(
                f"the testnet in {directory} was made with another genesis (by an older "
                f"version, or with other settings) and its nodes hold that swarm's data; "
                f"remove it (`rm -r {directory}`) or use another --dir")
    write_atomic(old, gen.to_json().encode())
    for i, (home, addr) in enumerate(plan):
        # Each node dials the first one and its predecessor: connected, not a star.
        boot = sorted({plan[0][1], plan[i - 1][1]} - {addr}) if i else []
        listen = addr.rsplit("/p2p/", 1)[0]
        cmd = [*node_cmd(), "init", "--home", str(home), "--genesis",
               str(directory / "genesis.json"), "--listen", listen, "--json"]
        for b in boot:
            cmd += ["--bootstrap", b]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise TestnetError(f"init of {home} failed: {result.stderr.strip()}")
        config = {**read_config(home), "decide_unknown_needs": decide_unknown_needs}
        config.pop("roles", None)
        config.pop("role_options", None)
        if roles:
            accounts = [ident.public_key.hex() for ident in identities]
            config.update(roles=testnet_roles(i),
                          role_options=faulty_role_options(i, n, accounts) if faulty
                          else TESTNET_ROLE_OPTIONS)
        write_config(home, config)
    return plan


def start_member(index: int, home: Path, addr: str,
                 prefix: list[str] | None = None) -> Member:
    """Start node `index` in the background. `prefix` runs it through another command
    that execs it in place, keeping the pid (e.g. `ip netns exec NS`)."""
    stdio = (home / "stdio.log").open("ab")
    proc = subprocess.Popen([*(prefix or []), *node_cmd(), "start", "--home", str(home)],
                            stdout=stdio,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    stdio.close()
    return Member(index, home, proc.pid, addr)


def status_of(member: Member) -> dict[str, Any] | None:
    try:
        return Client(member.home, timeout_s=5).get("/status")  # type: ignore[no-any-return]
    except (HomeError, ApiError):
        return None


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TestnetError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def up(directory: Path, n: int, progress: Callable[[str, int], None] | None = None,
       timeout_s: float = 90, *, decide_unknown_needs: bool = False,
       roles: bool = False, params: Mapping[str, int] | None = None,
       faulty: bool = False) -> list[Member]:
    """Prepare and start n nodes; `decide_unknown_needs` lets them decide made-up NEED
    ids (benchmarks that target buckets; node/decide_service.py); with `roles` they run
    their built-in agents (`testnet_roles`); `params` and `faulty` as for `prepare`."""
    try:
        running = [m for m in load_state(directory) if m.running_pids()]
    except TestnetError:
        running = []
    if running:
        raise TestnetError(f"{len(running)} nodes of a testnet in {directory} are still "
                           f"running; `swarm-testnet down --dir {directory}` first")
    for home in directory.glob("node*"):
        (home / "api.json").unlink(missing_ok=True)
    plan = prepare(directory, n, decide_unknown_needs=decide_unknown_needs, roles=roles,
                   params=params, faulty=faulty)
    members = [start_member(i, home, addr) for i, (home, addr) in enumerate(plan)]
    save_state(directory, members)
    for m in members:
        def ready(m: Member = m) -> bool:
            if not m.alive():
                raise TestnetError(f"node{m.index} exited; see {m.home / 'stdio.log'}")
            s = status_of(m)
            return s is not None and (n == 1 or s["peers"] >= 1)

        wait_until(ready, timeout_s, f"node{m.index} to start and connect")
        if progress:
            progress(f"node{m.index} up", m.index + 1)
    return members


def down(directory: Path, timeout_s: float = 15) -> list[tuple[Member, str]]:
    """SIGTERM every member's running node (see `Member.running_pids`), SIGKILL what is
    still that node after `timeout_s`. Returns each member, with the pid it ran as, and
    "stopped", "killed" or "not running"."""
    running = [(m, m.running_pids()) for m in load_state(directory)]
    for m, pids in running:
        for pid in pids:
            _signal(pid, m.home, signal.SIGTERM)
    results = []
    for m, pids in running:
        if not pids:
            results.append((m, "not running"))
            continue
        try:
            wait_until(lambda m=m, pids=pids: not any(runs_node(p, m.home) for p in pids),  # type: ignore[misc]
                       timeout_s, f"node{m.index} to stop")
            outcome = "stopped"
        except TestnetError:
            for pid in pids:
                _signal(pid, m.home, signal.SIGKILL)
            outcome = "killed"
        results.append((Member(m.index, m.home, pids[-1], m.addr), outcome))
    return results


def _signal(pid: int, home: Path, sig: signal.Signals) -> None:
    """Signal `pid` if it is (still) the node of `home`; it may exit in between."""
    if runs_node(pid, home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def smoke(members: list[Member], needs_per_node: int = 2, timeout_s: float = 60) -> dict[str, Any]:
    """Post NEEDs on every node, then wait until every node has all of them and the same
    plan root. Returns what happened, for printing."""
    posted: list[tuple[int, str]] = []
    t0 = time.monotonic()
    for m in members:
        client = Client(m.home)
        for k in range(needs_per_node):
            doc = client.post("/plan/tasks", {
                "class": ["simple", "complex", "critical"][k % 3],
                "budget": 1_000_000 * (k + 1), "title": f"smoke test {k} from node{m.index}"})
            posted.append((m.index, doc["need_id"]))
    expected = {need for _, need in posted}

    def converged() -> bool:
        roots = set()
        for m in members:
            s = status_of(m)
            if s is None or s["tasks"] < len(expected):
                return False
            roots.add(s["plan_root"])
        return len(roots) == 1

    wait_until(converged, timeout_s, "every node to hold every NEED and agree on the root")
    elapsed = time.monotonic() - t0
    for m in members:
        tasks = Client(m.home).get(f"/plan/threads/{posted[0][1]}")["tasks"]
        if not tasks or not tasks[0]["known"]:
            raise TestnetError(f"node{m.index} does not show {posted[0][1]} in its plan")
    decided = _compete(members, sorted(expected), timeout_s)

    def certified_everywhere() -> bool:
        for m in members:
            got = {d["need_id"]: d["proposal_id"]
                   for d in Client(m.home).get("/decisions")["decisions"]}
            if any(got.get(n) != p for n, p in decided.items()):
                return False
        return converged()

    wait_until(certified_everywhere, timeout_s,
               "every node to hold every certified DECIDE and agree on the root")
    statuses = [status_of(m) or {} for m in members]
    return {"posted": posted, "seconds": round(elapsed, 2), "decided": decided,
            "decide_seconds": round(time.monotonic() - t0 - elapsed, 2),
            "statuses": statuses}


def _compete(members: list[Member], needs: list[str], timeout_s: float) -> dict[str, str]:
    """Every node bids to DECIDE every NEED at once; exactly one bid must win each, and
    every node must be told the same winner."""
    answers: dict[tuple[int, str], str] = {}
    errors: list[str] = []

    def bid(m: Member) -> None:
        c = Client(m.home, timeout_s=timeout_s)
        try:
            for need in needs:
                d = c.post("/decide", {"need_id": need, "proposal_id": f"bid-from-node{m.index}",
                                       "timeout_s": timeout_s / 2})
                answers[(m.index, need)] = d["proposal_id"]
        except ApiError as exc:
            errors.append(f"node{m.index}: {exc}")
        finally:
            c.close()

    threads = [threading.Thread(target=bid, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise TestnetError("DECIDE failed: " + "; ".join(errors))
    decided: dict[str, str] = {}
    for need in needs:
        winners = {answers[(m.index, need)] for m in members}
        if len(winners) != 1:
            raise TestnetError(f"NEED {need} was decided differently: {sorted(winners)}")
        decided[need] = winners.pop()
    return decided
