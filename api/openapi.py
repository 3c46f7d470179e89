"""The OpenAPI document as the server really answers: what FastAPI generates, with every
error as ``application/problem+json`` and the links between a write and the reads and
writes of the entry it made (for clients, and for the stateful fuzzing in the tests)."""

from __future__ import annotations

from typing import Any

from .authentication import PUBLIC_PATHS
from .errors import MEANINGS, PROBLEM_JSON
from .models import Problem

ENTRY = "/v1/namespaces/{namespace}/entries/{key}"
NAMESPACE = "/v1/namespaces/{namespace}"
_SAME_ENTRY = {"namespace": "$request.path.namespace", "key": "$request.path.key"}
_SAME_NAMESPACE = {"namespace": "$request.path.namespace"}
_VERSION = "$response.body#/version"

#: (path, method of the write) -> {link name: (path, method, parameters, body)}
_LINKS: dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str], Any]]] = {
    (ENTRY, "put"): {
        "GetEntry": (ENTRY, "get", _SAME_ENTRY, None),
        "GetVersion": (ENTRY, "get", {**_SAME_ENTRY, "query.version": _VERSION}, None),
        "GetHistory": (ENTRY + "/history", "get", _SAME_ENTRY, None),
        "PatchEntry": (ENTRY, "patch", {**_SAME_ENTRY, "header.If-Match":
                                        "$response.header.ETag"}, None),
        "DeleteEntry": (ENTRY, "delete", {**_SAME_ENTRY, "header.If-Match":
                                          "$response.header.ETag"}, None),
        "RevertEntry": (ENTRY + "/revert", "post", _SAME_ENTRY, {"to_version": _VERSION}),
        "DiffEntry": (ENTRY + "/diff", "get", {**_SAME_ENTRY, "query.from": "0",
                                               "query.to": _VERSION}, None),
        "ListNamespace": (NAMESPACE + "/entries", "get", _SAME_NAMESPACE, None),
    },
    (ENTRY, "patch"): {
        "GetEntry": (ENTRY, "get", _SAME_ENTRY, None),
        "GetHistory": (ENTRY + "/history", "get", _SAME_ENTRY, None),
        "DeleteEntry": (ENTRY, "delete", {**_SAME_ENTRY, "header.If-Match":
                                          "$response.header.ETag"}, None),
    },
    (ENTRY, "delete"): {
        "GetEntry": (ENTRY, "get", _SAME_ENTRY, None),
        "GetHistory": (ENTRY + "/history", "get", _SAME_ENTRY, None),
        "RevertEntry": (ENTRY + "/revert", "post", _SAME_ENTRY, {"to_version": 1}),
    },
    (NAMESPACE, "put"): {
        "GetNamespace": (NAMESPACE, "get", _SAME_NAMESPACE, None),
        "GetSettingsHistory": (NAMESPACE + "/settings/history", "get", _SAME_NAMESPACE, None),
    },
}


def complete(openapi: dict[str, Any]) -> dict[str, Any]:
    """``openapi`` (FastAPI's document) completed in place: problems and links."""
    document_problems(openapi)
    add_links(openapi)
    return openapi


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every error response is ``application/problem+json`` with the Problem schema, a
    parameter the framework refuses is a 400 (``errors.validation_error_handler``), not
    FastAPI's 422 ``HTTPValidationError``, and every read may answer 406."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if path not in PUBLIC_PATHS:  # authentication, the policy, the rate limit
                operation["security"] = [{"bearer": []}]
                for status in (401, 403, 429):
                    responses.setdefault(str(status), {"description": MEANINGS[status]})
            if responses.get("422", {}).get("description") == "Validation Error":
                del responses["422"]
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", {"description": MEANINGS[400]})
            if method == "get":  # negotiation.acceptable: an Accept none of its types meets
                responses.setdefault("406", {"description": MEANINGS[406]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {PROBLEM_JSON: {"schema": problem_ref}}
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema()
    openapi["components"]["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API token (ssot_<id>_<secret>) or, with OIDC configured, a JWT"}}
    return openapi


def add_links(openapi: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI links from each successful write to what a client does next with the entry
    (read it, its history, patch or delete it at the version it answered, revert it)."""
    paths = openapi.get("paths", {})
    for (path, method), links in _LINKS.items():
        write = paths.get(path, {}).get(method)
        if write is None:
            continue
        documented = {}
        for name, (target, target_method, parameters, body) in links.items():
            operation = paths.get(target, {}).get(target_method)
            if operation is None or "operationId" not in operation:
                continue
            link: dict[str, Any] = {"operationId": operation["operationId"],
                                    "parameters": parameters}
            if body is not None:
                link["requestBody"] = body
            documented[name] = link
        for status, response in write.get("responses", {}).items():
            if status in ("200", "201"):
                response["links"] = documented
    return openapi
