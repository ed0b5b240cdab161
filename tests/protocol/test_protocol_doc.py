"""docs/PROTOCOL.md says what the code does: every printed vector, constant and table.

Goal: the wire spec is written so that someone can build a compatible client from it
alone, so every value it prints must be what `swarm.protocol` computes, and the vectors
it prints must be exactly those it says it prints, each as
testdata/envelope_vectors.json and the generator have it. When the document and the code
disagree, a test here fails naming the section.

Method: split the markdown into sections by heading (ignoring fenced blocks), then read
values out of tables, fenced blocks and indented blocks. Section 11 names every vector
of testdata and says which valid vectors it prints in full; each printed vector (section
11.x) is `vectors_gen.py --markdown` verbatim, is compared with the vector of the same
name in testdata, and the envelope is re-made from the printed seed, fields and payload
and must give the printed wire, id, signing message and signature. The worked Merkle
example (8.3) is recomputed with `protocol/plan.py`; the link prefix (2.1), wire prefix
(4.1, 4.5), signing domain (4.4), log magic and varints (10), limits table (2.3), body
table (4.2), error codes (5.1) and payload tables (6.1, 6.2) are checked against the
code, and every constant the document quotes with a value (`65536
(`ENVELOPE_BYTES_MAX`)`) against the module constant. The signature rules of 4.4 are
checked by experiment through PyNaCl's bindings (the library `protocol/envelope.py`
verifies with), the swarm-id recipe of 4.6 by recomputing an id with cbor2 alone, and
the envelope file format of 4.7 by running `swarm-node envelope make`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
import nacl.bindings as sodium
import pytest

from swarm.protocol import cbor, certificate, errors, genesis, lamport, logformat, plan, verbs
from swarm.protocol import envelope as envelope_mod
from swarm.protocol.cid import CID_BYTES_MAX, Cid, dag_cbor_cid
from swarm.protocol.envelope import (
    BODY,
    ENVELOPE_LIMITS,
    SIG_DOMAIN,
    Identity,
    decode_envelope,
    make_envelope,
    signing_message,
    verify_signature,
)
from swarm.protocol.replay import PENDING_MAX, replay
from swarm.protocol.schema import Bytes, FieldType, List, Obj

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "PROTOCOL.md"
VECTORS: dict[str, Any] = json.loads(
    (ROOT / "testdata" / "envelope_vectors.json").read_text(encoding="utf-8"))
VALID: list[dict[str, Any]] = VECTORS["valid"]
VALID_BY_NAME = {v["name"]: v for v in VALID}

# Every constant the document quotes by name, with the value it must give it.
CONSTANTS: dict[str, int] = {
    "VERSION": envelope_mod.VERSION,
    "SWARM_ID_BYTES": envelope_mod.SWARM_ID_BYTES,
    "REFS_MAX": envelope_mod.REFS_MAX,
    "THREAD_BYTES_MAX": envelope_mod.THREAD_BYTES_MAX,
    "ENVELOPE_BYTES_MAX": envelope_mod.ENVELOPE_BYTES_MAX,
    "LAMPORT_MAX": envelope_mod.LAMPORT_MAX,
    "CID_BYTES_MAX": CID_BYTES_MAX,
    "PLAN_OPS_MAX": verbs.PLAN_OPS_MAX,
    "DECIDE_ALSO_MAX": verbs.DECIDE_ALSO_MAX,
    "PENDING_MAX": PENDING_MAX,
    "RECORD_BYTES_MAX": logformat.RECORD_BYTES_MAX,
    "LAMPORT_PER_MS": lamport.LAMPORT_PER_MS,
    "LAMPORT_SKEW_MS": lamport.LAMPORT_SKEW_MS,
}
assert lamport.LAMPORT_MAX == envelope_mod.LAMPORT_MAX

# Modules whose error codes section 5.1 must list (the envelope path and the log).
CODE_MODULES = ("cbor", "cid", "schema", "verbs", "envelope", "logformat", "lamport")


# --- reading the markdown --------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    level: int
    title: str
    body: str  # up to the next heading of any level

    @property
    def number(self) -> str:
        """"4.4" for "4.4 Signature", "10" for "10. Envelope log format", else ""."""
        m = re.match(r"(\d+(?:\.\d+)*)\.?\s", self.title)
        return m.group(1) if m else ""


def _parse_sections(text: str) -> list[Section]:
    sections: list[Section] = []
    level, title = 0, ""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"(#{1,6}) (.*)$", line)
        if m:
            sections.append(Section(level, title, "\n".join(lines)))
            level, title, lines = len(m.group(1)), m.group(2).strip(), []
        else:
            lines.append(line)
    sections.append(Section(level, title, "\n".join(lines)))
    return sections


DOC = DOC_PATH.read_text(encoding="utf-8")
SECTIONS = _parse_sections(DOC)


def where(number: str) -> str:
    return f"docs/PROTOCOL.md section {number}"


def where_is(s: Section) -> str:
    """`where()` for any section: its number, or the nearest numbered one above it and
    its own title ("section 6.1 (DECIDE)")."""
    if s.number:
        return where(s.number)
    for above in reversed(SECTIONS[: SECTIONS.index(s)]):
        if above.number and above.level < s.level:
            return f"{where(above.number)} ({s.title})"
    return f"docs/PROTOCOL.md ({s.title or 'preamble'})"


def section(number: str) -> Section:
    found = [s for s in SECTIONS if s.number == number]
    if len(found) != 1:
        pytest.fail(f"{where(number)}: expected one heading numbered {number}, "
                    f"found {len(found)}")
    return found[0]


def subsections(number: str) -> list[Section]:
    """The sections under `number` (deeper headings up to the next one at its level)."""
    start = SECTIONS.index(section(number))
    out = []
    for s in SECTIONS[start + 1 :]:
        if s.level <= SECTIONS[start].level:
            break
        out.append(s)
    return out


def tables(body: str) -> list[list[list[str]]]:
    """Pipe tables in `body`: rows of stripped cells, separator rows dropped, `\\|` -> `|`."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*body.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def fenced_blocks(body: str) -> list[tuple[str, str]]:
    """(info string, content) of every ``` block."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)


def indented_blocks(body: str) -> list[str]:
    """Indented code blocks (4 spaces after a blank line), dedented by 4."""
    blocks: list[str] = []
    current: list[str] = []
    prev_blank = True
    for line in [*body.splitlines(), ""]:
        if line.startswith("    ") and (current or prev_blank):
            current.append(line[4:])
        elif current and not line.strip():
            current.append("")
        elif current:
            blocks.append("\n".join(current).strip("\n"))
            current = []
        prev_blank = not line.strip()
    if current:
        blocks.append("\n".join(current).strip("\n"))
    return blocks


def prose(number: str) -> str:
    """A section's own text with every run of whitespace made one space."""
    return re.sub(r"\s+", " ", section(number).body)


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def hex_bytes(text: str) -> bytes:
    """Hex digits, possibly split by spaces, as bytes."""
    return bytes.fromhex(re.sub(r"\s+", "", text))


