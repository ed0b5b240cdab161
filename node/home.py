"""A node's home directory: where its key, config and local counters live on disk.

Owns the layout of ``--home`` (default ``$SWARM_HOME`` or ``~/.can-swarm``) and safe
writes to it (temporary file, fsync, rename, so a crash leaves the old or the new file,
never half of one). The key file holds the Ed25519 seed in hex, readable by its owner
only; a key with looser permissions is refused rather than silently used. The control
API's token (``api.token``) follows the same rule: owner-only, and at least
TOKEN_CHARS_MIN characters; a missing or empty one is replaced by a new random token
when the node starts. `NodeSettings` is what a node starts with: its home's config,
overridden by command-line flags.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.envelope import Identity
from swarm.protocol.genesis import Genesis

KEY_FILE = "node.key"
CONFIG_FILE = "config.json"
LAMPORT_FILE = "lamport"
DEFAULT_HOME = "~/.can-swarm"


class HomeError(Exception):
    """A problem with the home directory that the user must fix; the message says how."""


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    raw = home if home is not None else os.environ.get("SWARM_HOME") or DEFAULT_HOME
    return Path(raw).expanduser()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _refuse_loose(path: Path, st: os.stat_result) -> None:
    """A secret others may read is refused, not used: whoever read it is the owner too."""
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(f"{path} is readable by others (mode {oct(st.st_mode & 0o777)}); "
                        f"run `chmod 600 {path}`")


def create_identity(home: Path, *, force: bool = False) -> Identity:
    key_path = home / KEY_FILE
    if key_path.exists() and not force:
        raise HomeError(f"{key_path} already exists; pass --force to replace it (the old "
                        "identity and its account are then lost)")
    identity = Identity(os.urandom(32))
    write_atomic(key_path, identity.seed.hex().encode() + b"\n", mode=0o600)
    os.chmod(key_path, 0o600)
    return identity


def load_identity(home: Path) -> Identity:
    key_path = home / KEY_FILE
    try:
        st = key_path.stat()
    except FileNotFoundError:
        raise HomeError(f"no key at {key_path}; run `swarm-node keys new --home {home}`") from None
    _refuse_loose(key_path, st)
    text = key_path.read_text().strip()
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise HomeError(f"{key_path} is not a hex Ed25519 seed") from None
    if len(seed) != 32:
        raise HomeError(f"{key_path} holds {len(seed)} bytes, an Ed25519 seed is 32")
    return Identity(seed)


def read_config(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HomeError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HomeError(f"{path} must hold a JSON object")
    return value


def next_lamport(home: Path, at_least: int = 0) -> int:
    """The offline CLI's Lamport clock: read, advance, persist, return (never reverses)."""
    path = home / LAMPORT_FILE
    current = 0
    if path.exists():
        try:
            current = int(path.read_text().strip() or 0)
        except ValueError:
            raise HomeError(f"{path} does not hold an integer") from None
    value = max(current, at_least - 1) + 1
    write_atomic(path, f"{value}\n".encode())
    return value


# --- node configuration and the running node's control-API handle ------------------------

GENESIS_FILE = "genesis.json"
API_FILE = "api.json"
TOKEN_FILE = "api.token"
STORE_DIR = "store"
LOG_FILE = "node.log"

DEFAULT_CONFIG: dict[str, Any] = {
    "listen": ["/ip4/127.0.0.1/tcp/0"],
    "bootstrap": [],
    "api": "127.0.0.1:0",
    "mdns": False,
}


def write_config(home: Path, config: dict[str, Any]) -> None:
    write_atomic(home / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n")
                 .encode())


TOKEN_CHARS_MIN = 16  # a new token has 48 (24 random bytes in hex)
# What the identity proof signs before the client's nonce: a MAC made for this purpose
# is good for nothing else.
IDENTITY_DOMAIN = b"can-swarm/control-api/identity/v1\x00"


def read_token(home: Path) -> str:
    """The control API's bearer token; refused if others may read it, or if it is too
    short to be a secret."""
    path = home / TOKEN_FILE
    try:
        _refuse_loose(path, path.stat())
        token = path.read_text().strip()
    except FileNotFoundError:
        raise HomeError(f"no API token at {path}; is the node initialised "
                        f"(`swarm-node init --home {home}`)?") from None
    if len(token) < TOKEN_CHARS_MIN:
        raise HomeError(f"{path} holds a token of {len(token)} characters, fewer than "
                        f"{TOKEN_CHARS_MIN}; delete it and the node makes a new one when "
                        "it starts")
    return token


