"""`swarm-testnet`: local testnets and benchmarks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from swarm.cli.common import add_row, cell, new_table, safe, say
from swarm.node.client import ApiError
from swarm.node.home import HomeError

from . import bench as benchmarks
from . import benchrecord, cluster, market_sim, multiraft_sim, raftsim, sim, simkit

app = typer.Typer(name="swarm-testnet", help="Local testnets and benchmarks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
MarkdownOpt = Annotated[bool, typer.Option(
    "--markdown", help="Print the run and its figures as Markdown rows for "
                       "docs/BENCHMARKS.md instead of tables.")]


def _bench_run(name: str, as_json: bool, markdown: bool) -> benchrecord.Run:
    """The description of the benchmark run about to start (command, commit, machine,
    date); --json and --markdown exclude each other."""
    if as_json and markdown:
        err.print("[bold red]error:[/] choose one of --json and --markdown")
        raise typer.Exit(2)
    return benchrecord.describe(name)


def _bench_output(doc: dict[str, Any], run: benchrecord.Run,
                  figures: Callable[[], list[benchrecord.Figure]], as_json: bool,
                  markdown: bool) -> bool:
    """Print `doc` and its `run` as JSON, or the run's Markdown rows; False if neither
    was asked for (the command prints its tables)."""
    if as_json:
        sys.stdout.write(json.dumps({**doc, "run": run.as_dict()}, indent=2) + "\n")
    elif markdown:
        sys.stdout.write(benchrecord.markdown(run, figures()))
    return as_json or markdown


@app.command("sim")
def raft_sim_cmd(
    seeds: Annotated[int, typer.Option("--seeds", help="How many schedules to run.", min=1)]
    = 100,
    start: Annotated[int, typer.Option("--start", help="The first seed.", min=0)] = 0,
    shell: Annotated[bool, typer.Option(
        "--shell", help="Simulate the multi-raft shell (N nodes, many buckets, real "
                        "stores) instead of one bare Raft group.")] = False,
    market: Annotated[bool, typer.Option(
        "--market", help="Simulate the task market on the shell: agents posting, "
                         "bidding, working and attesting, money moving between "
                         "buckets.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run seeded fault schedules of a Raft group deciding NEEDs; check safety after every
    step and liveness after healing. A failing seed replays exactly with --start SEED
    --seeds 1 (and --shell or --market if it was one)."""
    failures: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    keys = (("steps", "posted", "finalized", "cancelled", "reopens", "crashes",
             "partitions", "worker_crashes", "silent", "wrong", "upheld", "rejected",
             "envelopes") if market else
            ("steps", "decided", "certified", "elections", "crashes", "crashes_in_round",
             "partitions", "breaks", "takeovers", "transfers", "garbage", "frames",
             "dropped", "clocks_far_ahead", "stamps_refused") if shell else
            ("steps", "decided", "elections", "crashes", "partitions", "conf_changes",
             "transfers", "snapshots_sent", "messages", "dropped"))
    run: Callable[[int], Any] = (market_sim.run_market_seed if market
                                 else multiraft_sim.run_seed if shell else raftsim.run_seed)
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("market schedules" if market else "shell schedules" if shell
                            else "schedules", total=seeds)
        for seed in range(start, start + seeds):
            try:
                result: Any = run(seed)
            except simkit.Violation as exc:  # both simulations raise it
                failures.append({"seed": seed, "violation": str(exc)})
            else:
                for k in keys:
                    totals[k] = totals.get(k, 0) + getattr(result, k)
            bar.advance(task)
    bad = [f["seed"] for f in failures]
    if as_json:
        sys.stdout.write(json.dumps({"schedules": seeds, "start": start,
                                     "violations": len(failures), "failures": failures,
                                     "totals": totals}, indent=2) + "\n")
    else:
        for f in failures:
            err.print(f"[red]violation[/] {escape(safe(f['violation'], newlines=True))}")
        out.print("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        line = f"{seeds} schedules, {len(failures)} violations"
        out.print(line + (f" (seeds {', '.join(map(str, bad))})" if bad else ""))
    if failures:
        raise typer.Exit(1)


@app.command("gossip-sim")
def sim_cmd(
    n: Annotated[int, typer.Option("-n", help="Number of replicas.", min=2, max=64)] = 5,
    directory: Annotated[Path, typer.Option("--dir", help="Where node{i}/envelopes.log go.")]
    = Path(".testnet"),
    envelopes: Annotated[int, typer.Option("--envelopes", min=1)] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    loss: Annotated[float, typer.Option("--loss", min=0.0, max=0.95)] = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Run N plan replicas over a simulated lossy, reordering network; check convergence."""
    config = sim.SimConfig(nodes=n, envelopes=envelopes, seed=seed, loss=loss)
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("gossip", total=envelopes)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        result = sim.run(config, progress)
    paths = sim.write_logs(result, directory)
    replay_ok = [sim.check_replay(node) for node in result.nodes]
    replicas: list[dict[str, Any]] = [
        {"node": i, "log": str(p), "plan_root": node.replica.plan.root().hex(),
         "accepted": len(node.replica.applied), "duplicates": node.replica.duplicates,
         "tasks": len(node.replica.plan.task_ids()), "links": len(node.replica.plan.links())}
        for i, (node, p) in enumerate(zip(result.nodes, paths, strict=True))
    ]
    doc = {
        "seed": seed, "nodes": n, "envelopes": envelopes, "loss": loss,
        "lost": result.lost, "duplicated": result.duplicated,
        "anti_entropy_rounds": result.anti_entropy_rounds, "repaired": result.repaired,
        "converged": result.converged, "replay_matches": all(replay_ok),
        "replicas": replicas,
    }
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        table = Table(title=f"simulated testnet: {n} replicas, {envelopes} envelopes, "
                            f"seed {seed}, loss {loss:.0%}")
        for col in ("node", "plan root", "accepted", "dups", "tasks", "links", "log"):
            table.add_column(col)
        for r in replicas:
            table.add_row(str(r["node"]), r["plan_root"][:16] + "…", str(r["accepted"]),
                          str(r["duplicates"]), str(r["tasks"]), str(r["links"]), r["log"])
        out.print(table)
        out.print(f"gossip lost {result.lost} deliveries, duplicated {result.duplicated}; "
                  f"{result.anti_entropy_rounds} anti-entropy rounds repaired "
                  f"{result.repaired}.")
        verdict = "[green]converged[/]" if result.converged else "[red]DIVERGED[/]"
        out.print(f"{verdict}: every replica has plan root {result.roots[0][:16]}…; "
                  f"replay of each log {'matches' if all(replay_ok) else 'DIFFERS'}.")
        out.print(f"try: swarm-node plan replay {paths[0]}")
    if not (result.converged and all(replay_ok)):
        raise typer.Exit(1)


@app.command("netbench")
def netbench_cmd(
    nodes: Annotated[str, typer.Option("--nodes", help="Comma-separated testnet sizes.")]
    = "5,16",
    paced: Annotated[int, typer.Option("--paced", help="NEEDs posted one at a time on node 0, "
                                       "for latency.")] = 200,
    gap_ms: Annotated[float, typer.Option("--gap-ms", min=0, help="Pause after each paced "
                                          "NEED.")] = 10.0,
    burst: Annotated[int, typer.Option("--burst", help="NEEDs posted as fast as possible.")]
    = 1000,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Gossip delivery latency, throughput and RSS on real node processes."""
    from . import netbench

    run = _bench_run("netbench", as_json, markdown)
    results = []
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("netbench", total=None)
        for n in [int(x) for x in nodes.split(",") if x.strip()]:
            results.append(netbench.run(n, paced=paced, gap_s=gap_ms / 1000, burst=burst,
                                        progress=lambda m: bar.update(task, description=m)))
    m = benchmarks.machine()
    if _bench_output({"machine": m, "results": results}, run,
                     lambda: netbench.figures(results), as_json, markdown):
        return
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']};"
              " every node a separate process on this machine")
    t = Table(title="gossip on loopback (latency: publish to acceptance, exact)")
    for c in ("nodes", "latency p50 (ms)", "p90 (ms)", "p99 (ms)", "samples",
              "CPU ms/env (receiver)", "burst env/s/node", "RSS max (MB)", "converged"):
        t.add_column(c)
    for r in results:
        t.add_row(str(r["nodes"]), str(r["latency"]["p50_ms"]), str(r["latency"]["p90_ms"]),
                  str(r["latency"]["p99_ms"]), str(r["latency"]["samples"]),
                  str(r["cpu"]["receiver_ms_per_env"]),
                  str(r["burst"]["accepted_per_s_per_node"]), str(r["rss_mb"]["max"]),
                  str(r["converged"]))
    out.print(t)


@app.command("policybench")
def policybench_cmd(
    per_verb: Annotated[int, typer.Option("--per-verb", min=10, help="Envelopes per verb.")]
    = 2000,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The WebAssembly policy: evaluation time through the pipeline's policy stage, fuel."""
    from . import policybench

    run = _bench_run("policybench", as_json, markdown)
    doc = policybench.run(per_verb=per_verb)
    if _bench_output(doc, run, lambda: policybench.figures(doc), as_json, markdown):
        return
    m, st = doc["machine"], doc["stage"]
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}"
              f"\npolicy {doc['policy_cid']}: {st['samples']} evaluations, p50 {st['p50_us']}"
              f" µs, p95 {st['p95_us']} µs, p99 {st['p99_us']} µs (target p99 < "
              f"{doc['target_p99_us']} µs)", highlight=False)
    t = Table(title="per verb (µs) and fuel")
    for c in ("verb", "p50", "p95", "p99", "fuel"):
        t.add_column(c)
    for kind, r in doc["per_verb"].items():
        t.add_row(kind, str(r["p50_us"]), str(r["p95_us"]), str(r["p99_us"]), str(r["fuel"]))
    out.print(t)
    t = Table(title="where the time goes (µs)")
    for c in ("part", "p50", "p99"):
        t.add_column(c)
    for name, r in doc["parts"].items():
        t.add_row(name.replace("_", " "), str(r["p50_us"]), str(r["p99_us"]))
    out.print(t)


