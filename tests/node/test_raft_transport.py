"""The Raft transport's framing: frames survive any split of the byte stream, and a
peer announcing an oversize frame ends its stream rather than our memory."""

from __future__ import annotations

import random
from typing import Any

import pytest

from swarm.node.raft_transport import FrameReader
from swarm.protocol.logformat import uvarint


class ChoppyStream:
    """Returns what it holds in random small pieces, as a real stream may."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data = data
        self.rng = random.Random(seed)

    async def read(self, n: int) -> bytes:
        if not self.data:
            return b""
        k = min(n, self.rng.randint(1, 7))
        piece, self.data = self.data[:k], self.data[k:]
        return piece


@pytest.mark.parametrize("seed", range(5))
async def test_frames_survive_any_split(seed: int) -> None:
    frames = [bytes([i]) * (i * 37 % 300) for i in range(40)]
    wire = b"".join(uvarint(len(f)) + f for f in frames)
    stream: Any = ChoppyStream(wire, seed)
    reader = FrameReader(stream)
    got = []
    while (frame := await reader.next()) is not None:
        got.append(frame)
    assert got == frames


async def test_oversize_frame_is_refused() -> None:
    stream: Any = ChoppyStream(uvarint(10_000) + b"x" * 10, 0)
    with pytest.raises(ValueError, match="over"):
        await FrameReader(stream, frame_bytes_max=1000).next()


async def test_bad_length_prefix_is_refused() -> None:
    stream: Any = ChoppyStream(b"\xff" * 12, 0)
    with pytest.raises(ValueError, match="prefix"):
        await FrameReader(stream).next()
