"""`swarm-node`: the command line. Thin: parse, call node/protocol, print.

Every command that shows state takes ``--json`` and then prints exactly one JSON
document on stdout; errors go to stderr with a non-zero exit code (1 for a failed
check or bad input, 2 for usage errors, as typer does).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from swarm.node.home import (
    HomeError,
    create_identity,
    load_identity,
    next_lamport,
    read_config,
    resolve_home,
    write_atomic,
)
from swarm.node.logfile import append_log, read_log
from swarm.protocol import verbs
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import (
    SWARM_ID_BYTES,
    decode_envelope,
    make_envelope,
    signing_message,
)
from swarm.protocol.errors import ProtocolError
from swarm.protocol.plan import diff, diff_to_json
from swarm.protocol.replay import Replica
from swarm.protocol.schema import to_json

app = typer.Typer(
    name="swarm-node",
    help="CAN Swarm node and command line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="The node's Ed25519 identity.", no_args_is_help=True)
envelope_app = typer.Typer(help="Make and inspect signed envelopes (offline).",
                           no_args_is_help=True)
plan_app = typer.Typer(help="The plan CRDT.", no_args_is_help=True)
log_app = typer.Typer(help="Envelope log files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(envelope_app, name="envelope")
app.add_typer(plan_app, name="plan")
app.add_typer(log_app, name="log")

out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Node home (default $SWARM_HOME or ~/.can-swarm).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
SwarmOpt = Annotated[
    str | None,
    typer.Option("--swarm", envvar="SWARM_ID",
                 help="Swarm id, 64 hex digits (or $SWARM_ID, or `swarm` in config.json)."),
]


def fail(message: str, *, as_json: bool = False, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        sys.stderr.write(json.dumps({"error": message, **(extra or {})}) + "\n")
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def parse_swarm(value: str | None, home: Path | None, *, required: bool) -> bytes | None:
    if value is None and home is not None:
        try:
            value = read_config(resolve_home(home)).get("swarm")
        except HomeError:
            value = None
    if value is None:
        if required:
            fail("no swarm id: pass --swarm with 64 hex digits, set SWARM_ID, or put "
                 '"swarm" in the home\'s config.json')
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        fail(f"--swarm {value!r} is not hex")
    if len(raw) != SWARM_ID_BYTES:
        fail(f"--swarm must be {SWARM_ID_BYTES} bytes ({2 * SWARM_ID_BYTES} hex digits), "
             f"got {len(raw)}")
    return raw


def envelope_json(env: Any) -> dict[str, Any]:
    return {
        "id": str(env.id),
        "kind": env.kind,
        "swarm": env.swarm.hex(),
        "sender": env.sender.hex(),
        "lamport": env.lamport,
        "ts": env.ts,
        "thread": env.thread,
        "refs": [str(r) for r in env.refs],
        "payload": to_json(env.payload),
        "sig": env.sig.hex(),
        "size_bytes": len(env.wire),
    }


# --- keys --------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new(
    home: HomeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the node's Ed25519 key in HOME/node.key (mode 600)."""
    path = resolve_home(home)
    try:
        identity = create_identity(path, force=force)
    except HomeError as exc:
        fail(str(exc), as_json=as_json)
    doc = {"home": str(path), "public_key": identity.public_key.hex(),
           "account": identity.public_key.hex()}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"created key in {path}\naccount {identity.public_key.hex()}",
                  highlight=False, markup=False)


@keys_app.command("show")
def keys_show(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the node's public key (its account id)."""
    path = resolve_home(home)
    try:
        identity = load_identity(path)
    except HomeError as exc:
        fail(str(exc), as_json=as_json)
    doc = {"home": str(path), "public_key": identity.public_key.hex(),
           "account": identity.public_key.hex()}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"account {identity.public_key.hex()}", highlight=False, markup=False)


# --- envelopes ---------------------------------------------------------------------------


