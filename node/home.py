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
