"""`swarm-node evidence`: files under IPFS CIDs, as Kubo's `ipfs add` would name them.

`add FILE --only-hash` computes the CID here, without a node (the importer in
protocol/unixfs.py); every other command talks to the running node's control API, which
owns the block store: the CLI never opens the node's database. `get` first has the node
fetch whatever it lacks from its peers (bitswap, any libp2p peer including Kubo), then
streams the checked file. `add` and `get` stream (bounded memory whatever the size) and
show a progress bar on stderr for large files when stderr is a terminal; stdout carries
only the CID (`add`) or the file (`get` without `-o`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from swarm.node.client import ApiError, Client
from swarm.protocol.cid import Cid
from swarm.protocol.errors import ProtocolError
from swarm.protocol.unixfs import Importer

from .common import (
    HomeOpt,
    JsonOpt,
    add_row,
    client,
    emit_json,
    err,
    fail,
    new_table,
    out,
    safe,
    say,
)

evidence_app = typer.Typer(help="Evidence files under IPFS CIDs (Kubo-compatible).",
                           no_args_is_help=True)
# Files are read in pieces of this size: large enough that per-call overhead vanishes,
# small enough that memory stays flat for any file size.
READ_BYTES = 1024 * 1024
TRANSFER_TIMEOUT_S = 600.0  # an HTTP request's: large transfers take their time
# Below this a progress bar would only flicker.
PROGRESS_BYTES_MIN = 8 * 1024 * 1024

CidArg = Annotated[str, typer.Argument(help="CIDv0 (Qm...) or CIDv1 (bafy..., bafk...).")]
KindOpt = Annotated[str, typer.Option("--kind", help="evidence | proof (each has its own "
                                      "size limit, from genesis).")]






def _progress(total: int | None) -> Progress:
    """A byte progress bar on stderr, shown only for large transfers on a terminal."""
    show = err.is_terminal and (total is None or total >= PROGRESS_BYTES_MIN)
    return Progress("[progress.description]{task.description}", BarColumn(),
                    DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not show)


def _read_pieces(f: BinaryIO, progress: Progress, task: Any) -> Iterator[bytes]:
    while piece := f.read(READ_BYTES):
        progress.advance(task, len(piece))
        yield piece


def _parse_cid(text: str, as_json: bool) -> Cid:
    try:
        return Cid.parse(text, "cid")
    except ProtocolError as exc:
        fail(str(exc), as_json=as_json)


def _client(home: Path | None, as_json: bool) -> Client:
    return client(home, as_json, timeout_s=TRANSFER_TIMEOUT_S)


@evidence_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="The file to add ('-' for stdin).",
                                         allow_dash=True)],
    only_hash: Annotated[bool, typer.Option("--only-hash", "-n",
                                            help="Only compute the CID; needs no node.")]
    = False,
    cid_version: Annotated[int, typer.Option("--cid-version", min=0, max=1,
                                             help="0 (Qm..., Kubo's default) or 1 (raw "
                                                  "leaves, bafy...).")] = 0,
    kind: KindOpt = "evidence",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print FILE's CID, as `ipfs add [--cid-version 1]` would; store and pin it in the
    running node unless --only-hash."""
    stdin = str(file) == "-"
    try:
        f: BinaryIO = sys.stdin.buffer if stdin else file.open("rb")
        total = None if stdin else file.stat().st_size
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", as_json=as_json)
    with f, _progress(total) as progress:
        task = progress.add_task("hashing" if only_hash else "adding", total=total)
        pieces = _read_pieces(f, progress, task)
        if only_hash:
            importer = Importer(cid_version)
            for piece in pieces:
                importer.feed(piece)  # blocks are dropped: only the root is wanted
            importer.finish()
            doc: dict[str, Any] = {"cid": str(importer.root), "size": importer.size}
        else:
            c = _client(home, as_json)
            try:
                doc = c.post_stream("/evidence", pieces,
                                    params={"cid_version": cid_version, "kind": kind})
            except ApiError as exc:
                fail(str(exc), as_json=as_json)
            finally:
                c.close()
    if as_json:
        emit_json(doc)
    else:
        sys.stdout.write(safe(doc["cid"]) + "\n")


