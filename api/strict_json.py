"""The exact reading of a JSON body that orjson's fast one may have made ambiguous or lossy.

orjson keeps the last of duplicate member names, turns an integer beyond 64 bits into a
rounded float, refuses a number beyond IEEE 754 doubles as "infinity" and reads a nonzero
one too small for a double as 0.0, and refuses a \\u escape of a lone UTF-16 surrogate
without saying where; PostgreSQL's json types cannot hold U+0000. The ledger stores none of
those: it refuses the body with the JSON path of the first such member, number or string,
in document order. This parse is slow (the standard library, in Python) and runs only when
a cheap test on the bytes (or orjson's refusal) says one of them may be there.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from nexus_ssot.ledger.documents import LONE_SURROGATE, lone_surrogate, member_path
from nexus_ssot.ledger.errors import InvalidInput, InvalidUnicode

MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # what orjson reads and writes as an integer
_NONZERO_DIGIT = re.compile(r"[1-9]")
_MANTISSA = re.compile(r"^-?([0-9.]+)")


class _Object(list[tuple[str, Any]]):
    """An object as its members in order, duplicates kept."""


class _Lossy:
    def __init__(self, literal: str, why: str) -> None:
        self.literal, self.why = literal, why


def _integer(literal: str) -> Any:
    digits = len(literal.lstrip("-"))
    if digits <= 20 and MIN_INT <= int(literal) <= MAX_INT:
        return int(literal)
    return _Lossy(literal, "an integer outside 64 bits (-2^63 to 2^64-1)")


def _number(literal: str) -> Any:
    value = float(literal)
    if math.isinf(value):
        return _Lossy(literal, "beyond the range of an IEEE 754 double")
    mantissa = _MANTISSA.match(literal)
    if value == 0.0 and mantissa and _NONZERO_DIGIT.search(mantissa.group(1)):
        return _Lossy(literal, "too small for an IEEE 754 double (it would read as 0)")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def first_ambiguity(body: bytes, root: str) -> InvalidInput | None:
    """The refusal of the first duplicate member, lossy number, NUL character or lone
    surrogate of ``body`` (valid JSON text, or JSON orjson refused for a number's range or a
    surrogate), or None when there is none; its field is the JSON path from ``root``
    (``""``: the body's own members)."""
    try:
        tree = json.loads(body.decode(), object_pairs_hook=_Object, parse_int=_integer,
                          parse_float=_number, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None  # not JSON after all: orjson's own message says why
    return _walk(tree, root)


def _nul(path: str) -> InvalidUnicode:
    # PostgreSQL's json types cannot hold U+0000: refused here, not failing a commit
    return InvalidUnicode(f"{path} holds the character U+0000 (\\u0000), which the ledger "
                          "cannot store", field=path)


def _text(text: str, path: str, *, in_name: bool = False) -> InvalidUnicode | None:
    if "\x00" in text:
        return _nul(path)
    if (found := LONE_SURROGATE.search(text)) is not None:
        return lone_surrogate(path, found.group(), in_name=in_name)
    return None


def _walk(value: Any, path: str) -> InvalidInput | None:
    if isinstance(value, _Lossy):
        return InvalidInput(
            f"{path} is {value.literal[:40]}{'…' if len(value.literal) > 40 else ''}: "
            f"{value.why}, which the ledger would not store exactly; send it as a string",
            code="number_out_of_range", field=path)
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, _Object):
        seen: set[str] = set()
        for name, member in value:
            at = member_path(path, name)
            if (refused := _text(name, at, in_name=True)) is not None:
                return refused
            if name in seen:
                return InvalidInput(
                    f"{at} appears twice in one object; JSON readers disagree on which value "
                    "wins, so the ledger takes neither", code="duplicate_member", field=at)
            seen.add(name)
            found = _walk(member, at)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
