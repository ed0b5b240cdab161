"""Files as IPFS UnixFS DAGs, block for block what Kubo's `ipfs add` builds.

Owns: cutting a byte stream into blocks and CIDs exactly as Kubo does (the importer),
and walking a DAG back into bytes while checking every block (the reader). It knows
nothing about where blocks are kept or fetched from: the importer yields blocks, the
reader asks a caller-supplied getter for them.

Theory of operation (Kubo's defaults, go-unixfs `importer/balanced`):

* The input is cut into fixed 262144-byte chunks (the last one shorter); an empty input
  has no chunks.
* Each chunk is a leaf. CIDv0 (the default): a dag-pb node whose Data is a UnixFS
  message {Type: File, Data: chunk, filesize: len(chunk)}, CIDv0. `--cid-version 1`:
  the chunk itself as a raw block (codec raw), CIDv1. The empty input is one leaf with
  no data.
* Leaves are gathered under dag-pb nodes of at most 174 links (UnixFS {Type: File,
  filesize, blocksizes: each child's file bytes}; each link {Hash, Name: "", Tsize:
  the child's block plus everything under it}). The tree is "balanced": a node of depth
  d is filled completely (174^d leaves) before its right sibling is started, a new root
  is added above only when the old one is full and more data follows, and a partly
  filled last subtree still has the full depth (a chain of one-link nodes if need be).
  One chunk alone is the root itself.
* Encoding is written by hand, because the bytes must be exactly Kubo's (PBNode: Links
  before Data; PBLink: Hash, Name, Tsize; UnixFS: Type, Data, filesize, blocksizes) and
  the subset is small; the `protobuf` runtime would add a generated module and a
  dependency to this pure layer for four fields, and would still leave field order and
  the empty Name to chance. testdata/unixfs_vectors.json checks the result against real
  Kubo.

The importer is push-style (`Importer.feed()` / `finish()` return the blocks now
complete), so memory stays bounded: one partial chunk plus at most 174 pending links per
tree level. Blocks come out children first; the root is the last block. The reader
(`read_file`) walks depth first with an explicit stack and checks each block's hash
against its CID, the UnixFS structure, and that the sizes each parent declares are the
sizes its children hold, so a peer cannot make it return bytes other than the file the
root CID names.

Besides UnixFS files the reader takes one other object: a single dag-cbor block (codec
`CODEC_DAG_CBOR`, such as a decision's explanation memo) is a one-block object whose
bytes are the block itself, as a raw leaf's are. Its CBOR links (tag 42) are not part
of the object and are never followed: `block_links` gives none, and pinning, gc and
fetching take the one block. The block is checked against its CID and its size limit
like any other, not decoded. It is an object only as a root: a file's dag-pb node that
links to a dag-cbor block is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from . import protobuf
from .cid import CODEC_DAG_CBOR, CODEC_DAG_PB, CODEC_RAW, Cid, block_cid
from .errors import DecodeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from .logformat import uvarint

# Kubo's `ipfs add` defaults (`size-262144` chunker, helpers.DefaultLinksPerBlock).
CHUNK_BYTES = 262_144
LINKS_PER_NODE_MAX = 174
# Largest block the reader accepts: bitswap's hard limit in Kubo (2 MiB); our own
# blocks are at most a chunk plus a few bytes of framing.
BLOCK_BYTES_MAX = 2 * 1024 * 1024
# Deepest tree the reader follows: 174^8 chunks is far beyond any object limit, so a
# deeper DAG is malformed (or an attempt to exhaust the reader).
DEPTH_MAX = 8

UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
_UNIXFS_TYPE_NAMES = {0: "raw", 1: "directory", 2: "file", 3: "metadata", 4: "symlink",
                      5: "hamt-shard"}


class UnixfsError(RemoteProtocolError):
    """A block is not well-formed dag-pb/UnixFS, or not a file, or its sizes disagree."""

    code = "unixfs"


class BlockMismatch(RemoteProtocolError):
    """A block's bytes do not hash to the CID it was asked for."""

    code = "block_mismatch"