@envelope_app.command("make")
def envelope_make(
    kind: Annotated[str, typer.Argument(help="Verb, e.g. NEED, PROPOSE, UPDATE_PLAN.")],
    payload: Annotated[str, typer.Option("--payload", help="Payload as JSON (or @FILE).")],
    home: HomeOpt = None,
    swarm: SwarmOpt = None,
    thread: Annotated[str, typer.Option("--thread", help="Thread (conversation) id.")] = "",
    ref: Annotated[list[str] | None, typer.Option("--ref", help="Referenced envelope id "
                                                   "(repeatable).")] = None,
    lamport: Annotated[int | None, typer.Option("--lamport", help="Lamport time (default: "
                                                 "the home's clock, advanced).")] = None,
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write the envelope "
                                                 "here (default ENVELOPE_ID.env).")] = None,
    append: Annotated[Path | None, typer.Option("--append", help="Also append it to this "
                                                 "envelope log.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an envelope signed with the home's key and write it to a file."""
    kind = kind.upper()
    if kind not in verbs.KINDS:
        fail(f"unknown verb {kind!r}; known: {', '.join(verbs.KINDS)}", as_json=as_json)
    path = resolve_home(home)
    swarm_id = parse_swarm(swarm, path, required=True)
    assert swarm_id is not None
    try:
        raw_payload = json.loads(Path(payload[1:]).read_text() if payload.startswith("@")
                                 else payload)
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"--payload is not valid JSON: {exc}", as_json=as_json)
    try:
        identity = load_identity(path)
        refs = [Cid.parse(r, "--ref") for r in (ref or [])]
        value = verbs.payload_from_json(kind, raw_payload)
        stamp = lamport if lamport is not None else next_lamport(path)
        env = make_envelope(identity, kind=kind, swarm=swarm_id, lamport=stamp,
                            ts=time.time_ns() // 1_000_000, payload=value, thread=thread,
                            refs=refs)
    except HomeError as exc:
        fail(str(exc), as_json=as_json)
    except ProtocolError as exc:
        fail(str(exc), as_json=as_json, extra=exc.to_dict())
    target = output if output is not None else Path(f"{env.id}.env")
    write_atomic(target, env.wire)
    if append is not None:
        try:
            append_log(append, [env.wire])
        except ProtocolError as exc:
            fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"id": str(env.id), "file": str(target), "lamport": env.lamport,
                   "size_bytes": len(env.wire)})
    else:
        out.print(f"{env.id}\nwritten to {target} ({len(env.wire)} bytes, lamport "
                  f"{env.lamport})", highlight=False, markup=False)


