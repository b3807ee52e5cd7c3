"""The dashboard: a page served at `/` by the HTTP API's own app.

The page is plain HTML, CSS and ES modules in `dashboard/` beside this
module, shipped in the wheel; nothing is built at install time. It calls the
same `/v1/...` routes as any HTTP client, logged in with the session cookie,
so this module only serves files: the API decides what each tenant sees.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

ASSETS = Path(__file__).with_name("dashboard")
# The URL prefix of the page's files; `/` itself serves index.html.
ASSET_PREFIX = "/dashboard/"

# By suffix, not from the platform's MIME table, which on some systems calls
# .js text/plain: browsers refuse to run modules served so.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Only this origin's own files and API: no inline script, no CDN, and no
# framing by other sites. Images may be data: URLs (an image task's result).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def _assets() -> dict[str, tuple[bytes, str]]:
    """Every servable file, by its path under ASSETS, read once: the page is
    small, and a fixed table leaves no path for a request to escape by."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(ASSETS.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.relative_to(ASSETS).as_posix()] = (path.read_bytes(), content_type)
    return files


def add_dashboard(app: web.Application) -> None:
    """Serve the dashboard from `app`: `/` and the files under ASSET_PREFIX."""
    files = _assets()

    def respond(name: str) -> web.Response:
        body, content_type = files[name]
        charset = None if content_type.startswith("image/png") else "utf-8"
        response = web.Response(body=body, content_type=content_type, charset=charset)
        # Revalidated on each load, so a new release's page is never mixed
        # with an old release's modules.
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    async def index(request: web.Request) -> web.StreamResponse:
        return respond("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return respond(name)

    app.router.add_route("GET", "/", index)
    app.router.add_route("GET", ASSET_PREFIX + "{name:.+}", asset)


def is_dashboard_path(path: str) -> bool:
    """Whether a request is for the page's files, which anyone may load: the
    data behind it is under /v1/ and asks for a token or a session."""
    return path == "/" or path.startswith(ASSET_PREFIX)
