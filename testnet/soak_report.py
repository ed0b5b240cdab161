"""The soak's report: one JSON document from a saved run and its verdict, and its
display as tables.

Owns the figures a run is read by (operations by kind and outcome with the reasons,
faults, latency during faults and in calm, per node RSS, GC pauses, restarts and
tracebacks) and the document's shape, which `--json` prints and `report.json` keeps.
Computed from the run's files only, like the verdict, so `--check` reprints it.
"""

from __future__ import annotations

from typing import Any

from .soak_check import Verdict
from .soak_history import LEDGER_KINDS, Fault, Op, Run
from .stats import percentiles_ms

RECOVERY_S = 2.0  # an op this soon after a fault ended still counts as "during faults"
ANSWERED = ("ok", "retried", "refused")  # outcomes whose latency is the node's answer


def overlaps_fault(op: Op, faults: list[Fault]) -> bool:
    return any(op.start_s <= (f.end_s or op.end_s) + RECOVERY_S and op.end_s >= f.start_s
               for f in faults)


def report(run: Run, verdict: Verdict, directory: str) -> dict[str, Any]:
    info, history, final = run.info, run.history, run.final
    ops, faults = history.workload(), history.faults
    by_kind: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for op in ops:
        by_kind.setdefault(op.kind, {}).setdefault(op.outcome, 0)
        by_kind[op.kind][op.outcome] += 1
        if op.reason:
            key = f"{op.outcome}: {op.reason}"
            reasons.setdefault(op.kind, {}).setdefault(key, 0)
            reasons[op.kind][key] += 1
    latency: dict[str, dict[str, Any]] = {}
    for name, kinds in (("decide", ("decide",)), ("ledger", LEDGER_KINDS)):
        calm: list[float] = []
        during: list[float] = []
        for op in ops:
            if op.kind in kinds and op.outcome in ANSWERED:
                (during if overlaps_fault(op, faults) else calm).append(op.end_s - op.start_s)
        latency[name] = {"calm": percentiles_ms(calm, ndigits=1),
                         "faults": percentiles_ms(during, ndigits=1)}
    fault_counts: dict[str, int] = {}
    for f in faults:
        fault_counts[f.kind] = fault_counts.get(f.kind, 0) + 1
    nodes: list[dict[str, Any]] = []
    for n in final.nodes:
        nodes.append({"node": n.node, "rss_start_mb": n.stats.get("rss_start_mb"),
                      "rss_end_mb": n.stats.get("rss_end_mb"),
                      "restarts": sum(1 for f in faults
                                      if f.node == n.node and f.kind == "kill"),
                      "gc": n.stats.get("gc"),
                      "tracebacks": list(n.stats.get("tracebacks") or [])})
    texts = [x.text for x in verdict.violations]
    return {
        "seed": info.seed, "nodes": info.nodes, "minutes": info.minutes,
        "dir": directory, "wall_s": round(final.wall_s, 1),
        "ops": len(ops), "ops_by_kind": by_kind, "reasons": reasons,
        "faults": len(faults), "faults_by_kind": fault_counts,
        "fault_log": [{"kind": f.kind, "node": f.node, "at_s": round(f.start_s, 2),
                       "back_s": round(f.end_s, 2), "planned_s": f.planned_s}
                      for f in sorted(faults, key=lambda f: f.start_s)],
        "needs": sum(1 for o in ops if o.kind == "need" and o.info.get("need")),
        "latency": latency,
        "check": {**verdict.facts, "converge_s": final.converge_s,
                  "violations": [{"name": x.name, "text": x.text}
                                 for x in verdict.violations]},
        "node_stats": nodes,
        "tracebacks": sum(len(x["tracebacks"]) for x in nodes),
        "violations": texts,
        "summary": f"soak: {len(ops)} ops, {len(faults)} faults, {len(texts)} violations",
    }


