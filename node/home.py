"""A node's home directory: where its key, config and local counters live on disk.

Owns the layout of ``--home`` (default ``$SWARM_HOME`` or ``~/.can-swarm``) and safe
writes to it (temporary file, fsync, rename, so a crash leaves the old or the new file,
never half of one). The key file holds the Ed25519 seed in hex, readable by its owner
only; a key with looser permissions is refused rather than silently used.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from swarm.protocol.envelope import Identity

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
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomeError(f"{key_path} is readable by others (mode {oct(st.st_mode & 0o777)}); "
                        f"run `chmod 600 {key_path}`")
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


def read_token(home: Path) -> str:
    path = home / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise HomeError(f"no API token at {path}; is the node initialised "
                        f"(`swarm-node init --home {home}`)?") from None


def ensure_token(home: Path) -> str:
    path = home / TOKEN_FILE
    if path.exists():
        return read_token(home)
    token = os.urandom(24).hex()
    write_atomic(path, token.encode() + b"\n", mode=0o600)
    return token


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