@app.command("raftbench")
def raftbench_cmd(
    sequential: Annotated[int, typer.Option("--sequential", min=10)] = 1000,
    concurrent: Annotated[int, typer.Option("--concurrent", min=8)] = 1600,
    clients: Annotated[int, typer.Option("--clients", min=1, max=64)] = 8,
    kills: Annotated[int, typer.Option("--kills", min=0, max=20)] = 3,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """DECIDE on a 5-node testnet against first-writer-wins on a 5-member etcd: latency,
    throughput, and time from killing a leader to the next commit, with ratios."""
    from . import raftbench
    from .bench import machine

    run = _bench_run("raftbench", as_json, markdown)
    with err.status("starting") as status:
        doc = raftbench.run(sequential, concurrent, clients, kills,
                            progress=lambda text: status.update(text))
    doc["machine"] = machine()
    if _bench_output(doc, run, lambda: raftbench.figures(doc), as_json, markdown):
        if markdown and "skipped" in doc["etcd"]:
            err.print(f"etcd: {doc['etcd']['skipped']}", highlight=False)
        return
    ours, theirs = doc["can_swarm"], doc["etcd"]
    m = doc["machine"]
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
              f"{m['python']}", highlight=False)
    t = Table(title=f"DECIDE vs etcd first-writer-wins ({sequential} sequential, "
                    f"{concurrent} by {clients} clients, {kills} leader kills)")
    for col in ("", "can-swarm", "etcd", "ratio (ours/etcd)"):
        t.add_column(col)

    def row(name: str, a: float | None, b: float | None, unit: str) -> None:
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        t.add_row(name, f"{a}{unit}" if a is not None else "-",
                  f"{b}{unit}" if b is not None else "-", ratio)

    skipped = "skipped" in theirs
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        row(f"latency {q[:3]}", ours["latency"].get(q),
            None if skipped else theirs["latency"].get(q), " ms")
    row("throughput", ours["throughput_per_s"], None if skipped else
        theirs["throughput_per_s"], "/s")
    row("failover median", ours["failover_median_s"], None if skipped else
        theirs["failover_median_s"], " s")
    out.print(t)
    if skipped:
        out.print(f"etcd: {theirs['skipped']}")


