"""OpenAPI helpers: the problem+json model and the error responses a route declares."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldProblem(BaseModel):
    field: str = Field(examples=["credentials.email"])
    message: str = Field(examples=["value is not a valid email address"])


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Unauthorized"])
    status: int = Field(examples=[401])
    detail: str = Field(examples=["Authentication failed"])
    errors: list[FieldProblem] | None = None


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry for a route that can fail with ``codes``."""
    return {
        code: {
            "model": Problem,
            "description": HTTPStatus(code).phrase,
            "content": {"application/problem+json": {}},
        }
        for code in sorted(set(codes))
    }


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

_BODY_METHODS = frozenset({"post", "put", "patch"})
# What the hub's layers answer before (or around) a route's own code, in the words of the docs.
_ANSWERED_AROUND_ROUTES = {
    400: "Malformed request: a body that is not JSON, a NUL in the URL, a bad Content-Length",
    401: "No valid access token",
    404: "Not found",
    413: "Request body over the size limit",
    415: "Request body is not application/json",
    503: "The broker (Redis) is unavailable; try again shortly",
}


def around_routes(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The statuses an operation can answer whatever its route declares: the request guard's
    (400 for a malformed URL, header or JSON body; 413 and 415 for bodies), authentication's,
    a missing path resource's, and a broker outage's where the broker is on the way."""
    codes = {400}
    if method in _BODY_METHODS:
        codes.add(413)
        if path.startswith("/api/"):
            codes.add(415)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        codes.add(404)
    if operation.get("security"):
        codes |= {401, 503}  # the scaled-out hub reaches Redis for events, presence, limits
    if "429" in operation.get("responses", {}):
        codes.add(503)  # the throttle's counters live in Redis when scaled out
    return codes


def problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a generated schema so every error is documented as it is sent: problem+json.

    FastAPI documents a route's errors under ``application/json`` and its validation errors in
    its own shape; kai answers every error as ``application/problem+json`` with ``Problem``.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["FieldProblem"] = FieldProblem.model_json_schema()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in sorted(around_routes(path, method, operation)):
                responses.setdefault(str(status), {"description": _ANSWERED_AROUND_ROUTES[status]})
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
                    if int(code) == 422:
                        response["description"] = "Invalid request"
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
