"""``/docs``: the API schema, browsable with Swagger UI served from files installed with kai.

The page, its start script and Swagger UI's files (the ``swagger-ui-bundle-v2`` package) all
come from this origin, under the console's Content-Security-Policy, which allows nothing
else: no CDN, no inline script or style, and it works offline. ReDoc is not served (no
package on PyPI ships its standalone bundle without a web framework, Django, as a dependency):
``/redoc`` sends its visitors to ``/docs``.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from kai.console.routes import HEADERS  # the console's strict CSP fits Swagger UI too
from kai.errors import NotFound

HERE = Path(__file__).parent / "apidocs"
SWAGGER_UI = Path(swagger_ui_bundle.swagger_ui_path)
# Served by name; nothing else of either folder is reachable.
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (SWAGGER_UI, "text/javascript; charset=utf-8"),
    "swagger-ui.css": (SWAGGER_UI, "text/css; charset=utf-8"),
    "favicon-32x32.png": (SWAGGER_UI, "image/png"),
    "start.js": (HERE, "text/javascript; charset=utf-8"),
}

router = APIRouter(include_in_schema=False)


def _file(path: Path, media_type: str) -> Response:
    response = FileResponse(path, media_type=media_type)
    response.headers.update(HEADERS)
    return response


@router.api_route("/docs", methods=["GET", "HEAD"])
async def swagger_page() -> Response:
    """The schema, browsable."""
    return _file(HERE / "index.html", "text/html; charset=utf-8")


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc() -> Response:
    """ReDoc's old address: the same schema, in Swagger UI."""
    return RedirectResponse("/docs", status_code=308)


@router.api_route("/docs/assets/{name}", methods=["GET", "HEAD"])
async def swagger_asset(name: str) -> Response:
    """One of the page's files."""
    if name not in ASSETS:
        raise NotFound("Not found")
    folder, media_type = ASSETS[name]
    response = _file(folder / name, media_type)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