def one(pattern: str, text: str, number: str, what: str, flags: int = 0) -> re.Match[str]:
    m = re.search(pattern, text, flags)
    if m is None:
        pytest.fail(f"{where(number)}: cannot find {what}")
    return m


def first_cell_matches(cell: str, described: str) -> bool:
    """A type cell is the schema's own description, optionally followed by a pointer or a
    note after `: ` or `; ` (e.g. "map: PATCH (section 6.2)")."""
    return cell == described or cell.startswith((described + ": ", described + "; "))


def check_field_table(number: str, label: str, rows: list[list[str]],
                      schema: Obj, skip: frozenset[str] = frozenset()) -> None:
    """Rows `field | type | presence` (field in backticks) equal `schema`, in order."""
    expected = [(name, ftype, "required" if name in schema.required else "optional")
                for name, ftype in schema.fields.items() if name not in skip]
    got = [(r[0].strip("`"), r[1], r[2]) for r in rows]
    assert [g[0] for g in got] == [e[0] for e in expected], (
        f"{where(number)} ({label}): fields {[g[0] for g in got]}, "
        f"the code has {[e[0] for e in expected]}")
    for (name, cell, presence), (_n, ftype, required) in zip(got, expected, strict=True):
        described = ftype.describe()
        assert first_cell_matches(cell, described), (
            f"{where(number)} ({label}.{name}): type {cell!r}, the code says {described!r}")
        assert presence == required, (
            f"{where(number)} ({label}.{name}): {presence!r}, the code says {required!r}")


def _load_vectors_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vectors_gen", ROOT / "tests" / "vectors_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- section 11: the printed vectors -----------------------------------------------------


@dataclass(frozen=True)
class PrintedVector:
    number: str
    name: str
    rows: dict[str, str]
    payload: Any
    wire_bytes_stated: int
    wire: bytes
    id_hex: str
    signing_message_hex: str
    sig_hex: str

    def cell(self, label: str) -> str:
        if label not in self.rows:
            pytest.fail(f"{where(self.number)}: the table has no row {label!r}")
        return self.rows[label]

    def code(self, label: str) -> str:
        spans = code_spans(self.cell(label))
        if len(spans) != 1:
            pytest.fail(f"{where(self.number)}: row {label!r} should hold one `value`")
        return spans[0]

    def integer(self, label: str) -> int:
        cell = self.cell(label)
        if not re.fullmatch(r"\d+", cell):
            pytest.fail(f"{where(self.number)}: row {label!r} is not an integer: {cell!r}")
        return int(cell)

    @property
    def refs(self) -> list[str]:
        cell = self.cell("refs")
        return [] if cell == "(none)" else code_spans(cell)

    @property
    def thread(self) -> str:
        value = json.loads(self.code("thread"))
        assert isinstance(value, str), f"{where(self.number)}: thread is not a JSON string"
        return value