class BlockMissing(ProtocolError):
    """A block of the DAG is not available from the getter (no one's fault yet)."""

    code = "block_missing"

    def __init__(self, cid: Cid) -> None:
        super().__init__("cid", f"block {cid} is not available")
        self.cid = cid


class TooLarge(RemoteProtocolError):
    """The object is larger than the limit it is read or stored under."""

    code = "too_large"


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a DAG: its CID and its bytes."""

    cid: Cid
    data: bytes


# -- protobuf encoding (the few shapes dag-pb/UnixFS need) ---------------------------


def _leaf_node(chunk: bytes | memoryview) -> bytes:
    """dag-pb leaf: PBNode{Data: UnixFS{Type: File, Data: chunk, filesize}}."""
    n = len(chunk)
    if not n:
        return b"\x0a\x04\x08\x02\x18\x00"  # Kubo leaves Data out when there is none.
    size = uvarint(n)
    # UnixFS = 08 02 | 12 len chunk | 18 len; one join, so the chunk is copied once.
    unixfs_len = 3 + 2 * len(size) + n + 1
    return b"".join((b"\x0a", uvarint(unixfs_len), b"\x08\x02\x12", size, chunk,
                     b"\x18", size))


def _parent_node(links: list[tuple[bytes, int, int]]) -> bytes:
    """dag-pb interior node over (cid bytes, tsize, filesize) links, Links before Data."""
    parts = []
    filesize = 0
    blocksizes = []
    for cid_raw, tsize, child_filesize in links:
        link = b"\x0a" + uvarint(len(cid_raw)) + cid_raw + b"\x12\x00\x18" + uvarint(tsize)
        parts.append(b"\x12" + uvarint(len(link)) + link)
        filesize += child_filesize
        blocksizes.append(b"\x20" + uvarint(child_filesize))
    unixfs = b"\x08\x02\x18" + uvarint(filesize) + b"".join(blocksizes)
    parts.append(b"\x0a" + uvarint(len(unixfs)) + unixfs)
    return b"".join(parts)


# -- the importer -------------------------------------------------------------------


class Importer:
    """Build a file's DAG from bytes pushed in any pieces; see the module docstring.

    `feed(data)` and `finish()` return the blocks completed by that call, in an order
    where every block comes after the blocks it links to; the last block out is the
    root (when the file is exactly one chunk, `finish()` may return nothing because the
    leaf already came out of `feed()`), also available as `root` afterwards.
    """

    def __init__(self, cid_version: int = 0, chunk_bytes: int = CHUNK_BYTES,
                 links_max: int = LINKS_PER_NODE_MAX) -> None:
        # chunk_bytes and links_max other than Kubo's exist so tests can build deep
        # trees from small inputs (testdata vectors "small-trees").
        if cid_version not in (0, 1):
            raise LocalProtocolError("cid_version", f"must be 0 or 1 (got {cid_version!r})")
        if not 1 <= chunk_bytes <= CHUNK_BYTES or not 2 <= links_max <= LINKS_PER_NODE_MAX:
            raise LocalProtocolError("chunk_bytes", f"chunk 1..{CHUNK_BYTES} and links "
                                     f"2..{LINKS_PER_NODE_MAX} (got {chunk_bytes}, {links_max})")
        self.cid_version = cid_version
        self.chunk_bytes = chunk_bytes
        self.links_max = links_max
        self._buffer = bytearray()
        # levels[i]: links (cid bytes, tsize, filesize) to finished nodes of depth i,
        # not yet gathered under a parent. Each list holds at most LINKS_PER_NODE_MAX.
        self._levels: list[list[tuple[bytes, int, int]]] = [[]]
        self._size = 0
        self._root: Cid | None = None

    @property
    def size(self) -> int:
        """File bytes fed so far."""
        return self._size

    @property
    def root(self) -> Cid:
        if self._root is None:
            raise LocalProtocolError("root", "the importer is not finished")
        return self._root

    def feed(self, data: bytes) -> list[Block]:
        if self._root is not None:
            raise LocalProtocolError("feed", "the importer is already finished")
        self._size += len(data)
        chunk = self.chunk_bytes
        out: list[Block] = []
        if not self._buffer and len(data) >= chunk:
            # Whole chunks straight from the caller's buffer, without copying it in.
            view = memoryview(data)
            whole = len(data) - len(data) % chunk
            for i in range(0, whole, chunk):
                self._add_chunk(view[i : i + chunk], out)
            self._buffer += view[whole:]
            return out
        self._buffer += data
        if len(self._buffer) >= chunk:
            view = memoryview(self._buffer)
            whole = len(self._buffer) - len(self._buffer) % chunk
            for i in range(0, whole, chunk):
                self._add_chunk(view[i : i + chunk], out)
            rest = bytes(view[whole:])
            view.release()
            self._buffer = bytearray(rest)
        return out

    def finish(self) -> list[Block]:
        if self._root is not None:
            raise LocalProtocolError("finish", "the importer is already finished")
        out: list[Block] = []
        if self._buffer or self._size == 0:
            # The last, short chunk; or the one empty leaf of an empty file.
            self._add_chunk(bytes(self._buffer), out)
            self._buffer = bytearray()
        levels = self._levels
        top = len(levels) - 1
        for depth in range(top):
            if levels[depth]:
                # The partly filled right edge keeps the full depth of the tree.
                levels[depth + 1].append(self._emit_parent(levels[depth], out))
                levels[depth] = []
        assert len(levels[top]) >= 1
        if len(levels[top]) == 1:
            assert top == 0  # one chunk: the leaf is the root
            self._root = Cid(levels[top][0][0])
        else:
            self._emit_parent(levels[top], out)
            self._root = out[-1].cid
        # The root is the last block out (of this call, or of the last feed()).
        assert not out or out[-1].cid == self._root
        return out

    def _add_chunk(self, chunk: bytes | memoryview, out: list[Block]) -> None:
        levels = self._levels
        # Make room: a full level is gathered under a parent only now that more data
        # has come, so a tree that is exactly full gets no extra level on top.
        depth = 0
        while len(levels[depth]) == self.links_max:
            if depth + 1 == len(levels):
                levels.append([])
            levels[depth + 1].append(self._emit_parent(levels[depth], out))
            levels[depth] = []
            depth += 1
        if self.cid_version == 1:
            raw = bytes(chunk)
            cid = block_cid(raw, CODEC_RAW, 1)
            block = Block(cid, raw)
        else:
            data = _leaf_node(chunk)
            cid = block_cid(data, CODEC_DAG_PB, 0)
            block = Block(cid, data)
        out.append(block)
        levels[0].append((cid.raw, len(block.data), len(chunk)))

    def _emit_parent(self, links: list[tuple[bytes, int, int]],
                     out: list[Block]) -> tuple[bytes, int, int]:
        assert 1 <= len(links) <= self.links_max
        data = _parent_node(links)
        cid = block_cid(data, CODEC_DAG_PB, self.cid_version)
        out.append(Block(cid, data))
        return cid.raw, len(data) + sum(t for _, t, _ in links), sum(f for _, _, f in links)


def add_stream(chunks: Iterable[bytes], cid_version: int = 0) -> Iterator[Block]:
    """Blocks of the file made of `chunks` (any sizes), streamed; the last is the root."""
    importer = Importer(cid_version)
    for data in chunks:
        yield from importer.feed(data)
    yield from importer.finish()


def add_bytes(data: bytes, cid_version: int = 0, chunk_bytes: int = CHUNK_BYTES,
              links_max: int = LINKS_PER_NODE_MAX) -> tuple[Cid, list[Block]]:
    """(root CID, every block) of `data`, as `ipfs add [--cid-version 1]` makes them."""
    importer = Importer(cid_version, chunk_bytes, links_max)
    blocks = importer.feed(data)
    blocks += importer.finish()
    return importer.root, blocks


# -- decoding -----------------------------------------------------------------------


def _fields(data: bytes, field: str) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; only varint and bytes."""
    return protobuf.fields(data, field, UnixfsError)