@app.command("ledgerbench")
def ledgerbench_cmd(
    seconds: Annotated[float, typer.Option("--seconds", min=1.0, max=600.0)] = 20.0,
    clients: Annotated[int, typer.Option("--clients", help="Client threads per node.",
                                         min=1, max=32)] = 4,
    sequential: Annotated[int, typer.Option("--sequential", min=10)] = 200,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Committed ledger transfers per second on a fresh 5-node testnet (through the
    control API, every node paying the others), their latency, and the time until every
    node agrees on the ledger root afterwards."""
    from . import ledgerbench
    from .bench import machine

    run = _bench_run("ledgerbench", as_json, markdown)
    with err.status("starting") as status:
        doc = ledgerbench.run(seconds=seconds, clients=clients, sequential=sequential,
                              progress=lambda text: status.update(text))
    doc["machine"] = machine()
    if _bench_output(doc, run, lambda: ledgerbench.figures(doc), as_json, markdown):
        return
    m, lat = doc["machine"], doc["latency"]
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
              f"{m['python']}", highlight=False)
    out.print(f"latency (one client, {lat['n']} transfers): p50 {lat['p50_ms']} ms, "
              f"p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms", highlight=False)
    out.print(f"throughput ({doc['clients']} clients, {doc['seconds']} s): "
              f"{doc['transfers_per_s']} transfers/s committed, {doc['entries_per_s']} "
              f"log entries/s (transfers, effects, acknowledgements); "
              f"{doc['failed']} failed", highlight=False)
    out.print(f"every node agreed on the ledger root {doc['converge_s']} s after the load; "
              f"supply {'conserved' if doc['conserved'] else 'NOT CONSERVED'}",
              highlight=False)
    if not doc["conserved"] or doc["failed"]:
        raise typer.Exit(1)


@app.command("marketbench")
def marketbench_cmd(
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=2_000,
                                       help="NEEDs posted at once.")] = 30,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Complete task lifecycles per second on a fresh 5-node testnet whose roles do the
    work, NEED-to-payout latency, and envelopes, Raft entries and CPU per lifecycle on
    each node, with the ceiling those imply on this machine."""
    from . import marketbench
    from .bench import machine

    run = _bench_run("marketbench", as_json, markdown)
    try:
        with err.status("starting") as status:
            doc = marketbench.run(tasks, progress=lambda text: status.update(text))
    except (cluster.TestnetError, ApiError, HomeError) as exc:
        _fail(str(exc))
    doc["machine"] = machine()
    if _bench_output(doc, run, lambda: marketbench.figures(doc), as_json, markdown):
        return
    m = doc["machine"]
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} "
              f"{m['python']}", highlight=False)
    table = new_table(f"{doc['tasks']} lifecycles in {doc['seconds']} s: "
                      f"{doc['lifecycles_per_s']} /s; NEED to payout "
                      f"p50 {doc['latency'].get('p50_ms')} ms, "
                      f"p95 {doc['latency'].get('p95_ms')} ms")
    for col in ("per lifecycle", "envelopes in", "published", "Raft entries", "CPU s"):
        table.add_column(col, justify="right")
    rows = [(f"node{i}", n) for i, n in enumerate(doc["per_node"])]
    for name, n in [*rows, ("all nodes", doc["per_lifecycle"])]:
        add_row(table, name, n["envelopes_in"], n["envelopes_out"], n["raft_entries"],
                n["cpu_s"])
    out.print(table)
    out.print(f"bucket entries per lifecycle: {doc['entries_per_lifecycle']} ("
              + ", ".join(f"{k} {v}" for k, v in doc["entries_by_kind"].items()) + ")",
              highlight=False)
    out.print(f"ceiling at this CPU cost: {doc['ceiling_per_s']} lifecycles/s on "
              f"{doc['cores']} cores", highlight=False)


