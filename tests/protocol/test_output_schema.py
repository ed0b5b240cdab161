"""Output schemas: the NEED field's grammar, and each format's check on bytes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.protocol import output_schema
from swarm.protocol.errors import SchemaError
from swarm.protocol.output_schema import OutputSchema, parse
from swarm.protocol.verbs import OUTPUT_SCHEMA


@pytest.mark.parametrize(("spec", "data", "problem"), [
    ("uint", b"42\n", None), ("uint", b"0", None), ("uint", b"-1", "decimal"),
    ("uint", b"4 2", "decimal"), ("uint", b"", "decimal"), ("uint", b"1\n\n", "decimal"),
    ("hex", b"00ff\n", None), ("hex", b"00FF", "hexadecimal"),
    ("utf8", "naïve\n".encode(), None), ("utf8", b"\xff", "UTF-8 at byte 0"),
    ("bytes", b"\x00\xff", None), ("bytes<=2", b"abc", "over the schema's 2"),
    ("uint<=3", b"12\n", None), ("uint<=3", b"1234", "over"),
])
def test_each_format_checks_the_bytes(spec: str, data: bytes, problem: str | None) -> None:
    found = parse(spec).violation(data)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize("bad", ["", "json", "uint<=0", "uint<=", "UINT", "uint <=3",
                                 "uint<=1234567890123", "utf8" + "x" * 80])
def test_a_bad_schema_is_refused_by_parse_and_by_the_need_field(bad: str) -> None:
    with pytest.raises(ValueError, match="FORMAT"):
        parse(bad)
    with pytest.raises(SchemaError):
        OUTPUT_SCHEMA.check(bad, "payload.output")


@given(st.sampled_from(output_schema.FORMATS), st.none() | st.integers(1, 10**12 - 1))
def test_a_schema_prints_as_it_parses(fmt: str, most: int | None) -> None:
    schema = OutputSchema(fmt, most)
    assert parse(str(schema)) == schema
    OUTPUT_SCHEMA.check(str(schema), "payload.output")


@given(st.binary(max_size=64))
def test_uint_and_hex_accept_exactly_their_digits(data: bytes) -> None:
    body = data[:-1] if data.endswith(b"\n") else data
    assert (parse("uint").violation(data) is None) == bool(re.fullmatch(rb"[0-9]+", body))
    assert (parse("hex").violation(data) is None) == bool(re.fullmatch(rb"[0-9a-f]+", body))
