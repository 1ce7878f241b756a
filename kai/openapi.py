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
