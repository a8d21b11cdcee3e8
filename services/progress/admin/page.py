"""The admin page itself: public static files (HTML, JS, CSS) at /admin. The page asks for an
admin key and sends it with every data call, which is where access is checked: a browser cannot
send an Authorization header when it navigates to a page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The key lives in the page (sessionStorage), so allow only the page's own scripts, and never
# send the URL (which may carry ?key=) as a referrer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def mount(app: FastAPI) -> None:
    @app.get("/admin", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/admin/", include_in_schema=False)
    async def admin_page_slash(request: Request) -> RedirectResponse:
        query = request.url.query
        return RedirectResponse(f"/admin?{query}" if query else "/admin")

    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
