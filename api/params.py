"""What the routes share in their signatures and OpenAPI descriptions: the media types of
bodies, the path and query parameter types, the headers of a write, the error responses
each kind of route documents, the checks of parameters given together, and the service a
request reaches."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Path, Query, Request
from pydantic import AfterValidator, BeforeValidator

from nexus_ssot.ledger.addressing import (
    MAX_KEY_LENGTH,
    NAMESPACE_PATTERN,
    check_key,
    check_namespace,
)
from nexus_ssot.ledger.errors import InvalidInput, quoted
from nexus_ssot.ledger.moments import representable

from .errors import problem_responses
from .service import Service

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

#: The largest position, version or sequence number (PostgreSQL bigint): a greater one in
#: a query is refused as invalid, not carried to the database.
MAX_INT = 2**63 - 1

KEY_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"

# The patterns are documented here and checked by check_namespace / check_key, whose
# errors (invalid_namespace, invalid_key) are more precise than the framework's.
Namespace = Annotated[str, Path(
    description="Namespace, e.g. `config`", examples=["config"],
    json_schema_extra={"pattern": NAMESPACE_PATTERN.pattern, "maxLength": 63})]
Key = Annotated[str, Path(
    description="Key: `/`-separated segments of letters, digits, `.`, `_` and `-` (no `.` "
    "or `..` segment; the last not history, diff, proof, revert or restore), e.g. "
    "`services/payments/db.url`",
    json_schema_extra={"pattern": KEY_PATTERN, "maxLength": MAX_KEY_LENGTH})]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page",
                                      json_schema_extra={"minLength": 1})]


def rfc3339_only(value: Any) -> Any:
    """Query times are RFC 3339 text: pydantic would also take a number as Unix time."""
    if isinstance(value, str) and not _RFC3339_START.match(value):
        raise ValueError("must be an RFC 3339 time with a time zone, e.g. 2026-11-01T12:00:00Z")
    return value


def in_range(value: Any) -> Any:
    """A time whose UTC equivalent lies in the years 1 to 9999 (``ledger.moments``)."""
    if isinstance(value, datetime) and not representable(value):
        raise ValueError("lies outside the years 1 to 9999 once taken to UTC")
    return value


#: A whole number as a query or path parameter writes it: pydantic's lax parsing would
#: also read ``1.0``, ``+1``, ``1_000`` and `` 1`` as numbers (api/query_values.py).
DIGITS = re.compile(r"-?[0-9]+")


def in_digits(value: Any) -> Any:
    """A whole number in a path, written in digits."""
    if isinstance(value, str) and not DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written in digits, e.g. 5")
    return value


_RFC3339_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
AsOf = Annotated[datetime | None, BeforeValidator(rfc3339_only), AfterValidator(in_range),
                 Query(description="RFC 3339 time: the state as of the last event committed "
                       "at or before it")]
PastVersion = Annotated[int | None, Query(ge=1, le=MAX_INT, description="A past version")]
AtPosition = Annotated[int | None, Query(
    ge=0, le=MAX_INT, description="Global position: the state after the event at this position")]
#: Read-your-writes on a read replica (api/read_replica.py).
WrittenPosition = Annotated[int | None, Query(
    ge=0, le=MAX_INT, description="Read a state that includes this global position (the "
    "`position` a write returned): a read replica serves it once it has replayed it, else "
    "the primary does; beyond the log's head, 400")]

#: The plainest spellings of ``version``, ``position``, ``min_position`` and ``as_of``: a
#: subset of what the framework validates them into, each read here into the value it
#: gives (``read_coordinate``).
_PLAIN_COUNT = re.compile(r"0|[1-9][0-9]{0,18}")
_PLAIN_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
#: The counts a read of one entry takes, and the least each may be.
_COUNTS = {"version": 1, "position": 0, "min_position": 0}


def read_coordinate(query_string: bytes) -> dict[str, int | datetime] | None:
    """The one coordinate of an entry's read, a past one (``{"version": 5}``,
    ``{"position": 7}`` or ``{"as_of": datetime}``) or the position it must include
    (``{"min_position": 7}``), when the query string is that parameter alone, spelt
    plainly and valid; None for anything else, which the framework then validates (so
    that this never answers where it would have refused, nor the other way round): a
    number with a sign, leading zeros or out of range, a time in another of RFC 3339's
    spellings, a repeated or further parameter."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if len(pairs) != 1:
        return None
    name, value = pairs[0]
    least = _COUNTS.get(name)
    if least is not None:
        if not _PLAIN_COUNT.fullmatch(value):
            return None
        number = int(value)
        return {name: number} if least <= number <= MAX_INT else None
    if name == "as_of" and _PLAIN_TIME.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:  # a month 13, a day 31 of a month of 30, an offset of 24 h
            return None
        return {name: moment} if representable(moment) else None
    return None


