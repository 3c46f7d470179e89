"""Hand-written bad inputs, each with the refusal it must get: status, ``code`` and
``field``. ``{ns}`` in a path is the test's namespace, where entry ``k`` holds
``{"a": 1}`` at version 1. Read by tests/integration/test_bad_input.py."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

JSON = "application/json"
MERGE = "application/merge-patch+json"
PATCH = "application/json-patch+json"
ENTRY = "/v1/namespaces/{ns}/entries/k"
REVERT = ENTRY + "/revert"
RESTORE = "/v1/namespaces/{ns}/restore"
SETTINGS = "/v1/namespaces/{ns}"
BATCH = "/v1/batch"
LIST = "/v1/namespaces/{ns}/entries"
BIG_INT = str(2**63)  # one past PostgreSQL's bigint


class Bad(NamedTuple):
    id: str
    method: str
    path: str
    status: int
    code: str
    field: str | None
    headers: tuple[tuple[str, str | bytes], ...] = (("Content-Type", JSON),)
    body: bytes = b""
    params: dict[str, str] | list[tuple[str, str]] | None = None


def put(id: str, body: bytes | str, status: int, code: str, field: str | None,
        headers: list[tuple[str, str | bytes]] | None = None, path: str = ENTRY,
        params: dict[str, str] | list[tuple[str, str]] | None = None) -> Bad:
    """A PUT of ``body`` with ``headers``, as JSON unless they name a Content-Type."""
    raw = body.encode() if isinstance(body, str) else body
    given = headers or []
    if not any(name == "Content-Type" for name, _ in given):
        given = [("Content-Type", JSON), *given]
    return Bad(id, "PUT", path, status, code, field, tuple(given), raw, params)


def post(id: str, path: str, body: Any, status: int, code: str, field: str | None) -> Bad:
    """A POST of ``body`` (bytes as they are, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Bad(id, "POST", path, status, code, field, (("Content-Type", JSON),), raw)


def get(id: str, path: str, params: dict[str, str] | list[tuple[str, str]], status: int,
        code: str, field: str | None) -> Bad:
    return Bad(id, "GET", path, status, code, field, (), b"", params)


def patch(id: str, body: bytes | str, status: int, code: str, field: str | None,
          media_type: str = PATCH, path: str = ENTRY) -> Bad:
    raw = body.encode() if isinstance(body, str) else body
    return Bad(id, "PATCH", path, status, code, field, (("Content-Type", media_type),), raw)


def batch(id: str, operations: Any, status: int, code: str, field: str | None) -> Bad:
    return post(id, BATCH, {"operations": operations}, status, code, field)


def op(**members: Any) -> dict[str, Any]:
    """A batch put of a fresh key in the test's namespace, with ``members`` changed."""
    return {"op": "put", "namespace": "{ns}", "key": "fresh", "document": {}, **members}


HEADERS = [
    put("text/plain", "{}", 415, "unsupported_media_type", "Content-Type",
        [("Content-Type", "text/plain")]),
    Bad("no content type", "PUT", ENTRY, 415, "unsupported_media_type", "Content-Type", (),
        b"{}"),
    put("xml content type", "{}", 415, "unsupported_media_type", "Content-Type",
        [("Content-Type", "application/xml")]),
    Bad("charset utf-16", "PUT", ENTRY, 415, "unsupported_media_type", "Content-Type",
        (("Content-Type", "application/json; charset=utf-16"),), b"{}"),
    Bad("charset latin-1 quoted", "PUT", ENTRY, 415, "unsupported_media_type", "Content-Type",
        (("Content-Type", 'application/json; charset="iso-8859-1"'),), b"{}"),
    put("two content types", "{}", 400, "duplicate_header", "Content-Type",
        [("Content-Type", JSON), ("Content-Type", "text/plain")]),
    Bad("oversize content type", "PUT", ENTRY, 415, "unsupported_media_type", "Content-Type",
        (("Content-Type", "application/" + "x" * 8000),), b"{}"),
    Bad("json-patch type on PUT", "PUT", ENTRY, 415, "unsupported_media_type", "Content-Type",
        (("Content-Type", PATCH),), b"[]"),
    patch("plain json on PATCH", "{}", 415, "unsupported_media_type", "Content-Type",
          media_type=JSON),
    Bad("PATCH without content type", "PATCH", ENTRY, 415, "unsupported_media_type",
        "Content-Type", (), b"{}"),
    put("gzip body", b"\x1f\x8b\x08\x00", 415, "unsupported_content_encoding",
        "Content-Encoding", [("Content-Encoding", "gzip")]),
    put("brotli body", "{}", 415, "unsupported_content_encoding", "Content-Encoding",
        [("Content-Encoding", "br")]),
    put("If-Match not a tag", "{}", 400, "invalid_precondition", "If-Match",
        [("If-Match", "version-1")]),
    put("If-Match unquoted", "{}", 400, "invalid_precondition", "If-Match",
        [("If-Match", "1")]),
    put("If-Match list", "{}", 400, "invalid_precondition", "If-Match",
        [("If-Match", '"1", "2"')]),
    put("If-Match negative", "{}", 400, "invalid_precondition", "If-Match",
        [("If-Match", '"-1"')]),
    put("If-Match 19 digits", "{}", 400, "invalid_precondition", "If-Match",
        [("If-Match", '"1234567890123456789"')]),
    put("If-Match empty", "{}", 400, "invalid_precondition", "If-Match", [("If-Match", "")]),
    put("two If-Match", "{}", 400, "duplicate_header", "If-Match",
        [("If-Match", '"1"'), ("If-Match", '"1"')]),
    put("If-Match stale", "{}", 412, "version_conflict", "If-Match", [("If-Match", '"9"')]),
    put("If-Match version 0", "{}", 412, "version_conflict", "If-Match", [("If-Match", '"0"')]),
    # RFC 9110 §13.1.1: If-Match compares strongly, so a weak tag never matches, not even
    # the current version's
    put("If-Match weak tag of the current version", "{}", 412, "precondition_failed",
        "If-Match", [("If-Match", 'W/"1"')]),
    Bad("DELETE with If-Match weak tag", "DELETE", ENTRY, 412, "precondition_failed",
        "If-Match", (("If-Match", 'W/"1"'),)),
    put("If-Match on a missing entry", "{}", 412, "version_conflict", "If-Match",
        [("If-Match", '"1"')], path=ENTRY + "x"),
    put("If-None-Match with a tag", "{}", 400, "invalid_precondition", "If-None-Match",
        [("If-None-Match", '"1"')]),
    put("If-None-Match * on an existing entry", "{}", 412, "entry_exists", "If-None-Match",
        [("If-None-Match", "*")]),
    put("If-Match and If-None-Match together", "{}", 400, "invalid_precondition",
        "If-None-Match", [("If-Match", "*"), ("If-None-Match", "*")]),
    put("Idempotency-Key with a space", "{}", 400, "invalid_idempotency_key",
        "Idempotency-Key", [("Idempotency-Key", "a b")]),
    put("Idempotency-Key of 256 characters", "{}", 400, "invalid_idempotency_key",
        "Idempotency-Key", [("Idempotency-Key", "k" * 256)]),
    put("Idempotency-Key empty", "{}", 400, "invalid_idempotency_key", "Idempotency-Key",
        [("Idempotency-Key", "")]),
    put("Idempotency-Key not ASCII", "{}", 400, "invalid_idempotency_key", "Idempotency-Key",
        [("Idempotency-Key", "cl\xe9".encode("latin-1"))]),
    put("two Idempotency-Keys", "{}", 400, "duplicate_header", "Idempotency-Key",
        [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]),
    # (a control character in a header never reaches the app: the HTTP parser refuses it)
    put("reason with a control character", "{}", 400, "invalid_reason", "reason",
        params={"reason": "why\x01"}),
    put("X-Reason of 1025 characters", "{}", 400, "invalid_reason", "reason",
        [("X-Reason", "r" * 1025)]),
    put("X-Actor from a caller that is no trusted proxy", "{}", 403, "untrusted_actor_header",
        "X-Actor", [("X-Actor", "mallory")]),
    put("X-Reason empty", "{}", 400, "invalid_reason", "reason", [("X-Reason", "")]),
    put("reason empty", "{}", 400, "invalid_reason", "reason", params={"reason": ""}),
    put("two X-Reasons", "{}", 400, "duplicate_header", "X-Reason",
        [("X-Reason", "a"), ("X-Reason", "b")]),
    Bad("Accept only XML", "GET", ENTRY, 406, "not_acceptable", "Accept",
        (("Accept", "application/xml"),)),
    Bad("Accept JSON at q=0", "GET", ENTRY, 406, "not_acceptable", "Accept",
        (("Accept", "application/json;q=0, text/html"),)),
    Bad("Accept HTML for a diff", "GET", ENTRY + "/diff", 406, "not_acceptable", "Accept",
        (("Accept", "text/html"),), b"", {"from": "0", "to": "1"}),
    Bad("Accept JSON for the live feed", "GET", "/v1/events/stream", 406, "not_acceptable",
        "Accept", (("Accept", "application/json"),)),
]

BODIES = [
    put("malformed json", '{"a": ', 400, "malformed_json", "document"),
    put("empty body", "", 400, "malformed_json", "document"),
    put("truncated array", '{"a": [1, 2', 400, "malformed_json", "document"),
    put("trailing garbage", '{"a": 1} x', 400, "malformed_json", "document"),
    put("two documents", "{}{}", 400, "malformed_json", "document"),
    put("UTF-8 byte order mark", b"\xef\xbb\xbf{}", 400, "invalid_encoding", "document"),
    put("UTF-16 with BOM", '{"a": 1}'.encode("utf-16"), 400, "invalid_encoding", "document"),
    put("UTF-16BE without BOM", '{"a": 1}'.encode("utf-16-be"), 400, "malformed_json",
        "document"),
    put("invalid UTF-8 byte", b'{"a": "\xff"}', 400, "invalid_encoding", "document"),
    put("overlong UTF-8", b'{"a": "\xc0\xaf"}', 400, "invalid_encoding", "document"),
    put("UTF-8 encoded surrogate", b'{"a": "\xed\xa0\x80"}', 400, "invalid_encoding",
        "document"),
    put("lone high surrogate escape", r'{"a": "\ud800"}', 400, "invalid_unicode",
        "document.a"),
    put("lone low surrogate escape", r'{"a": "\udc00"}', 400, "invalid_unicode", "document.a"),
    put("reversed surrogate pair", r'{"a": "\udc00\ud800"}', 400, "invalid_unicode",
        "document.a"),
    put("lone surrogate deep in an array", r'{"a": {"b": [1, "x\udfffy"]}}', 400,
        "invalid_unicode", "document.a.b[1]"),
    put("lone surrogate in a member name", r'{"a": [{"\ud800": 1}]}', 400, "invalid_unicode",
        'document.a[0]["\\ud800"]'),
    put("raw NUL in a string", b'{"a": "x\x00y"}', 400, "malformed_json", "document"),
    put("raw NUL after the document", b'{"a": 1}\x00', 400, "malformed_json", "document"),
    put("NUL escape in a string", r'{"a": "x\u0000y"}', 400, "invalid_unicode", "document.a"),
    put("NUL escape in a member name", r'{"x\u0000": 1}', 400, "invalid_unicode",
        'document["x\\u0000"]'),
    put("raw tab in a string", b'{"a": "x\ty"}', 400, "malformed_json", "document"),
    put("NaN", '{"a": NaN}', 400, "malformed_json", "document"),
    put("Infinity", '{"a": Infinity}', 400, "malformed_json", "document"),
    put("-Infinity", '{"a": -Infinity}', 400, "malformed_json", "document"),
    put("single quotes", "{'a': 1}", 400, "malformed_json", "document"),
    put("comment", '{"a": 1 /* why */}', 400, "malformed_json", "document"),
    put("trailing comma", '{"a": 1,}', 400, "malformed_json", "document"),
    put("leading zero", '{"a": 01}', 400, "malformed_json", "document"),
    put("hex number", '{"a": 0x10}', 400, "malformed_json", "document"),
    put("plus sign", '{"a": +1}', 400, "malformed_json", "document"),
    put("bare fraction", '{"a": .5}', 400, "malformed_json", "document"),
    put("unquoted member name", "{a: 1}", 400, "malformed_json", "document"),
    put("nested deeper than the limit", '{"a":' * 9 + "1" + "}" * 9, 400, "document_too_deep",
        "document"),
    put("nested 5000 deep", "[" * 5000 + "]" * 5000, 400, "document_too_deep", "document"),
    put("document over the size limit", '{"blob": "' + "x" * 70 * 1024 + '"}', 413,
        "document_too_large", "document"),
    put("body over the request limit", '{"blob": "' + "x" * 400 * 1024 + '"}', 413,
        "request_too_large", "body"),
    put("array of 40,000 numbers", '{"a": [' + ",".join(["0"] * 40_000) + "]}", 413,
        "document_too_large", "document"),
    put("member name of 70 KiB", '{"' + "k" * 70 * 1024 + '": 1}', 413, "document_too_large",
        "document"),
    put("array document", "[1, 2]", 400, "document_not_object", "document"),
    put("string document", '"x"', 400, "document_not_object", "document"),
    put("null document", "null", 400, "document_not_object", "document"),
    # the document's shape is refused before the preconditions are looked at: a request
    # that cannot succeed is told why, whatever the entry's state
    put("null document, If-Match * on a missing entry", "null", 400, "document_not_object",
        "document", [("If-Match", "*")], path=ENTRY + "x"),
    put("array document, a stale If-Match", "[1]", 400, "document_not_object", "document",
        [("If-Match", '"9"')]),
    put("number document", "42", 400, "document_not_object", "document"),
    put("duplicate member", '{"a": 1, "a": 2}', 400, "duplicate_member", "document.a"),
    put("duplicate nested member", '{"x": {"b": [1, {"c": 1, "c": 1}]}}', 400,
        "duplicate_member", "document.x.b[1].c"),
    put("duplicate member spelled with an escape", r'{"a": 1, "\u0061": 2}', 400,
        "duplicate_member", "document.a"),
    put("duplicate member with a dot", '{"a.b": 1, "a.b": {}}', 400, "duplicate_member",
        'document["a.b"]'),
    put("1e400", '{"a": 1e400}', 400, "number_out_of_range", "document.a"),
    put("-1e400", '{"a": -1e400}', 400, "number_out_of_range", "document.a"),
    put("1e-400", '{"a": 1e-400}', 400, "number_out_of_range", "document.a"),
    put("integer 2^64", '{"a": 18446744073709551616}', 400, "number_out_of_range",
        "document.a"),
    put("integer -2^63-1", '{"a": -9223372036854775809}', 400, "number_out_of_range",
        "document.a"),
    put("integer of 5000 digits", '{"a": ' + "9" * 5000 + "}", 400, "number_out_of_range",
        "document.a"),
    put("1e400 deep in an array", '{"a": [0, {"b": [1e400]}]}', 400, "number_out_of_range",
        "document.a[1].b[0]"),
]

PATCHES = [
    patch("json patch not an array", '{"op": "add"}', 400, "invalid_patch", "patch"),
    patch("unknown patch op", '[{"op": "append", "path": "/a", "value": "x"}]', 400,
          "invalid_patch", "patch[0].op"),
    patch("patch op without value", '[{"op": "add", "path": "/a"}]', 400, "invalid_patch",
          "patch[0].value"),
    patch("patch op without path", '[{"op": "remove"}]', 400, "invalid_patch", "patch[0].path"),
    patch("patch op not an object", "[1]", 400, "invalid_patch", "patch[0]"),
    patch("failing test op", '[{"op": "test", "path": "/a", "value": 1},'
          '{"op": "test", "path": "/a", "value": 2}]', 422, "patch_test_failed", "patch[1]"),
    patch("merge patch making a non-object", "[1]", 400, "document_not_object", "document",
          media_type=MERGE),
    Bad("merge patch null, If-Match * on a missing entry", "PATCH", ENTRY + "x", 400,
        "document_not_object", "document",
        (("Content-Type", MERGE), ("If-Match", "*")), b"null"),
    patch("merge patch with a duplicate member", '{"b": 1, "b": 2}', 400, "duplicate_member",
          "patch.b", media_type=MERGE),
    patch("json patch value 1e400", '[{"op": "add", "path": "/b", "value": 1e400}]', 400,
          "number_out_of_range", "patch[0].value"),
    patch("merge patch of a missing entry", "{}", 404, "entry_not_found", "key",
          media_type=MERGE, path=ENTRY + "x"),
    patch("merge patch with a lone surrogate", r'{"b": {"c": "\ud800"}}', 400,
          "invalid_unicode", "patch.b.c", media_type=MERGE),
    patch("merge patch removing a lone surrogate", r'{"\udc00": null}', 400,
          "invalid_unicode", 'patch["\\udc00"]', media_type=MERGE),
    patch("json patch value with a lone surrogate",
          r'[{"op": "add", "path": "/b", "value": {"c": ["\udbff"]}}]', 400,
          "invalid_unicode", "patch[0].value.c[0]"),
    patch("json patch path with a lone surrogate", r'[{"op": "remove", "path": "/\ud800"}]',
          400, "invalid_unicode", "patch[0].path"),
]

PATHS = [
    put("empty key segment", "{}", 400, "invalid_key", "key", path=LIST + "/a//b"),
    put("dot-dot segment", "{}", 400, "invalid_key", "key", path=LIST + "/a/%2E%2E/b"),
    put("dot segment", "{}", 400, "invalid_key", "key", path=LIST + "/a/%2E/b"),
    put("trailing slash", "{}", 400, "invalid_key", "key", path=LIST + "/k/"),
    put("reserved last segment", "{}", 400, "invalid_key", "key", path=LIST + "/a/restore"),
    put("PUT on an entry's history", "{}", 405, "method_not_allowed", None,
        path=LIST + "/a/history"),
    Bad("GET of an entry's revert", "GET", ENTRY + "/revert", 405, "method_not_allowed", None,
        ()),
    Bad("DELETE of an entry's diff", "DELETE", ENTRY + "/diff", 405, "method_not_allowed",
        None, ()),
    put("NUL in a key", "{}", 400, "invalid_key", "key", path=LIST + "/a%00b"),
    put("space in a key", "{}", 400, "invalid_key", "key", path=LIST + "/a%20b"),
    put("NFC e-acute in a key", "{}", 400, "invalid_key", "key", path=LIST + "/caf%C3%A9"),
    put("NFD e + combining acute in a key", "{}", 400, "invalid_key", "key",
        path=LIST + "/cafe%CC%81"),
    put("key of 513 characters", "{}", 400, "invalid_key", "key", path=LIST + "/" + "k" * 513),
    put("upper-case namespace", "{}", 400, "invalid_namespace", "namespace",
        path="/v1/namespaces/Bad/entries/k"),
    put("namespace of 64 characters", "{}", 400, "invalid_namespace", "namespace",
        path="/v1/namespaces/" + "n" * 64 + "/entries/k"),
    put("the settings' own namespace", "{}", 400, "invalid_namespace", "namespace",
        path="/v1/namespaces/_namespaces/entries/k"),
    put("unicode namespace", "{}", 400, "invalid_namespace", "namespace",
        path="/v1/namespaces/%C3%A9t%C3%A9/entries/k"),
    put("NUL in a namespace", "{}", 400, "invalid_namespace", "namespace",
        path="/v1/namespaces/a%00b/entries/k"),
    put("PUT on the entry list", "{}", 405, "method_not_allowed", None, path=LIST),
    put("unknown route", "{}", 404, "route_not_found", None, path="/v1/nowhere"),
    Bad("DELETE of a namespace", "DELETE", SETTINGS, 405, "method_not_allowed", None, ()),
]

QUERIES = [
    get("prefix with a NUL", LIST, {"prefix": "a\x00", "position": "1"}, 400,
        "invalid_parameter", "prefix"),
    get("prefix with a space", LIST, {"prefix": "a b"}, 400, "invalid_parameter", "prefix"),
    get("audit actor with a NUL", "/v1/audit", {"actor": "a\x00"}, 400, "invalid_parameter",
        "actor"),
    get("audit correlation id with a NUL", "/v1/audit", {"correlation_id": "\x00"}, 400,
        "invalid_parameter", "correlation_id"),
    get("audit key_prefix of 513", "/v1/audit", {"namespace": "a", "key_prefix": "k" * 513},
        400, "invalid_parameter", "key_prefix"),
    get("limit not a number", LIST, {"limit": "zero"}, 400, "invalid_parameter", "limit"),
    get("limit 0", LIST, {"limit": "0"}, 400, "invalid_parameter", "limit"),
    get("limit 1001", LIST, {"limit": "1001"}, 400, "invalid_parameter", "limit"),
    get("limit -1", "/v1/namespaces", {"limit": "-1"}, 400, "invalid_parameter", "limit"),
    # a parameter that takes one value, given two (the framework would read the last)
    get("limit given twice", LIST, [("limit", "5"), ("limit", "500")], 400,
        "invalid_parameter", "limit"),
    get("audit correlation_id given twice", "/v1/audit",
        [("correlation_id", "a"), ("correlation_id", "b")], 400, "invalid_parameter",
        "correlation_id"),
    get("version given twice", ENTRY, [("version", "1"), ("version", "1")], 400,
        "invalid_parameter", "version"),
    get("whoami namespace given twice", "/v1/access/whoami",
        [("namespace", "x"), ("namespace", "y")], 400, "invalid_parameter",
        "namespace"),
    # a whole number written otherwise than in digits, which pydantic would read
    get("verify to_position 0.0", "/v1/integrity/verify", {"to_position": "0.0"}, 400,
        "invalid_parameter", "to_position"),
    get("limit +5", LIST, {"limit": "+5"}, 400, "invalid_parameter", "limit"),
    get("limit 1_0", LIST, {"limit": "1_0"}, 400, "invalid_parameter", "limit"),
    get("limit with a space", LIST, {"limit": " 5"}, 400, "invalid_parameter", "limit"),
    get("version 1.0", ENTRY, {"version": "1.0"}, 400, "invalid_parameter", "version"),
    get("digest 1.0", "/v1/integrity/digests/1.0", {}, 400, "invalid_parameter", "seq"),
    get("version 0", ENTRY, {"version": "0"}, 400, "invalid_parameter", "version"),
    get("version not a number", ENTRY, {"version": "abc"}, 400, "invalid_parameter",
        "version"),
    get("version beyond bigint", ENTRY, {"version": BIG_INT}, 400, "invalid_parameter",
        "version"),
    get("version missing", ENTRY, {"version": "5"}, 404, "version_not_found", "version"),
    get("as_of not a time", ENTRY, {"as_of": "yesterday"}, 400, "invalid_parameter", "as_of"),
    get("as_of a number", LIST, {"as_of": "0.5"}, 400, "invalid_parameter", "as_of"),
    get("as_of without a time zone", ENTRY, {"as_of": "2026-01-01T00:00:00"}, 400,
        "invalid_parameter", "as_of"),
    # times a datetime holds only until taken to UTC (make fuzz found the first answering
    # 500 on a namespace's schema): a minute before year 1, a minute after 9999
    get("as_of a minute before year 1", ENTRY, {"as_of": "0001-01-01T00:00:00+00:01"}, 400,
        "invalid_parameter", "as_of"),
    get("schema as_of a minute before year 1", "/v1/namespaces/{ns}/schema",
        {"as_of": "0001-01-01T00:00:00+00:01"}, 400, "invalid_parameter", "as_of"),
    get("list as_of a minute after year 9999", LIST, {"as_of": "9999-12-31T23:59:00-00:01"},
        400, "invalid_parameter", "as_of"),
    get("audit until a minute before year 1", "/v1/audit",
        {"until": "0001-01-01T00:00:00+00:01"}, 400, "invalid_parameter", "until"),
    get("access log since a minute before year 1", "/v1/audit/access",
        {"since": "0001-01-01T00:00:00+00:01"}, 400, "invalid_parameter", "since"),
    get("position -1", ENTRY, {"position": "-1"}, 400, "invalid_parameter", "position"),
    get("position 1e3", LIST, {"position": "1e3"}, 400, "invalid_parameter", "position"),
    get("position beyond bigint", LIST, {"position": BIG_INT}, 400, "invalid_parameter",
        "position"),
    get("position beyond the head", ENTRY, {"position": str(2**62)}, 400,
        "position_beyond_head", "position"),
    get("listing position beyond the head", LIST, {"position": str(2**62)}, 400,
        "position_beyond_head", "position"),
    get("min_position -1", ENTRY, {"min_position": "-1"}, 400, "invalid_parameter",
        "min_position"),
    get("min_position beyond the head", ENTRY, {"min_position": str(2**62)}, 400,
        "position_beyond_head", "min_position"),
    get("listing min_position beyond the head", LIST, {"min_position": str(2**62)}, 400,
        "position_beyond_head", "min_position"),
    get("as_of and position", ENTRY, {"as_of": "2026-01-01T00:00:00Z", "position": "1"}, 400,
        "conflicting_parameters", "position"),
    get("version and position", ENTRY, {"version": "1", "position": "1"}, 400,
        "conflicting_parameters", "position"),
    get("cursor not base64 JSON", LIST, {"cursor": "!!!"}, 400, "invalid_cursor", "cursor"),
    get("cursor of another query", LIST, {"cursor": "eyJuIjoiYSJ9"}, 400, "invalid_cursor",
        "cursor"),
    get("cursor with a number for a key", LIST, {"cursor": "eyJrIjo1LCJwIjoiIn0"}, 400,
        "invalid_cursor", "cursor"),
    get("events after -1", "/v1/events", {"after": "-1"}, 400, "invalid_parameter", "after"),
    get("events key without namespace", "/v1/events", {"key": "k"}, 400, "invalid_parameter",
        "key"),
    get("events cursor with a text position", "/v1/events",
        {"cursor": "eyJhZnRlciI6IngiLCJucyI6bnVsbCwiayI6bnVsbH0"}, 400, "invalid_cursor",
        "cursor"),
    get("history order sideways", ENTRY + "/history", {"order": "sideways"}, 400,
        "invalid_parameter", "order"),
    get("diff format xml", ENTRY + "/diff", {"from": "0", "to": "1", "format": "xml"}, 400,
        "invalid_parameter", "format"),
    get("diff without to", ENTRY + "/diff", {"from": "0"}, 400, "invalid_parameter", "to"),
    get("audit type unknown", "/v1/audit", {"type": "entry.exploded"}, 400,
        "invalid_parameter", "type"),
    get("audit key_prefix without namespace", "/v1/audit", {"key_prefix": "a"}, 400,
        "invalid_parameter", "key_prefix"),
    get("audit until a number", "/v1/audit", {"until": "0.5"}, 400, "invalid_parameter",
        "until"),
    get("stats min_position beyond the head", "/v1/namespaces/{ns}/stats",
        {"min_position": str(2**62)}, 400, "position_beyond_head", "min_position"),
    get("digest seq 0", "/v1/integrity/digests/0", {}, 400, "invalid_parameter", "seq"),
    get("verify from beyond bigint", "/v1/integrity/verify", {"from_position": BIG_INT}, 400,
        "invalid_parameter", "from_position"),
]

BATCHES = [
    post("batch without operations", BATCH, {}, 400, "invalid_parameter", "operations"),
    batch("batch of no operations", [], 400, "invalid_parameter", "operations"),
    batch("operations not an array", {"op": "put"}, 400, "invalid_parameter", "operations"),
    post("batch unknown member", BATCH, {"operations": [op()], "atomic": True}, 400,
         "invalid_parameter", "body"),
    batch("batch of 1001 operations", [op(key=f"k{i}") for i in range(1001)], 400,
          "batch_too_large", "operations"),
    batch("bad op in the middle", [op(key="a"), op(op="upsert"), op(key="c")], 400,
          "invalid_operation", "operations[1].op"),
    batch("op without key", [op(key="a"), op(key="b"), {"op": "delete", "namespace": "{ns}"}],
          400, "invalid_operation", "operations[2].key"),
    batch("op with a bad namespace", [op(), op(namespace="Bad")], 400, "invalid_namespace",
          "operations[1].namespace"),
    batch("op with a bad key", [op(), op(key="a//b")], 400, "invalid_key",
          "operations[1].key"),
    batch("op with an unknown member", [op(colour="red")], 400, "invalid_operation",
          "operations[0].colour"),
    batch("op with if_match and if_none_match", [op(if_match=1, if_none_match=True)], 400,
          "invalid_precondition", "operations[0].if_none_match"),
    batch("op if_match as text", [op(if_match="3")], 400, "invalid_precondition",
          "operations[0].if_match"),
    batch("op if_match beyond bigint", [op(if_match=2**63)], 400, "invalid_precondition",
          "operations[0].if_match"),
    batch("put without document", [op(), {"op": "put", "namespace": "{ns}", "key": "b"}], 400,
          "invalid_operation", "operations[1].document"),
    batch("op not an object", ["put"], 400, "invalid_operation", "operations[0]"),
    batch("op an object", [op(op={})], 400, "invalid_operation", "operations[0].op"),
    batch("unknown patch_type", [{"op": "patch", "namespace": "{ns}", "key": "k",
                                  "patch": {}, "patch_type": "xml"}], 400, "invalid_operation",
          "operations[0].patch_type"),
    batch("stale if_match in the second op", [op(), op(key="k", if_match=7)], 412,
          "version_conflict", "operations[1].if_match"),
    batch("array document in an op", [op(), op(key="b", document=[1])], 400,
          "document_not_object", "operations[1].document"),
    post("duplicate member in an op's document", BATCH,
         b'{"operations": [{"op": "put", "namespace": "x", "key": "b",'
         b' "document": {"a": 1, "a": 2}}]}', 400, "duplicate_member",
         "operations[0].document.a"),
    batch("lone surrogate in an op's document", [op(), op(key="b", document={"a": ["\ud800"]})],
          400, "invalid_unicode", "operations[1].document.a[0]"),
    batch("lone surrogate in an op's patch", [{"op": "patch", "namespace": "{ns}", "key": "k",
                                               "patch": {"\udc00": None}}], 400,
          "invalid_unicode", 'operations[0].patch["\\udc00"]'),
    post("1e400 in an op's document", BATCH,
         b'{"operations": [{"op": "put", "namespace": "x", "key": "b",'
         b' "document": {"a": 1e400}}]}', 400, "number_out_of_range",
         "operations[0].document.a"),
]

NAMESPACE_SETTINGS = [
    post("settings an array", SETTINGS, [], 400, "invalid_settings", "settings")._replace(
        method="PUT"),
    post("unknown setting", SETTINGS, {"colour": "red"}, 400, "invalid_settings",
         "colour")._replace(method="PUT"),
    post("conflict policy unknown", SETTINGS, {"conflict_policy": "yolo"}, 400,
         "invalid_settings", "conflict_policy")._replace(method="PUT"),
    post("description of 1025 characters", SETTINGS, {"description": "d" * 1025}, 400,
         "invalid_settings", "description")._replace(method="PUT"),
    post("settings malformed", SETTINGS, b'{"conflict_policy": ', 400, "malformed_json",
         "settings")._replace(method="PUT"),
    post("settings duplicate member", SETTINGS,
         b'{"conflict_policy": "strict", "conflict_policy": "merge"}', 400,
         "duplicate_member", "conflict_policy")._replace(method="PUT"),
    post("bad settings on an existing namespace under If-None-Match", SETTINGS,
         {"conflict_policy": "yolo"}, 400, "invalid_settings", "conflict_policy")._replace(
        method="PUT", headers=(("Content-Type", JSON), ("If-None-Match", "*"))),
    post("settings description with a lone surrogate", SETTINGS, {"description": "\ud800"},
         400, "invalid_unicode", "description")._replace(method="PUT"),
    Bad("settings as text/plain", "PUT", SETTINGS, 415, "unsupported_media_type",
        "Content-Type", (("Content-Type", "text/plain"),), b"{}"),
]

REVERTS = [
    post("revert without a target", REVERT, {}, 400, "invalid_parameter", "to_version"),
    post("revert with both targets", REVERT, {"to_version": 1, "as_of": "2026-01-01T00:00Z"},
         400, "invalid_parameter", "to_version"),
    post("revert to version 0", REVERT, {"to_version": 0}, 400, "invalid_parameter",
         "to_version"),
    post("revert to version as text", REVERT, {"to_version": "1"}, 400, "invalid_parameter",
         "to_version"),
    post("revert to version true", REVERT, {"to_version": True}, 400, "invalid_parameter",
         "to_version"),
    post("revert beyond bigint", REVERT, {"to_version": 2**63}, 400, "invalid_parameter",
         "to_version"),
    post("revert to a missing version", REVERT, {"to_version": 99}, 404, "version_not_found",
         "to_version"),
    post("revert as_of not a time", REVERT, {"as_of": "yesterday"}, 400, "invalid_parameter",
         "as_of"),
    post("revert as_of a minute before year 1", REVERT,
         {"as_of": "0001-01-01T00:00:00+00:01"}, 400, "invalid_parameter", "as_of"),
    post("revert unknown member", REVERT, {"to_version": 1, "why": "x"}, 400,
         "invalid_parameter", "body"),
    post("revert with an empty reason", REVERT, {"to_version": 1, "reason": ""}, 400,
         "invalid_reason", "reason"),
    post("revert body an array", REVERT, [1], 400, "invalid_parameter", "body"),
    post("revert reason with a lone surrogate", REVERT, {"to_version": 1, "reason": "\udc00"},
         400, "invalid_unicode", "reason"),
    post("revert with an empty X-Reason", REVERT, {"to_version": 1, "reason": "r"}, 400,
         "invalid_reason", "reason")._replace(
        headers=(("Content-Type", JSON), ("X-Reason", ""))),
]

RESTORES = [
    post("restore without a cut", RESTORE, {"reason": "r"}, 400, "invalid_parameter", "as_of"),
    post("restore position -1", RESTORE, {"position": -1, "reason": "r"}, 400,
         "invalid_parameter", "position"),
    post("restore position beyond bigint", RESTORE, {"position": 2**63, "reason": "r"}, 400,
         "invalid_parameter", "position"),
    post("restore position beyond the head", RESTORE, {"position": 2**62, "reason": "r"},
        400, "position_beyond_head", "position"),
    post("restore with both cuts", RESTORE, {"position": 1, "as_of": "2026-01-01T00:00:00Z",
                                             "reason": "r"}, 400, "invalid_parameter",
         "as_of"),
    post("restore without a reason", RESTORE, {"position": 0}, 400, "invalid_reason",
         "reason"),
    post("restore dry_run as text", RESTORE, {"position": 0, "dry_run": "yes"}, 400,
         "invalid_parameter", "dry_run"),
    post("restore key_prefix of 513", RESTORE, {"position": 0, "reason": "r",
                                                "key_prefix": "k" * 513}, 400,
         "invalid_parameter", "key_prefix"),
    post("restore unknown member", RESTORE, {"position": 0, "reason": "r", "all": True}, 400,
         "invalid_parameter", "body"),
    post("restore as_of a number", RESTORE, {"as_of": 0.5, "reason": "r"}, 400,
         "invalid_parameter", "as_of"),
    post("restore reason with a lone surrogate", RESTORE, {"position": 0, "reason": "\ud800"},
         400, "invalid_unicode", "reason"),
]

SCHEMA = "/v1/namespaces/{ns}/schema"
SHARED = "/v1/schemas/money-{ns}"


def schema(id: str, body: Any, status: int, code: str, field: str | None, *,
           path: str = SCHEMA, params: dict[str, str] | None = None,
           media_type: str = "application/schema+json") -> Bad:
    """A PUT of a schema (bytes as they are, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return put(id, raw, status, code, field, [("Content-Type", media_type)], path, params)


SCHEMAS = [
    schema("schema malformed", b'{"type": ', 400, "malformed_json", "schema"),
    schema("schema empty", b"", 400, "malformed_json", "schema"),
    schema("schema a number", 5, 422, "invalid_schema", ""),
    schema("schema type not a type", {"type": "objekt"}, 422, "invalid_schema", "/type"),
    schema("schema minimum as text", {"properties": {"a": {"minimum": "0"}}}, 422,
           "invalid_schema", "/properties/a/minimum"),
    schema("schema pattern that does not compile", {"properties": {"a": {"pattern": "(("}}},
           422, "invalid_schema", "/properties/a/pattern"),
    schema("schema of draft 7", {"$schema": "http://json-schema.org/draft-07/schema#"}, 422,
           "invalid_schema", "/$schema"),
    schema("schema with a remote $ref", {"$ref": "https://example.com/s.json"}, 422,
           "invalid_schema", "/$ref"),
    schema("schema with a relative $ref", {"items": {"$ref": "item.json"}}, 422,
           "invalid_schema", "/items/$ref"),
    schema("schema naming an unknown shared schema", {"$ref": "urn:ssot:schemas:nope-nope"},
           422, "invalid_schema", "/$ref"),
    schema("schema duplicate member", b'{"type": "object", "type": "array"}', 400,
           "duplicate_member", "type"),
    schema("schema as text/plain", {}, 415, "unsupported_media_type", "Content-Type",
           media_type="text/plain"),
    schema("schema dry_run not a boolean", {}, 400, "invalid_parameter", "dry_run",
           params={"dry_run": "maybe"}),
    schema("schema dry run with a made-up cursor", {}, 400, "invalid_cursor", "cursor",
           params={"dry_run": "true", "cursor": "bm9wZQ"}),
    schema("schema limit 0", {}, 400, "invalid_parameter", "limit", params={"limit": "0"}),
    schema("schema on an invalid namespace", {}, 400, "invalid_namespace", "namespace",
           path="/v1/namespaces/Bad.NS/schema"),
    get("schema version 0", SCHEMA, {"version": "0"}, 400, "invalid_parameter", "version"),
    get("schema version and as_of", SCHEMA, {"version": "1",
                                             "as_of": "2026-01-01T00:00:00Z"},
        400, "conflicting_parameters", "as_of"),
    get("schema as_of not a time", SCHEMA, {"as_of": "yesterday"}, 400, "invalid_parameter",
        "as_of"),
    get("schema never set", SCHEMA, {}, 404, "schema_not_found", "namespace"),
    get("schema history with a made-up cursor", SCHEMA + "/history", {"cursor": "x"}, 400,
        "invalid_cursor", "cursor"),
    Bad("schema removed that was never set", "DELETE", SCHEMA, 404, "schema_not_found",
        "namespace", ()),
    post("document to check malformed", SCHEMA + "/validate", b'{"a": ', 400,
         "malformed_json", "document"),
    schema("shared schema with an invalid name", {}, 400, "invalid_parameter", "name",
           path="/v1/schemas/Money"),
    schema("shared schema with a remote $ref", {"$ref": "http://127.0.0.1:9/x"}, 422,
           "invalid_schema", "/$ref", path=SHARED),
    schema("shared schema not valid", {"type": 1}, 422, "invalid_schema", "/type",
           path=SHARED),
    get("shared schema never set", SHARED, {}, 404, "schema_not_found", "name"),
    get("quality stale_days -1", "/v1/namespaces/{ns}/quality", {"stale_days": "-1"}, 400,
        "invalid_parameter", "stale_days"),
    get("quality min_position beyond the head", "/v1/namespaces/{ns}/quality",
        {"min_position": str(2**62)}, 400, "position_beyond_head", "min_position"),
    post("schema_format unknown", SETTINGS, {"schema_format": "strict"}, 400,
         "invalid_settings", "schema_format")._replace(method="PUT"),
]

CASES: list[Bad] = [*HEADERS, *BODIES, *PATCHES, *PATHS, *QUERIES, *BATCHES,
                    *NAMESPACE_SETTINGS, *REVERTS, *RESTORES, *SCHEMAS]