@app.command("bench")
def bench_cmd(
    envelopes: Annotated[int, typer.Option("--envelopes", help="Envelopes per micro-bench.")]
    = 5000,
    replay_sizes: Annotated[str, typer.Option("--replay", help="Comma-separated log sizes.")]
    = "10000,100000",
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Benchmark envelope encode/sign, decode/verify, plan ops and replay."""
    sizes = [int(s) for s in replay_sizes.split(",") if s.strip()]
    run = _bench_run("bench", as_json, markdown)
    doc: dict[str, Any] = {"machine": run.machine}
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("envelopes", total=None)
        doc["envelope"] = benchmarks.bench_envelopes(envelopes)
        bar.update(task, description="plan ops")
        doc["plan"] = benchmarks.bench_plan_ops(20_000)
        doc["replay"] = [
            benchmarks.bench_replay(size, lambda m: bar.update(task, description=m))
            for size in sizes
        ]
        bar.update(task, description="jobs")
        doc["jobs"] = benchmarks.bench_jobs()
        bar.update(task, description="challenge checks")
        doc["challenges"] = benchmarks.bench_challenges()
    if _bench_output(doc, run, lambda: benchmarks.figures(doc), as_json, markdown):
        return
    m = doc["machine"]
    assert isinstance(m, dict)
    out.print(f"machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}"
              " (one core used)")
    env = doc["envelope"]
    assert isinstance(env, dict)
    t = Table(title="per envelope (µs)")
    for c in ("operation", "p50", "p99", "n"):
        t.add_column(c)
    for name in ("encode_sign", "decode_verify"):
        t.add_row(name.replace("_", " + "), str(env[name]["p50_us"]), str(env[name]["p99_us"]),
                  str(env[name]["n"]))
    out.print(t)
    plan = doc["plan"]
    assert isinstance(plan, dict)
    out.print(f"plan ops: {plan['ops_per_s']:,} ops/s ({plan['ops']} ops); "
              f"Merkle root {plan['root_ms']} ms")
    t = Table(title="replay (decode, verify, causal delivery, plan, root)")
    for c in ("envelopes", "with signatures (s)", "env/s", "without signatures (s)", "env/s"):
        t.add_column(c)
    replays = doc["replay"]
    assert isinstance(replays, list)
    for r in replays:
        t.add_row(f"{r['envelopes']:,}", str(r["verify"]["seconds"]),
                  f"{r['verify']['envelopes_per_s']:,}", str(r["no_verify"]["seconds"]),
                  f"{r['no_verify']['envelopes_per_s']:,}")
    out.print(t)
    t = Table(title="WebAssembly jobs (one run)")
    for c in ("job", "input bytes", "p50 (µs)", "p99 (µs)", "fuel"):
        t.add_column(c)
    for j in doc["jobs"]:
        t.add_row(j["job"], f"{j['input_bytes']:,}", str(j["run"]["p50_us"]),
                  str(j["run"]["p99_us"]), f"{j['fuel']:,}")
    out.print(t)
    t = Table(title="a panel member's check of a challenge (without fetches)")
    for c in ("proof type", "check", "p50 (µs)", "p99 (µs)", "fuel"):
        t.add_column(c)
    for c in doc["challenges"]:
        t.add_row(c["proof_type"], c["check"], str(c["run"]["p50_us"]),
                  str(c["run"]["p99_us"]), f"{c['fuel']:,}")
    out.print(t)


DirOpt = Annotated[Path, typer.Option("--dir", help="Testnet folder (node i in DIR/node{i}).")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(safe(message, newlines=True))}", soft_wrap=True)
    raise typer.Exit(1)


def _status_table(members: list[cluster.Member], title: str) -> tuple[Table, list[dict[str, Any]]]:
    table = new_table(title)
    for col in ("node", "home", "pid", "alive", "api", "peers", "envelopes", "plan root",
                "roles"):
        table.add_column(col, no_wrap=col in ("api", "plan root"))
    rows = []
    for m in members:
        running = m.running_pids()  # a node restarted by hand runs under another pid
        pid = running[-1] if running else m.pid
        s = cluster.status_of(m) if running else None
        row = {"node": m.index, "home": str(m.home), "pid": pid, "alive": bool(running),
               "api": s["api"] if s else None, "peers": s["peers"] if s else None,
               "envelopes": s["envelopes"] if s else None,
               "plan_root": s["plan_root"] if s else None,
               "roles": s.get("roles", []) if s else None}
        rows.append(row)
        add_row(table, str(m.index), str(m.home), str(pid), "yes" if row["alive"] else "no",
                str(row["api"] or "-").removeprefix("http://"),
                str(row["peers"] if s else "-"),
                str(row["envelopes"] if s else "-"),
                str(row["plan_root"] or "-")[:12],
                ",".join(s.get("roles", [])) if s else "-")
    return table, rows


def _print_status(directory: Path, members: list[cluster.Member], title: str,
                  as_json: bool) -> None:
    table, rows = _status_table(members, title)
    if as_json:
        sys.stdout.write(json.dumps({"dir": str(directory), "nodes": rows}, indent=2) + "\n")
    else:
        out.print(table)


@app.command("up")
def up_cmd(
    n: Annotated[int, typer.Option("-n", help="Number of nodes.", min=1, max=64)] = 5,
    directory: DirOpt = Path(".testnet"),
    decide_unknown_needs: Annotated[bool, typer.Option(
        "--decide-unknown-needs", help="Let the nodes decide ids that are no NEED they "
        "know (for Raft tests and benchmarks that pick ids by bucket).")] = False,
    roles: Annotated[bool, typer.Option(
        "--roles/--no-roles", help="Run the built-in planner, worker and verifier agents, "
        "spread over the nodes (node0 only verifies).")] = True,
    faulty: Annotated[bool, typer.Option(
        "--faulty", help="Inject faults into the roles (5 nodes or more): the last node's "
        "worker commits made-up results, the one before it attests them unchecked, node0 "
        "audits and challenges (for `challenge-demo`).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate keys and a genesis, start N nodes on loopback, wait until connected."""
    try:
        with Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task(f"starting {n} nodes", total=n)
            members = cluster.up(directory, n,
                                 lambda msg, done: bar.update(task, description=msg,
                                                              completed=done),
                                 decide_unknown_needs=decide_unknown_needs, roles=roles,
                                 faulty=faulty)
    except cluster.TestnetError as exc:
        _fail(str(exc))
    _print_status(directory, members, f"testnet in {directory}: {n} nodes up", as_json)


@app.command("status")
def status_cmd(directory: DirOpt = Path(".testnet"), as_json: JsonOpt = False) -> None:
    """Each node's home, pid, API address, peers and plan root."""
    try:
        members = cluster.load_state(directory)
    except cluster.TestnetError as exc:
        _fail(str(exc))
    _print_status(directory, members, f"testnet in {directory}", as_json)


@app.command("down")
def down_cmd(directory: DirOpt = Path(".testnet"), as_json: JsonOpt = False) -> None:
    """Stop every node of the testnet (SIGTERM, then SIGKILL after 15 s): the node
    running on each home now, whether `up` or a user started it."""
    try:
        results = cluster.down(directory)
    except cluster.TestnetError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps([{"node": m.index, "pid": m.pid, "result": r}
                                     for m, r in results]) + "\n")
    else:
        for m, r in results:
            say(f"node{m.index} (pid {m.pid}) {r}", console=out)


