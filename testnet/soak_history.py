"""The soak's record of a run: what every client was told, what the nemesis did, and
each node's state after the heal; the types, the recorder and the files.

Owns the layout of a run's `soak/` folder and its file formats; talks to no node. The
driver (testnet/soak.py and its helpers) writes these files; the checker
(testnet/soak_check.py) reads only what `load` returns, so `swarm-testnet soak --check
RUN_DIR` judges a saved run exactly as the run judged itself.

Files in `RUN_DIR/soak/` (JSON; times in seconds since the run's start, monotonic):

* `run.json`, written before the workload starts: `format` (`FORMAT`), `seed`, `nodes`,
  `minutes`, `t0_unix` (the wall clock at time 0), `bucket_count`, `accounts` (the
  genesis accounts, node i's at index i) and `genesis_totals` (each account's balance +
  locked + unbonding + escrowed at the start, in units).
* `history.jsonl`, one JSON object a line, appended as each event completes (so in
  completion order; `start_s` gives the invocation order):
  - an operation: `{"event": "op", "kind", "process", "node", "start_s", "end_s",
    "result", "outcome", "reason", "attempts", "info"}`. `result` is Jepsen's type: `ok`
    (the node answered: applied, or for a DECIDE the decision that holds), `fail`
    (surely not applied, a refusal included) or `info` (unknown: it may apply);
    `outcome` refines it (`RESULT_OF`). `kind` is a workload operation
    (`WORKLOAD_KINDS`) or a DECIDE after the heal (`FINAL_KINDS`); `info` holds the
    operation's arguments and answer (`title`, `need`; `need`, `proposal`, `answer`,
    `index`; `from`, `to`, `units`, `op_id`; `bucket` for a probe; `need`, `epoch` for
    a market step, `title` and `need` for a task posted).
  - a fault, written when it ends: `{"event": "fault", "kind": "kill"|"stop", "node",
    "start_s", "end_s", "planned_s"}` (`end_s` 0 if it never ended).
  - an incident the driver saw, each a violation: `{"event": "incident", "kind", "node",
    "at_s", "text"}` (`kind` is the violation's name: `crash`, `restart-failed`,
    `heal-failed`).
* `final/node{i}.json`, node i after the heal (`NodeFinal`): `poll` (its last
  convergence poll: `error`, `plan_root`, `ledger_root`, `in_flight`, `decisions` as
  NEED -> proposal), `campaigning` (buckets with a replica neither leader nor follower,
  in a first reading and, if any node had one, a second 3 s later, else null), `ledger`
  (`error`, `supply` as /ledger/supply answered, `balances` as /ledger/balance answered
  for each genesis account), `plan_needs` (acknowledged NEED -> whether this node's plan
  holds it, for the NEEDs looked up here) and `stats` (RSS, GC pauses, tracebacks).
* `final/heal.json`: `converge_timeout_s`, `converge_s` (heal to convergence),
  `wall_s` (the whole run).
* `report.json`: the run's report, verdict included.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = 1
MARKET_KINDS = ("task_post", "task_bid", "task_claim", "task_commit", "task_attest")
WORKLOAD_KINDS = ("need", "decide", "transfer", "stake", "unstake", "complete_unbonding",
                  *MARKET_KINDS)
LEDGER_KINDS = ("transfer", "stake", "unstake", "complete_unbonding")
FINAL_KINDS = ("final_read", "probe")  # DECIDEs after the heal: every NEED, every bucket
# outcome -> result: `refused` is the ledger's answer no (409), `failed` a request that
# surely never took effect, `indeterminate` one that may still apply (timeout, 503).
RESULT_OF = {"ok": "ok", "retried": "ok", "refused": "fail", "failed": "fail",
             "indeterminate": "info"}
FAULT_KINDS = ("kill", "stop")
INCIDENT_KINDS = ("crash", "restart-failed", "heal-failed")


class HistoryError(Exception):
    """A run's files are missing or malformed; the message names the file and what."""


