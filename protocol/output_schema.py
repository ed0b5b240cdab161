"""Output schemas: the shape a NEED asks its result's bytes to have.

A NEED's `output` field is a short text, `FORMAT` or `FORMAT<=MAX_BYTES`:

==========  ===========================================================================
``bytes``   any bytes
``utf8``    valid UTF-8 text
``uint``    an unsigned decimal integer in ASCII, then at most one newline
``hex``     lowercase hexadecimal digits, then at most one newline
==========  ===========================================================================

A worker checks its output against the schema before committing it, and a verifier
checks it again before attesting (docs/JOBS.md). The check reads the bytes once and
holds nothing, so it costs what the result's size costs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FORMATS = ("bytes", "utf8", "uint", "hex")
SCHEMA_TEXT_MAX = 64  # the NEED field's bound

# What the NEED field may hold (protocol/verbs.py checks it with this).
SPEC = rf"(?P<format>{'|'.join(FORMATS)})(?:<=(?P<max>[1-9][0-9]{{0,11}}))?"
_SPEC = re.compile(SPEC)
_UINT = re.compile(rb"[0-9]+\n?")
_HEX = re.compile(rb"[0-9a-f]+\n?")


@dataclass(frozen=True, slots=True)
class OutputSchema:
    format: str
    max_bytes: int | None = None

    def __str__(self) -> str:
        return self.format if self.max_bytes is None else f"{self.format}<={self.max_bytes}"

    def violation(self, data: bytes) -> str | None:
        """Why `data` does not fit, or None when it does."""
        if self.max_bytes is not None and len(data) > self.max_bytes:
            return f"{len(data)} bytes, over the schema's {self.max_bytes}"
        match self.format:
            case "utf8":
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"not UTF-8 at byte {exc.start}"
            case "uint":
                if _UINT.fullmatch(data) is None:
                    return "not an unsigned decimal integer"
            case "hex":
                if _HEX.fullmatch(data) is None:
                    return "not lowercase hexadecimal"
        return None


def parse(text: str) -> OutputSchema:
    """The schema `text` names; ValueError saying what is wrong otherwise."""
    m = _SPEC.fullmatch(text) if len(text) <= SCHEMA_TEXT_MAX else None
    if m is None:
        raise ValueError(f"an output schema is FORMAT or FORMAT<=MAX_BYTES, FORMAT one "
                         f"of {', '.join(FORMATS)} (got {text[:80]!r})")
    return OutputSchema(m["format"], int(m["max"]) if m["max"] else None)
