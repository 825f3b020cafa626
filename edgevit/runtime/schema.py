"""A small schema checker for JSON/TOML documents (artifact metadata, target files), standard library only.

A schema is built from a few node kinds: ``Field`` (one value checked by a predicate), ``Record`` (a dict with
required and optional keys), ``ListOf`` and ``MapOf``. ``check`` raises :class:`SchemaViolation` naming the
first wrong field by its path (``inputs[0].shape[2]``), what it must be and what it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable


class SchemaViolation(ValueError):
    """A document that does not fit its schema; ``path`` names the field."""

    def __init__(self, path: str, message: str):
        super().__init__(f"field '{path or '<document>'}' {message}")
        self.path = path


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


@dataclass(frozen=True)
class Field:
    """One value: ``test(value)`` must be true; ``expected`` says what it must be (for the message)."""

    test: Callable[[Any], bool]
    expected: str

    def check(self, value: Any, path: str) -> None:
        if not self.test(value):
            raise SchemaViolation(path, f"must be {self.expected}, got {_show(value)}")


@dataclass(frozen=True)
class Record:
    """A dict with ``required`` and ``optional`` keys; other keys are refused unless ``open``."""

    required: dict
    optional: dict = field(default_factory=dict)
    open: bool = False

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaViolation(path, f"must be a table/object, got {_show(value)}")
        for key, node in self.required.items():
            if key not in value:
                raise SchemaViolation(_join(path, key), "is missing")
            node.check(value[key], _join(path, key))
        for key, node in self.optional.items():
            if key in value:
                node.check(value[key], _join(path, key))
        if not self.open:
            unknown = sorted(set(map(str, value)) - set(self.required) - set(self.optional))
            if unknown:
                raise SchemaViolation(_join(path, unknown[0]), f"is not a known field (known: "
                                      f"{', '.join([*self.required, *self.optional])})")


@dataclass(frozen=True)
class ListOf:
    """A list whose items all fit ``item``, with ``min_len <= len <= max_len``."""

    item: Any
    min_len: int = 0
    max_len: int = 1 << 16

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaViolation(path, f"must be a list, got {_show(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise SchemaViolation(path, f"must have {self.min_len} to {self.max_len} items, got {len(value)}")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


@dataclass(frozen=True)
class MapOf:
    """A dict from keys fitting ``key`` to values fitting ``value``."""

    key: Field
    value: Any

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaViolation(path, f"must be a table/object, got {_show(value)}")
        for k, v in value.items():
            self.key.check(k, _join(path, str(k)) + " (name)")
            self.value.check(v, _join(path, str(k)))


@dataclass(frozen=True)
class Either:
    """A value fitting any of ``options`` (tried in order); the message lists what each expects."""

    options: tuple

    def check(self, value: Any, path: str) -> None:
        for option in self.options:
            try:
                option.check(value, path)
                return
            except SchemaViolation:
                continue
        expected = " or ".join(getattr(o, "expected", type(o).__name__.lower()) for o in self.options)
        raise SchemaViolation(path, f"must be {expected}, got {_show(value)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check(document: Any, schema) -> None:
    """Raise :class:`SchemaViolation` unless ``document`` fits ``schema``."""
    schema.check(document, "")


# Common fields. bool is a subclass of int in Python: a JSON/TOML ``true`` is never a count.
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STRING = Field(lambda v: isinstance(v, str), "a string")
TEXT = Field(lambda v: isinstance(v, str) and "\n" not in v and len(v) <= 4096, "a one-line string")
BOOL = Field(lambda v: isinstance(v, bool), "true or false")
NULL = Field(lambda v: v is None, "null")
ANY = Field(lambda v: True, "anything")


def int_in(lo: int, hi: int) -> Field:
    """An integer (not a bool) in ``[lo, hi]``."""
    return Field(lambda v: _is_int(v) and lo <= v <= hi, f"an integer from {lo} to {hi}")


def number_in(lo: float, hi: float) -> Field:
    """A finite int or float (not a bool) in ``[lo, hi]``."""
    return Field(lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            and lo <= v <= hi), f"a number from {lo:g} to {hi:g}")


def matching(pattern: str, expected: str) -> Field:
    """A string matching the regular expression ``pattern`` in full."""
    regex = re.compile(pattern)
    return Field(lambda v: isinstance(v, str) and regex.fullmatch(v) is not None, expected)


def one_of(*values) -> Field:
    """One of the given values (compared by type as well, so ``1`` is not ``True``)."""
    return Field(lambda v: any(type(v) is type(c) and v == c for c in values),
                 "one of " + ", ".join(repr(c) for c in values))
