"""A datadriven harness for Raft interaction scripts (after etcd-io/raft's
`rafttest/interaction_env*.go`). A script in testdata/raft/*.txt is a sequence of

    command arg arg key=value
    ----
    expected output

blocks separated by blank lines. `RAFT_REWRITE=1 pytest tests/protocol/test_raft_interaction.py`
rewrites the expected output from the actual one (then read the diff!).

Commands:
    add-nodes N [voters=1,2,3] [pre-vote=true] [check-quorum=true] [snapshot-timeout=T]
                           nodes 1..N
    campaign ID            ID starts an election now
    tick-election ID       tick ID until its randomized election timeout elapses
    tick-heartbeat ID      one heartbeat timeout worth of ticks on ID
    tick ID N              N ticks on ID
    propose ID DATA        propose DATA at ID
    conf ID add|remove N   propose a membership change at ID
    transfer-leader ID T   ask ID (the leader or a follower) to hand leadership to T
    isolate ID             drop every message to or from ID until `heal`
    heal                   undo isolate
    compact ID             snapshot ID at its applied index and drop the log before it
    hold-snapshots on|off  while on, `stabilize` keeps SNAP messages in flight ("held")
                           instead of delivering them, as a slow snapshot stream would
    deliver-snapshots      deliver the held SNAP messages (at the next `stabilize`)
    drop-snapshots         lose the held SNAP messages
    report-snapshot ID PEER ok|fail   ID's shell reports its snapshot to PEER's outcome
    progress ID            the leader ID's view of each follower (match, next, state)
    stabilize              handle Ready and deliver messages everywhere until quiet;
                           prints every message delivered (or dropped)
    state                  role, term, leader, commit, applied and voters of each node
    log ID                 the log of ID (persisted)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import datadriven

from swarm.protocol.raft import (
    ConfChange,
    Config,
    ConfOp,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
)
from swarm.protocol.raftlog import Entry, EntryKind, MemoryStorage


def fmt_entry(e: Entry) -> str:
    if e.kind == EntryKind.CONF:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} conf {cc.op.name.lower()} {cc.node}"
    return f"{e.term}/{e.index} {e.data.decode() if e.data else '<noop>'}"


def fmt_msg(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    if m.type in (MsgType.APP, MsgType.VOTE, MsgType.PRE_VOTE):
        parts.append(f"log={m.log_term}/{m.index}")
    if m.type in (MsgType.APP, MsgType.HEARTBEAT):
        parts.append(f"commit={m.commit}")
    if m.type == MsgType.APP_RESP:
        parts.append(f"index={m.index}")
    if m.reject:
        parts.append(f"REJECT hint={m.reject_hint}/{m.log_term}"
                     if m.type == MsgType.APP_RESP else "REJECT")
    if m.entries:
        parts.append("[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        parts.append(f"snapshot={m.snapshot.term}/{m.snapshot.index} "
                     f"voters={list(m.snapshot.voters)}")
    if m.context:
        parts.append(f"ctx={m.context.decode()}")
    return " ".join(parts)


@dataclass
class Env:
    nodes: dict[int, RawNode] = field(default_factory=dict)
    disks: dict[int, MemoryStorage] = field(default_factory=dict)
    applied: dict[int, list[str]] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    isolated: set[int] = field(default_factory=set)
    hold: bool = False
    held: list[Message] = field(default_factory=list)

    def run(self, cmd: str, args: list[str], kw: dict[str, str]) -> list[str]:
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        out: list[str] = handler(args, kw)
        return out

    # -- commands --

    def cmd_add_nodes(self, args: list[str], kw: dict[str, str]) -> list[str]:
        n = int(args[0])
        voters = [int(x) for x in kw.get("voters", ",".join(map(str, range(1, n + 1))))
                  .split(",")]
        pre_vote = kw.get("pre-vote", "true") == "true"
        check_quorum = kw.get("check-quorum", "true") == "true"
        snap_timeout = int(kw["snapshot-timeout"]) if "snapshot-timeout" in kw else None
        for i in range(1, n + 1):
            disk = MemoryStorage(voters)
            self.disks[i] = disk
            self.applied[i] = []
            self.nodes[i] = RawNode(Config(i, election_tick=10, pre_vote=pre_vote,
                                           check_quorum=check_quorum, seed=i,
                                           snapshot_timeout_tick=snap_timeout), disk)
        return [f"{n} nodes, voters {voters}"]

    def cmd_campaign(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.nodes[int(args[0])].campaign()
        return []

    def cmd_tick_election(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.nodes[int(args[0])]
        for _ in range(node.raft.randomized_election_timeout):
            node.tick()
        return []

    def cmd_tick_heartbeat(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.nodes[int(args[0])]
        for _ in range(node.raft.config.heartbeat_tick):
            node.tick()
        return []

    def cmd_tick(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.nodes[int(args[0])]
        for _ in range(int(args[1])):
            node.tick()
        return []

    def cmd_hold_snapshots(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.hold = args[0] == "on"
        return []

    def cmd_deliver_snapshots(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.queue.extend(self.held)
        out = [f"delivering {fmt_msg(m)}" for m in self.held]
        self.held = []
        return out

    def cmd_drop_snapshots(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out = [f"lost {fmt_msg(m)}" for m in self.held]
        self.held = []
        return out

    def cmd_report_snapshot(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.nodes[int(args[0])].report_snapshot(int(args[1]), args[2] == "ok")
        return []

    def cmd_progress(self, args: list[str], kw: dict[str, str]) -> list[str]:
        r = self.nodes[int(args[0])].raft
        return [f"{v}: match={pr.match} next={pr.next} {pr.state.name.lower()}"
                + (f" pending={pr.pending_snapshot}" if pr.pending_snapshot else "")
                + (" paused" if pr.is_paused(r.config.max_inflight_msgs) else "")
                for v, pr in sorted(r.prs.items()) if v != r.id]

    def cmd_propose(self, args: list[str], kw: dict[str, str]) -> list[str]:
        try:
            self.nodes[int(args[0])].propose(args[1].encode())
        except ProposalDropped as exc:
            return [f"dropped: {exc.reason}"]
        return []

    def cmd_conf(self, args: list[str], kw: dict[str, str]) -> list[str]:
        op = ConfOp.ADD_VOTER if args[1] == "add" else ConfOp.REMOVE_VOTER
        try:
            self.nodes[int(args[0])].propose_conf_change(ConfChange(op, int(args[2])))
        except ProposalDropped as exc:
            return [f"dropped: {exc.reason}"]
        return []

    def cmd_transfer_leader(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.nodes[int(args[0])].transfer_leader(int(args[1]))
        return []

    def cmd_isolate(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.isolated.add(int(args[0]))
        return []

    def cmd_heal(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.isolated.clear()
        return []

    def cmd_compact(self, args: list[str], kw: dict[str, str]) -> list[str]:
        i = int(args[0])
        node, disk = self.nodes[i], self.disks[i]
        applied = node.raft.log.applied
        data = ";".join(self.applied[i]).encode()
        disk.create_snapshot(applied, sorted(node.raft.voters), data)
        disk.compact(applied)
        return [f"{i}: snapshot at {applied}, log starts at {disk.first_index()}"]

    def cmd_stabilize(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out: list[str] = []
        for _ in range(1000):
            progressed = False
            for i in sorted(self.nodes):
                progressed |= self._handle_ready(i, out)
            while self.queue:
                progressed = True
                m = self.queue.popleft()
                if m.frm in self.isolated or m.to in self.isolated:
                    out.append(f"dropped {fmt_msg(m)}")
                    continue
                if self.hold and m.type == MsgType.SNAP:
                    out.append(f"held {fmt_msg(m)}")
                    self.held.append(m)
                    continue
                out.append(fmt_msg(m))
                self.nodes[m.to].step(m)
            if not progressed:
                return out
        raise AssertionError("stabilize did not converge")

    def cmd_state(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out = []
        for i in sorted(self.nodes):
            r = self.nodes[i].raft
            out.append(f"{i}: {r.role.name.lower()} term={r.term} lead={r.lead} "
                       f"commit={r.log.committed} applied={r.log.applied} "
                       f"voters={sorted(r.voters)}")
        return out

    def cmd_log(self, args: list[str], kw: dict[str, str]) -> list[str]:
        disk = self.disks[int(args[0])]
        ents = disk.entries(disk.first_index(), disk.last_index() + 1, 1 << 30)
        return [fmt_entry(e) for e in ents] or ["(empty)"]

    def _handle_ready(self, i: int, out: list[str]) -> bool:
        node, disk = self.nodes[i], self.disks[i]
        if not node.has_ready():
            return False
        rd = node.ready()
        self.queue.extend(rd.early_messages)
        if rd.snapshot is not None:
            disk.apply_snapshot(rd.snapshot)
            self.applied[i] = [x for x in rd.snapshot.data.decode().split(";") if x]
        disk.append(rd.entries)
        if rd.hard_state is not None:
            disk.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL and e.data:
                self.applied[i].append(e.data.decode())
        if rd.soft_state is not None:
            out.append(f"> {i} becomes {rd.soft_state.role.name.lower()} "
                       f"(term {node.raft.term}, leader {rd.soft_state.lead})")
        node.advance(rd)
        return True


def run_script(path: Path) -> tuple[str, str]:
    return datadriven.run_script(path, Env, "RAFT_REWRITE")