@envelope_app.command("inspect")
def envelope_inspect(
    file: Annotated[Path, typer.Argument(help="Envelope file (wire bytes), or - for stdin.")],
    swarm: SwarmOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decode and verify an envelope; show its id and fields, or exactly why it is invalid."""
    expected = parse_swarm(swarm, None, required=False)
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", as_json=as_json)
    try:
        env = decode_envelope(data, swarm=expected)
    except ProtocolError as exc:
        if as_json:
            emit_json({"valid": False, **exc.to_dict()})
            raise typer.Exit(1) from None
        fail(f"invalid envelope: {exc.field}: {exc.reason} [{exc.code}]")
    doc = envelope_json(env)
    if as_json:
        emit_json({"valid": True, **doc})
        return
    table = Table(title=f"{env.kind} envelope: valid, signature verified", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("id", "kind", "sender", "swarm", "lamport", "ts", "thread", "size_bytes"):
        table.add_row(key, str(doc[key]))
    table.add_row("refs", "\n".join(doc["refs"]) or "-")
    table.add_row("payload", json.dumps(doc["payload"], indent=2, sort_keys=True))
    table.add_row("signed message", signing_message(env.id).hex())
    out.print(table)


@envelope_app.command("schema")
def envelope_schema(
    kind: Annotated[str | None, typer.Argument(help="Verb (omit to list all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the payload fields of a verb, or list the verbs."""
    if kind is None:
        doc: Any = {k: verbs.describe(k) for k in verbs.KINDS}
    else:
        k = kind.upper()
        if k not in verbs.KINDS:
            fail(f"unknown verb {kind!r}; known: {', '.join(verbs.KINDS)}", as_json=as_json)
        doc = {k: verbs.describe(k)}
    if as_json:
        emit_json(doc)
        return
    for name, fields in doc.items():
        table = Table(title=name, title_justify="left")
        table.add_column("field")
        table.add_column("type")
        for fname, desc in fields.items():
            table.add_row(fname, desc)
        out.print(table)


# --- logs and the plan -------------------------------------------------------------------


@log_app.command("pack")
def log_pack(
    log: Annotated[Path, typer.Argument(help="Envelope log to create or append to.")],
    files: Annotated[list[Path], typer.Argument(help="Envelope files, in order.")],
    as_json: JsonOpt = False,
) -> None:
    """Append envelope files to an envelope log (each is checked first)."""
    wires = []
    for f in files:
        try:
            data = f.read_bytes()
            decode_envelope(data)
        except OSError as exc:
            fail(f"cannot read {f}: {exc.strerror}", as_json=as_json)
        except ProtocolError as exc:
            fail(f"{f}: invalid envelope: {exc}", as_json=as_json, extra=exc.to_dict())
        wires.append(data)
    try:
        append_log(log, wires)
    except ProtocolError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"log": str(log), "appended": len(wires)})
    else:
        out.print(f"appended {len(wires)} envelopes to {log}", highlight=False, markup=False)


@plan_app.command("replay")
def plan_replay(
    log: Annotated[Path, typer.Argument(help="Envelope log file.")],
    swarm: SwarmOpt = None,
    at: Annotated[int | None, typer.Option("--at", help="Show the version at this Lamport "
                                            "time instead of the latest.")] = None,
    diff_from: Annotated[int | None, typer.Option("--diff-from", help="Also show what "
                                                   "changed since this Lamport time.")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip signature checks "
                                             "(a log this node wrote itself).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the plan from an envelope log; print its Merkle root and counts."""
    expected = parse_swarm(swarm, None, required=False)
    replica = Replica(swarm=expected)
    try:
        for wire in read_log(log):
            replica.receive(wire, verify=not no_verify)
    except OSError as exc:
        fail(f"cannot read {log}: {exc.strerror}", as_json=as_json)
    except ProtocolError as exc:
        fail(f"{log}: {exc} (after {replica.received} envelopes)", as_json=as_json)
    doc = replica.summary()
    plan = replica.plan
    if at is not None:
        version = plan.version_at(at)
        doc["at"] = {"lamport": at, "plan_root": version.root().hex(),
                     "tasks": len(version.task_ids()), "links": len(version.links())}
        plan = version
    if diff_from is not None:
        doc["diff"] = {"from_lamport": diff_from,
                       **diff_to_json(diff(replica.plan.version_at(diff_from), plan))}
    if as_json:
        emit_json(doc)
        return
    table = Table(title=f"replay of {log}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("plan_root", "snapshot_sha256", "lamport", "envelopes", "accepted",
                "duplicates", "pending", "ops", "tasks", "links", "links_rejected"):
        table.add_row(key, str(doc[key]))
    table.add_row("kinds", ", ".join(f"{k} {v}" for k, v in doc["kinds"].items()) or "-")
    table.add_row("rejected", ", ".join(f"{k} {v}" for k, v in doc["rejected"].items()) or "0")
    if "at" in doc:
        table.add_row(f"root at lamport {at}", doc["at"]["plan_root"])
    out.print(table)
    if "diff" in doc:
        out.print_json(json.dumps(doc["diff"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()


__all__ = ["app", "main"]