@dataclass(frozen=True, slots=True)
class Link:
    cid: Cid
    name: str
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[Link, ...]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class FileNode:
    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def decode_dag_pb(block: bytes) -> PBNode:
    """Parse a dag-pb block (PBNode); unknown fields or a second Data are errors."""
    links: list[Link] = []
    data: bytes | None = None
    for number, wire, value in _fields(block, "dag-pb"):
        if number == 2 and wire == 2 and isinstance(value, bytes):
            if data is not None:
                raise UnixfsError("dag-pb", "a link after Data (Links come first)")
            links.append(_decode_link(value))
        elif number == 1 and wire == 2 and isinstance(value, bytes) and data is None:
            data = value
        else:
            raise UnixfsError("dag-pb", f"unexpected field {number} (wire type {wire})")
    return PBNode(tuple(links), data)


def _decode_link(raw: bytes) -> Link:
    cid: Cid | None = None
    name = ""
    tsize: int | None = None
    seen: set[int] = set()
    for number, wire, value in _fields(raw, "dag-pb.link"):
        if number in seen:
            raise UnixfsError("dag-pb.link", f"field {number} repeated")
        seen.add(number)
        if number == 1 and isinstance(value, bytes):
            try:
                cid = Cid.from_bytes(value, "dag-pb.link.hash")
            except DecodeError as exc:
                raise UnixfsError("dag-pb.link.hash", exc.reason) from None
        elif number == 2 and isinstance(value, bytes):
            try:
                name = value.decode()
            except UnicodeDecodeError:
                raise UnixfsError("dag-pb.link.name", "not UTF-8") from None
        elif number == 3 and isinstance(value, int):
            tsize = value
        else:
            raise UnixfsError("dag-pb.link", f"unexpected field {number} (wire type {wire})")
    if cid is None:
        raise UnixfsError("dag-pb.link.hash", "a link without a Hash")
    return Link(cid, name, tsize)