def _printed_vectors() -> dict[str, PrintedVector]:
    out: dict[str, PrintedVector] = {}
    for s in subsections("11"):
        m = re.fullmatch(r"(11\.\d+) `([a-z0-9_]+)`: .+", s.title)
        if m is None:
            continue
        number, name = m.groups()
        found = tables(s.body)
        if not found:
            pytest.fail(f"{where(number)}: no table of fields")
        rows = {r[0]: r[1] for r in found[0] if len(r) == 2}
        payloads = [c for info, c in fenced_blocks(s.body) if info == "json"]
        if len(payloads) != 1:
            pytest.fail(f"{where(number)}: expected one ```json payload block")
        wire = one(r"^Wire \((\d+) bytes[^\n]*:\n\n```\n([0-9a-f\n]+)```$", s.body, number,
                   "the wire block (\"Wire (N bytes ...):\" then a ``` block)", re.MULTILINE)
        out[name] = PrintedVector(
            number=number,
            name=name,
            rows=rows,
            payload=json.loads(payloads[0]),
            wire_bytes_stated=int(wire.group(1)),
            wire=hex_bytes(wire.group(2)),
            id_hex=one(r"^id \(binary\): `([0-9a-f]+)`$", s.body, number,
                       "\"id (binary): `...`\"", re.MULTILINE).group(1),
            signing_message_hex=one(r"^Signing message: `([0-9a-f]+)`$", s.body, number,
                                    "\"Signing message: `...`\"", re.MULTILINE).group(1),
            sig_hex=one(r"^Signature \(wire bytes 7 to 70\): `([0-9a-f]+)`$", s.body, number,
                        "\"Signature (wire bytes 7 to 70): `...`\"", re.MULTILINE).group(1),
        )
    return out


def printed(name: str) -> PrintedVector:
    vectors = _printed_vectors()
    if name not in vectors:
        pytest.fail(f"{where('11')}: no section prints the valid vector {name!r} "
                    f"(regenerate with `python tests/vectors_gen.py --markdown {name}`)")
    return vectors[name]


_STATED = re.compile(r"Printed in full below, each numbered by its place in `valid`:\s*"
                     r"((?:`[a-z0-9_]+`[,.]?\s*)+)")


def _stated_printed_names() -> list[str]:
    """The valid vectors section 11 says it prints in full, in the order it says them
    ("Printed in full below, each numbered by its place in `valid`: `a`, `b`."); [] if
    it says nothing readable (then `test_section_11_prints_exactly_the_vectors_it_names`
    fails). Read without `section()`, so that it can run at collection."""
    bodies = [s.body for s in SECTIONS if s.number == "11"]
    m = _STATED.search(re.sub(r"\s+", " ", bodies[0])) if len(bodies) == 1 else None
    return code_spans(m.group(1)) if m else []


PRINTED_NAMES = _stated_printed_names()


def test_section_11_prints_exactly_the_vectors_it_names() -> None:
    """Section 11 names the valid vectors it prints; those and only those are printed,
    in testdata's order, each numbered 11.N with N its place in `valid` (the number
    `vectors_gen.py --markdown` gives it), and the command it quotes prints exactly them."""
    stated = _stated_printed_names()
    assert stated, f"{where('11')}: cannot find \"Printed in full below, ...: `a`, `b`.\""
    valid_names = [v["name"] for v in VALID]
    unknown = [n for n in stated if n not in VALID_BY_NAME]
    assert not unknown, f"{where('11')}: names {unknown}, which are not valid vectors"
    assert stated == sorted(stated, key=valid_names.index) and len(set(stated)) == len(stated), (
        f"{where('11')}: names {stated}, not in testdata's order {valid_names}")
    vectors = _printed_vectors()
    assert list(vectors) == stated, (
        f"{where('11')}: says it prints {stated}, prints {list(vectors)} (regenerate with "
        f"`python tests/vectors_gen.py --markdown {' '.join(stated)}`)")
    numbers = [v.number for v in vectors.values()]
    expected = [f"11.{valid_names.index(n) + 1}" for n in stated]
    assert numbers == expected, f"{where('11')}: sections numbered {numbers}, not {expected}"
    command = one(r"`python tests/vectors_gen\.py --markdown ([a-z0-9_ ]+)`", prose("11"),
                  "11", "the command that prints the vectors")
    assert command.group(1).split() == stated, (
        f"{where('11')}: quotes `--markdown {command.group(1)}`, prints {stated}")
    # Every subsection of 11 is one of the printed vectors.
    assert len(subsections("11")) == len(stated), (
        f"{where('11')}: has subsections that are not printed vectors")
    assert stated == PRINTED_NAMES


@pytest.mark.parametrize("name", PRINTED_NAMES)
def test_printed_vector_equals_testdata(name: str) -> None:
    vec, doc = VALID_BY_NAME[name], printed(name)
    n = doc.number
    got = {
        "seed_hex": doc.code("seed"),
        "public_key_hex": doc.code("public key (`sender`)"),
        "swarm_hex": doc.code("swarm"),
        "kind": doc.code("kind"),
        "lamport": doc.integer("lamport"),
        "ts": doc.integer("ts"),
        "thread": doc.thread,
        "refs": doc.refs,
        "id": doc.code("id"),
        "payload_json": doc.payload,
        "wire_hex": doc.wire.hex(),
        "id_hex": doc.id_hex,
        "signing_message_hex": doc.signing_message_hex,
        "sig_hex": doc.sig_hex,
    }
    for key, value in got.items():
        assert value == vec[key], (
            f"{where(n)} ({name}): {key} is {value!r}, testdata has {vec[key]!r}")
    assert doc.wire_bytes_stated == len(doc.wire), (
        f"{where(n)} ({name}): says {doc.wire_bytes_stated} bytes, the wire block has "
        f"{len(doc.wire)}")


