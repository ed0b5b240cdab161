"""Decision memos as evidence (node/market_memos.py through MarketService): pinned as
they are applied, explained after a restart, fetched from peers when absent.

Method: a real TaskBook decides a real auction, so the memo is the one a bucket makes;
its step goes to the ledger listeners exactly as LedgerRaft hands an applied entry's
steps over. The MarketService sits on a real RocksDB block store in a temporary
directory and on a stand-in for the ledger (only the listeners and the task book are
read). "Restart" is a new MarketService over the block store closed and opened again.
Bitswap is a stand-in that stores and pins what it "fetches", or fails, or stalls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from prometheus_client import CollectorRegistry

from swarm.node import market_memos
from swarm.node.blockstore import Blockstore, BlockstoreError, Kind, Pin
from swarm.node.market_service import MarketService
from swarm.protocol import cbor
from swarm.protocol.cid import Cid, dag_cbor_cid
from swarm.protocol.envelope import Identity, make_envelope
from swarm.protocol.errors import LocalProtocolError, ProtocolError
from swarm.protocol.genesis import DEFAULT_PARAMS
from swarm.protocol.task import Step, TaskBook, Terms

SWARM = b"\x07" * 32
PARAMS = {**DEFAULT_PARAMS, "bid_window_ms": 1_000}
POSTER, ALICE, BOB = (Identity(bytes([0x70 + i]) * 32) for i in range(3))
NEED = dag_cbor_cid(cbor.encode("a need with a memo"))


def decided() -> tuple[TaskBook, Step]:
    """A task book whose task was decided between two bids, and the deciding step."""
    book = TaskBook(PARAMS)
    book.advance(1_000, 1)
    book.fund(Terms(NEED, POSTER.public_key, 1_000, "simple", 90, 0, 3), 1, 1_000)
    for i, (who, cost) in enumerate(((ALICE, 400), (BOB, 300)), start=2):
        book.submit(make_envelope(who, kind="PROPOSE", swarm=SWARM, lamport=i, ts=1,
                                  payload={"need_id": NEED, "proposal_id": f"p{i}",
                                           "cost": cost, "eta_ms": 1_000,
                                           "ballot": f"b{i}"}),
                    i, 1_000, reputation_bp=5_000)
    step = book.advance(2_100, 4)
    assert step.decisions and step.memos
    return book, step


def market(book: TaskBook, store: Blockstore) -> MarketService:
    part = SimpleNamespace(ledger=SimpleNamespace(tasks=book))
    net = SimpleNamespace(listeners=[], part=lambda bucket: part)
    ledger = SimpleNamespace(net=net, bucket_count=256)
    genesis = SimpleNamespace(params=PARAMS)

    def unused(*args: Any) -> Any:
        raise AssertionError("nothing is signed or gossiped here")

    return MarketService(cast(Any, ledger), cast(Any, genesis), unused, unused,
                         CollectorRegistry(), store)


def apply(service: MarketService, step: Step) -> None:
    """What LedgerRaft does with an applied entry's steps."""
    for listener in service.ledger.net.listeners:
        listener(0, (step,))


async def until(condition: Any) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Blockstore]:
    s = Blockstore(tmp_path / "blocks", PARAMS)
    yield s
    s.close()