def ensure_token(home: Path) -> str:
    """The token, made now (random, mode 600) if the file is missing or empty: an empty
    token would let anyone in."""
    path = home / TOKEN_FILE
    try:
        empty = not path.read_text().strip()
    except FileNotFoundError:
        empty = True
    if empty:
        write_atomic(path, os.urandom(24).hex().encode() + b"\n", mode=0o600)
    return read_token(home)


def identity_proof(token: str, nonce: bytes, peer_id: str) -> str:
    """What the node answers to a client's identity challenge (`GET /identity`): only a
    program holding the token can make it, so a client checks it before it sends the
    token to whatever listens on the recorded port."""
    message = IDENTITY_DOMAIN + nonce + peer_id.encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def api_is_loopback(bind: str) -> bool:
    """Whether the control API's host:port (or [v6]:port) is a loopback address, which
    only this machine reaches."""
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def read_api(home: Path) -> dict[str, Any]:
    """The running node's API address, written by `swarm-node start`."""
    path = home / API_FILE
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise HomeError(f"no running node found in {home} (no {API_FILE}); start one with "
                        f"`swarm-node start --home {home}`") from None
    except json.JSONDecodeError:
        raise HomeError(f"{path} is damaged; restart the node") from None
    if not isinstance(value, dict) or "url" not in value:
        raise HomeError(f"{path} is damaged; restart the node")
    return value


@dataclass
class NodeSettings:
    home: Path
    listen: list[str]
    bootstrap: list[str]
    api: str  # host:port
    ipfs_api: str | None = None  # the user's IPFS daemon for evidence (node/evidence_store.py)
    mdns: bool = False  # find and dial nodes of the same swarm on the LAN (node/mdns.py)
    # The control API may listen on an address other machines reach (`--api-public`).
    api_public: bool = False
    # Decide ids that are no NEED known here (benchmarks; node/decide_service.py).
    decide_unknown_needs: bool = False
    # The built-in agents to run (`roles`, `role_options`; swarm/agent/roles.py).
    roles: Any = None  # a RoleConfig

    @classmethod
    def from_home(cls, home: Path, *, listen: list[str] | None = None,
                  bootstrap: list[str] | None = None, api: str | None = None,
                  mdns: bool | None = None, api_public: bool | None = None,
                  roles: str | None = None) -> NodeSettings:
        from swarm.agent.roles import RoleConfig

        config = read_config(home)
        try:
            role_config = RoleConfig.from_config(
                roles if roles is not None else config.get("roles", []),
                config.get("role_options"))
        except (ValueError, TypeError) as exc:
            raise HomeError(f"{'--roles' if roles is not None else home / CONFIG_FILE}: "
                            f"{exc}") from None
        settings = cls(
            home=home,
            listen=listen or list(config.get("listen", ["/ip4/127.0.0.1/tcp/0"])),
            bootstrap=(bootstrap if bootstrap is not None
                       else list(config.get("bootstrap", []))),
            api=api or str(config.get("api", "127.0.0.1:0")),
            ipfs_api=config.get("ipfs_api") or None,
            mdns=bool(config.get("mdns", False)) if mdns is None else mdns,
            api_public=(config.get("api_public") is True) if api_public is None
            else api_public,
            decide_unknown_needs=config.get("decide_unknown_needs") is True,
            roles=role_config,
        )
        if not settings.api_public and not api_is_loopback(settings.api):
            raise HomeError(f"the control API would listen on {settings.api}, which other "
                            "machines may reach; pass --api-public (or set \"api_public\": "
                            f"true in {home / 'config.json'}) if that is meant, or use "
                            "127.0.0.1:PORT")
        return settings



def load_genesis(home: Path) -> Genesis:
    path = home / GENESIS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HomeError(f"no genesis at {path}; run `swarm-node init --home {home} "
                        "--genesis FILE`") from None
    return genesis_mod.from_json(text)
