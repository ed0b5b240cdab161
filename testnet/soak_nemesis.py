"""The soak's nemesis and the crash monitor: the faults, and the deaths nobody caused.

Owns the fault schedule (`random.Random(seed)` picks which node, which fault, how long,
when): kill -9 then a restart 2-6 s later, or SIGSTOP for 1-8 s then SIGCONT, never more
than a minority of the nodes down at once, in storms separated by calm; the heal; and
the monitor that reports a node which died when the nemesis did not kill it. Each fault
goes into the history when it ends, each crash as an incident.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from pathlib import Path

from . import cluster
from .soak_history import Fault, Recorder
from .soak_nodes import Nodes

STORM_S = (20.0, 40.0)  # a storm's length
CALM_S = (8.0, 15.0)  # calm once every node is back
FIRST_FAULT_S = (2.0, 4.0)
FAULT_GAP_S = (1.0, 5.0)  # between faults in a storm
KILL_DOWN_S = (2.0, 6.0)  # kill -9 to restart
STOP_DOWN_S = (1.0, 8.0)  # SIGSTOP to SIGCONT
DEATH_WAIT_S = 10.0  # for a killed process to be gone
ANSWER_WAIT_S = 90.0  # for a restarted node's API to answer
NEMESIS_STEP_S = 0.1
MONITOR_STEP_S = 1.0


class Nemesis:
    """kill -9 + restart, SIGSTOP + SIGCONT; at most a minority of the nodes down."""

    def __init__(self, net: Nodes, rec: Recorder, n: int, seed: int,
                 stop: threading.Event) -> None:
        self.net = net
        self.rec = rec
        self.n = n
        self.rng = random.Random(seed)
        self.stop = stop
        self.max_down = (n - 1) // 2
        # node -> (fault, phase, due): phase "down" until due, then "restarting" (kill)
        self.active: dict[int, tuple[Fault, str, float]] = {}
        self.lock = threading.Lock()
        self.killed_pids: set[int] = set()

    def down_now(self) -> dict[int, str]:
        with self.lock:
            return {i: f.kind for i, (f, _, _) in self.active.items()}

    def run(self) -> None:
        """Storms of 20-40 s, in which a new fault follows 1-5 s after the last one as
        long as fewer than `max_down` nodes are down (so faults overlap and nodes come
        back into a cluster that moved on), each followed by 8-15 s of calm once every
        node is back, so that latency under faults can be told from calm latency."""
        storm_end = self.rec.now() + self.rng.uniform(*STORM_S)
        next_at = self.rec.now() + self.rng.uniform(*FIRST_FAULT_S)
        calm = False
        while not self.stop.is_set():
            self._advance(self.rec.now())
            now = self.rec.now()  # after the restarts and probes _advance may have made
            if not calm and now >= storm_end:
                calm, next_at = True, float("inf")
            if calm:
                if self.active:
                    next_at = float("inf")
                elif next_at == float("inf"):  # every node is back: calm starts now
                    next_at = now + self.rng.uniform(*CALM_S)
                elif now >= next_at:
                    calm = False
                    storm_end = now + self.rng.uniform(*STORM_S)
            if not calm and now >= next_at and len(self.active) < self.max_down:
                healthy = [i for i in range(self.n) if i not in self.active]
                node = self.rng.choice(healthy)
                kind = self.rng.choice(["kill", "stop"])
                planned = self.rng.uniform(*KILL_DOWN_S) if kind == "kill" \
                    else self.rng.uniform(*STOP_DOWN_S)
                self._inject(kind, node, planned, now)
                next_at = now + self.rng.uniform(*FAULT_GAP_S)
            self.stop.wait(NEMESIS_STEP_S)

    def _inject(self, kind: str, node: int, planned: float, now: float) -> None:
        m = self.net.member(node)
        if not m.alive():
            return  # the monitor reports and revives it
        f = Fault(kind, node, now, planned_s=round(planned, 2))
        with self.lock:
            if kind == "kill":
                self.killed_pids.add(m.pid)
                os.kill(m.pid, signal.SIGKILL)
            else:
                os.kill(m.pid, signal.SIGSTOP)
            self.active[node] = (f, "down", now + planned)
        self.rec.fault_started(f)

    def _advance(self, now: float) -> None:
        with self.lock:
            items = list(self.active.items())
        for node, (f, phase, due) in items:
            if phase == "down" and now >= due:
                m = self.net.member(node)
                if f.kind == "stop":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(m.pid, signal.SIGCONT)
                    self.rec.fault_ended(f)
                    with self.lock:
                        del self.active[node]
                else:
                    with contextlib.suppress(cluster.TestnetError):
                        cluster.wait_until(lambda m=m: not m.alive(),  # type: ignore[misc]
                                           DEATH_WAIT_S, f"node{node} to die")
                    self.net.restart(node)
                    with self.lock:
                        self.active[node] = (f, "restarting", now + ANSWER_WAIT_S)
            elif phase == "restarting":
                m = self.net.member(node)
                if cluster.status_of(m) is not None:
                    self.rec.fault_ended(f)
                    with self.lock:
                        del self.active[node]
                elif now >= due or not m.alive():
                    self.rec.incident("restart-failed", node,
                                      f"node{node} did not come back after a restart "
                                      f"(see {m.home / 'stdio.log'})")
                    self.rec.fault_ended(f)
                    with self.lock:
                        del self.active[node]

    def heal(self) -> None:
        """CONT every frozen node, restart every killed one, wait until all answer."""
        with self.lock:
            items = list(self.active.items())
        for node, (f, phase, _) in items:
            m = self.net.member(node)
            if f.kind == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.pid, signal.SIGCONT)
            elif phase == "down":
                with contextlib.suppress(cluster.TestnetError):
                    cluster.wait_until(lambda m=m: not m.alive(),  # type: ignore[misc]
                                       DEATH_WAIT_S, f"node{node} to die")
                self.net.restart(node)
        for node, (f, _, _) in items:
            m = self.net.member(node)
            try:
                cluster.wait_until(lambda m=m: cluster.status_of(m) is not None,  # type: ignore[misc]
                                   ANSWER_WAIT_S, f"node{node} to answer after the heal")
            except cluster.TestnetError as exc:
                self.rec.incident("heal-failed", node, str(exc))
            self.rec.fault_ended(f)
        with self.lock:
            self.active.clear()


def monitor(net: Nodes, nemesis: Nemesis, rec: Recorder, stop: threading.Event) -> None:
    """A node that dies when the nemesis did not kill it is a crash: report, revive."""
    while not stop.wait(MONITOR_STEP_S):
        down = nemesis.down_now()
        for i in range(nemesis.n):
            m = net.member(i)
            if i in down or m.pid in nemesis.killed_pids or m.alive():
                continue
            proc = net.procs.get(i)
            code = proc.poll() if proc is not None else None
            rec.incident("crash", i,
                         f"node{i} (pid {m.pid}) died without the nemesis"
                         f"{f' (exit code {code})' if code is not None else ''}; last "
                         f"lines of {m.home / 'stdio.log'}: {tail(m.home / 'stdio.log')}")
            net.restart(i)


def tail(path: Path, lines: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