def render(doc: dict[str, Any], out: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from swarm.cli.common import safe

    t = Table(title=f"soak: {doc['nodes']} nodes, {doc['minutes']} min, seed {doc['seed']} "
                    f"({doc['wall_s']} s wall)")
    for c in ("op", "ok", "retried", "refused", "unknown", "failed"):
        t.add_column(c, no_wrap=True)
    for kind, counts in sorted(doc["ops_by_kind"].items()):
        t.add_row(kind, *(str(counts.get(o, 0)) for o in
                          ("ok", "retried", "refused", "indeterminate", "failed")))
    out.print(t)
    out.print("refused: the ledger said no (409, an answer); unknown: no answer (timeout, "
              "5xx), the op may have applied; failed: surely not applied (connection "
              "refused, no API yet, a 4xx).", highlight=False)
    for kind, reasons in sorted(doc["reasons"].items()):
        text = "; ".join(f"{r} ×{k}" for r, k in sorted(reasons.items(), key=lambda x: -x[1]))
        out.print(f"  {kind}: {escape(safe(text, newlines=True))}", highlight=False)
    f = Table(title=f"faults injected: {doc['faults']}")
    for c in ("kind", "count", "nodes"):
        f.add_column(c)
    for kind, count in sorted(doc["faults_by_kind"].items()):
        nodes = sorted({x["node"] for x in doc["fault_log"] if x["kind"] == kind})
        f.add_row({"kill": "kill -9, restart", "stop": "SIGSTOP, SIGCONT"}.get(kind, kind),
                  str(count), ", ".join(map(str, nodes)))
    out.print(f)
    lat = Table(title="latency (ms) of answered ops: during faults (or within "
                      f"{RECOVERY_S:.0f} s after) vs calm")
    for c in ("ops", "when", "n", "p50", "p95", "p99"):
        lat.add_column(c)
    for name, parts in doc["latency"].items():
        for when in ("calm", "faults"):
            p = parts[when]
            lat.add_row(name, when, str(p["n"]), str(p.get("p50_ms", "-")),
                        str(p.get("p95_ms", "-")), str(p.get("p99_ms", "-")))
    out.print(lat)
    nt = Table(title="nodes")
    for c in ("node", "RSS MB start", "end", "restarts", "GCs", "GC paused s",
              "gen2 max ≤ s", "tracebacks"):
        nt.add_column(c)
    for x in doc["node_stats"]:
        gc = x["gc"]
        if gc:
            gens = [v for v in gc.values() if isinstance(v, dict)]
            count = sum(int(v.get("count", 0)) for v in gens)
            paused = sum(v.get("sum", 0.0) for v in gens)
            gc_cols = [str(count), f"{paused:.3f}", str(gc.get("gen2_max_le_s") or "-")]
        else:
            gc_cols = ["-", "-", "-"]
        nt.add_row(str(x["node"]), str(x["rss_start_mb"]), str(x["rss_end_mb"]),
                   str(x["restarts"]), *gc_cols, str(len(x["tracebacks"])))
    out.print(nt)
    for x in doc["node_stats"]:
        for tb in x["tracebacks"][:5]:
            out.print(f"node{x['node']} traceback: {escape(safe(tb, newlines=True))}",
                      highlight=False)
    c = doc["check"]
    out.print(f"after the heal: {c['final_reads']} NEEDs read back by a final DECIDE "
              f"({c['decided_final_read']} were undecided until then); "
              f"{c['buckets_probed'] - len(c['buckets_stuck'])}/{c['buckets_probed']} "
              f"buckets decided a new NEED; converged "
              f"{'yes' if c['converged'] else 'NO'} in {c['converge_s']} s; plan root "
              f"{str(c['plan_root'])[:16]}…, ledger root {str(c['ledger_root'])[:16]}…; "
              f"{c['needs_looked_up']} acknowledged NEEDs looked up in the plans",
              highlight=False)
    if c["campaigning"]:
        out.print(f"note: {len(c['campaigning'])} replicas still campaigning after "
                  f"convergence, in two readings 3 s apart (a replica that never "
                  f"rejoined its quiet group): "
                  f"{escape(', '.join(c['campaigning'][:12]))}", highlight=False)
    for v in c["violations"]:
        out.print(f"[bold red]violation ({escape(v['name'])}):[/] "
                  f"{escape(safe(v['text'], newlines=True))}")
    colour = "red" if doc["violations"] else "green"
    out.print(f"[{colour}]{escape(safe(doc['summary'], newlines=True))}[/]")