def decode_unixfs(data: bytes) -> FileNode:
    """Parse a UnixFS Data message. Mode and mtime (fields 7, 8) are accepted and ignored."""
    kind: int | None = None
    content = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, wire, value in _fields(data, "unixfs"):
        if number == 1 and isinstance(value, int) and kind is None:
            kind = value
        elif number == 2 and isinstance(value, bytes):
            content = value
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and isinstance(value, bytes):  # packed, as some writers do
            pos = 0
            while pos < len(value):
                size, pos = protobuf.read_varint(value, pos, "unixfs.blocksizes",
                                                 UnixfsError)
                blocksizes.append(size)
        elif number in (7, 8):
            continue
        else:
            raise UnixfsError("unixfs", f"unexpected field {number} (wire type {wire})")
    if kind is None:
        raise UnixfsError("unixfs.type", "missing")
    return FileNode(kind, content, filesize, tuple(blocksizes))


# Codecs whose block is a whole object by itself: its bytes are the object's bytes and
# nothing under it is followed (a raw leaf; a dag-cbor block, its CBOR links ignored).
ONE_BLOCK_CODECS = frozenset((CODEC_RAW, CODEC_DAG_CBOR))


def block_links(cid: Cid, block: bytes) -> list[Cid]:
    """CIDs a block links to: dag-pb links; raw, dag-cbor (whose CBOR links are not
    followed) and other codecs link to nothing here."""
    if cid.codec != CODEC_DAG_PB:
        return []
    return [link.cid for link in decode_dag_pb(block).links]


def check_block(cid: Cid, block: bytes) -> None:
    """Raise BlockMismatch unless `block` is the block `cid` names."""
    if len(block) > BLOCK_BYTES_MAX:
        raise TooLarge("block", f"{len(block)} bytes, limit {BLOCK_BYTES_MAX}")
    if not cid.matches(block):
        code = cid.multihash[0]
        if code != 0x12:
            raise BlockMismatch("cid", f"{cid}: hash function 0x{code:x} is not supported")
        raise BlockMismatch("cid", f"block does not hash to {cid}")


# -- the reader ---------------------------------------------------------------------


