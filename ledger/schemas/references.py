"""The references a schema makes, resolved only inside the ledger.

A ``$ref`` (or ``$dynamicRef``) may point inside the schema (``#/$defs/x``, or an ``$id``
the schema itself declares) or at a shared definition registered with
``PUT /v1/schemas/{name}``, as ``urn:ssot:schemas:<name>`` (a fragment may follow). Any
other reference — ``https://…``, ``file:…``, a relative path — is refused: the ledger never
fetches anything, so a schema's meaning cannot change behind its back or leak a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import InvalidSchema, quoted

#: How a schema names a shared definition.
DEFINITION_URN = "urn:ssot:schemas:"

#: Members whose values are data, not schemas: a "$ref" inside them refers to nothing.
_DATA_MEMBERS = frozenset({"enum", "const", "default", "examples"})
_REFERRING = ("$ref", "$dynamicRef")


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """Every (pointer, member, value) of the schema's objects, data members skipped."""
    if isinstance(node, dict):
        for member, value in node.items():
            if member in _DATA_MEMBERS:
                continue
            token = str(member).replace("~", "~0").replace("/", "~1")
            yield path, member, value
            yield from _walk(value, f"{path}/{token}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}/{i}")


def referenced_definitions(schema: Any) -> dict[str, str]:
    """The shared definitions ``schema`` refers to: name -> the pointer of its first
    ``$ref``. Raises ``InvalidSchema`` naming the first reference outside the ledger."""
    members = list(_walk(schema, ""))
    declared = {value.split("#")[0] for _, member, value in members
                if member == "$id" and isinstance(value, str)}
    found: dict[str, str] = {}
    for pointer, member, value in members:
        if member not in _REFERRING or not isinstance(value, str):
            continue
        where = f"{pointer}/{member}"
        target = value.split("#", 1)[0]
        if not target or target in declared:
            continue
        if target.startswith(DEFINITION_URN):
            found.setdefault(target[len(DEFINITION_URN):], where)
            continue
        raise InvalidSchema(
            f"{member} {quoted(value)} at {where or '/'} refers outside the ledger, which "
            f"never fetches a schema: register it with PUT /v1/schemas/{{name}} and refer "
            f"to it as {DEFINITION_URN}<name>", field=where)
    return found


def pin_definitions(
    schema: Any,
    latest: Callable[[str], int | None],
    pins_of: Callable[[str, int], Mapping[str, int] | None],
) -> dict[str, int]:
    """The version of every shared definition ``schema`` needs (directly, or through the
    definitions it refers to, as they were pinned): the latest of those it names itself.
    Raises ``InvalidSchema`` for an unknown definition, or one needed at two versions."""
    pins: dict[str, int] = {}
    for name, where in referenced_definitions(schema).items():
        version = latest(name)
        if version is None:
            raise InvalidSchema(
                f"$ref at {where} names the shared schema {quoted(name)}, which does not "
                f"exist: create it first with PUT /v1/schemas/{name}", field=where)
        pins[name] = version
    return closure(pins, pins_of)


def closure(pins: Mapping[str, int],
            pins_of: Callable[[str, int], Mapping[str, int] | None]) -> dict[str, int]:
    """``pins`` with every definition version those definitions were pinned to
    (``pins_of(name, version)``: that version's pins, None if there is no such version)."""
    result: dict[str, int] = {}
    todo = list(pins.items())
    while todo:
        name, version = todo.pop()
        if name in result:
            if result[name] != version:
                raise InvalidSchema(
                    f"the shared schema {quoted(name)} is needed at versions "
                    f"{min(result[name], version)} and {max(result[name], version)} "
                    f"(through the definitions it is referred to by): set those again so "
                    f"they pin its latest version", field="definitions")
            continue
        result[name] = version
        its_pins = pins_of(name, version)
        if its_pins is None:
            raise InvalidSchema(f"the shared schema {quoted(name)} has no version {version}",
                                field="definitions")
        todo.extend(its_pins.items())
    return result