async def test_an_applied_memo_is_pinned_and_explained_after_a_restart(
        tmp_path: Path) -> None:
    book, step = decided()
    ((memo_cid, memo),) = step.memos
    store = Blockstore(tmp_path / "blocks", PARAMS)
    first = market(book, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        apply(first, step)
        # Answered at once, before the writer has had a turn.
        explained = await first.explain(str(NEED))
        await until(lambda: store.is_pinned(memo_cid))
        nursery.cancel_scope.cancel()
    assert explained["memo"] == str(memo_cid) == str(book.get(NEED).decision.memo)
    assert [b["bidder"] for b in explained["explanation"]["bids"]] == [
        BOB.public_key.hex(), ALICE.public_key.hex()]
    assert not first.memos.pending
    (pin,) = store.pins()
    assert (pin.root, pin.kind, pin.size, pin.blocks) == (memo_cid, Kind.EVIDENCE,
                                                          len(memo), 1)
    # Pinned: gc keeps it, though nothing else in the store links to it.
    assert store.gc().kept == 1 and store.get(memo_cid) == memo
    store.close()

    store = Blockstore(tmp_path / "blocks", PARAMS)
    try:
        again = market(book, store)  # no step applied since it started
        assert await again.explain(str(NEED)) == explained
        # Applied again (a restart replays its log): already pinned, written once.
        apply(again, step)
        assert await again.memos.write_pending() == 1
        assert store.pins() == [pin]
    finally:
        store.close()


async def test_a_store_error_is_logged_and_the_memo_left_to_peers(
        store: Blockstore, caplog: pytest.LogCaptureFixture) -> None:
    book, step = decided()
    service = market(book, store)

    def broken(*args: Any) -> Pin:
        raise BlockstoreError("the disk is full")

    store.put_dag = broken  # type: ignore[method-assign]
    apply(service, step)  # the listener only queues: nothing to raise
    with caplog.at_level(logging.WARNING, logger="swarm.market"):
        assert await service.memos.write_pending() == 1
    assert "the disk is full" in caplog.text and not store.pins()
    with pytest.raises(LocalProtocolError) as caught:
        await service.explain(str(NEED))
    assert caught.value.code == "memo_unknown"
    assert "fetches from no peers" in caught.value.reason


class Peers:
    """Bitswap as MarketMemos uses it: `fetch(cid, kind)` into `blockstore`, pinned."""

    def __init__(self, blockstore: Blockstore, blocks: dict[Cid, bytes], *,
                 error: ProtocolError | None = None, stall: bool = False) -> None:
        self.blockstore = blockstore
        self.blocks = blocks
        self.error = error
        self.stall = stall
        self.asked: list[tuple[Cid, Kind]] = []

    async def fetch(self, cid: Cid, kind: Kind) -> Pin:
        self.asked.append((cid, kind))
        if self.stall:
            await trio.sleep_forever()
        if self.error is not None:
            raise self.error
        return self.blockstore.put_dag(cid, kind, self.blocks.get)


async def test_a_memo_not_here_is_fetched_from_peers_and_pinned(store: Blockstore) -> None:
    book, step = decided()
    ((memo_cid, memo),) = step.memos
    service = market(book, store)
    peers = Peers(store, {memo_cid: memo})
    service.memos.bitswap = cast(Any, peers)
    explained = await service.explain(str(NEED))
    assert explained["memo"] == str(memo_cid)
    assert peers.asked == [(memo_cid, Kind.EVIDENCE)]
    assert store.is_pinned(memo_cid) and store.gc().kept == 1
    await service.explain(str(NEED))
    assert len(peers.asked) == 1  # here now


async def test_a_fetched_memo_goes_to_the_evidence_store_when_that_is_elsewhere(
        store: Blockstore, tmp_path: Path) -> None:
    # Evidence in another store (as in a daemon): bitswap fetches into the embedded
    # block store, and the memo is handed over and pinned there.
    book, step = decided()
    ((memo_cid, memo),) = step.memos
    embedded = Blockstore(tmp_path / "embedded", PARAMS)
    try:
        service = market(book, store)
        service.memos.bitswap = cast(Any, Peers(embedded, {memo_cid: memo}))
        assert (await service.explain(str(NEED)))["memo"] == str(memo_cid)
        assert store.is_pinned(memo_cid) and not embedded.is_pinned(memo_cid)
    finally:
        embedded.close()


async def test_a_memo_no_peer_sends_is_unknown_saying_why(
        store: Blockstore, monkeypatch: pytest.MonkeyPatch) -> None:
    book, _ = decided()
    service = market(book, store)
    service.memos.bitswap = cast(Any, Peers(store, {}, error=LocalProtocolError(
        "cid", "no peer has it", code="not_found")))
    with pytest.raises(LocalProtocolError) as caught:
        await service.explain(str(NEED))
    assert caught.value.code == "memo_unknown" and "no peer has it" in caught.value.reason
    monkeypatch.setattr(market_memos, "FETCH_TIMEOUT_S", 0.05)
    service.memos.bitswap = cast(Any, Peers(store, {}, stall=True))
    with pytest.raises(LocalProtocolError) as caught:
        await service.explain(str(NEED))
    assert caught.value.code == "memo_unknown" and "within 0.05 s" in caught.value.reason
