"""The built-in WebAssembly jobs in a few lines of Python each: what their sources say
they compute (a job that traps on an input raises ValueError here). Tests check the
modules against these, and the testnet demo checks every result the swarm paid for
against them."""

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


_SPACE = b" \t\n\v\f\r"


def halve(data: bytes) -> bytes:
    """A binary PGM at half its width and height (halve.wat says how exactly);
    ValueError where the module traps."""
    if data[:2] != b"P5":
        raise ValueError("not a binary PGM")
    at, fields = 2, []
    for _ in range(3):
        start = at
        while at < len(data) and data[at] in _SPACE:
            at += 1
        digits = at
        while at < len(data) and 48 <= data[at] <= 57:
            at += 1
        if digits == start or at == digits or at - digits > 5:
            raise ValueError("a header number is missing or too long")
        fields.append(int(data[digits:at]))
    if at >= len(data) or data[at] not in _SPACE:
        raise ValueError("no whitespace before the pixels")
    width, height, maxval = fields
    raster = data[at + 1:]
    if maxval != 255 or width < 2 or height < 2 or len(raster) < width * height:
        raise ValueError("not an 8-bit image of at least 2x2 with all its pixels")
    out = bytearray(b"P5\n%d %d\n255\n" % (width // 2, height // 2))
    for y in range(height // 2):
        top, bottom = raster[2 * y * width:], raster[(2 * y + 1) * width:]
        for x in range(width // 2):
            out.append((top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) // 4)
    return bytes(out)


def pgm(width: int, height: int, pixels: bytes) -> bytes:
    """A binary PGM (8-bit) of `pixels`, row by row."""
    return b"P5\n%d %d\n255\n" % (width, height) + pixels


REFERENCE: dict[str, Callable[[bytes], bytes]] = {
    "wordcount": wordcount,
    "checksum": fnv1a64,
    "sortlines": sorted_lines,
    "halve": halve,
}