@pytest.mark.parametrize("name", PRINTED_NAMES)
def test_printed_vector_remakes(name: str) -> None:
    doc = printed(name)
    n = doc.number
    identity = Identity(bytes.fromhex(doc.code("seed")))
    assert identity.public_key.hex() == doc.code("public key (`sender`)"), (
        f"{where(n)} ({name}): the seed's public key is {identity.public_key.hex()}")
    kind = doc.code("kind")
    env = make_envelope(
        identity,
        kind=kind,
        swarm=bytes.fromhex(doc.code("swarm")),
        lamport=doc.integer("lamport"),
        ts=doc.integer("ts"),
        thread=doc.thread,
        refs=[Cid.parse(r) for r in doc.refs],
        payload=verbs.payload_from_json(kind, doc.payload),
    )
    assert env.wire == doc.wire, f"{where(n)} ({name}): re-made wire is {env.wire.hex()}"
    assert str(env.id) == doc.code("id"), f"{where(n)} ({name}): re-made id is {env.id}"
    assert env.id.raw.hex() == doc.id_hex, f"{where(n)} ({name}): binary id is {env.id.raw.hex()}"
    assert signing_message(env.id).hex() == doc.signing_message_hex, (
        f"{where(n)} ({name}): signing message is {signing_message(env.id).hex()}")
    assert env.sig.hex() == doc.sig_hex, f"{where(n)} ({name}): signature is {env.sig.hex()}"
    decoded = decode_envelope(doc.wire, swarm=bytes.fromhex(doc.code("swarm")))
    assert decoded.id == env.id


def test_section_11_is_the_generator_output() -> None:
    """The vector sections are `vectors_gen.py --markdown` verbatim, so they are
    regenerated, never edited by hand."""
    gen = _load_vectors_gen()
    stated = _stated_printed_names()
    assert stated, f"{where('11')}: prints no vector"
    for i, vec in enumerate(VALID, 1):
        if vec["name"] not in stated:
            continue
        doc = printed(vec["name"])
        text = section(doc.number)
        expected = gen.markdown(vec, i)
        got = f"{'#' * text.level} {text.title}\n{text.body}".rstrip("\n") + "\n"
        assert got == expected.rstrip("\n") + "\n", (
            f"{where(doc.number)} is not `python tests/vectors_gen.py --markdown "
            f"{vec['name']}`; regenerate it")


def test_section_11_lists_the_vector_file() -> None:
    body = prose("11")
    valid = one(r"`valid`: (\d+) envelopes", body, "11", "\"`valid`: N envelopes\"")
    assert int(valid.group(1)) == len(VALID), f"{where('11')}: says {valid.group(1)} valid"
    invalid = one(r"`invalid`: (\d+) byte strings", body, "11", "\"`invalid`: N byte strings\"")
    assert int(invalid.group(1)) == len(VECTORS["invalid"]), (
        f"{where('11')}: says {invalid.group(1)} invalid vectors, testdata has "
        f"{len(VECTORS['invalid'])}")
    lists = re.findall(r"in order:\s*((?:`[a-z0-9_]+`[,.]?\s*)+)", body)
    assert len(lists) == 2, f"{where('11')}: expected two \"in order: `a`, `b`.\" lists"
    for listed, vectors in zip(lists, (VALID, VECTORS["invalid"]), strict=True):
        names = code_spans(listed)
        assert names == [v["name"] for v in vectors], (
            f"{where('11')}: lists {names}, testdata has {[v['name'] for v in vectors]}")
    seed_text = one(r'`SHA-256\("([^"]+)"\)`', body, "11", "the test swarm id's preimage")
    swarm = hashlib.sha256(seed_text.group(1).encode()).hexdigest()
    assert {v["swarm_hex"] for v in VALID} == {swarm}, f"{where('11')}: swarm id is not {swarm}"


# --- section 8.3: the worked Merkle example ----------------------------------------------


def _labelled_hex(block: str) -> dict[str, list[str]]:
    """label -> the values written after `=` on its line and its continuation lines."""
    out: dict[str, list[str]] = {}
    label = ""
    for line in block.splitlines():
        m = re.match(r"\s*([a-z][\w(),]*)\s*=\s*(.*)$", line)
        if m:
            label = m.group(1)
            out.setdefault(label, []).append(m.group(2).strip())
            continue
        m = re.match(r"\s*=\s*(.*)$", line)
        if m and label:
            out[label].append(m.group(1).strip())
    return out


