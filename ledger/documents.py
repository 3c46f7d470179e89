"""What a document may be, and the JSON Patch (RFC 6902) between two documents.

A document is JSON an entry holds: within its namespace's limits (size, depth, an object
unless allowed otherwise) and text every store can hold (no U+0000, no lone UTF-16
surrogate). ``diff`` gives the patch each event records; ``apply_json_patch`` applies a
client's.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from .errors import (
    QUOTE_LIMIT,
    DocumentTooLarge,
    InvalidInput,
    InvalidPatch,
    InvalidUnicode,
    PatchFailed,
    quoted,
)


@dataclass(frozen=True)
class Limits:
    """What a document may be. ``allow_non_object`` comes from the namespace's policy."""

    max_document_bytes: int = 1024 * 1024
    max_depth: int = 32
    allow_non_object: bool = False


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, ``{}``/``[]`` is 1."""
    depth = 0
    level: list[Any] = [value]
    while level:
        children: list[Any] = []
        containers = False
        for item in level:
            if isinstance(item, dict):
                containers = True
                children.extend(item.values())
            elif isinstance(item, list):
                containers = True
                children.extend(item)
        if not containers:
            break
        depth += 1
        level = children
    return depth


def check_document(document: Any, limits: Limits, *, field: str = "document") -> bytes:
    """Validate a document against the limits; return its canonical encoding."""
    if not limits.allow_non_object and not isinstance(document, dict):
        raise InvalidInput(
            f"{field} must be a JSON object (this namespace does not allow "
            f"{type_name(document)} documents)",
            code="document_not_object",
            field=field,
        )
    try:
        encoded: bytes | None = orjson.dumps(document)
    except TypeError:  # refused: checked in the order below, for the refusal it gets
        encoded = None
    # Each level of nesting opens with a bracket in the encoding (a string may hold more):
    # when there are no more brackets than levels allowed, no walk is needed to know.
    if encoded is None or encoded.count(b"{") + encoded.count(b"[") > limits.max_depth:
        depth = json_depth(document)
        if depth > limits.max_depth:
            raise InvalidInput(
                f"{field} is nested {depth} levels deep; the limit is {limits.max_depth}",
                code="document_too_deep",
                field=field,
            )
    if encoded is None:
        encoded = check_text(document, field)
    # (``find``, not ``in``: on Python 3.11 ``in`` tries the needle as an integer first
    # and drops the TypeError that makes)
    if encoded.find(b"\\u0000") != -1 and (where := nul_path(document, field)) is not None:
        raise InvalidUnicode(
            f"{where} holds the character U+0000, which the ledger cannot store",
            field=where,
        )
    if len(encoded) > limits.max_document_bytes:
        raise DocumentTooLarge(
            f"{field} is {len(encoded)} bytes; the limit is {limits.max_document_bytes}",
            field=field,
        )
    return encoded


#: A UTF-16 surrogate code point. JSON read into Python pairs the two halves of a
#: character, so one found in a string is a lone half: no character, with no encoding.
LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def member_path(path: str, name: str) -> str:
    """The JSON path of member ``name`` of the object at ``path`` (``""``: the root), as
    errors name it: ``a.b``, or ``a["b c"]`` (JSON-escaped) for a name that is no identifier;
    a name longer than QUOTE_LIMIT by its start and its length, not sent back whole."""
    if len(name) > QUOTE_LIMIT:
        return f"{path}[{json.dumps(name[:QUOTE_LIMIT])}…({len(name):,} characters)]"
    if not _IDENTIFIER.match(name):
        return f"{path}[{json.dumps(name)}]"
    return f"{path}.{name}" if path else name


def check_text(value: Any, field: str) -> bytes:
    """``value`` encoded as the ledger stores it. A lone UTF-16 surrogate in a string or
    member name has no encoding: ``InvalidUnicode`` names its JSON path from ``field``."""
    try:
        return orjson.dumps(value)
    except TypeError:
        refusal = surrogate_refusal(value, field)
        if refusal is None:
            raise
        raise refusal from None


def surrogate_refusal(value: Any, path: str) -> InvalidUnicode | None:
    """The refusal of the first lone surrogate in ``value`` (document order), or None."""
    for text, at, name in _texts(value, path):
        if (found := LONE_SURROGATE.search(text)) is not None:
            return lone_surrogate(at if name is None else member_path(at, name),
                                  found.group(), in_name=name is not None)
    return None


def lone_surrogate(where: str, char: str, *, in_name: bool) -> InvalidUnicode:
    """The refusal of ``char``, a lone surrogate in the string (or member name) at ``where``."""
    return InvalidUnicode(
        f"{where or 'the body'} {'is a member name holding' if in_name else 'holds'} "
        f"U+{ord(char):04X}, a lone UTF-16 surrogate (half of a pair, which is no "
        "character): the ledger cannot store it",
        field=where or None,
    )


def nul_path(value: Any, path: str) -> str | None:
    """The path of the first string holding U+0000 in ``value``, or of the object whose
    member name holds it, if any (PostgreSQL's jsonb cannot hold it)."""
    for text, at, _ in _texts(value, path):
        if "\x00" in text:
            return at
    return None


def _texts(value: Any, path: str) -> Iterator[tuple[str, str, str | None]]:
    """Every string and member name of ``value`` in document order: (the text, the JSON
    path of the string or of the object holding the name, the name or None)."""
    if isinstance(value, str):
        yield value, path, None
    elif isinstance(value, dict):
        for key, item in value.items():
            name = str(key)  # (not JSON: orjson's own refusal stands)
            yield name, path, name
            yield from _texts(item, member_path(path, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _texts(item, f"{path}[{i}]")


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


# --- JSON Patch ------------------------------------------------------------------------


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The RFC 6902 patch that turns ``before`` into ``after`` (None means absent). A lone
    surrogate in either, which no document may hold, is refused (``InvalidUnicode``)."""
    check_text(before, "document")
    check_text(after, "document")
    if before is None or after is None:
        if before is None and after is None:
            return []
        if after is None:  # a delete: the document becomes null (removing "" is refused
            return [{"op": "replace", "path": "", "value": None}]  # by most libraries)
        return [{"op": "add", "path": "", "value": after}]
    if type(before) is dict and type(after) is dict:
        replaced: list[dict[str, Any]] = []
        if _replacements(before, after, "", replaced):
            return replaced
        before, after = _differing_members(before, after)
        if not before and not after:
            return []
    # orjson for the library's value comparisons: same verdicts (1 vs true vs 1.0 differ),
    # a fraction of the cost of json.dumps.
    ops: list[dict[str, Any]] = jsonpatch.JsonPatch.from_diff(before, after,
                                                             dumps=_json_text).patch
    return ops


_LEAVES = frozenset({str, int, float, bool, type(None)})
#: Leaves of these types (both of the same one) are equal exactly when their encodings are
#: (not floats: 0.0 and -0.0 are equal and encode otherwise).
_EQUAL_WHEN_ENCODED_ALIKE = frozenset({str, int, bool})


def _replacements(before: dict[str, Any], after: dict[str, Any], path: str,
                  ops: list[dict[str, Any]]) -> bool:
    """The library's diff, appended to ``ops``, when it is only ``replace`` operations:
    both objects have the same member names, here and in the objects both hold under a
    name, and no two lists differ. Then the library compares the members in ``before``'s
    order, going into an object both hold under a name, and replaces each value that
    encodes otherwise with a copy of ``after``'s (the property test holds the two to the
    same patch). False, with ``ops`` unusable, when the documents are not that simple."""
    if before.keys() != after.keys():
        return False
    for name, old in before.items():
        new = after[name]
        if old is new:
            continue
        old_type, new_type = type(old), type(new)
        if old_type is new_type and old_type in _EQUAL_WHEN_ENCODED_ALIKE:
            if old != new:  # (as the encodings would tell, without making them)
                ops.append({"op": "replace", "path": f"{path}/{_escaped(name)}",
                            "value": new})
        elif old_type is dict and new_type is dict:
            if not _replacements(old, new, f"{path}/{_escaped(name)}", ops):
                return False
        elif old_type is list and new_type is list:
            if orjson.dumps(old) != orjson.dumps(new):
                return False  # the library matches up their items
        elif (old_type in _LEAVES or old_type is dict or old_type is list) and (
                new_type in _LEAVES or new_type is dict or new_type is list):
            if orjson.dumps(old) != orjson.dumps(new):
                ops.append({"op": "replace", "path": f"{path}/{_escaped(name)}",
                            "value": new if new_type in _LEAVES else copy.deepcopy(new)})
        else:
            return False
    return True


def _escaped(name: str) -> str:
    """A member name as a JSON Pointer (RFC 6901) reference token."""
    return name.replace("~", "~0").replace("/", "~1")


def _differing_members(before: dict[str, Any], after: dict[str, Any]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``before`` and ``after`` without the members both hold with the same encoding (and,
    inside the objects both hold under a name, likewise): the library's diff of what is
    left is its diff of the whole, op for op. The library makes no operation of a member
    whose value encodes the same on both sides (it compares values by that encoding, and
    lists and objects item by item, which then all compare equal) and no move or copy
    refers to one (those match added and removed values only); yet it walked every one of
    them, most of a write's CPU in ``decide`` for a document that changes one member.
    The order of the members left is theirs: the library's operations follow it."""
    same: set[str] = set()
    inner: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name, old in before.items():
        if name not in after:
            continue
        new = after[name]
        if old is new or orjson.dumps(old) == orjson.dumps(new):
            same.add(name)
        elif type(old) is dict and type(new) is dict:
            inner[name] = _differing_members(old, new)
    if not same and not inner:
        return before, after
    return ({name: inner[name][0] if name in inner else value
             for name, value in before.items() if name not in same},
            {name: inner[name][1] if name in inner else value
             for name, value in after.items() if name not in same})


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


RFC6902_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
_OP_MEMBERS = {
    "add": ("path", "value"), "replace": ("path", "value"), "test": ("path", "value"),
    "remove": ("path",), "move": ("from", "path"), "copy": ("from", "path"),
}


def check_json_patch(operations: Any) -> list[dict[str, Any]]:
    """Validate the shape of an RFC 6902 patch document (not whether it applies)."""
    if not isinstance(operations, list):
        raise InvalidPatch(
            f"a JSON Patch must be an array of operations, not {type_name(operations)}",
            field="patch",
        )
    check_text(operations, "patch")
    for index, op in enumerate(operations):
        field = f"patch[{index}]"
        if not isinstance(op, dict):
            raise InvalidPatch(f"{field} must be an object", field=field, op_index=index)
        name = op.get("op")
        if not isinstance(name, str) or name not in RFC6902_OPS:
            raise InvalidPatch(
                f"{field}.op must be one of {', '.join(sorted(RFC6902_OPS))}, not {quoted(name)}",
                field=f"{field}.op", op_index=index,
            )
        for member in _OP_MEMBERS[name]:
            if member not in op:
                raise InvalidPatch(
                    f"{field} ({name}) is missing {member!r}",
                    field=f"{field}.{member}", op_index=index,
                )
            if member in ("path", "from") and not _is_pointer(op[member]):
                raise InvalidPatch(
                    f"{field}.{member} must be a JSON Pointer (RFC 6901: '' or '/'-prefixed, "
                    "'~' only as '~0' or '~1'), "
                    f"not {quoted(op[member])}",
                    field=f"{field}.{member}", op_index=index,
                )
    return operations


def _is_pointer(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        jsonpointer.JsonPointer(value)
    except jsonpointer.JsonPointerException:
        return False
    return True


def apply_json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch; a failing operation raises ``PatchFailed`` with its index."""
    check_json_patch(operations)
    result = copy.deepcopy(document)
    for index, op in enumerate(operations):
        try:
            result = jsonpatch.JsonPatch([op]).apply(result, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            actual = jsonpointer.resolve_pointer(result, op["path"], None)
            raise PatchFailed(
                f"patch[{index}] (test {quoted(op['path'])}) failed: the value there is "
                f"{orjson.dumps(actual).decode()}, not {orjson.dumps(op['value']).decode()}",
                code="patch_test_failed", field=f"patch[{index}]", op_index=index,
            ) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise PatchFailed(
                f"patch[{index}] ({op['op']} {quoted(op['path'])}) cannot be applied: {e}",
                field=f"patch[{index}]", op_index=index,
            ) from None
    return result
