"""The built-in WebAssembly jobs in a few lines of Python each: what their sources say
they compute. Tests check the modules against these, and the testnet demo checks every
result the swarm paid for against them."""

from __future__ import annotations

from collections.abc import Callable


def wordcount(data: bytes) -> bytes:
    return b"%d\n" % len(data.split())


def fnv1a64(data: bytes) -> bytes:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return b"%016x\n" % h


def sorted_lines(data: bytes) -> bytes:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\n" for line in sorted(lines))


REFERENCE: dict[str, Callable[[bytes], bytes]] = {
    "wordcount": wordcount,
    "checksum": fnv1a64,
    "sortlines": sorted_lines,
}