#: Query text reaches SQL: a prefix holds only what keys are made of.
KeyPrefix = Annotated[str, Query(max_length=MAX_KEY_LENGTH, pattern=r"^[A-Za-z0-9._/-]*$",
                                 description="Only keys starting with this")]

#: What a write can answer besides its success, and what a read can.
WRITE_ERRORS = problem_responses(400, 404, 409, 412, 413, 415, 422, 503)
#: The routes of ``…/entries/{key:path}`` also answer 405 for an entry's sub-resources.
ENTRY_ERRORS = {**WRITE_ERRORS, **problem_responses(405)}
READ_ERRORS = problem_responses(400, 404, 503)

WRITE_HEADERS = {
    "parameters": [
        {"name": "If-Match", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": r'^\s*(\*|"[0-9]{1,18}")\s*$'},
         "description": 'Expected current version, e.g. "2", or * (it exists); not with '
         'If-None-Match. A weak tag (W/"2") never matches: 412'},
        {"name": "If-None-Match", "in": "header", "required": False,
         "schema": {"type": "string", "enum": ["*"]}, "description": "Create only"},
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
         "description": "Retries return the first response"},
        {"name": "X-Reason", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]{1,1024}$"}},
        {"name": "X-Correlation-Id", "in": "header", "required": False,
         "schema": {"type": "string"},
         "description": "Echoed back; one is made when absent or not 1-128 visible ASCII"},
    ]
}
#: The headers of a write that names no one entry (a batch, a restore): no precondition.
UNCONDITIONAL_WRITE_HEADERS = {"parameters": WRITE_HEADERS["parameters"][2:]}


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def request_state(request: Request) -> dict[str, Any]:
    """What the middlewares set for this request (``scope["state"]``: ``identity``,
    ``correlation_id``, ``rate_limit``). Read here, not as ``request.state.identity``:
    Starlette's ``State`` finds such an attribute only once the ordinary lookup has
    failed, an AttributeError made and dropped on every read."""
    state: dict[str, Any] = request.scope.get("state") or {}
    return state


def address(namespace: str, key: str) -> tuple[str, str]:
    """The entry a route's path names, checked."""
    return check_namespace(namespace), check_key(key)


def one_coordinate(**coordinates: Any) -> None:
    """At most one of ``coordinates`` is given; a time has a time zone."""
    given = [name for name, value in coordinates.items() if value is not None]
    if len(given) > 1:
        raise InvalidInput(f"give one of {', '.join(coordinates)}, not {' and '.join(given)}",
                           code="conflicting_parameters", field=given[1])
    for name, value in coordinates.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (e.g. 2026-11-01T12:00:00Z)",
                               code="invalid_parameter", field=name)


def as_of_member(value: Any) -> datetime:
    """The ``as_of`` member of a request body: an RFC 3339 time with a time zone."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"as_of {quoted(value)} is not an RFC 3339 time",
                           code="invalid_parameter", field="as_of") from None
    one_coordinate(as_of=moment)
    if not representable(moment):
        raise InvalidInput(f"as_of {quoted(value)} lies outside the years 1 to 9999 once "
                           "taken to UTC", code="invalid_parameter", field="as_of")
    return moment