def test_merkle_example() -> None:
    s = section("8.3")
    blocks = [b for b in indented_blocks(s.body) if "entry 0" in b]
    assert len(blocks) == 1, f"{where('8.3')}: expected one worked example block"
    block = blocks[0]
    entries: list[list[Any]] = []
    leaves: list[bytes] = []
    chunks = re.split(r"^entry (\d+) = ", block, flags=re.MULTILINE)[1:]
    assert chunks, f"{where('8.3')}: no `entry N = [...]` lines"
    for i in range(0, len(chunks), 2):
        index, text = int(chunks[i]), chunks[i + 1]
        assert index == len(entries), f"{where('8.3')}: entry {index} out of order"
        entry_line, _, rest = text.partition("\n")
        entry = json.loads(entry_line)
        values = _labelled_hex(rest)
        encoded = cbor.encode(entry)
        assert values.get("cbor") == [encoded.hex()], (
            f"{where('8.3')}: entry {index} encodes to {encoded.hex()}")
        leaf = plan.leaf_hash(entry)
        assert leaf == hashlib.sha256(b"\x00" + encoded).digest()
        assert values.get("leaf") == [leaf.hex()], (
            f"{where('8.3')}: entry {index} has leaf {leaf.hex()}")
        entries.append(entry)
        leaves.append(leaf)
    tail = _labelled_hex(block.split("node(0,1)", 1)[1] if "node(0,1)" in block else "")
    node = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    printed_node = re.search(r"node\(0,1\)[^\n]*\n\s*=\s*([0-9a-f]{64})", block)
    assert printed_node and printed_node.group(1) == node.hex(), (
        f"{where('8.3')}: node(0,1) is {node.hex()}")
    root = plan.merkle_root(leaves)
    assert tail.get("root", [""])[-1] == root.hex(), f"{where('8.3')}: root is {root.hex()}"
    # The example is the `update_plan` vector applied alone, as testdata records it.
    example = VECTORS["plan_examples"][0]
    assert example["envelopes"] == ["update_plan"]
    assert (entries, example["root_hex"]) == (example["entries"], root.hex()), (
        f"{where('8.3')}: the example differs from testdata's plan_examples[0]")
    replica = replay([bytes.fromhex(VALID_BY_NAME["update_plan"]["wire_hex"])])
    assert replica.plan.root() == root, f"{where('8.3')}: replaying update_plan gives another root"
    # "After replaying all N valid vectors in order the plan has L leaves and root R".
    m = one(r"After replaying all (\d+) valid vectors in order the plan has (\d+) leaves and "
            r"root `([0-9a-f]{64})`", prose("8.3"), "8.3", "the all-vectors root sentence")
    everything = replay([bytes.fromhex(v["wire_hex"]) for v in VALID])
    leaf_count = len(everything.plan.task_ids()) + len(everything.plan.links())
    assert (int(m.group(1)), int(m.group(2)), m.group(3)) == (
        len(VALID), leaf_count, everything.plan.root().hex()), (
        f"{where('8.3')}: all {len(VALID)} vectors give {leaf_count} leaves and root "
        f"{everything.plan.root().hex()}")
    assert VECTORS["plan_examples"][-1]["root_hex"] == everything.plan.root().hex()
    empty = one(r"empty plan is SHA-256 of the empty string, `([0-9a-f]{64})`", prose("8.3"),
                "8.3", "the empty root")
    assert empty.group(1) == plan.EMPTY_ROOT.hex() == plan.merkle_root([]).hex()


# --- fixed byte strings: 2.1, 4.1, 4.4, 4.5, 10 -------------------------------------------


def test_link_prefix() -> None:
    m = one(r"is therefore (\d+) bytes: `([0-9a-f ]+)` followed by the 32-byte SHA-256 digest",
            prose("2.1"), "2.1", "the envelope-id link prefix")
    size, prefix = int(m.group(1)), hex_bytes(m.group(2))
    digest = hashlib.sha256(b"any block").digest()
    encoded = cbor.encode(dag_cbor_cid(b"any block"))
    assert encoded == prefix + digest, f"{where('2.1')}: a link encodes as {encoded.hex()}"
    assert len(encoded) == size, f"{where('2.1')}: a link is {len(encoded)} bytes"


def test_wire_prefix() -> None:
    blocks = [b for b in indented_blocks(section("4.1").body) if "offset 0" in b]
    assert len(blocks) == 1, f"{where('4.1')}: expected one offset table block"
    fixed: list[tuple[int, bytes]] = []
    for line in blocks[0].splitlines():
        m = re.match(r"offset (\d+)\s+(<[^>]*>|(?:[0-9a-f]{2} )*[0-9a-f]{2})", line)
        assert m, f"{where('4.1')}: cannot read line {line!r}"
        offset, what = int(m.group(1)), m.group(2)
        if "signature" in what:
            assert offset == 7, f"{where('4.1')}: the signature starts at byte 7"
        elif "body" in what:
            assert offset == envelope_mod.BODY_OFFSET, (
                f"{where('4.1')}: the body starts at byte {envelope_mod.BODY_OFFSET}")
        else:
            fixed.append((offset, hex_bytes(what)))
    expected = [(0, envelope_mod._WIRE_PREFIX[:1]), (1, envelope_mod._WIRE_PREFIX[1:5]),
                (5, envelope_mod._WIRE_PREFIX[5:]), (71, envelope_mod._BODY_KEY)]
    assert fixed == expected, f"{where('4.1')}: fixed bytes {fixed}, the code has {expected}"
    for vec in VALID:
        wire = bytes.fromhex(vec["wire_hex"])
        for offset, data in fixed:
            assert wire[offset : offset + len(data)] == data, (
                f"{where('4.1')}: vector {vec['name']} differs at offset {offset}")
        assert wire[7:71].hex() == vec["sig_hex"] and wire[76:].hex() == vec["body_hex"]
    # Section 4.5 spells the same prefix out.
    step = one(r"`wire = ([0-9a-f ]+) \|\| sig \|\| ([0-9a-f ]+) \|\| body_bytes`",
               section("4.5").body, "4.5", "the wire formula")
    assert (hex_bytes(step.group(1)), hex_bytes(step.group(2))) == (
        envelope_mod._WIRE_PREFIX, envelope_mod._BODY_KEY), f"{where('4.5')}: wrong prefix"


