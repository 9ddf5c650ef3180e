"""Status page: static HTML, CSS and JavaScript shipped in the package (no build step).

The page itself holds no alert data: its script reads the receiver's API with the credentials the
user typed in, so the page is behind exactly the API's auth and a wrong token sees nothing.
Every alert value is put into the DOM as text; the Content-Security-Policy below allows only our
own script and, through Trusted Types, makes any innerHTML-style HTML sink throw in browsers that
enforce it.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",  # the login form is handled by the script, never submitted
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# route -> (file in this package, content type, cache policy). A fixed list rather than a static
# directory route: nothing but these files can ever be served.
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8", "no-store"),
    "/status/app.js": ("app.js", "text/javascript; charset=utf-8", "no-cache"),
    "/status/style.css": ("style.css", "text/css; charset=utf-8", "no-cache"),
    "/status/favicon.svg": ("favicon.svg", "image/svg+xml", "max-age=86400"),
}


def _handler(body: bytes, content_type: str, cache: str):
    headers = {**_HEADERS, "Cache-Control": cache}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    return serve


def setup(app: web.Application) -> None:
    """Add `/` and the page's assets to a receiver app. The files are read now, so a broken
    install fails at start, not at 3 a.m. when someone opens the page."""
    files = resources.files(__package__)
    for route, (name, content_type, cache) in _FILES.items():
        body = files.joinpath(name).read_bytes()
        app.router.add_get(route, _handler(body, content_type, cache))
