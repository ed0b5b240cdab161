"""Evidence kept in the user's IPFS daemon (`--ipfs-api MULTIADDR`), via ipfshttpclient.

Owns talking to a daemon's HTTP RPC API (`/api/v0`) for evidence: the operations of the
embedded Blockstore (import and pin, checked read, pin, unpin, list, gc), so the control
API, the CLI and bitswap work the same with either store.

**Which daemons.** ipfshttpclient 0.7.0's `connect()` refuses any daemon whose version is
outside 0.4.23-0.8 (`VersionMismatch`), and every Kubo since 2021 is newer; so the client
is built with `Client(addr)`, which skips that check, and the daemon's version is read
and reported instead. Only calls whose shape has not changed are used: `version`,
`block/put` (`format`, `mhtype`, `version`), `block/get`, `block/stat`, `pin/add`
(`recursive`), `pin/rm`, `pin/ls` (`type`; all pins, or one CID's), `repo/gc`,
`repo/stat`, each with the daemon-side `timeout` option.
Tested against js-ipfs 0.66.1 (ipfs-core 0.18.1, which serves the same RPC); Kubo serves
these calls too, but no Kubo daemon installs from the package registries here, so it is
not tested (docs/EVIDENCE.md).

**Data in.** Our own importer cuts and hashes the file (CIDs identical to Kubo's `ipfs
add`, whatever the daemon's own `add` defaults are: js-ipfs's differ from Kubo's in
places), each block goes in with `block/put` under its codec, CID version and sha2-256,
and the daemon's answer must name the same CID; the root is then pinned recursively.
A one-block dag-cbor object (a decision's explanation memo) goes in the same way under
codec dag-cbor and is pinned directly (`recursive=false`): its CBOR links name blocks
that are not part of it, which a recursive pin would make the daemon search for.

**Data out.** `block/get`, block by block, through our UnixFS reader: every block's hash
and sizes are checked, so a daemon that returns wrong bytes yields an error, not a file.

**Timeouts.** Every call carries the daemon-side `timeout` (for a block it lacks, a
daemon searches its network until then) and a client-side read timeout a few seconds
longer, so nothing waits forever. Calls are blocking: callers on the event loop run them
in a worker thread (`blocking = True`; see node/evidence_api.py).

**Kinds.** A daemon knows nothing of our object kinds and their limits, so the kind,
size and block count of each pin made through this node are kept in HOME/ipfs-pins.json;
`pins()` lists those the daemon still holds. Pins the user made otherwise are theirs and
are not listed or touched (but `gc` is the daemon's: it collects whatever nobody pins).
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ipfshttpclient
from ipfshttpclient import exceptions as ipfs_errors

from swarm.protocol.cid import CODEC_DAG_CBOR, CODEC_DAG_PB, CODEC_RAW, Cid
from swarm.protocol.errors import DecodeError
from swarm.protocol.unixfs import (
    Block,
    BlockMissing,
    Importer,
    TooLarge,
    block_links,
    copy_dag,
    file_size,
    first_missing,
    read_file,
)

from .blockstore import LIMIT_PARAMS, BlockstoreError, GcResult, Kind, Pin
from .home import write_atomic

PINS_FILE = "ipfs-pins.json"
# A block the daemon should have (ours, or one being read): how long it may look.
READ_TIMEOUT_S = 30.0
# A lookup for bitswap or `missing()`: a block the daemon lacks is answered "no" fast.
LOOKUP_TIMEOUT_S = 2.0
# `pin`: the daemon may fetch the whole object from its own network first.
PIN_TIMEOUT_S = 600.0
# Client-side margin over the daemon-side timeout, and the connect timeout.
MARGIN_S = 5.0
CONNECT_S = 5.0

# urllib3 2.x warns on every request about an argument ipfshttpclient 0.7 still passes.
warnings.filterwarnings("ignore", message="The 'strict' parameter", category=FutureWarning)


class IpfsApiError(BlockstoreError):
    """The daemon cannot be reached, or answered something we cannot use."""


# block/put's `format` for each codec we store, and the pins that are a root's own
# (not "indirect": a block under someone else's recursive pin).
_CODEC_NAMES = {CODEC_DAG_PB: "dag-pb", CODEC_RAW: "raw", CODEC_DAG_CBOR: "dag-cbor"}
_OWN_PIN_TYPES = ("recursive", "direct")


def _opts(timeout_s: float, **extra: Any) -> dict[str, Any]:
    return {"timeout": f"{int(timeout_s * 1000)}ms", **extra}


class IpfsApiStore:
    blocking = True  # every call is network I/O: keep it off the event loop

    def __init__(self, addr: str, params: Mapping[str, int], home: Path) -> None:
        self.addr = addr
        # Per store, so tests can shorten the wait for blocks that exist nowhere.
        self.read_timeout_s = READ_TIMEOUT_S
        self.lookup_timeout_s = LOOKUP_TIMEOUT_S
        self.pin_timeout_s = PIN_TIMEOUT_S
        self.limits = {kind: int(params[name]) for kind, name in LIMIT_PARAMS.items()}
        self._pins_path = home / PINS_FILE
        try:
            # Not ipfshttpclient.connect(): it refuses every daemon newer than 0.8.
            self._client = ipfshttpclient.Client(addr, timeout=(CONNECT_S, READ_TIMEOUT_S))
        except ipfs_errors.AddressError as exc:
            raise IpfsApiError(f"--ipfs-api {addr!r} is not a daemon API multiaddr such "
                               f"as /ip4/127.0.0.1/tcp/5001 ({exc})") from None
        version = self._call(lambda: self._client.version(), f"reach the daemon at {addr}")
        self.daemon_version = str(version.get("Version", "?"))

    def _call(self, fn: Callable[[], Any], what: str, *, answers: bool = False) -> Any:
        """Run one API call; any failure is an IpfsApiError, except that with `answers`
        the daemon's own error answers (ErrorResponse: "not found", "timed out", "not
        pinned") are raised for the caller to read."""
        try:
            return fn()
        except ipfs_errors.ErrorResponse as exc:
            if answers:
                raise
            raise IpfsApiError(f"cannot {what} (IPFS daemon at {self.addr}): {exc}") from None
        except ipfs_errors.Error as exc:
            raise IpfsApiError(f"cannot {what} (IPFS daemon at {self.addr}): {exc}") from None

    # -- blocks ---------------------------------------------------------------------

    def get(self, cid: Cid, timeout_s: float | None = None) -> bytes | None:
        """The block, or None if the daemon does not come up with it within timeout_s
        (default: the lookup timeout)."""
        if timeout_s is None:
            timeout_s = self.lookup_timeout_s
        try:
            data = self._call(lambda: self._client.block.get(
                str(cid), opts=_opts(timeout_s), timeout=timeout_s + MARGIN_S),
                f"get block {cid}", answers=True)
        except ipfs_errors.ErrorResponse:
            return None
        return bytes(data)

    def has(self, cid: Cid) -> bool:
        try:
            self._call(lambda: self._client.block.stat(
                str(cid), opts=_opts(self.lookup_timeout_s),
                timeout=self.lookup_timeout_s + MARGIN_S),
                f"look up block {cid}", answers=True)
        except ipfs_errors.ErrorResponse:
            return False
        return True

    def _put(self, block: Block) -> None:
        codec = _CODEC_NAMES.get(block.cid.codec)
        if codec is None:
            raise IpfsApiError(f"block {block.cid}: only dag-pb, raw and dag-cbor blocks "
                               "are stored")
        opts = {"format": codec, "mhtype": "sha2-256", "version": block.cid.version}
        answer = self._call(lambda: self._client.block.put(io.BytesIO(block.data),
                                                           opts=opts), f"put block {block.cid}")
        try:
            named = Cid.parse(str(answer["Key"]))
        except (KeyError, TypeError, DecodeError):
            raise IpfsApiError(f"the daemon answered block/put with {answer!r}") from None
        if named != block.cid:
            raise IpfsApiError(f"the daemon stored block {block.cid} as {named}: it does "
                               "not name blocks as Kubo does; not using it")

    # -- objects --------------------------------------------------------------------

    def begin_import(self, kind: Kind = Kind.EVIDENCE, cid_version: int = 0) -> ApiImport:
        return ApiImport(self, kind, cid_version)

    def read(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Iterator[bytes]:
        """The file bytes of `root`, every block checked (BlockMissing if one is absent)."""
        return read_file(root, lambda cid: self.get(cid, self.read_timeout_s), self.limits[kind])

    def size_of(self, root: Cid) -> int | None:
        block = self.get(root)
        return file_size(root, block) if block is not None else None

    def missing(self, root: Cid) -> Cid | None:
        """The first block of `root`'s DAG the daemon does not have at hand, or None."""
        return first_missing(root, self.has, self.get)

    def put_dag(self, root: Cid, kind: Kind, get_block: Callable[[Cid], bytes | None]) -> Pin:
        """Copy the DAG under `root` from elsewhere (the embedded store, after a bitswap
        fetch) into the daemon, block by block, and pin it there."""
        copy_dag(root, get_block, lambda cid, data: self._put(Block(cid, data)))
        return self.pin(root, kind)

    # -- pins -----------------------------------------------------------------------

    def pin(self, root: Cid, kind: Kind = Kind.EVIDENCE) -> Pin:
        """Pin `root` in the daemon (which may fetch it from its network first), then
        read it back through the checking reader before recording it."""
        root_block = self.get(root, self.pin_timeout_s)
        if root_block is None:
            raise BlockMissing(root)
        declared = file_size(root, root_block)
        if declared > self.limits[kind]:
            raise TooLarge("size", f"{root} is {declared} bytes, limit {self.limits[kind]}")
        # A dag-cbor object is its one block: pinned directly, its CBOR links not followed.
        recursive = root.codec != CODEC_DAG_CBOR
        try:
            self._call(lambda: self._client.pin.add(str(root), recursive=recursive,
                                                    opts=_opts(self.pin_timeout_s),
                                                    timeout=self.pin_timeout_s + MARGIN_S),
                       f"pin {root}", answers=True)
        except ipfs_errors.ErrorResponse as exc:
            missing = self.missing(root)
            if missing is not None:
                raise BlockMissing(missing) from None
            raise IpfsApiError(f"the daemon would not pin {root}: {exc}") from None
        size = sum(len(piece) for piece in self.read(root, kind))
        result = Pin(root, kind, size, self._count_blocks(root))
        records = self._records()
        records[str(root)] = {"kind": kind.value, "size": size, "blocks": result.blocks}
        self._save(records)
        return result

    def _count_blocks(self, root: Cid) -> int:
        seen: set[Cid] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            if cid.codec == CODEC_DAG_PB:  # raw and dag-cbor blocks link to nothing here
                data = self.get(cid, self.read_timeout_s)
                if data is None:
                    raise BlockMissing(cid)
                stack.extend(block_links(cid, data))
        return len(seen)

    def unpin(self, root: Cid) -> bool:
        records = self._records()
        try:
            self._call(lambda: self._client.pin.rm(str(root)), f"unpin {root}", answers=True)
        except ipfs_errors.ErrorResponse:
            if records.pop(str(root), None) is not None:
                self._save(records)
            return False
        if records.pop(str(root), None) is not None:
            self._save(records)
        return True

    def is_pinned(self, root: Cid) -> bool:
        """Whether the daemon pins `root` itself (recursively or directly), asking about
        that one CID."""
        try:
            answer = self._call(lambda: self._client.pin.ls(
                str(root), type="all", opts=_opts(self.lookup_timeout_s),
                timeout=self.lookup_timeout_s + MARGIN_S),
                f"look up the pin of {root}", answers=True)
        except ipfs_errors.ErrorResponse:
            return False  # "not pinned"
        keys = answer.get("Keys", {}) if hasattr(answer, "get") else {}
        return any(Cid.parse(k) == root and hasattr(v, "get")
                   and v.get("Type") in _OWN_PIN_TYPES for k, v in keys.items())

    def pins(self) -> list[Pin]:
        held = self._daemon_pins()
        out = []
        for text, record in sorted(self._records().items()):
            if text in held:
                out.append(Pin(Cid.parse(text), Kind(record["kind"]), int(record["size"]),
                               int(record["blocks"])))
        return out

    def _daemon_pins(self) -> set[str]:
        """The roots the daemon pins recursively or directly (dag-cbor objects)."""
        out: set[str] = set()
        for kind in _OWN_PIN_TYPES:
            answer = self._call(functools.partial(self._client.pin.ls, type=kind),
                                "list pins")
            keys = answer.get("Keys", {}) if hasattr(answer, "get") else {}
            out.update(str(Cid.parse(k)) for k in keys)
        return out

    def gc(self) -> GcResult:
        """The daemon's own garbage collection (all its unpinned blocks, not only ours)."""
        before = self._call(lambda: self._client.repo.stat(), "read the repo size")
        removed = self._call(lambda: list(self._client.repo.gc() or ()), "collect garbage")
        after = self._call(lambda: self._client.repo.stat(), "read the repo size")
        return GcResult(len(removed), max(0, int(before["RepoSize"]) - int(after["RepoSize"])),
                        int(after["NumObjects"]))

    def _records(self) -> dict[str, Any]:
        try:
            value = json.loads(self._pins_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise IpfsApiError(f"{self._pins_path} is damaged ({exc}); remove it (pins in the "
                               "daemon stay, their kinds are forgotten)") from None
        return value if isinstance(value, dict) else {}

    def _save(self, records: dict[str, Any]) -> None:
        write_atomic(self._pins_path, json.dumps(records, indent=1, sort_keys=True).encode())

    def close(self) -> None:
        self._client.close()


class ApiImport:
    """One file being added to the daemon; see IpfsApiStore.begin_import()."""

    def __init__(self, store: IpfsApiStore, kind: Kind, cid_version: int) -> None:
        self._store = store
        self.kind = kind
        self.limit = store.limits[kind]
        self._importer = Importer(cid_version)
        self._written: set[Cid] = set()

    @property
    def size(self) -> int:
        return self._importer.size

    def _put_all(self, blocks: list[Block]) -> None:
        for block in blocks:
            if block.cid not in self._written:
                self._store._put(block)
                self._written.add(block.cid)

    def feed(self, data: bytes) -> None:
        if self._importer.size + len(data) > self.limit:
            raise TooLarge("size", f"{self.kind.value} is more than {self.limit} bytes")
        self._put_all(self._importer.feed(data))

    def finish(self, *, pin: bool = True) -> Pin:
        self._put_all(self._importer.finish())
        root = self._importer.root
        result = Pin(root, self.kind, self._importer.size, len(self._written))
        if pin:
            store = self._store
            store._call(lambda: store._client.pin.add(
                str(root), opts=_opts(store.read_timeout_s),
                timeout=store.read_timeout_s + MARGIN_S),
                f"pin {root}")
            records = store._records()
            records[str(root)] = {"kind": self.kind.value, "size": result.size,
                                  "blocks": result.blocks}
            store._save(records)
        return result

    def close(self) -> None:
        """Nothing to release: blocks not pinned are the daemon's gc's to take."""
