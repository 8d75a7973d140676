"""The web pages and the browser SDK, served from the package: ``/`` (chat), ``/demo``
(the live SSE demo), ``/static/*`` (``tokenrelay.js`` and the pages' assets, the
vendored charting library under ``/static/vendor/``) and ``/admin`` (the operator's
dashboard: ``admin_page_routes``, mounted apart because it must come before the admin
API's catch-all for other ``/admin/…`` paths).

The files are read once, when the routes are built; only files that exist in
``tokenrelay/web`` can be named (a path is a dictionary key, never joined onto the file
system). Every response carries a strong ``ETag`` and ``Cache-Control: no-cache``: the
names are not versioned, so browsers keep a copy but revalidate it (a cheap 304) and an
upgraded gateway is picked up at once. The pages carry a Content-Security-Policy that
allows only this origin's scripts, styles, images and connections, so even a rendering
bug could not run a script from model output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "admin_page_routes",
    "load_assets",
    "status_page_route",
    "web_routes",
]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".woff2": "font/woff2",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_COMMON_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
_PAGE_HEADERS = {
    **_COMMON_HEADERS,
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith((".", "_")):
            continue
        if entry.is_dir():
            assets.update(_walk(entry, f"{prefix}{name}/"))
            continue
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix.lower())
        if content_type is None:  # not a web file (e.g. a stray .py): not served
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[prefix + name] = Asset(body, content_type, etag)
    return assets


def load_assets() -> dict[str, Asset]:
    """Every servable file of ``tokenrelay/web``, by its path relative to that folder."""
    return _walk(files("tokenrelay") / "web")


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


def _respond(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    headers = {**headers, "etag": asset.etag}
    if _not_modified(request, asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def web_routes() -> list[BaseRoute]:
    """Routes for ``/``, ``/demo`` and ``/static/{path}`` (GET and HEAD)."""
    assets = load_assets()

    def page(name: str) -> Route:
        asset = assets[name]
        path = "/" if name == "index.html" else "/" + name.removesuffix(".html")

        async def endpoint(request: Request) -> Response:
            return _respond(request, asset, _PAGE_HEADERS)

        return Route(path, endpoint, methods=["GET"], name=f"web:{name}")

    async def static(request: Request) -> Response:
        asset = assets.get(request.path_params["path"])
        if asset is None:
            raise HTTPException(404, "no such file")
        headers = _PAGE_HEADERS if asset.content_type.startswith("text/html") else _COMMON_HEADERS
        return _respond(request, asset, headers)

    return [
        page("index.html"),
        page("demo.html"),
        Route("/static/{path:path}", static, methods=["GET"], name="web:static"),
    ]


def admin_page_routes() -> list[BaseRoute]:
    """``/admin``, the dashboard page (GET and HEAD), and ``/admin/`` redirecting to it.
    The page holds no data and no secret: it asks for the master key and reads the admin
    API with it. Its scripts and styles are ``/static/admin.*`` and ``/static/vendor/*``
    (served by ``web_routes``). Mount these before the admin API's routes."""
    asset = load_assets()["admin.html"]

    async def page(request: Request) -> Response:
        return _respond(request, asset, _PAGE_HEADERS)

    async def slash(request: Request) -> Response:
        return RedirectResponse("/admin", status_code=308, headers=_COMMON_HEADERS)

    return [
        Route("/admin", page, methods=["GET"], name="web:admin"),
        Route("/admin/", slash, methods=["GET"], name="web:admin-slash"),
    ]


def status_page_route() -> Route:
    """``/status``, the public status page (``status.html``; its data: ``/status.json``)."""
    asset = load_assets()["status.html"]

    async def page(request: Request) -> Response:
        return _respond(request, asset, _PAGE_HEADERS)

    return Route("/status", page, methods=["GET"], name="web:status")
