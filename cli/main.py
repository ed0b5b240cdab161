"""`swarm-node`: the command line. Thin: parse, call node/protocol, print.

Every command that shows state takes ``--json`` and then prints exactly one JSON
document on stdout; errors go to stderr with a non-zero exit code (1 for a failed
check or bad input, 2 for usage errors, as typer does).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from swarm.cli import challenge, market
from swarm.cli import raft as raft_cli
from swarm.cli.common import (
    OUTCOME_WAIT_S_MIN,
    HomeOpt,
    JsonOpt,
    add_row,
    call,
    client,
    emit_json,
    fail,
    new_table,
    out,
    say,
)
from swarm.cli.evidence import evidence_app
from swarm.cli.jobs import job_app
from swarm.cli.ledger import VALIDITY_MS, ledger_app, pool_app, stake_app
from swarm.cli.policy import policy_app
from swarm.cli.raft import raft_app
from swarm.node.client import OUTCOME_MARGIN_S, OUTCOME_WAIT_S_DEFAULT, OUTCOME_WAIT_S_MAX
from swarm.node.home import (
    DEFAULT_CONFIG,
    GENESIS_FILE,
    KEY_FILE,
    HomeError,
    api_is_loopback,
    create_identity,
    ensure_token,
    load_identity,
    next_lamport,
    read_config,
    resolve_home,
    write_atomic,
    write_config,
)
from swarm.node.logfile import append_log, read_log
from swarm.protocol import genesis as genesis_mod
from swarm.protocol import verbs
from swarm.protocol.cid import Cid
from swarm.protocol.envelope import (
    ENVELOPE_BYTES_MAX,
    SWARM_ID_BYTES,
    decode_envelope,
    make_envelope,
    signing_message,
)
from swarm.protocol.errors import ProtocolError
from swarm.protocol.plan import PlanVersion, diff, diff_to_json
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
genesis_app = typer.Typer(help="Genesis files.", no_args_is_help=True)
peers_app = typer.Typer(help="Peers of a running node.", invoke_without_command=True)
need_app = typer.Typer(help="Post NEEDs through a running node.", no_args_is_help=True)
app.add_typer(genesis_app, name="genesis")
app.add_typer(peers_app, name="peers")
app.add_typer(need_app, name="need")
app.add_typer(keys_app, name="keys")
app.add_typer(envelope_app, name="envelope")
app.add_typer(plan_app, name="plan")
app.add_typer(log_app, name="log")
app.add_typer(policy_app, name="policy")
app.add_typer(evidence_app, name="evidence")
app.add_typer(job_app, name="job")
app.add_typer(raft_app, name="raft")
app.add_typer(ledger_app, name="ledger")
app.add_typer(stake_app, name="stake")
app.add_typer(pool_app, name="pool")
market.register(app)
challenge.register(app)
app.command("decide")(raft_cli.decide)
app.command("decision")(raft_cli.decision)


SwarmOpt = Annotated[
    str | None,
    typer.Option("--swarm", envvar="SWARM_ID",
                 help="Swarm id, 64 hex digits (or $SWARM_ID, or `swarm` in config.json)."),
]




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
        say(f"created key in {path}\naccount {identity.public_key.hex()}")


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
        say(f"account {identity.public_key.hex()}")


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
    if kind in verbs.LEDGER_KINDS and isinstance(raw_payload, dict):
        # A ledger verb is one operation, named by these two: fresh ones unless given.
        raw_payload.setdefault("op_id", os.urandom(verbs.OP_ID_BYTES).hex())
        raw_payload.setdefault("valid_until_ms",
                               time.time_ns() // 1_000_000 + VALIDITY_MS)
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
        say(f"{env.id}\nwritten to {target} ({len(env.wire)} bytes, lamport "
            f"{env.lamport})")
        if kind in verbs.LEDGER_KINDS:
            say(f"operation {raw_payload['op_id']}, valid until "
                f"{raw_payload['valid_until_ms']} ms; send it with `swarm-node envelope "
                f"send {target}`")


@envelope_app.command("send")
def envelope_send(
    file: Annotated[Path, typer.Argument(help="Envelope file (wire bytes), or - for stdin.")],
    timeout_s: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for a ledger verb's outcome.",
        min=OUTCOME_WAIT_S_MIN, max=OUTCOME_WAIT_S_MAX)] = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand an envelope signed elsewhere to a running node, as its wire bytes.

    The node judges it as it judges gossip (signature, Lamport rules, certificate, the
    swarm's policy) and publishes it, or sends a ledger verb to its signer's bucket;
    prints the verdict, and a ledger verb's outcome. Exits 1 unless it was accepted or
    already known."""
    try:
        data = (sys.stdin.buffer.read(ENVELOPE_BYTES_MAX + 1) if str(file) == "-"
                else file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", as_json=as_json)
    c = client(home, as_json, timeout_s=timeout_s + OUTCOME_MARGIN_S)
    doc: dict[str, Any] = call(lambda: c.post_bytes("/envelopes/wire", data,
                                                    {"timeout_s": timeout_s}), as_json)
    if as_json:
        emit_json(doc)
        return
    if doc["code"] == "duplicate":
        say(f"{doc['id']} ({doc['kind']}): already known to the node")
    elif "outcome" in doc:
        o = doc["outcome"]
        say(f"{doc['id']} ({doc['kind']}): applied (bucket {o['bucket']}, index "
            f"{o['index']}, op {o['op_id'][:16]})")
    else:
        say(f"{doc['id']} ({doc['kind']}): accepted, stored and published "
            f"(lamport {doc['lamport']})")


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
    table = new_table(f"{env.kind} envelope: valid, signature verified", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("id", "kind", "sender", "swarm", "lamport", "ts", "thread", "size_bytes"):
        add_row(table, key, str(doc[key]))
    add_row(table, "refs", "\n".join(doc["refs"]) or "-")
    add_row(table, "payload", json.dumps(doc["payload"], indent=2, sort_keys=True))
    add_row(table, "signed message", signing_message(env.id).hex())
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
        table = new_table(name, title_justify="left")
        table.add_column("field")
        table.add_column("type")
        for fname, desc in fields.items():
            add_row(table, fname, desc)
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
        say(f"appended {len(wires)} envelopes to {log}")


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
        plan = plan.version_at(at)
        doc["at"] = PlanVersion.of(plan, at).to_json()
    if diff_from is not None:
        doc["diff"] = {"from_lamport": diff_from,
                       **diff_to_json(diff(replica.plan.version_at(diff_from), plan))}
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"replay of {log}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("plan_root", "snapshot_sha256", "lamport", "envelopes", "accepted",
                "duplicates", "pending", "ops", "tasks", "links", "links_rejected"):
        add_row(table, key, str(doc[key]))
    add_row(table, "kinds", ", ".join(f"{k} {v}" for k, v in doc["kinds"].items()) or "-")
    add_row(table, "rejected", ", ".join(f"{k} {v}" for k, v in doc["rejected"].items()) or "0")
    if "at" in doc:
        add_row(table, f"root at lamport {at}", doc["at"]["plan_root"])
    out.print(table)
    if "diff" in doc:
        out.print_json(json.dumps(doc["diff"]))


# --- genesis, init, start ------------------------------------------------------------------


@genesis_app.command("new")
def genesis_new(
    validator: Annotated[list[Path], typer.Option(
        "--validator", help="Home of a validator node (its key is read from HOME/node.key); "
        "repeatable.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write the genesis.")],
    name: Annotated[str, typer.Option("--name")] = "can-swarm-testnet",
    balance: Annotated[int, typer.Option("--balance", help="Initial balance of each "
                                          "validator's account, in credits.")] = 10_000,
    stake: Annotated[int, typer.Option("--stake", help="Initial stake of each validator, "
                                        "in credits.")] = 1_000,
    replicas: Annotated[int, typer.Option("--replicas", help="Raft replicas per bucket "
                                           "(at most the number of validators).")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Write a genesis file whose validators are the given homes' keys."""
    unit = genesis_mod.UNIT_PER_CREDIT
    validators, accounts = [], []
    for i, vhome in enumerate(validator):
        try:
            ident = load_identity(resolve_home(vhome))
        except HomeError as exc:
            fail(str(exc), as_json=as_json)
        validators.append({"account": ident.public_key, "org": f"org{i}", "asn": 64512 + i,
                           "region": f"region{i % 3}", "stake": stake * unit})
        accounts.append({"account": ident.public_key, "balance": balance * unit})
    try:
        gen = genesis_mod.new(name=name, created_ms=time.time_ns() // 1_000_000,
                              validators=validators, accounts=accounts,
                              params={"replicas": min(replicas, len(validators))})
        # Pin the committed policy module (every node of this swarm refuses any other)
        # and proof verifiers (a node with others judges no proofs).
        from swarm.jobs.proofs import verifier_cids
        from swarm.policy_wasm.host import committed_cid

        gen = genesis_mod.from_value({**gen.value, "policy_cid": str(committed_cid()),
                                      "proof_verifiers": verifier_cids()})
    except ProtocolError as exc:
        fail(str(exc), as_json=as_json)
    write_atomic(output, gen.to_json().encode())
    if as_json:
        emit_json({"file": str(output), "swarm": gen.swarm_id.hex(),
                   "validators": len(validators)})
    else:
        say(f"wrote {output}: swarm {gen.swarm_id.hex()}, {len(validators)} validators")


@app.command("init")
def init(
    genesis_file: Annotated[Path, typer.Option("--genesis", help="The swarm's genesis file.")],
    home: HomeOpt = None,
    listen: Annotated[list[str] | None, typer.Option("--listen", help="Listen multiaddr "
                                                      "(repeatable).")] = None,
    bootstrap: Annotated[list[str] | None, typer.Option("--bootstrap", help="Peer multiaddr "
                                                         "with /p2p/ (repeatable).")] = None,
    api: Annotated[str, typer.Option("--api", help="Control API host:port.")] =
    "127.0.0.1:0",
    ipfs_api: Annotated[str | None, typer.Option(
        "--ipfs-api", help="Keep evidence in this IPFS daemon (its API multiaddr, e.g. "
        "/ip4/127.0.0.1/tcp/5001) instead of the embedded store.")] = None,
    api_public: Annotated[bool, typer.Option(
        "--api-public", help="Let --api be an address other machines reach (refused "
        "otherwise); the node warns when it starts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Prepare a node home: identity (kept if present), genesis, config, API token."""
    path = resolve_home(home)
    try:
        gen = genesis_mod.from_json(genesis_file.read_text())
    except OSError as exc:
        fail(f"cannot read {genesis_file}: {exc.strerror}", as_json=as_json)
    except ProtocolError as exc:
        fail(f"{genesis_file}: {exc}", as_json=as_json)
    existing = path / GENESIS_FILE
    if existing.exists():
        try:
            old = genesis_mod.from_json(existing.read_text())
        except ProtocolError:
            old = None
        if old is not None and old.swarm_id != gen.swarm_id:
            fail(f"{path} already belongs to swarm {old.swarm_id.hex()}; use another home",
                 as_json=as_json)
    identity = (load_identity(path) if (path / KEY_FILE).exists()
                else create_identity(path))
    write_atomic(existing, gen.to_json().encode())
    config = {**DEFAULT_CONFIG, **read_config(path), "swarm": gen.swarm_id.hex(), "api": api,
              "api_public": api_public}
    if not api_public and not api_is_loopback(api):
        fail(f"--api {api} is an address other machines may reach; add --api-public if "
             "that is meant", as_json=as_json)
    if listen:
        config["listen"] = listen
    if bootstrap is not None:
        config["bootstrap"] = bootstrap
    if ipfs_api is not None:
        config["ipfs_api"] = ipfs_api
    write_config(path, config)
    try:
        ensure_token(path)
    except HomeError as exc:
        fail(str(exc), as_json=as_json)
    from swarm.node.p2p import key_pair, peer_id_of

    peer_id = peer_id_of(key_pair(identity.seed).public_key).to_base58()
    doc = {"home": str(path), "swarm": gen.swarm_id.hex(), "peer_id": peer_id,
           "account": identity.public_key.hex()}
    if as_json:
        emit_json(doc)
    else:
        say(f"initialised {path}\nswarm   {doc['swarm']}\npeer id {peer_id}\n"
            f"account {doc['account']}")


@app.command("start")
def start(
    home: HomeOpt = None,
    listen: Annotated[list[str] | None, typer.Option("--listen")] = None,
    bootstrap: Annotated[list[str] | None, typer.Option("--bootstrap")] = None,
    ipfs_api: Annotated[str | None, typer.Option(
        "--ipfs-api", help="Keep evidence in this IPFS daemon for this run (overrides "
        "the config; see `init --ipfs-api`).")] = None,
    mdns: Annotated[bool | None, typer.Option(
        "--mdns/--no-mdns", help="Find and dial nodes of the same swarm on the local network "
        "by mDNS (default: the config's `mdns`, off unless set).")] = None,
    api_public: Annotated[bool, typer.Option(
        "--api-public", help="Let the control API listen on an address other machines "
        "reach (the config's `api`) for this run (else as the config's `api_public`).")]
    = False,
    roles: Annotated[str | None, typer.Option(
        "--roles", help="Built-in agents to run on this node's account, any of "
        "planner,worker,verifier (default: the config's `roles`; \"\" for none).")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM."""
    import signal

    import trio

    from swarm.node import heap
    from swarm.node.logs import configure_logging
    from swarm.node.service import open_node
    from swarm.node.store import StoreError
    from swarm.policy_wasm.host import PolicyLoadError

    path = resolve_home(home)
    configure_logging(path, log_level)
    try:
        node = open_node(path, listen=listen, bootstrap=bootstrap, mdns=mdns,
                         api_public=api_public or None, roles=roles)
    except (HomeError, ProtocolError, PolicyLoadError) as exc:
        fail(str(exc))
    if ipfs_api is not None:
        node.settings.ipfs_api = ipfs_api

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            heap.freeze_startup(collect=False)  # what startup loaded lives as long as we do

            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        node.stop()
                        return

            nursery.start_soon(on_signal)
            await node._stop.wait()
            nursery.cancel_scope.cancel()

    # Full collections would walk every object the imports made, stopping the loop for
    # a few hundred ms each time (node/heap.py has the figures).
    heap.freeze_startup(collect=True)
    pauses = heap.GcPauses(node.metrics.registry)
    pauses.install()
    try:
        trio.run(main)
    except StoreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


# --- commands that talk to a running node -----------------------------------------------




def show(doc: dict[str, Any], title: str) -> None:
    table = new_table(title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in doc.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        add_row(table, key, shown)
    out.print(table)


@app.command("status")
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Peer id, addresses, peers, Lamport time, plan root, uptime of a running node."""
    c = client(home, as_json)
    doc = call(lambda: c.get("/status"), as_json)
    if as_json:
        emit_json(doc)
    else:
        show(doc, "node status")


@peers_app.callback()
def peers(ctx: typer.Context, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List connected peers (or `peers connect MULTIADDR`)."""
    if ctx.invoked_subcommand is not None:
        return
    c = client(home, as_json)
    doc = call(lambda: c.get("/peers"), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"{len(doc)} peers")
    table.add_column("peer id")
    table.add_column("addresses", overflow="fold")
    for p in doc:
        add_row(table, p["peer_id"], "\n".join(p["addrs"]))
    out.print(table)


@peers_app.command("connect")
def peers_connect(
    multiaddr: Annotated[str, typer.Argument(help="e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3...")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dial any libp2p peer."""
    c = client(home, as_json)
    doc = call(lambda: c.post("/peers/connect", {"multiaddr": multiaddr}), as_json)
    if as_json:
        emit_json(doc)
    else:
        say(f"connected to {doc['peer_id']}")


@need_app.command("create")
def need_create(
    task_class: Annotated[str, typer.Option("--class", help="simple | complex | critical")],
    budget: Annotated[int, typer.Option("--budget", help="Escrowed from this node's "
                                                         "account, in the smallest unit.")],
    title: Annotated[str, typer.Option("--title")] = "",
    window: Annotated[str | None, typer.Option("--window", help="Bid window, e.g. 5s "
                                                                "(default: the swarm's).")] = None,
    bounty: Annotated[int, typer.Option("--bounty", min=0, help="Verify bounty in the "
                                                                "smallest unit, part of the "
                                                                "budget.")] = 0,
    timeout_s: Annotated[float, typer.Option(
        "--timeout", help="Seconds to wait for the bucket's outcome.", min=OUTCOME_WAIT_S_MIN,
        max=OUTCOME_WAIT_S_MAX)] = OUTCOME_WAIT_S_DEFAULT,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Post a NEED as a market task: its budget is escrowed from this node's account and
    its bucket runs the auction (as `task post`, amounts in the smallest unit). Prints
    its id. A task only for the plan's DAG, unfunded, is `plan add`."""
    c = client(home, as_json, timeout_s=timeout_s + OUTCOME_MARGIN_S)
    body: dict[str, Any] = {"class": task_class, "budget": budget, "title": title,
                            "verify_bounty": bounty, "timeout_s": timeout_s}
    if window is not None:
        body["bid_window_ms"] = market.duration_ms(window, "--window")
    doc = call(lambda: c.post("/needs", body), as_json)
    if as_json:
        emit_json(doc)
    else:
        say(doc["need_id"])


@plan_app.command("add")
def plan_add(
    task_class: Annotated[str, typer.Option("--class", help="simple | complex | critical")],
    budget: Annotated[int, typer.Option("--budget", help="The NEED's budget field, in the "
                                                         "smallest unit (not escrowed).")],
    title: Annotated[str, typer.Option("--title")] = "",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a task to the plan's DAG: a NEED gossiped to every node, funded by nobody (no
    escrow, no auction; `decide` may commit a proposal for it). Prints its id."""
    c = client(home, as_json)
    body: dict[str, Any] = {"class": task_class, "budget": budget, "title": title}
    doc = call(lambda: c.post("/plan/tasks", body), as_json)
    if as_json:
        emit_json({"need_id": doc["need_id"], "lamport": doc["lamport"]})
    else:
        say(doc["need_id"])


@plan_app.command("root")
def plan_root(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The running node's plan Merkle root."""
    c = client(home, as_json)
    doc = call(lambda: c.get("/plan/root"), as_json)
    if as_json:
        emit_json(doc)
    else:
        say(doc["plan_root"])


@plan_app.command("show")
def plan_show(
    thread: Annotated[str, typer.Argument(help="A task id (a NEED's id is its thread).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A task and everything it depends on; each task's state is its bucket's (none for
    a task nobody funded)."""
    c = client(home, as_json)
    doc = call(lambda: c.get(f"/plan/threads/{thread}"), as_json)
    if as_json:
        emit_json(doc)
        return
    table = new_table(f"thread {thread}")
    for col in ("task", "title", "class", "state", "depends on"):
        table.add_column(col, overflow="fold")
    for t in doc["tasks"]:
        add_row(table, t["task_id"], t["title"], t["class"], str(t["state"]),
                "\n".join(t["depends_on"]))
    out.print(table)


@plan_app.command("attest")
def plan_attest(
    need: Annotated[str, typer.Argument(help="The NEED whose winning bid carries the patch.")],
    proposal_id: Annotated[str, typer.Argument(help="The bid's proposal_id (`task show`).")],
    verdict: Annotated[str, typer.Argument(help="approve | reject")] = "approve",
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send ATTEST_PLAN for a bid's plan patch: a NEED posted with `--k-plan K` takes the
    winning patch into the plan once K staked verifiers other than the bidder approved."""
    if verdict not in ("approve", "reject"):
        raise typer.BadParameter("approve or reject", param_hint="VERDICT")
    c = client(home, as_json)
    doc = call(lambda: c.post("/envelopes", {
        "kind": "ATTEST_PLAN", "payload": {"need_id": need, "proposal_id": proposal_id,
                                           "verdict": verdict}}), as_json)
    if as_json:
        emit_json(doc)
    else:
        done = {"approve": "approved", "reject": "rejected"}[verdict]
        say(f"{done} the plan patch of {proposal_id} on {need}: {doc['id']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()


__all__ = ["app", "main"]
