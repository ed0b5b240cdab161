"""The envelope log framing: whole records out, truncation and garbage reported."""

from __future__ import annotations

import pytest

from swarm.protocol.errors import LogFormatError
from swarm.protocol.logformat import MAGIC, LogDecoder, encode_log, iter_log


def test_round_trip_in_small_pieces() -> None:
    records = [b"", b"a", b"b" * 300, b"c" * 70_000]
    data = encode_log(records)
    dec = LogDecoder()
    got = []
    for i in range(0, len(data), 7):
        dec.feed(data[i : i + 7])
        got.extend(dec.records())
    dec.close()
    assert got == records


def test_truncated_record() -> None:
    data = encode_log([b"hello"])[:-1]
    with pytest.raises(LogFormatError) as info:
        list(iter_log(data))
    assert "truncated" in info.value.reason


@pytest.mark.parametrize("data", [b"", b"swarm", b"not a log at all", MAGIC[:-1] + b"x"])
def test_bad_magic(data: bytes) -> None:
    with pytest.raises(LogFormatError):
        list(iter_log(data))


def test_oversized_record_length() -> None:
    with pytest.raises(LogFormatError):
        list(iter_log(MAGIC + b"\xff\xff\xff\xff\x7f"))