@dataclass
class Op:
    """One client operation and everything the client learnt about it. The driver fills
    it in as the answer comes; once recorded it is not changed."""

    kind: str
    node: int
    start_s: float
    end_s: float = 0.0
    outcome: str = ""
    reason: str = ""
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)
    process: str = ""

    @property
    def result(self) -> str:
        return RESULT_OF[self.outcome]

    @property
    def acknowledged(self) -> bool:
        return self.outcome in ("ok", "retried")


@dataclass
class Fault:
    kind: str  # kill | stop
    node: int
    start_s: float
    end_s: float = 0.0  # when the node was back (answering, or CONT sent)
    planned_s: float = 0.0


@dataclass(frozen=True)
class Incident:
    """Something the driver saw go wrong during the run (a node died by itself, did not
    come back): a violation whatever the final state says."""

    kind: str
    node: int
    at_s: float
    text: str


@dataclass(frozen=True)
class History:
    ops: list[Op]
    faults: list[Fault]
    incidents: list[Incident]

    def workload(self) -> list[Op]:
        return [op for op in self.ops if op.kind in WORKLOAD_KINDS]

    def final(self) -> list[Op]:
        return [op for op in self.ops if op.kind in FINAL_KINDS]


@dataclass(frozen=True)
class RunInfo:
    seed: int
    nodes: int
    minutes: float
    t0_unix: float
    bucket_count: int
    accounts: list[str]
    genesis_totals: dict[str, int]


@dataclass(frozen=True)
class NodePoll:
    """A node as the last convergence poll read it (`error` if it did not answer)."""

    error: str | None = None
    plan_root: str | None = None
    ledger_root: str | None = None
    in_flight: int = 0
    decisions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeLedger:
    """The node's ledger read after convergence; `error` if a read failed (what was read
    before it is kept)."""

    error: str | None = None
    supply: dict[str, Any] | None = None
    balances: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeFinal:
    node: int
    poll: NodePoll
    ledger: NodeLedger
    campaigning: list[int] = field(default_factory=list)
    campaigning_again: list[int] | None = None  # 3 s later; None if nothing to confirm
    plan_needs: dict[str, bool] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    # Every task the node knows after the heal: NEED -> state, epoch, paid, poster,
    # budget and payouts (as GET /tasks/{need} answers them).
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FinalState:
    nodes: list[NodeFinal]
    converge_timeout_s: float
    converge_s: float
    wall_s: float


@dataclass(frozen=True)
class Run:
    """A run as saved: what `check` and `report` take."""

    info: RunInfo
    history: History
    final: FinalState


# -- the folder -----------------------------------------------------------------------

@dataclass(frozen=True)
class RunFiles:
    folder: Path

    @staticmethod
    def of(run_dir: Path) -> RunFiles:
        """The soak files of `run_dir` (the soak's --dir), or of `run_dir` itself if it
        is a `soak/` folder."""
        return RunFiles(run_dir if (run_dir / "run.json").exists() else run_dir / "soak")

    @property
    def run(self) -> Path:
        return self.folder / "run.json"

    @property
    def history(self) -> Path:
        return self.folder / "history.jsonl"

    @property
    def final(self) -> Path:
        return self.folder / "final"

    @property
    def heal(self) -> Path:
        return self.final / "heal.json"

    @property
    def report(self) -> Path:
        return self.folder / "report.json"

    def node(self, i: int) -> Path:
        return self.final / f"node{i}.json"


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise HistoryError(f"{path}: not JSON ({exc})") from None


def write_run(files: RunFiles, info: RunInfo) -> None:
    _write_json(files.run, {"format": FORMAT, **asdict(info)})


def write_final(files: RunFiles, final: FinalState) -> None:
    for node in final.nodes:
        _write_json(files.node(node.node), asdict(node))
    _write_json(files.heal, {"converge_timeout_s": final.converge_timeout_s,
                             "converge_s": final.converge_s, "wall_s": final.wall_s})


def write_report(files: RunFiles, doc: dict[str, Any]) -> None:
    _write_json(files.report, doc)


