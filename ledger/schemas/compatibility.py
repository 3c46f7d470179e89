"""Would every document valid under a namespace's previous schema be valid under the new
one? Decided from the two schemas where their keywords allow it (the common ones: type,
properties, required, additionalProperties, enum, const, bounds, lengths, items, and
annotations), recursively through ``properties`` and ``items``; anything else — a
``$ref``, a combinator (allOf, anyOf, oneOf, not, if), a different pattern — is left
undecided, and the caller then samples: it checks the namespace's current entries that
the old schema accepts against the new one (docs/schemas.md).
"""

from __future__ import annotations

from typing import Any

#: Keywords that constrain nothing.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment",
                          "deprecated", "readOnly", "writeOnly", "$schema"})
_LOWER = ("minimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "maxLength", "maxItems", "maxProperties")
_UNDERSTOOD = frozenset({"type", "properties", "required", "additionalProperties", "enum",
                         "const", "items", "uniqueItems", "pattern", "format",
                         *_LOWER, *_UPPER}) | _ANNOTATIONS

Verdict = tuple[bool | None, str]


def _types(schema: dict[str, Any]) -> set[str] | None:
    given = schema.get("type")
    if given is None:
        return None
    found = {given} if isinstance(given, str) else set(given)
    if "number" in found:
        found.add("integer")
    return found


def widens(old: Any, new: Any, at: str = "") -> Verdict:
    """(True, why) when every instance ``old`` accepts ``new`` accepts too; (False, why)
    when one is shown not to be; (None, why) when the schemas' keywords leave it open."""
    if old == new or new is True or new == {} or old is False:
        return True, "the new schema accepts at least what the old one did"
    if old is True and (new is False or (isinstance(new, dict) and set(new) - _ANNOTATIONS)):
        return False, f"at {at or '/'}: any value was accepted, and now not every one is"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None, f"at {at or '/'}: a boolean schema"
    unknown = sorted((set(old) | set(new)) - _UNDERSTOOD)
    if unknown:
        return None, f"at {at or '/'}: {unknown[0]} is not compared structurally"
    old_types, new_types = _types(old), _types(new)
    if new_types is not None and (old_types is None or not old_types <= new_types):
        if old_types is None and ("enum" in old or "const" in old):
            return None, f"at {at or '/'}: type against an enum"
        return False, f"at {at or '/'}: the type is narrowed to {sorted(new_types)}"
    added = sorted(set(new.get("required", [])) - set(old.get("required", [])))
    if added:
        return False, f"at {at or '/'}: {added[0]!r} is newly required"
    if "enum" in new or "const" in new:
        allowed = new["enum"] if "enum" in new else [new["const"]]
        before = old["enum"] if "enum" in old else [old["const"]] if "const" in old else None
        if before is None or any(v not in allowed for v in before):
            return False, f"at {at or '/'}: the allowed values are narrowed"
    for member in ("pattern", "format"):
        if member in new and new.get(member) != old.get(member):
            return None, f"at {at or '/'}: {member} changed"
    if new.get("uniqueItems") and not old.get("uniqueItems"):
        return False, f"at {at or '/'}: items must now be unique"
    for member in _LOWER:
        if member in new and old.get(member, float("-inf")) < new[member]:
            return False, f"at {at or '/'}: {member} is raised to {new[member]}"
    for member in _UPPER:
        if member in new and old.get(member, float("inf")) > new[member]:
            return False, f"at {at or '/'}: {member} is lowered to {new[member]}"
    return _members(old, new, at)


def _members(old: dict[str, Any], new: dict[str, Any], at: str) -> Verdict:
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_extra = old.get("additionalProperties", True)
    new_extra = new.get("additionalProperties", True)
    for name in sorted(set(old_props) | set(new_props)):
        before = old_props.get(name, old_extra)
        after = new_props.get(name, new_extra)
        verdict = widens(before, after, f"{at}/properties/{name}")
        if verdict[0] is not True:
            return verdict
    verdict = widens(old_extra, new_extra, f"{at}/additionalProperties")
    if verdict[0] is not True:
        return verdict
    if "items" in old or "items" in new:
        verdict = widens(old.get("items", True), new.get("items", True), f"{at}/items")
        if verdict[0] is not True:
            return verdict
    return True, "the new schema accepts at least what the old one did"
