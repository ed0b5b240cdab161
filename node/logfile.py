"""Envelope log files on disk (the format itself is `swarm.protocol.logformat`).

Reading streams the file in chunks through the pure decoder, so a log larger than
memory still replays; appending writes whole records and fsyncs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from swarm.protocol.errors import LogFormatError
from swarm.protocol.logformat import MAGIC, LogDecoder, encode_record

CHUNK_BYTES = 1 << 20


def read_log(path: Path) -> Iterator[bytes]:
    decoder = LogDecoder()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            decoder.feed(chunk)
            yield from decoder.records()
    decoder.close()


def append_log(path: Path, wires: list[bytes]) -> None:
    """Append records (creating the log with its magic if new), then fsync."""
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise LogFormatError("log", f"{path} exists and is not an envelope log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        if new:
            f.write(MAGIC)
        for wire in wires:
            f.write(encode_record(wire))
        f.flush()
        os.fsync(f.fileno())