def test_sig_domain() -> None:
    body = section("4.4").body
    m = one(r"SIG_DOMAIN = ([0-9a-f ]+)\n\s*= \"([^\"]+)\" followed by one NUL byte "
            r"\((\d+) bytes\)", body, "4.4", "SIG_DOMAIN")
    assert hex_bytes(m.group(1)) == SIG_DOMAIN, f"{where('4.4')}: SIG_DOMAIN is {SIG_DOMAIN.hex()}"
    assert m.group(2).encode() + b"\x00" == SIG_DOMAIN
    assert int(m.group(3)) == len(SIG_DOMAIN)
    size = one(r"\((\d+) \+ (\d+) = (\d+) bytes\)", body, "4.4", "the message size")
    message = signing_message(dag_cbor_cid(b""))
    assert tuple(int(g) for g in size.groups()) == (len(SIG_DOMAIN), 36, len(message))


def test_log_format() -> None:
    body = section("10").body
    m = one(r"MAGIC\s+= ([0-9a-f ]+?)\s+\(\"([^\"]+)\", (\d+) bytes\)", body, "10", "MAGIC")
    assert hex_bytes(m.group(1)) == logformat.MAGIC, f"{where('10')}: MAGIC differs"
    assert m.group(2).replace("\\n", "\n").encode() == logformat.MAGIC
    assert int(m.group(3)) == len(logformat.MAGIC)
    examples = re.findall(r"(\d+) is `([0-9a-f ]+)`", body)
    assert examples, f"{where('10')}: no uvarint examples"
    for n, encoded in examples:
        assert logformat.uvarint(int(n)) == hex_bytes(encoded), (
            f"{where('10')}: uvarint({n}) is {logformat.uvarint(int(n)).hex()}")


# --- constants and tables: 2.3, 4.2, 5.1, 6 ----------------------------------------------


def _value(expr: str) -> int:
    m = re.fullmatch(r"2\^(\d+)(-1)?", expr)
    if m:
        return (1 << int(m.group(1))) - (1 if m.group(2) else 0)
    return int(expr)


def test_quoted_constants() -> None:
    """Each `NAME` of CONSTANTS is given a value somewhere, and every value given is right:
    "65536 (`ENVELOPE_BYTES_MAX`)", "0..128 bytes (`THREAD_BYTES_MAX`)",
    "65536 (64 KiB, `ENVELOPE_BYTES_MAX`)", "`LAMPORT_PER_MS = 2^16`"."""
    number = r"(2\^\d+(?:-1)?|\d+)"
    before = re.compile(number + r"(?:\]|\s+[A-Za-z]+)?\s+\((?:[^()`]*?,\s*)?`([A-Z][A-Z0-9_]+)`")
    assigned = re.compile(r"`([A-Z][A-Z0-9_]+) = " + number + "`")
    seen: set[str] = set()
    for s in SECTIONS:
        pairs = [(m.group(2), m.group(1)) for m in before.finditer(s.body)]
        pairs += [(m.group(1), m.group(2)) for m in assigned.finditer(s.body)]
        for name, expr in pairs:
            if name not in CONSTANTS:
                continue
            seen.add(name)
            assert _value(expr) == CONSTANTS[name], (
                f"{where_is(s)}: {name} is given as {expr}, the code has "
                f"{CONSTANTS[name]}")
    missing = sorted(set(CONSTANTS) - seen)
    assert not missing, f"docs/PROTOCOL.md never gives a value to {missing}"


def test_limits_table() -> None:
    found = [t for t in tables(section("2.3").body) if "`size_bytes_max`" in t[0]]
    assert len(found) == 1, f"{where('2.3')}: expected one limits table"
    rows = {r[0].split()[0].strip("`"): r[1:] for r in found[0][1:]}
    for name, limits in (("DEFAULT_LIMITS", cbor.DEFAULT_LIMITS),
                         ("ENVELOPE_LIMITS", ENVELOPE_LIMITS)):
        assert name in rows, f"{where('2.3')}: no row for {name}"
        got = [int(cell.split()[0]) for cell in rows[name]]
        expected = [limits.size_bytes_max, limits.depth_max, limits.items_max]
        assert got == expected, f"{where('2.3')}: {name} is {got}, the code has {expected}"


def test_body_table() -> None:
    found = tables(section("4.2").body)
    assert found, f"{where('4.2')}: no body table"
    fields = [r[0].strip("`") for r in found[0][1:]]
    assert sorted(fields) == sorted(BODY.fields), (
        f"{where('4.2')}: fields {fields}, the code has {list(BODY.fields)}")
    assert set(BODY.required) == set(BODY.fields)
    order = one(r"In canonical order the body's keys appear as ([^.]+)\.", prose("4.2"),
                "4.2", "the canonical key order")
    canonical = sorted(BODY.fields, key=lambda k: (len(k.encode()), k.encode()))
    assert code_spans(order.group(1)) == canonical, f"{where('4.2')}: order is {canonical}"


def _codes_in_source(module: str) -> set[str]:
    text = (ROOT / "protocol" / f"{module}.py").read_text(encoding="utf-8")
    codes = set(re.findall(r"\bcode\s*=\s*\"([a-z_]+)\"", text))
    codes |= set(re.findall(r"self\.fail\([^\n]*,\s*\"([a-z_]+)\"\)", text))
    codes |= set(re.findall(r"code = \"([a-z_]+)\" if", text))
    return codes