@app.command("soak")
def soak_cmd(
    minutes: Annotated[float, typer.Option("--minutes", min=0.1, help="How long the "
                                           "workload and the nemesis run.")] = 5.0,
    nodes: Annotated[int, typer.Option("--nodes", min=3, max=16)] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the nemesis and the "
                                      "workload's choices.")] = 1,
    directory: Annotated[Path | None, typer.Option("--dir", help="Testnet folder, kept "
                                                   "afterwards (default: a temporary "
                                                   "one, removed).")] = None,
    check_dir: Annotated[Path | None, typer.Option(
        "--check", metavar="RUN_DIR", help="Run nothing: judge the run saved in RUN_DIR "
        "(a soak's --dir) again from its files and print its report.")] = None,
    market: Annotated[bool, typer.Option(
        "--market", help="Agents also trade tasks: post funded NEEDs, bid, claim, "
                         "commit and attest; the ledger check counts budgets and "
                         "payouts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Chaos soak: N real nodes, agents' workload (NEEDs, competing DECIDEs from every
    node, transfers, staking) while a seeded nemesis kill -9s and SIGSTOPs a minority;
    then heal and check one decision per NEED everywhere, equal to every answer, the
    ledger conserved and consistent, no crash. The history and final state are saved in
    DIR/soak/. Exit code 1 on any violation, 2 if the soak could not run."""
    from . import soak

    if check_dir is not None:
        code = soak.check_command(check_dir, as_json, out, err)
    else:
        code = soak.command(soak.SoakConfig(minutes=minutes, nodes=nodes, seed=seed,
                                            directory=directory, market=market),
                            as_json, out, err)
    if code:
        raise typer.Exit(code)


@app.command("smoke")
def smoke_cmd(
    directory: DirOpt = Path(".testnet"),
    needs: Annotated[int, typer.Option("--needs", help="NEEDs to post per node.")] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Post NEEDs on every node, wait until all nodes agree on the plan root, then have
    every node bid to DECIDE every NEED: one winner each, certified, known everywhere."""
    try:
        members = cluster.load_state(directory)
        result = cluster.smoke(members, needs)
    except (cluster.TestnetError, ApiError, HomeError) as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    for node, need in result["posted"]:
        say(f"node{node} posted NEED {need}", console=out)
    table, _ = _status_table(members, "after the smoke flow")
    out.print(table)
    out.print(f"[green]converged[/]: {len(members)} nodes agree on plan root "
              f"{escape(safe(result['statuses'][0]['plan_root'][:16]))}… with "
              f"{len(result['posted'])} NEEDs ({result['seconds']} s from the first post)")
    wins: dict[str, int] = {}
    for winner in result["decided"].values():
        wins[winner] = wins.get(winner, 0) + 1
    out.print(f"[green]decided[/]: every node bid for every NEED at once; each NEED got "
              f"exactly one winner, the same on every node, certified by its Raft bucket "
              f"and known to all {len(members)} nodes ({result['decide_seconds']} s); "
              f"wins: " + escape(safe(", ".join(f"{k} {v}" for k, v in sorted(wins.items())))))
    home0 = members[0].home
    say(f"explore: .venv/bin/swarm-node status --home {home0}; "
        f"swarm-node plan show {result['posted'][0][1]} --home {home0}; "
        f"swarm-node decision {result['posted'][0][1]} --home {home0}; "
        f"swarm-node raft status --home {home0}; "
        f"stop with `make testnet-down`", console=out)


@app.command("demo")
def demo_cmd(
    directory: DirOpt = Path(".testnet"),
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=200,
                                       help="NEEDs to post.")] = 10,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for "
                                             "every task to be paid.")] = 100.0,
    as_json: JsonOpt = False,
) -> None:
    """Post NEEDs with real jobs (WebAssembly and host) from several nodes and watch the
    nodes' built-in roles bid, claim, run, verify and get paid, in a live table; then
    check every task finalized and paid, every result right, credits conserved and the
    same plan, task and ledger roots on every node. Exit code 1 if any check fails."""
    from . import demo

    try:
        members = cluster.load_state(directory)
        posted = demo.post_tasks(members, tasks)
        names = _account_names(members)
        _, seconds = _live(as_json,
                           lambda show: demo.follow(members, posted, timeout_s, show),
                           lambda current: _demo_table(current, names))
        result = {**demo.summary(members, posted), "seconds": seconds}
    except (cluster.TestnetError, ApiError, HomeError) as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print_demo_summary(result)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("challenge-demo")