@evidence_app.command("get")
def get(
    cid: CidArg,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here (default stdout).")] = None,
    kind: KindOpt = "evidence",
    home: HomeOpt = None,
) -> None:
    """Write the file CID names, every block checked against its hash by the node; the
    node fetches it from its peers first if it does not have all of it (and pins it)."""
    root = _parse_cid(cid, False)
    c = _client(home, False)
    target = output.with_name(f".{output.name}.part") if output is not None else None
    try:
        _fetch(c, root, kind)
        with c.stream_get(f"/evidence/{root}", params={"kind": kind}) as (size, pieces):
            sink: BinaryIO = target.open("wb") if target is not None else sys.stdout.buffer
            with _progress(size) as progress:
                task = progress.add_task("getting", total=size)
                written = 0
                for piece in pieces:
                    sink.write(piece)
                    written += len(piece)
                    progress.advance(task, len(piece))
            if target is not None:
                sink.close()
            else:
                sink.flush()
            if size is not None and written != size:
                fail(f"the node sent {written} of {size} bytes; the file is incomplete")
    except ApiError as exc:
        if target is not None:
            target.unlink(missing_ok=True)
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    finally:
        c.close()
    if target is not None and output is not None:
        target.replace(output)


def _fetch(c: Client, root: Cid, kind: str) -> None:
    """Have the node bring `root` from its peers, with a progress bar once the size is
    known to be large; returns when the object is all there, fails with the node's
    reason otherwise."""
    progress: Progress | None = None
    task: Any = None
    try:
        for line in c.stream_lines(f"/evidence/{root}/fetch", params={"kind": kind}):
            if "error" in line:
                error = line["error"]
                fail(f"{error.get('field', 'cid')}: {error.get('reason', error)}")
            if "done" in line:
                return
            size = line.get("size")
            if progress is None and size is not None:
                progress = _progress(size)
                progress.start()
                task = progress.add_task("fetching", total=size)
            if progress is not None:
                progress.update(task, completed=line.get("received", 0))
    finally:
        if progress is not None:
            progress.stop()
    fail("the node ended the fetch without saying how it went")


@evidence_app.command("pin")
def pin(cid: CidArg, kind: KindOpt = "evidence", home: HomeOpt = None,
        as_json: JsonOpt = False) -> None:
    """Keep CID (and every block under it) through garbage collection."""
    root = _parse_cid(cid, as_json)
    doc = _call(home, as_json, lambda c: c.post(f"/evidence/{root}/pin", {"kind": kind}))
    if as_json:
        emit_json(doc)
    else:
        say(f"pinned {doc['cid']} ({doc['size']} bytes, {doc['blocks']} blocks)")


@evidence_app.command("unpin")
def unpin(cid: CidArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Let garbage collection take CID's blocks (those no other pin needs)."""
    root = _parse_cid(cid, as_json)
    doc = _call(home, as_json, lambda c: c.post(f"/evidence/{root}/unpin", {}))
    if as_json:
        emit_json(doc)
    else:
        say(f"unpinned {doc['cid']}")


@evidence_app.command("ls")
def ls(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Pinned objects: CID, kind, size, blocks."""
    doc = _call(home, as_json, lambda c: c.get("/evidence/pins"))
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"{len(doc)} pinned")
    for column in ("cid", "kind", "size", "blocks"):
        table.add_column(column, overflow="fold")
    for p in doc:
        add_row(table, p["cid"], p["kind"], str(p["size"]), str(p["blocks"]))
    out.print(table)


@evidence_app.command("gc")
def gc(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Delete every block no pin needs."""
    doc = _call(home, as_json, lambda c: c.post("/evidence/gc", {}))
    if as_json:
        emit_json(doc)
    else:
        say(f"removed {doc['removed']} blocks ({doc['removed_bytes']} bytes), kept "
            f"{doc['kept']}")


def _call(home: Path | None, as_json: bool, fn: Any) -> Any:
    c = _client(home, as_json)
    try:
        return fn(c)
    except ApiError as exc:
        fail(str(exc), as_json=as_json)
    finally:
        c.close()
