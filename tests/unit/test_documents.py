"""Documents: what one may be (limits, text every store can hold), and the JSON Patch
(RFC 6902) between two, computed, checked and applied."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nexus_ssot.ledger.documents import (
    Limits,
    apply_json_patch,
    check_document,
    check_json_patch,
    diff,
    json_depth,
)
from nexus_ssot.ledger.errors import DocumentTooLarge, InvalidInput, InvalidUnicode
from tests.examples import examples
from tests.unit.entries import LIMITS, canon, nested

# --- documents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0), ("s", 0), (None, 0), (True, 0),
        ({}, 1), ([], 1), ({"a": 1}, 1), ([1, "x", None], 1),
        ({"a": {"b": []}}, 3), ([[1], [[2]]], 3), ({"a": 1, "b": {"c": {}}}, 3),
        (nested(100), 100),
    ],
)
def test_json_depth_counts_nesting_levels(value: Any, depth: int) -> None:
    assert json_depth(value) == depth


def test_check_document_returns_the_canonical_encoding() -> None:
    assert check_document({"a": [1, True, None]}, LIMITS) == b'{"a":[1,true,null]}'


@pytest.mark.parametrize("document", [[1, 2], "text", 42, 1.5, True, None])
def test_non_object_documents_are_refused_by_default(document: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_document(document, LIMITS)
    assert caught.value.code == "document_not_object"
    assert caught.value.field == "document"


@pytest.mark.parametrize("document", [[1, 2], "text", 42, 1.5, True, None])
def test_non_object_documents_are_allowed_when_the_namespace_allows_them(
    document: Any,
) -> None:
    assert check_document(document, Limits(allow_non_object=True)) == orjson.dumps(document)


def test_a_document_exactly_at_the_depth_limit_is_accepted_and_one_deeper_is_not() -> None:
    limits = Limits(max_depth=5)
    check_document(nested(5), limits)
    with pytest.raises(InvalidInput) as caught:
        check_document(nested(6), limits)
    assert caught.value.code == "document_too_deep"


def test_a_document_exactly_at_the_size_limit_is_accepted_and_one_byte_more_is_not() -> None:
    document = {"blob": "x" * 20}
    size = len(orjson.dumps(document))
    check_document(document, Limits(max_document_bytes=size))
    with pytest.raises(DocumentTooLarge) as caught:
        check_document(document, Limits(max_document_bytes=size - 1))
    assert caught.value.code == "document_too_large"
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.field == "document"


# --- JSON Patch -------------------------------------------------------------------------


def test_diff_of_nothing_to_nothing_is_empty() -> None:
    assert diff(None, None) == []


def test_diff_from_nothing_adds_the_whole_document() -> None:
    assert diff(None, {"a": 1}) == [{"op": "add", "path": "", "value": {"a": 1}}]


def test_diff_to_nothing_replaces_the_whole_document_with_null() -> None:
    assert diff({"a": 1}, None) == [{"op": "replace", "path": "", "value": None}]


def test_diff_of_equal_documents_is_empty() -> None:
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1}, {"a": True}),
        ({"a": 1}, {"a": 1.5}),
        ({"a/b": 1, "~": 2}, {"a/b": 3, "~": {"~1": []}}),
        ({"list": [1, 2, 3, 4]}, {"list": [4, 3, 2, 1]}),
        ({"list": [{"id": 1}, {"id": 2}, {"id": 3}]}, {"list": [{"id": 3}, {"id": 1}]}),
        ({"s": "abc"}, {"s": "abcdef"}),
        ({"a": {"b": {"c": 1}}}, {"x": {"b": {"c": 1}}}),
        ({"a": [1]}, {"a": {"0": 1}}),
        ({"a": 1}, [1]),
        ("x", {"a": 1}),
    ],
)
def test_diff_gives_an_rfc_6902_patch_that_a_stock_library_applies(
    before: Any, after: Any
) -> None:
    patch = diff(before, after)
    assert check_json_patch(patch) is patch
    assert canon(jsonpatch.apply_patch(copy.deepcopy(before), patch)) == canon(after)


#: (values Python holds equal that JSON does not: 1, 1.0 and true; 0, 0.0 and false)
_SCALARS = st.sampled_from([None, True, False, 0, 1, 2, 0.0, 1.0, 0.5, "", "a", "b"])
_NAMES = st.sampled_from(["a", "b", "c", "a/b", "~"])
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_NAMES, inner, max_size=4), max_leaves=12)
_OBJECTS = st.dictionaries(_NAMES, _VALUES, max_size=5)


def _mutated(data: st.DataObject, value: Any) -> Any:
    """``value`` with some of its members (at any depth) replaced, removed, added or
    reordered, the rest kept: documents that share most of their members, as versions do."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            action = data.draw(st.sampled_from(["keep", "change", "keep", "change", "drop"]))
            if action != "drop":
                out[name] = item if action == "keep" else _mutated(data, item)
        if data.draw(st.sampled_from([False, False, True])):
            out[data.draw(_NAMES)] = data.draw(_VALUES)
        if data.draw(st.sampled_from([False, False, True])):
            out = dict(reversed(out.items()))
        return out
    if isinstance(value, list) and value and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(value) - 1))
        return [*value[:at], _mutated(data, value[at]), *value[at + 1:]]
    return data.draw(st.one_of(_SCALARS, _VALUES))