def challenge_demo_cmd(
    directory: DirOpt = Path(".testnet-challenge"),
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for a "
                                             "challenge to be upheld and its task "
                                             "paid.")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """On a testnet started with `up --faulty`: post NEEDs until a faulty worker's wrong
    result is attested by its colluding verifier, then watch node0 challenge it, the
    panel uphold, the attester get slashed and the task redone, in a live table; then
    check the challenge upheld, the slash and the challenger's share, the right output
    paid, credits conserved and the same ledger root everywhere. Exit code 1 if a check
    fails."""
    from . import challenge_demo

    try:
        members = cluster.load_state(directory)
        names = _account_names(members)
        tasks, seconds = _live(as_json,
                               lambda show: challenge_demo.run(members, show, timeout_s),
                               lambda current: _challenge_table(current, names))
        result = {**challenge_demo.summary(members, tasks), "seconds": seconds}
    except (cluster.TestnetError, ApiError, HomeError) as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print_challenge_summary(result, names)
    if not result["ok"]:
        raise typer.Exit(1)


def _challenge_table(tasks: list[Any], names: dict[str, str]) -> Table:
    table = new_table(f"{sum(t.done for t in tasks)} of {len(tasks)} tasks done")
    for col in ("task", "state", "first worker", "committee", "challenge", "paid to"):
        table.add_column(col, no_wrap=col != "committee")
    styles = {"PAID": "bold green", "CANCELLED": "red", "ATTESTED": "cyan",
              "UPHELD": "bold magenta", "REJECTED": "red", "voting": "magenta"}
    for t in tasks:
        d = t.doc
        committee = (d.get("commit") or {}).get("committee") or []
        state = "PAID" if d.get("paid") else t.state
        table.add_row(cell(t.need[-8:]), Text(safe(state), style=styles.get(state, "yellow")),
                      cell(names.get(t.first_worker, "-")),
                      cell(" ".join(names.get(a, a[:8]) for a in committee) or "-"),
                      Text(safe(t.challenge or "-"), style=styles.get(t.challenge, "")),
                      cell(names.get(d.get("winner") or "", "-") if d.get("paid") else "-"))
    return table


