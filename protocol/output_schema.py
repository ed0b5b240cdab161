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

A NEED may also name CIDs the result must cite (`cites`): the result cites a CID when
the CID's text, as `swarm-node` prints it, appears in its bytes. A missing citation
has no short witness, so a challenge's verifier reads the whole result under the
genesis `verify_fuel_max` (jobs/verify_citation.wat, about 17 fuel a byte): a NEED
that names cites bounds its output to `CITED_OUTPUT_BYTES_MAX`, which keeps that read
within 100k fuel.

A NEED may also set a content policy (`deny`): byte strings the result must not
contain (a name to keep out, a secret in the input). One occurrence is a short
witness: a challenge's proof names the string and its offset, and the verifier reads
only those bytes of the result (jobs/verify_policy.wat).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = ("bytes", "utf8", "uint", "hex")
SCHEMA_TEXT_MAX = 64  # the NEED field's bound
CITES_MAX = 8
CITED_OUTPUT_BYTES_MAX = 4096
CITE_TEXT_MAX = 60  # verify_citation keeps a match in one i64 with room to spare
DENY_MAX = 8
DENY_TEXT_MAX = 64

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


def cites_problem(cites: Sequence[object], output: str | None) -> str | None:
    """Why a NEED may not ask for these citations with this output schema, or None."""
    if not cites:
        return None
    if len(cites) > CITES_MAX:
        return f"at most {CITES_MAX} cites"
    if len(set(map(str, cites))) != len(cites):
        return "a CID is cited twice"
    if any(len(str(c)) > CITE_TEXT_MAX for c in cites):
        return f"a cited CID's text is over {CITE_TEXT_MAX} characters"
    schema = parse(output) if output else None
    if schema is None or schema.max_bytes is None or \
            schema.max_bytes > CITED_OUTPUT_BYTES_MAX:
        return (f"a NEED that names cites bounds its output: an output schema with "
                f"MAX_BYTES at most {CITED_OUTPUT_BYTES_MAX}")
    return None


def missing_cite(data: bytes, cites: Sequence[object]) -> str | None:
    """The first CID of `cites` whose text `data` does not contain, or None."""
    return next((str(c) for c in cites if str(c).encode() not in data), None)


def denied_text(data: bytes, deny: Sequence[str]) -> str | None:
    """The first string of `deny` that `data` contains (as UTF-8), or None."""
    return next((d for d in deny if d.encode() in data), None)