def test_error_codes_table() -> None:
    s = section("5.1")
    found = [t for t in tables(s.body) if t[0][:2] == ["code", "class"]]
    assert len(found) == 1, f"{where('5.1')}: expected one code table"
    table = {r[0].strip("`"): r[1].strip("`") for r in found[0][1:]}
    for obj in vars(errors).values():
        if (isinstance(obj, type) and issubclass(obj, errors.RemoteProtocolError)
                and obj is not errors.RemoteProtocolError):
            assert table.get(obj.code) == obj.__name__, (
                f"{where('5.1')}: {obj.__name__} (code {obj.code!r}) is not in the table")
    raised = set().union(*(_codes_in_source(m) for m in CODE_MODULES))
    missing = sorted(raised - set(table) - {"local_error", "invalid", "protocol_error"})
    assert not missing, f"{where('5.1')}: codes raised in protocol/ but not listed: {missing}"
    for code in ("pending_full", "internal"):  # replay.py: listed as pipeline reasons
        assert f"`{code}`" in s.body, f"{where('5.1')}: does not mention `{code}`"


def test_payload_tables() -> None:
    """Section 6.1 has a `#### KIND` table for every verb, equal to `verbs.describe`."""
    headings = {s.title: s for s in subsections("6.1") if s.level == 4}
    verb_headings = {t for t in headings if re.fullmatch(r"[A-Z_]+", t)}
    assert verb_headings == set(verbs.KINDS), (
        f"{where('6.1')}: verbs {sorted(verb_headings)}, the code has {sorted(verbs.KINDS)}")
    for kind in verbs.KINDS:
        found = tables(headings[kind].body)
        assert found, f"{where('6.1')} ({kind}): no table"
        rows = found[0]
        assert rows[0] == ["field", "type", "presence"], f"{where('6.1')} ({kind}): header"
        check_field_table("6.1", kind, rows[1:], verbs.PAYLOADS[kind])
        # The same, read through the public description the CLI prints.
        described = {r[0].strip("`"): r[2] for r in rows[1:]}
        for name, text in verbs.describe(kind).items():
            assert text.endswith(f"({described[name]})"), f"{where('6.1')} ({kind}.{name})"


def _shape_table(label: str) -> list[list[str]]:
    body = section("6.2").body
    at = body.find(f"**{label}**")
    assert at >= 0, f"{where('6.2')}: no **{label}** shape"
    found = tables(body[at:])
    assert found, f"{where('6.2')}: no table after **{label}**"
    return found[0]


def test_nested_shapes() -> None:
    shapes: dict[str, Obj] = {"PATCH": verbs.PATCH, "DECISION": verbs.DECISION,
                              "CERT": verbs.CERT}
    for label, schema in shapes.items():
        rows = _shape_table(label)
        assert rows[0] == ["field", "type", "presence"], f"{where('6.2')} ({label}): header"
        check_field_table("6.2", label, rows[1:], schema)
    sigs = verbs.CERT.fields["sigs"]
    assert isinstance(sigs, List) and isinstance(sigs.item, Obj)
    assert set(sigs.item.fields) == set(sigs.item.required) == {"signer", "sig"}
    rows = _shape_table("Plan ops")
    assert rows[0] == ["`op`", "field", "type", "presence"], f"{where('6.2')} (Plan ops): header"
    by_op: dict[str, list[list[str]]] = {}
    op = ""
    for r in rows[1:]:
        op = r[0].strip("`") or op
        by_op.setdefault(op, []).append(r[1:])
    assert list(by_op) == list(verbs.PLAN_OP.variants), f"{where('6.2')}: plan ops {list(by_op)}"
    for op, variant in verbs.PLAN_OP.variants.items():
        check_field_table("6.2", op, by_op[op], variant, skip=frozenset({"op"}))
    body = prose("6.2")
    for label, values in (("TASK_CLASSES", verbs.TASK_CLASSES),):
        m = one(rf"\(`{label}`[^)]*\): ((?:`\w+`,?\s*)+)", body, "6.2", label)
        assert tuple(code_spans(m.group(1))) == values, f"{where('6.2')}: {label} is {values}"
    cert = one(r'"can-swarm/raft-cert/v1" \|\| 00 \|\|', body, "6.2", "the certificate message")
    assert cert and certificate.CERT_DOMAIN == b"can-swarm/raft-cert/v1\x00"
    message = certificate.signing_message(b"s" * 32, 7, 9, 3, b"h" * 32)
    assert message == (certificate.CERT_DOMAIN + b"s" * 32 + (7).to_bytes(4, "big")
                       + (9).to_bytes(8, "big") + (3).to_bytes(8, "big") + b"h" * 32)


# --- section 4.4: what a signature must satisfy, by experiment ---------------------------

ED25519_L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes([1]) + bytes(31)
# A point of order 8 (one of the y values libsodium lists as small order).
ORDER_8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")


def _scalar(data: bytes) -> int:
    """SHA-512 of `data`, little-endian, mod L (as libsodium reduces k)."""
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % ED25519_L


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def _secret_scalar(seed: bytes) -> int:
    h = hashlib.sha512(seed).digest()
    return (int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)) % ED25519_L


