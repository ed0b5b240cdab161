"""A datadriven harness for ledger transcripts (testdata/ledger/*.txt), in the format of
raft_interaction.py: blocks of

    command arg arg key=value
    ----
    expected output

separated by blank lines; `#` lines at the top are the script's description.
`LEDGER_REWRITE=1 pytest tests/protocol/test_ledger_interaction.py` rewrites the
expected output from the actual one (then read the diff!).

Accounts are names (the account id is sha256 of the name); amounts are in credits
("1.5" allowed); every bucket keeps its own log, stamped with the time set by `at`.

Commands:
    genesis buckets=N [PARAM=V ...] NAME=BAL ... stake:NAME=STAKE ...
                          build the ledger; prints each account's bucket
    at MS                 entries from now on are stamped MS (never earlier than a
                          bucket's last entry)
    transfer FROM TO AMT [id=ID] [bucket=B]
                          order a transfer (id names the op, to propose it twice;
                          bucket orders it somewhere other than its home)
    escrow PAYER EID AMT [hold=MS]      open an escrow
    bounty PAYER EID AMT CLASS          open a bounty escrow
    release PAYER EID [NAME:AMT ...] [burn=AMT] [slash=V+V] [challenger=C] [honest=H+H]
                          pay out an escrow; slash= adds failed_challenge orders
    cancel PAYER EID
    stake NAME AMT | unstake NAME AMT | complete NAME
    slash NAME REASON [misses=N] [challenger=C] [honest=H+H]
    deliver [SRC->TGT#SEQ]  deliver one waiting batch, or every waiting batch in
                          outbox order (a second `deliver` repeats the unacknowledged)
    ack                   acknowledge, in each source, what each target has applied
    outbox                the waiting batches
    balances              every account with anything in it
    supply                the supply view and the conservation check
    history NAME          the audit records of NAME's entries
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import datadriven

from swarm.protocol import genesis as genesis_mod
from swarm.protocol.amounts import format_credits
from swarm.protocol.buckets import bucket_of
from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.ledger import Applied
from swarm.protocol.ledger_ops import (
    Body,
    Bounty,
    Cancel,
    CompleteUnbonding,
    Credit,
    EffectAck,
    EffectBatch,
    Escrow,
    LedgerEntry,
    Release,
    Share,
    Slash,
    SlashOrder,
    Stake,
    Transfer,
    Unstake,
)
from swarm.testnet.ledger_sim import LedgerReplica

EVIDENCE = dag_cbor_cid(b"transcript evidence")


def acct(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


@dataclass
class Env:
    replica: LedgerReplica | None = None
    names: dict[bytes, str] = field(default_factory=dict)
    index: dict[int, int] = field(default_factory=dict)
    clock: dict[int, int] = field(default_factory=dict)
    now_ms: int = 0
    ops: int = 0

    @property
    def r(self) -> LedgerReplica:
        assert self.replica is not None, "run `genesis` first"
        return self.replica

    def units(self, text: str) -> int:
        return int(Decimal(text) * self.r.unit)

    def cr(self, units: int) -> str:
        return format_credits(units, self.r.unit)

    def name(self, account: bytes) -> str:
        return self.names.get(account, account.hex()[:8])

    def account(self, name: str) -> bytes:
        a = acct(name)
        self.names[a] = name
        return a

    def op_id(self, kw: dict[str, str]) -> bytes:
        if "id" in kw:
            return hashlib.sha256(b"id:" + kw["id"].encode()).digest()
        self.ops += 1
        return hashlib.sha256(b"op%d" % self.ops).digest()

    def commit(self, bucket: int, body: Body) -> Applied:
        index = self.index.get(bucket, 0) + 1
        ts = max(self.now_ms, self.clock.get(bucket, 0))
        self.index[bucket], self.clock[bucket] = index, ts
        return self.r.buckets[bucket].apply(LedgerEntry(index, ts, body))

    def submit(self, op: Body, kw: dict[str, str], home: bytes) -> list[str]:
        b = int(kw["bucket"]) if "bucket" in kw else bucket_of(home, self.r.bucket_count)
        return self.outcome(self.commit(b, op))

    def outcome(self, result: Applied) -> list[str]:
        rec = result.record
        if not rec.ok:
            return [f"error {rec.error_code}: {rec.error}"]
        out = ["ok"]
        for c in rec.changes:
            delta = self.cr(c.delta) if c.field != "violations" else str(c.delta)
            who = "burned" if c.field == "burned" else f"{self.name(c.account)}.{c.field}"
            out.append(f"  {who} {'+' if c.delta > 0 else ''}{delta}")
        out += [f"  sent {self.fmt_batch(b)}" for b in result.effects]
        return out

    def fmt_batch(self, b: EffectBatch) -> str:
        parts = []
        for e in b.effects:
            if isinstance(e, Credit):
                parts.append(f"credit {self.name(e.account)} {self.cr(e.amount)} ({e.kind})")
            else:
                parts.append(f"slash {self.name(e.account)} {e.reason}")
        return (f"b{b.source_bucket}->b{b.target_bucket}#{b.seq} "
                f"(entry {b.source_index}): " + ", ".join(parts))

    def waiting(self) -> list[EffectBatch]:
        return [x for b in sorted(self.r.buckets) for x in self.r.buckets[b].outbox()]

    def run(self, cmd: str, args: list[str], kw: dict[str, str]) -> list[str]:
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        return handler(args, kw)  # type: ignore[no-any-return]

    # --- commands -------------------------------------------------------------------

    def cmd_genesis(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """genesis buckets=2 alice=40 stake:val=200"""
        params: dict[str, int] = {"replicas": 1, "bucket_count": int(kw.pop("buckets", "1"))}
        accounts, validators = [], []
        unit = genesis_mod.DEFAULT_PARAMS["unit_per_credit"]
        for key, value in kw.items():
            if key in genesis_mod.DEFAULT_PARAMS:
                params[key] = int(value)
            elif key.startswith("stake:"):
                name = key.split(":", 1)[1]
                validators.append({"account": self.account(name), "org": name, "asn": 1,
                                   "region": "r", "stake": int(Decimal(value) * unit)})
            else:
                accounts.append({"account": self.account(key),
                                 "balance": int(Decimal(value) * unit)})
        if not validators:
            validators.append({"account": self.account("genesis-validator"), "org": "g",
                               "asn": 1, "region": "r", "stake": 0})
        gen = genesis_mod.new(name="transcript", created_ms=0, validators=validators,
                              accounts=accounts, params=params)
        self.replica = LedgerReplica.from_genesis(gen)
        return [f"{self.name(a)}: bucket {bucket_of(a, self.r.bucket_count)}"
                for a in sorted(self.names, key=self.name)]

    def cmd_at(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """at 3600000"""
        self.now_ms = int(args[0])
        return []

    def cmd_transfer(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """transfer alice bob 15"""
        src, dst = self.account(args[0]), self.account(args[1])
        return self.submit(Transfer(self.op_id(kw), src, dst, self.units(args[2])), kw, src)

    def cmd_escrow(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """escrow alice e1 30 hold=3600000"""
        payer = self.account(args[0])
        return self.submit(Escrow(self.op_id(kw), payer, acct("escrow:" + args[1]),
                                  self.units(args[2]), int(kw.get("hold", "0"))), kw, payer)

    def cmd_bounty(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """bounty alice e1 10 simple"""
        payer = self.account(args[0])
        return self.submit(Bounty(self.op_id(kw), payer, acct("escrow:" + args[1]),
                                  self.units(args[2]), args[3]), kw, payer)

    def _order(self, name: str, reason: str, kw: dict[str, str]) -> SlashOrder:
        honest = tuple(sorted(self.account(h) for h in kw["honest"].split("+"))
                       ) if "honest" in kw else ()
        challenger = self.account(kw["challenger"]) if "challenger" in kw else None
        return SlashOrder(self.account(name), reason, EVIDENCE, int(kw.get("misses", "1")),
                          challenger, honest)

    def cmd_release(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """release alice e1 bob:20 carol:9 burn=1 slash=v1 challenger=c honest=h"""
        payer = self.account(args[0])
        shares = []
        for pair in args[2:]:
            name, amount = pair.split(":")
            shares.append(Share(self.account(name), self.units(amount)))
        slashes = tuple(self._order(v, "failed_challenge", kw)
                        for v in kw["slash"].split("+")) if "slash" in kw else ()
        op = Release(self.op_id(kw), payer, acct("escrow:" + args[1]), tuple(shares),
                     self.units(kw.get("burn", "0")), slashes)
        return self.submit(op, kw, payer)

    def cmd_cancel(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """cancel alice e1"""
        payer = self.account(args[0])
        return self.submit(Cancel(self.op_id(kw), payer, acct("escrow:" + args[1])), kw, payer)

    def cmd_stake(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """stake alice 10"""
        a = self.account(args[0])
        return self.submit(Stake(self.op_id(kw), a, self.units(args[1])), kw, a)

    def cmd_unstake(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """unstake alice 10"""
        a = self.account(args[0])
        return self.submit(Unstake(self.op_id(kw), a, self.units(args[1])), kw, a)

    def cmd_complete(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """complete alice"""
        a = self.account(args[0])
        return self.submit(CompleteUnbonding(self.op_id(kw), a), kw, a)

    def cmd_slash(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """slash val missed_heartbeat misses=3"""
        order = self._order(args[0], args[1], kw)
        return self.submit(Slash(self.op_id(kw), order), kw, order.account)

    def cmd_deliver(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """deliver | deliver b0->b1#0"""
        waiting = self.waiting()
        if args:
            route, seq = args[0].split("#")
            src, tgt = (int(x.lstrip("b")) for x in route.split("->"))
            waiting = [b for b in waiting
                       if (b.source_bucket, b.target_bucket, b.seq) == (src, tgt, int(seq))]
            if not waiting:
                return [f"no waiting batch {args[0]}"]
        out = []
        for batch in waiting:
            result = self.commit(batch.target_bucket, batch)
            lines = self.outcome(result)
            out.append(f"b{batch.source_bucket}->b{batch.target_bucket}#{batch.seq}: {lines[0]}")
            out += lines[1:]
        return out or ["nothing waiting"]

    def cmd_ack(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """ack"""
        out = []
        for b in sorted(self.r.buckets):
            for target in self.r.buckets[b].outbox_targets():
                progress = self.r.buckets[target].applied_seq(b)
                result = self.commit(b, EffectAck(target, progress))
                left = len(self.r.buckets[b].outbox(target))
                status = result.record.error or "ok"
                out.append(f"b{b}: b{target} applied below #{progress}: {status}, "
                           f"{left} still waiting")
        return out or ["nothing to acknowledge"]

    def cmd_outbox(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """outbox"""
        return [self.fmt_batch(b) for b in self.waiting()] or ["empty"]

    def cmd_balances(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """balances"""
        out = []
        for b in sorted(self.r.buckets):
            for v in self.r.buckets[b].accounts():
                line = (f"{self.name(v.account)} (b{b}): balance {self.cr(v.balance)}, locked "
                        f"{self.cr(v.locked)}, unbonding {self.cr(v.unbonding)}, escrowed "
                        f"{self.cr(v.escrowed)}")
                if v.violations:
                    line += f", violations {v.violations}"
                out.append(line)
        return out

    def cmd_supply(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """supply"""
        t = self.r.totals()
        s = t.supply()
        self.r.check_conservation()
        return [", ".join(f"{k} {self.cr(v)}" for k, v in s.items())
                + f", in flight {self.cr(t.in_flight)}",
                f"conserved: {self.cr(t.held)} = genesis {self.cr(self.r.genesis_supply)}"]

    def cmd_history(self, args: list[str], kw: dict[str, str]) -> list[str]:
        """history alice"""
        who = self.account(args[0])
        out = []
        for rec in self.r.history(who):
            mine = [f"{c.field} {'+' if c.delta > 0 else ''}"
                    f"{self.cr(c.delta) if c.field != 'violations' else c.delta}"
                    for c in rec.changes if c.account == who]
            out.append(f"t={rec.ts_ms} {rec.kind}: "
                       + (f"refused, {rec.error_code}" if rec.error_code else ", ".join(mine)))
        return out


def run_script(path: Path) -> tuple[str, str]:
    return datadriven.run_script(path, Env, "LEDGER_REWRITE")