def file_node(cid: Cid, block: bytes) -> tuple[bytes, tuple[Link, ...], tuple[int, ...], int]:
    """(own data, links, blocksizes, filesize) of a UnixFS file block, or of a one-block
    object (raw or dag-cbor: the block itself, no links); checks the sizes.

    The block's hash is not checked here (see check_block); a fetcher that computed the
    CID from the bytes calls this directly."""
    if cid.codec in ONE_BLOCK_CODECS:
        return block, (), (), len(block)
    if cid.codec != CODEC_DAG_PB:
        raise UnixfsError("cid", f"{cid}: codec 0x{cid.codec:x} is neither a UnixFS file "
                          "block nor a one-block object (raw, dag-cbor)")
    node = decode_dag_pb(block)
    if node.data is None:
        raise UnixfsError("dag-pb.data", f"{cid}: no UnixFS data")
    unixfs = decode_unixfs(node.data)
    if unixfs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        name = _UNIXFS_TYPE_NAMES.get(unixfs.type, str(unixfs.type))
        raise UnixfsError("unixfs.type", f"{cid}: a {name}, not a file")
    if len(unixfs.blocksizes) != len(node.links):
        raise UnixfsError("unixfs.blocksizes", f"{cid}: {len(unixfs.blocksizes)} sizes for "
                          f"{len(node.links)} links")
    filesize = len(unixfs.data) + sum(unixfs.blocksizes)
    if unixfs.filesize is not None and unixfs.filesize != filesize:
        raise UnixfsError("unixfs.filesize", f"{cid}: says {unixfs.filesize}, holds {filesize}")
    return unixfs.data, node.links, unixfs.blocksizes, filesize


def first_missing(root: Cid, has: Callable[[Cid], bool],
                  get: Callable[[Cid], bytes | None]) -> Cid | None:
    """The first block of `root`'s DAG that a store lacks, or None if it has them all.
    Raw and dag-cbor blocks are only looked up; dag-pb nodes are read for their links."""
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        if cid.codec in ONE_BLOCK_CODECS:
            if not has(cid):
                return cid
            continue
        data = get(cid)
        if data is None:
            return cid
        stack.extend(block_links(cid, data))
    return None


def copy_dag(root: Cid, get: Callable[[Cid], bytes | None],
             put: Callable[[Cid, bytes], None]) -> None:
    """Copy every block of `root`'s DAG from `get` to `put` (each block once); raises
    BlockMissing for the first block `get` lacks."""
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        data = get(cid)
        if data is None:
            raise BlockMissing(cid)
        put(cid, data)
        stack.extend(block_links(cid, data))


def file_size(root: Cid, root_block: bytes) -> int:
    """The file size a root block declares (checked against its CID and structure)."""
    check_block(root, root_block)
    return file_node(root, root_block)[3]


def read_file(root: Cid, get_block: Callable[[Cid], bytes | None],
              size_max: int) -> Iterator[bytes]:
    """The bytes of the file `root` names, in pieces, every block checked on the way.

    `get_block(cid)` returns the block or None if it is not available (BlockMissing is
    raised then). A file larger than `size_max` is refused before anything is yielded
    beyond the root's own data (TooLarge). Memory: the stack holds at most
    DEPTH_MAX × LINKS_PER_NODE_MAX pending links.
    """
    # (cid, file bytes the parent says it holds or None for the root, depth)
    stack: list[tuple[Cid, int | None, int]] = [(root, None, 0)]
    while stack:
        cid, expected, depth = stack.pop()
        if depth and cid.codec == CODEC_DAG_CBOR:
            raise UnixfsError("dag-pb.link", f"{cid}: a dag-cbor block is an object by "
                              "itself, not a block of a file")
        block = get_block(cid)
        if block is None:
            raise BlockMissing(cid)
        check_block(cid, block)
        data, links, blocksizes, filesize = file_node(cid, block)
        if expected is None:
            if filesize > size_max:
                raise TooLarge("size", f"{root} is {filesize} bytes, limit {size_max}")
        elif filesize != expected:
            raise UnixfsError("unixfs.blocksizes", f"{cid} holds {filesize} bytes, its "
                              f"parent says {expected}")
        if links and depth + 1 > DEPTH_MAX:
            raise UnixfsError("depth", f"{root}: deeper than {DEPTH_MAX} levels")
        if data:
            yield data
        for link, size in zip(reversed(links), reversed(blocksizes), strict=True):
            stack.append((link.cid, size, depth + 1))