def test_signature_rules_are_strict_not_zip215() -> None:
    assert "is **not** ZIP-215" in prose("4.4")
    seed = bytes(range(32))
    key = Identity(seed)
    a = _secret_scalar(seed)
    message = signing_message(dag_cbor_cid(b"any body"))
    sig = key.sign(message)
    assert verify_signature(key.public_key, message, sig)
    # Rule 1: S + L is the same scalar, refused.
    s = int.from_bytes(sig[32:], "little")
    assert not verify_signature(key.public_key, message, sig[:32] + _le(s + ED25519_L))
    # Rule 2: R = identity with S = k*a meets [S]B = R + [k]A, refused for R's small order.
    k = _scalar(IDENTITY + key.public_key + message)
    s_value = k * a % ED25519_L
    assert (sodium.crypto_scalarmult_ed25519_base_noclamp(_le(s_value))
            == sodium.crypto_scalarmult_ed25519_noclamp(_le(k), key.public_key))
    assert not verify_signature(key.public_key, message, IDENTITY + _le(s_value))
    # Rule 3: A = identity, R = identity, S = 0 meets every equation, refused.
    assert not verify_signature(IDENTITY, message, IDENTITY + bytes(32))
    point = ORDER_8
    for _ in range(8):  # every multiple of the order-8 point: all small order, all refused
        assert not verify_signature(point, message, IDENTITY + bytes(32))
        point = sodium.crypto_core_ed25519_add(point, ORDER_8)
    assert point == ORDER_8
    # Not rule 3: a mixed-order key A + T (T of order 8) is accepted, and a signature
    # with S = r + k*a verifies exactly when [k]T is the identity: the cofactorless
    # equation, not ZIP-215's cofactored one (which accepts them all).
    mixed = sodium.crypto_core_ed25519_add(key.public_key, ORDER_8)
    verdicts = []
    for i in range(48):
        m = message + bytes([i])
        r = _scalar(b"nonce" + m)
        big_r = sodium.crypto_scalarmult_ed25519_base_noclamp(_le(r))
        k = _scalar(big_r + mixed + m)
        accepted = verify_signature(mixed, m, big_r + _le((r + k * a) % ED25519_L))
        assert accepted == (k % 8 == 0), f"{where('4.4')}: mixed-order key, k mod 8 = {k % 8}"
        verdicts.append(accepted)
    assert any(verdicts) and not all(verdicts)


# --- sections 4.6 and 4.7: the swarm id and envelope files -------------------------------


def _byte_fields(schema: FieldType, path: str) -> list[str]:
    """Paths of every byte-string field in a schema ("accounts[].account")."""
    if isinstance(schema, Bytes):
        return [path]
    if isinstance(schema, List):
        return _byte_fields(schema.item, path + "[]")
    if isinstance(schema, Obj):
        return [p for k, t in schema.fields.items()
                for p in _byte_fields(t, f"{path}.{k}" if path else k)]
    return []


def test_swarm_id_recipe() -> None:
    """Recompute a swarm id from a genesis file as section 4.6 says, with cbor2 alone."""
    body = prose("4.6")
    assert "the only byte strings in a genesis" in body
    assert _byte_fields(genesis.GENESIS, "") == ["accounts[].account", "validators[].account"]
    gen = genesis.new(
        name="doc check", created_ms=1_767_225_600_000,
        validators=[{"account": bytes([i]) * 32, "org": f"o{i}", "asn": i, "region": "r",
                     "stake": 5} for i in (3, 1, 2)],
        accounts=[{"account": bytes([9]) * 32, "balance": 10}],
    )
    value = json.loads(gen.to_json())
    for name in ("accounts", "validators"):
        for item in value[name]:
            item["account"] = bytes.fromhex(item["account"])
    assert hashlib.sha256(cbor2.dumps(value, canonical=True)).digest() == gen.swarm_id
    assert "first 16 hex digits" in body and gen.short_id == gen.swarm_id.hex()[:16]
    # Whitespace and key order do not count; array order does.
    relaxed = json.dumps(json.loads(gen.to_json()), indent=None, sort_keys=False)
    assert genesis.from_json(relaxed).swarm_id == gen.swarm_id
    reordered = json.loads(gen.to_json())
    reordered["validators"].reverse()
    assert genesis.from_json(json.dumps(reordered)).swarm_id != gen.swarm_id


def test_envelope_file_is_the_wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from swarm.cli.main import app

    assert "holds the wire form of section 4.1 and nothing else" in prose("4.7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "home"))
    swarm = VALID[0]["swarm_hex"]
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "new"]).exit_code == 0
    made = runner.invoke(app, ["envelope", "make", "NEED", "--swarm", swarm, "--json",
                               "--payload", '{"class": "simple", "budget": 1}'])
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    path = tmp_path / f"{doc['id']}.env"  # the default name: `<id string>.env`
    data = path.read_bytes()
    env = decode_envelope(data, swarm=bytes.fromhex(swarm))
    assert data == env.wire and str(env.id) == doc["id"] and len(data) == doc["size_bytes"]
    assert str(dag_cbor_cid(data[76:])) == doc["id"]
    shown = runner.invoke(app, ["envelope", "inspect", str(path), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["id"] == doc["id"]
    path.write_bytes(data + b"\n")
    assert runner.invoke(app, ["envelope", "inspect", str(path)]).exit_code == 1