def _print_challenge_summary(r: dict[str, Any], names: dict[str, str]) -> None:
    ch = r["challenge"] or {}
    table = new_table(f"challenge demo: {r['tasks']} tasks in {r['seconds']} s",
                      show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in (("task", r["task"] or "-"),
                       ("challenge", ch.get("challenge_id", "-")),
                       ("challenger", names.get(ch.get("challenger", ""), "-")),
                       ("votes", f"{ch.get('uphold', 0)} uphold, {ch.get('reject', 0)} "
                                 f"reject"),
                       ("slashed", f"{r['slashed']} credits from "
                                   f"{names.get(r['slash'].get('account', ''), '-')}"),
                       ("rulings", ", ".join(r["rulings"]) or "-"),
                       ("burned", r["burned"]), ("ledger root", r["ledger_root"][:16])):
        add_row(table, key, str(value))
    for v in r.get("verdicts", ()):  # node0's judge on proofs against a wrong result
        add_row(table, f"verdict {v['proof_type']}",
                f"{'holds' if v['holds'] else 'does not hold'}, {v['fuel']} fuel "
                f"({v['reason']})")
    for check, ok in r["checks"].items():
        table.add_row(cell(check.replace("_", " ")),
                      Text("yes", style="green") if ok else Text("NO", style="bold red"))
    out.print(table)
    out.print("[green]every check passed[/]" if r["ok"] else "[red]a check failed[/]")


def _live(as_json: bool, follow: Callable[[Callable[[Any], None]], Any],
          table: Callable[[Any], Table]) -> tuple[Any, float]:
    """Run `follow(show)` under a live table (`table(tasks)` each time it shows them;
    nothing with --json); what it returned, and the seconds it took."""
    from rich.live import Live

    with Live(console=out, refresh_per_second=4, transient=as_json,
              auto_refresh=False) as live:
        def show(current: Any) -> None:
            if not as_json:
                live.update(table(current), refresh=True)

        t0 = time.monotonic()
        value = follow(show)
        seconds = round(time.monotonic() - t0, 1)
    if not as_json:
        out.print()  # the live table leaves the cursor at its last line
    return value, seconds


def _account_names(members: list[cluster.Member]) -> dict[str, str]:
    """Account (hex) -> "nodeN", to show who won and who verified."""
    from swarm.node.client import Client

    return {Client(m.home).get("/status")["account"]: f"node{m.index}" for m in members}


def _demo_table(tasks: list[Any], names: dict[str, str]) -> Table:
    table = new_table(f"{sum(t.done for t in tasks)} of {len(tasks)} tasks done")
    for col in ("task", "job", "poster", "state", "winner", "committee", "paid"):
        table.add_column(col, no_wrap=col != "committee")
    styles = {"PAID": "bold green", "FINALIZED": "green", "CANCELLED": "red",
              "ATTESTED": "cyan"}
    for t in tasks:
        d = t.doc
        committee = (d.get("commit") or {}).get("committee") or []
        paid = sum(int(p["amount"]) for p in d.get("payouts", ()) if p["kind"] != "refund")
        unit = int(d.get("unit_per_credit", 1_000_000))
        state = "PAID" if d.get("paid") else t.state
        table.add_row(cell(t.need[-8:]), cell(t.job), cell(f"node{t.poster}"),
                      Text(safe(state), style=styles.get(state, "yellow")),
                      cell(names.get(d.get("winner") or "", "-")),
                      cell(" ".join(names.get(a, a[:8]) for a in committee) or "-"),
                      cell(f"{paid / unit:g}" if d.get("paid") else "-"))
    return table


def _print_demo_summary(r: dict[str, Any]) -> None:
    table = new_table(f"demo: {r['finalized']} of {r['tasks']} tasks finalized and paid "
                      f"in {r['seconds']} s", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in (("paid to workers", r["paid_to_workers"]),
                       ("verify fees, to committees", r["paid_to_verifiers"]),
                       ("refunded to posters", r["refunded"]), ("burned", r["burned"]),
                       ("plan root", r["roots"]["plan"][:16]),
                       ("task root", r["roots"]["task"][:16]),
                       ("ledger root", r["roots"]["ledger"][:16])):
        add_row(table, key, str(value))
    for check, ok in r["checks"].items():
        table.add_row(cell(check.replace("_", " ")),
                      Text("yes", style="green") if ok else Text("NO", style="bold red"))
    out.print(table)
    for need, why in r["wrong_results"].items():
        out.print(f"[red]wrong result[/] for {escape(need)}: {escape(why)}")
    out.print("[green]every check passed[/]" if r["ok"] else "[red]a check failed[/]")


def main() -> None:
    app()
