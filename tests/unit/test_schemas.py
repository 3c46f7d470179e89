"""Schemas in the writer, over the in-memory event store: every write path refused with
every violation and nothing appended, definitions pinned, references never leaving the
ledger, format as the namespace says, a schema refused over data changed since it was
checked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE
from nexus_ssot.ledger.commands import (
    Context,
    Delete,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
    SetSchema,
)
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import InvalidSchema, PreconditionFailed, SchemaViolation
from nexus_ssot.ledger.memory_store import MemoryEventStore
from nexus_ssot.ledger.namespace_settings import configure
from nexus_ssot.ledger.schemas.compatibility import widens
from nexus_ssot.ledger.schemas.compiler import check_schema, compile_schema
from nexus_ssot.ledger.schemas.records import SchemaRecord, definition_key, namespace_key
from nexus_ssot.ledger.schemas.references import pin_definitions
from nexus_ssot.ledger.writer import GroupCommitWriter, Write

NS = "orders"
ORDER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "total"],
    "properties": {"id": {"type": "string", "pattern": "^o-[0-9]+$"},
                   "total": {"type": "integer", "minimum": 0},
                   "placed": {"type": "string", "format": "date"}},
}


def ctx() -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="test",
                   correlation_id="c")


@pytest.fixture()
def store() -> MemoryEventStore:
    return MemoryEventStore()


@pytest.fixture()
def writer(store: MemoryEventStore) -> GroupCommitWriter:
    return GroupCommitWriter(store, lambda ns: Limits(allow_non_object=ns == "scalars"))


def write(writer: GroupCommitWriter, command: Any) -> Any:
    future = writer.write_batch([(command, ctx(), None)])[0]
    error = future.exception()
    if error is not None:
        raise error
    return future.result()


def set_schema(writer: GroupCommitWriter, schema: Any, namespace: str = NS,
               pins: dict[str, int] | None = None, checked: int | None = None) -> Any:
    record = SchemaRecord(schema, pins or {}).document()
    return write(writer, SetSchema(SCHEMAS_NAMESPACE, namespace_key(namespace), record=record,
                                   checked_position=checked))


def test_a_put_violating_the_schema_lists_every_violation_and_appends_nothing(
        writer: GroupCommitWriter, store: MemoryEventStore) -> None:
    set_schema(writer, ORDER)
    before = len(store.events)
    with pytest.raises(SchemaViolation) as refused:
        write(writer, Put(NS, "o1", document={"id": "x-1", "total": -5}))
    assert len(store.events) == before
    violations = refused.value.extra["violations"]
    assert {(v["path"], v["keyword"]) for v in violations} == {("/id", "pattern"),
                                                              ("/total", "minimum")}
    assert all(v["schema_path"].startswith("/properties/") for v in violations)
    assert "at /total: -5 is less than the minimum of 0" in {v["message"] for v in violations}


def test_each_patch_kind_and_a_restore_are_validated_on_the_document_they_make(
        writer: GroupCommitWriter, store: MemoryEventStore) -> None:
    write(writer, Put(NS, "o1", document={"id": "o-1"}))  # before the schema: history
    set_schema(writer, ORDER)
    write(writer, Put(NS, "o1", document={"id": "o-1", "total": 3}))
    before = len(store.events)
    for command in (MergePatch(NS, "o1", patch={"total": None}),
                    JsonPatch(NS, "o1", operations=[{"op": "replace", "path": "/total",
                                                     "value": "3"}]),
                    Restore(NS, "o1", from_version=1, document={"id": "o-1"})):
        with pytest.raises(SchemaViolation):
            write(writer, command)
    assert len(store.events) == before
    write(writer, Delete(NS, "o1"))  # a delete makes no document: never checked


def test_an_atomic_batch_with_one_violating_operation_appends_nothing(
        writer: GroupCommitWriter, store: MemoryEventStore) -> None:
    set_schema(writer, ORDER)
    before = len(store.events)
    future = writer.write_batch([Write(((Put(NS, "a", document={"id": "o-1", "total": 1}),
                                         ctx()),
                                        (Put(NS, "b", document={"id": "o-2"}), ctx())),
                                       atomic=True)])[0]
    error = future.exception()
    assert isinstance(error, SchemaViolation) and error.extra["operation"] == 1
    assert len(store.events) == before


def test_a_schema_deleted_accepts_anything_again(writer: GroupCommitWriter) -> None:
    set_schema(writer, ORDER)
    write(writer, Delete(SCHEMAS_NAMESPACE, namespace_key(NS)))
    write(writer, Put(NS, "o1", document={"anything": True}))


def test_a_write_in_the_batch_after_a_schema_change_meets_the_new_schema(
        writer: GroupCommitWriter) -> None:
    record = SchemaRecord(ORDER).document()
    futures = writer.write_batch([
        (SetSchema(SCHEMAS_NAMESPACE, namespace_key(NS), record=record), ctx(), None),
        (Put(NS, "o1", document={"no": "id"}), ctx(), None)])
    assert futures[0].exception() is None
    assert isinstance(futures[1].exception(), SchemaViolation)


def test_format_annotates_unless_the_namespace_asserts_it(writer: GroupCommitWriter) -> None:
    set_schema(writer, ORDER)
    write(writer, Put(NS, "o1", document={"id": "o-1", "total": 1, "placed": "soon"}))
    write(writer, configure(NS, {"schema_format": "assert"}))
    with pytest.raises(SchemaViolation) as refused:
        write(writer, Put(NS, "o2", document={"id": "o-2", "total": 1, "placed": "soon"}))
    assert refused.value.extra["violations"][0]["keyword"] == "format"


def test_a_scalar_namespace_validates_its_scalar_documents(writer: GroupCommitWriter) -> None:
    set_schema(writer, {"type": "integer", "maximum": 10}, namespace="scalars")
    write(writer, Put("scalars", "n", document=7))
    with pytest.raises(SchemaViolation):
        write(writer, Put("scalars", "n", document=11))
    with pytest.raises(SchemaViolation):
        write(writer, Put("scalars", "m", document=None))


def test_a_shared_definition_is_used_at_the_version_pinned(writer: GroupCommitWriter) -> None:
    money_v1 = {"type": "integer", "minimum": 0}
    write(writer, SetSchema(SCHEMAS_NAMESPACE, definition_key("money"),
                            record=SchemaRecord(money_v1).document()))
    schema = {"type": "object", "properties": {"total": {"$ref": "urn:ssot:schemas:money"}}}
    set_schema(writer, schema, pins={"money": 1})
    write(writer, SetSchema(SCHEMAS_NAMESPACE, definition_key("money"),
                            record=SchemaRecord({"type": "string"}).document()))
    write(writer, Put(NS, "o1", document={"total": 5}))  # still version 1's meaning
    with pytest.raises(SchemaViolation):
        write(writer, Put(NS, "o1", document={"total": "5"}))


def test_a_schema_naming_an_unpinned_definition_is_refused(writer: GroupCommitWriter) -> None:
    with pytest.raises(InvalidSchema):
        set_schema(writer, {"$ref": "urn:ssot:schemas:money"})


def test_a_schema_is_refused_when_the_namespace_changed_since_it_was_checked(
        writer: GroupCommitWriter, store: MemoryEventStore) -> None:
    write(writer, Put(NS, "o1", document={"id": "o-1", "total": 1}))
    checked = len(store.events)
    write(writer, Put(NS, "o2", document={"id": "bad"}))
    with pytest.raises(PreconditionFailed) as refused:
        set_schema(writer, ORDER, checked=checked)
    assert refused.value.code == "schema_check_stale"
    set_schema(writer, ORDER, checked=len(store.events))


@pytest.mark.parametrize(("schema", "field"), [
    ({"type": 5}, "/type"),
    ({"properties": {"a": {"minimum": "x"}}}, "/properties/a/minimum"),
    ({"$schema": "http://json-schema.org/draft-07/schema#"}, "/$schema"),
    ({"$ref": "https://schemas.example.com/order.json"}, "/$ref"),
    ({"properties": {"a": {"$ref": "other.json#/x"}}}, "/properties/a/$ref"),
    ([], ""),
])
def test_a_schema_that_is_not_one_names_the_path_of_the_problem(schema: Any, field: str
                                                               ) -> None:
    with pytest.raises(InvalidSchema) as refused:
        check_schema(schema)
    assert refused.value.field == field


def test_local_references_and_declared_ids_stay_inside_the_schema() -> None:
    schema = {"$defs": {"id": {"$id": "urn:example:id", "type": "string"}},
              "properties": {"a": {"$ref": "#/$defs/id"}, "b": {"$ref": "urn:example:id"},
                             "c": {"enum": [{"$ref": "https://not.a.reference"}]}}}
    assert check_schema(schema) == {}
    compiled = compile_schema(schema, {}, assert_formats=False)
    assert compiled.conforms({"a": "x", "b": "y"}) and not compiled.conforms({"b": 1})


def test_a_bad_pattern_does_not_compile() -> None:
    with pytest.raises(InvalidSchema) as refused:
        compile_schema({"properties": {"a": {"pattern": "(("}}}, {}, assert_formats=False)
    assert "does not compile" in refused.value.message


def test_pins_follow_the_definitions_through_their_own_pins() -> None:
    latest = {"money": 2, "currency": 3}
    pins = {("money", 2): {"currency": 1}, ("currency", 1): {}, ("currency", 3): {}}
    found = pin_definitions({"$ref": "urn:ssot:schemas:money"}, latest.get,
                            lambda n, v: pins.get((n, v)))
    assert found == {"money": 2, "currency": 1}
    with pytest.raises(InvalidSchema):  # needed at two versions
        pin_definitions({"allOf": [{"$ref": "urn:ssot:schemas:money"},
                                   {"$ref": "urn:ssot:schemas:currency"}]},
                        latest.get, lambda n, v: pins.get((n, v)))
    with pytest.raises(InvalidSchema):
        pin_definitions({"$ref": "urn:ssot:schemas:nope"}, latest.get, lambda n, v: None)


ORDER_V2_OPTIONAL = {**ORDER, "properties": {**ORDER["properties"],
                                             "note": {"type": "string"}}}


@pytest.mark.parametrize(("old", "new", "expected"), [
    (ORDER, ORDER, True),
    (ORDER, {"type": "object"}, True),
    ({**ORDER, "additionalProperties": False},
     {**ORDER_V2_OPTIONAL, "additionalProperties": False}, True),  # an optional member
    (ORDER, ORDER_V2_OPTIONAL, False),  # "note" was any value before
    (ORDER, {**ORDER, "required": ["id", "total", "placed"]}, False),
    ({"type": "integer"}, {"type": "number"}, True),
    ({"type": "number"}, {"type": "integer"}, False),
    ({"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}, True),
    ({"enum": ["a", "b"]}, {"enum": ["a"]}, False),
    ({"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 1}, False),
    ({"type": "integer", "maximum": 5}, {"type": "integer", "maximum": 9}, True),
    ({"type": "string", "pattern": "^a"}, {"type": "string", "pattern": "^b"}, None),
    (ORDER, {"allOf": [ORDER]}, None),
    ({"$ref": "urn:ssot:schemas:money"}, {"$ref": "urn:ssot:schemas:money"}, True),
])
def test_compatibility_is_decided_where_the_keywords_allow_and_left_open_elsewhere(
        old: Any, new: Any, expected: bool | None) -> None:
    verdict, reason = widens(old, new)
    assert verdict is expected, reason
