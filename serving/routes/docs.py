"""``GET /docs``: Swagger UI served from this process, with no CDN (works offline and behind a strict proxy).

The Swagger UI distribution comes from the PyPI package ``swagger-ui-bundle-v2`` (module ``swagger_ui_bundle``:
the swagger-ui dist files, version in ``SWAGGER_UI_VERSION``), a base dependency.  ``/docs/assets/<file>``
serves only the files the page needs.  ReDoc (``/redoc``) is off: it has no maintained offline bundle here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

try:
    from swagger_ui_bundle import swagger_ui_path
except ImportError:  # the base dependency is missing (an install older than this code): /docs says so
    swagger_ui_path = None

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
ASSET_DIR = Path(str(swagger_ui_path)) if swagger_ui_path is not None else None
SWAGGER_UI_VERSION = ASSET_DIR.name.removeprefix("swagger-ui-") if ASSET_DIR is not None else None


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    if ASSET_DIR is None:
        return HTMLResponse("Swagger UI is not installed: pip install swagger-ui-bundle-v2 (a base dependency)",
                            status_code=503)
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="rxtriage - API docs",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js", swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> Response:
    if ASSET_DIR is None or name not in ASSETS:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(ASSET_DIR / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})