def read_report(files: RunFiles) -> dict[str, Any] | None:
    if not files.report.exists():
        return None
    doc = _read_json(files.report)
    return doc if isinstance(doc, dict) else None


def write_history(path: Path, history: History) -> None:
    """A whole history at once (the recorder appends instead), for made-up runs."""
    lines = [*map(op_line, history.ops), *map(fault_line, history.faults),
             *map(incident_line, history.incidents)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x, default=str) + "\n" for x in lines))


def op_line(op: Op) -> dict[str, Any]:
    return {"event": "op", "kind": op.kind, "process": op.process, "node": op.node,
            "start_s": op.start_s, "end_s": op.end_s,
            "result": op.result, "outcome": op.outcome, "reason": op.reason,
            "attempts": op.attempts, "info": op.info}


def fault_line(f: Fault) -> dict[str, Any]:
    return {"event": "fault", "kind": f.kind, "node": f.node, "start_s": f.start_s,
            "end_s": f.end_s, "planned_s": f.planned_s}


def incident_line(x: Incident) -> dict[str, Any]:
    return {"event": "incident", "kind": x.kind, "node": x.node, "at_s": x.at_s,
            "text": x.text}


# -- reading --------------------------------------------------------------------------

def load(run_dir: Path) -> Run:
    """A saved run, checked for shape; HistoryError names the file and line at fault."""
    files = RunFiles.of(run_dir)
    raw = _read_json(files.run)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise HistoryError(f"{files.run}: not a soak run of format {FORMAT}")
    try:
        info = RunInfo(seed=int(raw["seed"]), nodes=int(raw["nodes"]),
                       minutes=float(raw["minutes"]), t0_unix=float(raw["t0_unix"]),
                       bucket_count=int(raw["bucket_count"]),
                       accounts=[str(a) for a in raw["accounts"]],
                       genesis_totals={str(k): int(v)
                                       for k, v in raw["genesis_totals"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HistoryError(f"{files.run}: bad field ({exc!r})") from None
    if len(info.accounts) != info.nodes or set(info.genesis_totals) != set(info.accounts):
        raise HistoryError(f"{files.run}: accounts and genesis_totals must name one "
                           f"account per node")
    return Run(info, read_history(files.history), read_final(files, info.nodes))


def read_history(path: Path) -> History:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    ops: list[Op] = []
    faults: list[Fault] = []
    incidents: list[Incident] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            event = doc["event"]
            if event == "op":
                ops.append(_op(doc))
            elif event == "fault":
                if doc["kind"] not in FAULT_KINDS:
                    raise ValueError(f"unknown fault kind {doc['kind']!r}")
                faults.append(Fault(str(doc["kind"]), int(doc["node"]),
                                    float(doc["start_s"]), float(doc["end_s"]),
                                    float(doc["planned_s"])))
            elif event == "incident":
                if doc["kind"] not in INCIDENT_KINDS:
                    raise ValueError(f"unknown incident kind {doc['kind']!r}")
                incidents.append(Incident(str(doc["kind"]), int(doc["node"]),
                                          float(doc["at_s"]), str(doc["text"])))
            else:
                raise ValueError(f"unknown event {event!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HistoryError(f"{path}:{number}: {exc}") from None
    return History(ops, faults, incidents)


def _op(doc: dict[str, Any]) -> Op:
    kind, outcome = doc["kind"], doc["outcome"]
    if kind not in WORKLOAD_KINDS + FINAL_KINDS:
        raise ValueError(f"unknown operation kind {kind!r}")
    if outcome not in RESULT_OF:
        raise ValueError(f"unknown outcome {outcome!r}")
    if doc["result"] != RESULT_OF[outcome]:
        raise ValueError(f"result {doc['result']!r} contradicts outcome {outcome!r}")
    info = doc["info"]
    if not isinstance(info, dict):
        raise ValueError("info must be an object")
    return Op(kind=kind, node=int(doc["node"]), start_s=float(doc["start_s"]),
              end_s=float(doc["end_s"]), outcome=outcome, reason=str(doc["reason"]),
              attempts=int(doc["attempts"]), info=info, process=str(doc["process"]))


def read_final(files: RunFiles, nodes: int) -> FinalState:
    heal = _read_json(files.heal)
    out = []
    for i in range(nodes):
        path = files.node(i)
        doc = _read_json(path)
        try:
            poll, ledger = doc["poll"], doc["ledger"]
            out.append(NodeFinal(
                node=int(doc["node"]),
                poll=NodePoll(error=poll["error"], plan_root=poll["plan_root"],
                              ledger_root=poll["ledger_root"],
                              in_flight=int(poll["in_flight"]),
                              decisions={str(k): str(v)
                                         for k, v in poll["decisions"].items()}),
                ledger=NodeLedger(error=ledger["error"], supply=ledger["supply"],
                                  balances=dict(ledger["balances"])),
                campaigning=[int(b) for b in doc["campaigning"]],
                campaigning_again=None if doc["campaigning_again"] is None
                else [int(b) for b in doc["campaigning_again"]],
                plan_needs={str(k): bool(v) for k, v in doc["plan_needs"].items()},
                stats=dict(doc["stats"]),
                tasks={str(k): dict(v) for k, v in doc.get("tasks", {}).items()}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HistoryError(f"{path}: bad field ({exc!r})") from None
        if out[-1].node != i:
            raise HistoryError(f"{path}: says node {out[-1].node}")
    try:
        return FinalState(out, float(heal["converge_timeout_s"]), float(heal["converge_s"]),
                          float(heal["wall_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryError(f"{files.heal}: bad field ({exc!r})") from None


# -- recording ------------------------------------------------------------------------

class Recorder:
    """The history as the run makes it, shared by the driver's threads: each event is
    appended to `history.jsonl` as it completes; the in-memory lists feed the progress
    line. The clock is the driver's (monotonic seconds since `t0`)."""

    def __init__(self, t0: float, path: Path) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.faults: list[Fault] = []  # as injected; written when they end
        self.incidents: list[Incident] = []
        self._in_flight: dict[int, Op] = {}
        self._unwritten_faults: dict[int, Fault] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def begin(self, kind: str, node: int, info: dict[str, Any] | None = None,
              process: str | None = None) -> Op:
        """An operation invoked now; `add` records its completion."""
        op = Op(kind, node, self.now(), info=dict(info or {}),
                process=process or threading.current_thread().name)
        with self.lock:
            self._in_flight[id(op)] = op
        return op

    def add(self, op: Op) -> None:
        """Record a completed operation (once: an op given up by `give_up_in_flight`
        is not recorded again)."""
        with self.lock:
            if self._in_flight.pop(id(op), None) is None:
                return
            self.ops.append(op)
            self._write(op_line(op))

    def give_up_in_flight(self, reason: str) -> int:
        """Record every operation still without an answer as unknown (its thread did not
        finish in time); returns how many."""
        with self.lock:
            left = list(self._in_flight.values())
            self._in_flight.clear()
            for op in left:
                op.outcome, op.reason, op.end_s = "indeterminate", reason, self.now()
                self.ops.append(op)
                self._write(op_line(op))
        return len(left)

    def fault_started(self, f: Fault) -> None:
        with self.lock:
            self.faults.append(f)
            self._unwritten_faults[id(f)] = f

    def fault_ended(self, f: Fault) -> None:
        with self.lock:
            f.end_s = self.now()
            if self._unwritten_faults.pop(id(f), None) is not None:
                self._write(fault_line(f))

    def incident(self, kind: str, node: int, text: str) -> None:
        assert kind in INCIDENT_KINDS, kind
        x = Incident(kind, node, self.now(), text)
        with self.lock:
            self.incidents.append(x)
            self._write(incident_line(x))

    def close(self) -> None:
        """Write the faults that never ended (end_s 0) and close the file."""
        with self.lock:
            for f in self._unwritten_faults.values():
                self._write(fault_line(f))
            self._unwritten_faults.clear()
            self._file.close()

    def _write(self, doc: dict[str, Any]) -> None:
        self._file.write(json.dumps(doc, default=str) + "\n")
        self._file.flush()
