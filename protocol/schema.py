"""Declarative payload schemas: what a valid payload looks like, and nothing else.

A schema is a tree of small frozen field types (`Int`, `Text`, `Bytes`, `Link`, `Enum`,
`List`, `Obj`, `OneOf`). `check()` walks a decoded value and raises `SchemaError` naming
the dotted path of the first bad field; unknown fields are errors, never ignored, so two
nodes can never disagree about a field one of them did not understand. The same tree
converts to and from JSON for the CLI (bytes as hex, CIDs as strings), so users type
JSON and the schema decides what each string means.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .cid import Cid
from .errors import DecodeError, SchemaError

INT_MAX = 2**63 - 1


class FieldType(ABC):
    @abstractmethod
    def check(self, value: Any, path: str) -> None:
        """Raise SchemaError naming `path` unless `value` fits."""

    def from_json(self, value: Any, path: str) -> Any:
        return value

    @abstractmethod
    def describe(self) -> str:
        """One line for docs and `--help`."""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Cid):
        return "CID"
    return {int: "integer", str: "text", bytes: "bytes", list: "array", dict: "map"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True, slots=True)
class Int(FieldType):
    min: int = 0
    max: int = INT_MAX

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(path, f"must be an integer (got {_type_name(value)})")
        if value < self.min:
            raise SchemaError(path, f"must be >= {self.min} (got {value})")
        if value > self.max:
            raise SchemaError(path, f"must be <= {self.max} (got {value})")

    def describe(self) -> str:
        hi = "2^63-1" if self.max == INT_MAX else str(self.max)
        return f"integer {self.min}..{hi}"


@dataclass(frozen=True, slots=True)
class Text(FieldType):
    max_bytes: int
    min_bytes: int = 0

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, f"must be text (got {_type_name(value)})")
        try:
            n = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise SchemaError(path, "must be valid UTF-8 (lone surrogate)") from None
        if n < self.min_bytes:
            raise SchemaError(path, f"must be at least {self.min_bytes} bytes (got {n})")
        if n > self.max_bytes:
            raise SchemaError(path, f"must be at most {self.max_bytes} bytes (got {n})")

    def describe(self) -> str:
        return f"text {self.min_bytes}..{self.max_bytes} bytes"


@dataclass(frozen=True, slots=True)
class Bytes(FieldType):
    length: int

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes):
            raise SchemaError(path, f"must be bytes (got {_type_name(value)})")
        if len(value) != self.length:
            raise SchemaError(path, f"must be exactly {self.length} bytes (got {len(value)})")

    def from_json(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise SchemaError(path, f"must be {self.length} bytes as hex") from None
        return value

    def describe(self) -> str:
        return f"bytes[{self.length}] (hex in JSON)"


@dataclass(frozen=True, slots=True)
class Link(FieldType):
    """A CID (DAG-CBOR tag 42)."""

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, Cid):
            raise SchemaError(path, f"must be a CID link (got {_type_name(value)})")

    def from_json(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            try:
                return Cid.parse(value, path)
            except DecodeError as exc:
                raise SchemaError(path, exc.reason) from None
        if isinstance(value, dict) and set(value) == {"/"}:  # DAG-JSON link form
            return self.from_json(value["/"], path)
        return value

    def describe(self) -> str:
        return "CID"


@dataclass(frozen=True, slots=True)
class Enum(FieldType):
    values: tuple[str, ...]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or value not in self.values:
            shown = value if isinstance(value, str) else _type_name(value)
            raise SchemaError(path, f"must be one of {', '.join(self.values)} (got {shown!r})")

    def describe(self) -> str:
        return "one of " + "|".join(self.values)


@dataclass(frozen=True, slots=True)
class Pattern(FieldType):
    """Text matching `regex` in full; `what` names it in errors and docs."""

    regex: str
    what: str

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or re.fullmatch(self.regex, value) is None:
            shown = value[:80] if isinstance(value, str) else _type_name(value)
            raise SchemaError(path, f"must be {self.what} (got {shown!r})")

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True, slots=True)
class Bool(FieldType):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(path, f"must be true or false (got {_type_name(value)})")

    def describe(self) -> str:
        return "bool"


@dataclass(frozen=True, slots=True)
class List(FieldType):
    item: FieldType
    max_items: int
    min_items: int = 0
    # Sorted and unique (by canonical order) so a set has exactly one encoding.
    sorted_unique: bool = False

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(path, f"must be an array (got {_type_name(value)})")
        if len(value) < self.min_items:
            raise SchemaError(path, f"must have at least {self.min_items} items")
        if len(value) > self.max_items:
            raise SchemaError(path, f"must have at most {self.max_items} items (got {len(value)})")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")
        if self.sorted_unique:
            for i in range(1, len(value)):
                if not value[i - 1] < value[i]:
                    raise SchemaError(f"{path}[{i}]", "items must be sorted and unique")

    def from_json(self, value: Any, path: str) -> Any:
        if isinstance(value, list):
            items = [self.item.from_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if self.sorted_unique:
                # Mixed types cannot be sorted; check() then reports them with a path.
                with contextlib.suppress(TypeError):
                    items = sorted(set(items))
            return items
        return value

    def describe(self) -> str:
        extra = ", sorted, unique" if self.sorted_unique else ""
        return f"array of {self.item.describe()} ({self.min_items}..{self.max_items}{extra})"


@dataclass(frozen=True, slots=True)
class Obj(FieldType):
    """A map with a fixed set of text keys; `required` lists the mandatory ones."""

    fields: Mapping[str, FieldType]
    required: frozenset[str] = field(default_factory=frozenset)
    names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(self.fields))

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError(path, f"must be a map (got {_type_name(value)})")
        keys = value.keys()
        if not keys <= self.names:
            key = sorted(str(k) for k in keys - self.names)[0]
            where = f"{path}.{key}" if path else key
            raise SchemaError(where, "unknown field", code="unknown_field")
        if not self.required <= keys:
            key = sorted(self.required - keys)[0]
            where = f"{path}.{key}" if path else key
            raise SchemaError(where, "required field is missing", code="missing_field")
        fields = self.fields
        prefix = f"{path}." if path else ""
        for key, v in value.items():
            fields[key].check(v, prefix + key)

    def from_json(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {
                k: (self.fields[k].from_json(v, f"{path}.{k}") if k in self.fields else v)
                for k, v in value.items()
            }
        return value

    def describe(self) -> str:
        return "map"


def obj(required: Mapping[str, FieldType], optional: Mapping[str, FieldType] | None = None) -> Obj:
    fields = dict(required)
    fields.update(optional or {})
    return Obj(fields, frozenset(required))


@dataclass(frozen=True, slots=True)
class OneOf(FieldType):
    """A map whose `tag` field (text) picks which `Obj` schema applies."""

    tag: str
    variants: Mapping[str, Obj]

    def _variant(self, value: Any, path: str) -> Obj:
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be a map (got {_type_name(value)})")
        name = value.get(self.tag)
        if not isinstance(name, str) or name not in self.variants:
            raise SchemaError(
                f"{path}.{self.tag}",
                f"must be one of {', '.join(self.variants)} (got {name!r})",
            )
        return self.variants[name]

    def check(self, value: Any, path: str) -> None:
        self._variant(value, path).check(value, path)

    def from_json(self, value: Any, path: str) -> Any:
        try:
            return self._variant(value, path).from_json(value, path)
        except SchemaError:
            return value  # check() reports it

    def describe(self) -> str:
        return f"one of {', '.join(self.variants)} by `{self.tag}`"


def to_json(value: Any) -> Any:
    """A protocol value as JSON: bytes -> hex, CID -> string."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Cid):
        return str(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
