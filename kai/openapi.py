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


def problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a generated schema so every error is documented as it is sent: problem+json.

    FastAPI documents a route's errors under ``application/json`` and its validation errors in
    its own shape; kai answers every error as ``application/problem+json`` with ``Problem``.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["FieldProblem"] = FieldProblem.model_json_schema()
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
                    if int(code) == 422:
                        response["description"] = "Invalid request"
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