@settings(max_examples=examples(200), deadline=None)
@given(before=_OBJECTS, data=st.data())
@example(before={"a/b": {"~": 1, "c": [1]}, "d": 2}, data=None)
def test_diff_is_the_librarys_diff_op_for_op(before: dict[str, Any],
                                             data: st.DataObject | None) -> None:
    """``diff`` leaves out the members both documents hold alike before asking the library:
    the patch must be the one the library makes of the whole documents."""
    after = (_mutated(data, before) if data is not None
             else {"d": 2, "a/b": {"~": True, "c": [1]}})  # (the explicit example)
    whole = jsonpatch.JsonPatch.from_diff(copy.deepcopy(before), copy.deepcopy(after),
                                          dumps=lambda v: orjson.dumps(v).decode()).patch
    assert diff(before, after) == whole


def test_check_json_patch_accepts_valid_operations_as_they_are() -> None:
    operations = [
        {"op": "add", "path": "", "value": None},
        {"op": "remove", "path": "/a"},
        {"op": "replace", "path": "/~0/~1", "value": 1},
        {"op": "move", "from": "/a", "path": "/b"},
        {"op": "copy", "from": "", "path": "/c"},
        {"op": "test", "path": "/d", "value": [1]},
    ]
    assert check_json_patch(operations) is operations
    assert check_json_patch([]) == []


def test_apply_json_patch_applies_operations_in_order_without_touching_the_input() -> None:
    document = {"a": [1]}
    result = apply_json_patch(document, [
        {"op": "add", "path": "/a/-", "value": 2},
        {"op": "test", "path": "/a", "value": [1, 2]},
        {"op": "copy", "from": "/a", "path": "/b"},
    ])
    assert result == {"a": [1, 2], "b": [1, 2]}
    assert document == {"a": [1]}


def test_apply_json_patch_compares_numbers_by_value_in_test() -> None:
    assert apply_json_patch({"n": 1.0}, [{"op": "test", "path": "/n", "value": 1}]) == {
        "n": 1.0
    }


def test_apply_json_patch_can_replace_the_whole_document() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]


# --- lone surrogates ------------------------------------------------------------------------
# Half of a UTF-16 pair: no character, so no encoding. Python strings can hold one (JSON
# text "\ud800" reads as one); whichever way it comes, it is refused naming its JSON path.

SURROGATE_DOCUMENTS = [
    ({"a": "\ud800"}, "document.a"),
    ({"a": {"b": [1, {"c": "x\udfffy"}]}}, "document.a.b[1].c"),
    ({"a": {"b": [{"\udc00": 1}]}}, 'document.a.b[0]["\\udc00"]'),
    ({"ok": 1, "a b": {"\ud83d\ude00": 1}}, 'document["a b"]["\\ud83d\\ude00"]'),
    ({"a": ["\udc00\ud800"]}, "document.a[0]"),
]


@pytest.mark.parametrize(("document", "path"), SURROGATE_DOCUMENTS)
def test_check_document_refuses_a_lone_surrogate_naming_its_path(document: Any,
                                                                 path: str) -> None:
    with pytest.raises(InvalidUnicode) as caught:
        check_document(document, LIMITS)
    refused = caught.value
    assert isinstance(refused, InvalidInput)
    assert (refused.code, refused.field) == ("invalid_unicode", path)
    assert refused.message.startswith(path) and "surrogate" in refused.message
    orjson.dumps([refused.message, refused.field])  # the refusal itself can be sent


def test_a_lone_surrogate_as_the_whole_document_is_refused() -> None:
    with pytest.raises(InvalidUnicode) as caught:
        check_document("\ud800", Limits(allow_non_object=True))
    assert caught.value.field == "document"


def test_a_character_beyond_the_basic_plane_is_no_surrogate() -> None:
    assert check_document({"e": "\U0001f600"}, LIMITS) == '{"e":"\U0001f600"}'.encode()


@pytest.mark.parametrize(("document", "path"), SURROGATE_DOCUMENTS)
def test_diff_refuses_a_lone_surrogate_in_either_document(document: Any, path: str) -> None:
    for before, after in ((document, {"a": 1}), ({"a": 1}, document), (None, document),
                          (document, None)):
        with pytest.raises(InvalidUnicode) as caught:
            diff(before, after)
        assert caught.value.field == path


@pytest.mark.parametrize(("operations", "path"), [
    ([{"op": "add", "path": "/a", "value": {"b": ["\ud800"]}}], "patch[0].value.b[0]"),
    ([{"op": "test", "path": "/a", "value": {}},
      {"op": "add", "path": "/a", "value": {"\udc00": 1}}], 'patch[1].value["\\udc00"]'),
    ([{"op": "replace", "path": "/a/\udbff/b", "value": 1}], "patch[0].path"),
    ([{"op": "move", "from": "/\udfff", "path": "/a"}], "patch[0].from"),
    ([{"op": "test", "path": "/a", "value": "\ud800"}], "patch[0].value"),
])
def test_apply_json_patch_refuses_a_lone_surrogate_naming_its_path(operations: Any,
                                                                   path: str) -> None:
    for check in (check_json_patch, lambda ops: apply_json_patch({"a": {}}, ops)):
        with pytest.raises(InvalidUnicode) as caught:
            check(operations)
        assert caught.value.field == path
