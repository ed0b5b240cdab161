"""Id sets for catch-up: removing an id leaves the set (and its digests) as if it had
never been added."""

from __future__ import annotations

from swarm.protocol.cid import dag_cbor_cid
from swarm.protocol.sync import IdSet


def test_discard_is_the_inverse_of_add() -> None:
    ids = [dag_cbor_cid(b"%d" % i) for i in range(50)]
    full = IdSet(ids)
    gone = ids[7]
    assert full.discard(gone) and not full.discard(gone)
    assert gone not in full and len(full) == 49
    assert full.summary() == IdSet(i for i in ids if i != gone).summary()
    assert full.add(gone) and full.root() == IdSet(ids).root()
