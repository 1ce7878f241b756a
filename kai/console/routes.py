"""Serves the console: its page at ``/`` (and the magic-link landing), its files at ``/console``.

The console is plain HTML, CSS and ES modules in ``static/``; nothing is built. Every answer
carries a strict Content-Security-Policy: scripts and styles only from this origin, no inline
code, no framing, and connections only back to the hub.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


def _page() -> Response:
    response = FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")
    response.headers.update(HEADERS)
    response.headers["Cache-Control"] = "no-cache"
    return response


@router.api_route("/", methods=["GET", "HEAD"])
async def console() -> Response:
    """The console's single page; it routes by the URL's fragment from here on."""
    return _page()


@router.api_route("/login/magic", methods=["GET", "HEAD"])
async def magic_landing() -> Response:
    """Where a magic link lands: the token stays in the fragment, which never reaches a server."""
    return _page()


class ConsoleFiles(StaticFiles):
    """The console's scripts and styles, with the same headers as its page."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def console_files() -> ConsoleFiles:
    return ConsoleFiles(directory=STATIC)
