"""`swarm-node policy`: the pinned WebAssembly policy, offline.

`show` prints the module's CID, the CID genesis pins, the rule table read back from the
module itself, and the genesis parameters it is given; `eval FILE` runs the policy on a
signed envelope file the way a node's pipeline would (stake from the genesis validator
set, the sender's rate taken as this one envelope) and prints verdict, reason and fuel.
Both read the genesis from `--genesis FILE`, else from the home, else use the default
parameters with no pin.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from swarm.node.home import GENESIS_FILE, resolve_home
from swarm.protocol import genesis as genesis_mod
from swarm.protocol.envelope import decode_envelope
from swarm.protocol.errors import ProtocolError
from swarm.protocol.genesis import Genesis

from .common import JsonOpt, add_row, emit_json, fail, new_table, out, say

policy_app = typer.Typer(help="The pinned WebAssembly policy (offline).", no_args_is_help=True)
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Node home whose genesis to use (default $SWARM_HOME or "
                 "~/.can-swarm).", show_default=False),
]
GenesisOpt = Annotated[
    Path | None,
    typer.Option("--genesis", help="Genesis file (default: the home's, else the default "
                 "parameters).", show_default=False),
]






def _genesis(genesis_file: Path | None, home: Path | None, as_json: bool) -> tuple[
        Genesis | None, str]:
    path = genesis_file if genesis_file is not None else resolve_home(home) / GENESIS_FILE
    if genesis_file is None and not path.exists():
        return None, "none (default parameters, no pin)"
    try:
        return genesis_mod.from_json(path.read_text()), str(path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", as_json=as_json)
    except ProtocolError as exc:
        fail(f"{path}: {exc}", as_json=as_json)


def _policy(gen: Genesis | None, as_json: bool) -> Any:
    from swarm.node.policy import GenesisContext, WasmPolicy
    from swarm.policy_wasm.host import PolicyLoadError, load_for_genesis

    params = gen.params if gen is not None else genesis_mod.DEFAULT_PARAMS
    pinned = gen.value.get("policy_cid") if gen is not None else None
    try:
        host = load_for_genesis(params, pinned)
    except PolicyLoadError as exc:
        fail(str(exc), as_json=as_json)
    context = GenesisContext(gen, now_ms=lambda: 0) if gen is not None else None
    return host, (WasmPolicy(host, context) if context is not None else None)


@policy_app.command("show")
def show(home: HomeOpt = None, genesis_file: GenesisOpt = None, as_json: JsonOpt = False,
         ) -> None:
    """The policy module's CID, its rules (read from the module) and its parameters."""
    gen, source = _genesis(genesis_file, home, as_json)
    host, _ = _policy(gen, as_json)
    doc = {**host.describe(), "genesis": source,
           "pinned_cid": gen.value.get("policy_cid") if gen is not None else None}
    if as_json:
        emit_json(doc)
        return
    say(f"policy {doc['cid']} ({doc['size_bytes']} bytes, ABI {doc['abi_version']})\n"
        f"pinned by genesis: {doc['pinned_cid'] or 'no'}  genesis: {source}\n"
        f"fuel budget per evaluation: {doc['fuel_budget']}")
    if doc["unusable"]:
        say(f"UNUSABLE: {doc['unusable']['reason']}: {doc['unusable']['detail']}")
    table = new_table("rules (from the module's table)")
    for col in ("verb", "payload bytes max", "items max", "required fields", "stake",
                "bounty cap", "proof cap"):
        table.add_column(col, overflow="fold")
    for kind, rule in doc["rules"].items():
        if not rule["allowed"]:
            add_row(table, kind, "not allowed", "", "", "", "", "")
            continue
        add_row(table, kind, str(rule["payload_bytes_max"]), str(rule["items_max"]),
                ", ".join(rule["required_fields"]) or "-",
                "yes" if rule["stake_required"] else "",
                "yes" if rule["bounty_capped"] else "",
                "yes" if rule["proof_capped"] else "")
    out.print(table)
    params = new_table("parameters (from genesis)", show_header=False)
    params.add_column(style="bold")
    params.add_column()
    for name, value in doc["params"].items():
        add_row(params, name, str(value))
    out.print(params)


@policy_app.command("eval")
def evaluate(
    file: Annotated[Path, typer.Argument(help="Signed envelope file (wire bytes), or - for "
                                         "stdin.")],
    home: HomeOpt = None,
    genesis_file: GenesisOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the policy on one envelope: verdict, reason, fuel used (exit 1 if denied)."""
    gen, source = _genesis(genesis_file, home, as_json)
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", as_json=as_json)
    try:
        env = decode_envelope(data, swarm=gen.swarm_id if gen is not None else None)
    except ProtocolError as exc:
        fail(f"invalid envelope (the pipeline rejects it before the policy): {exc}",
             as_json=as_json)
    host, policy = _policy(gen, as_json)
    if policy is not None:
        result = policy.run(env)
        stake = policy.context.stake_of(env.sender)
    else:
        from swarm.policy_wasm import abi

        stake = 0
        result = host.evaluate_view(abi.envelope_view(env, sender_stake=0, sender_rate=1))
    doc = {**result.to_json(), "id": str(env.id), "kind": env.kind,
           "sender": env.sender.hex(), "sender_stake": stake, "sender_rate": 1,
           "policy_cid": str(host.cid), "genesis": source}
    if as_json:
        emit_json(doc)
    else:
        say(f"{doc['verdict']} ({doc['reason']}), fuel {doc['fuel']}\n"
            f"{env.kind} {doc['id']} from {doc['sender']} (stake {stake})\n"
            f"policy {doc['policy_cid']}, genesis {source}")
    if not result.allowed:
        raise typer.Exit(1)
