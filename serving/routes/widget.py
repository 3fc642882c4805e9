"""The embeddable customer widget: its script and style, its settings from the domain pack, demo pages.

A company embeds the widget with one `<script src="https://<app>/widget.js">` tag (see README).
"""

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from serving.deps import ServicesDep
from serving.errors import ApiError

router = APIRouter(tags=["widget"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Customers embed a fixed URL, so a new version must reach them soon; ETags make re-checks cheap.
ASSET_CACHE = "public, max-age=300"
DEMO_PAGES = {"/demo": "demo.html", "/demo/help": "demo-help.html"}


class WidgetConfig(BaseModel):
    """What the widget shows before anyone writes: the company, its greeting, the message length limit."""

    company_name: str
    greeting: str
    max_message_chars: int


@lru_cache(maxsize=8)
def _load(name: str, mtime_ns: int) -> tuple[bytes, str]:
    body = (STATIC_DIR / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _asset(request: Request, name: str, media_type: str) -> Response:
    body, etag = _load(name, (STATIC_DIR / name).stat().st_mtime_ns)
    headers = {
        "Cache-Control": ASSET_CACHE,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        # Lets sites that isolate themselves (Cross-Origin-Embedder-Policy) still load the widget.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/widget.js", include_in_schema=False)
def widget_script(request: Request) -> Response:
    return _asset(request, "widget.js", "text/javascript; charset=utf-8")


@router.get("/widget.css", include_in_schema=False)
def widget_style(request: Request) -> Response:
    return _asset(request, "widget.css", "text/css; charset=utf-8")


@router.get("/api/widget/config")
def widget_config(services: ServicesDep, response: Response) -> WidgetConfig:
    """The company name and greeting from the domain pack, and the longest message accepted."""
    response.headers["Cache-Control"] = "public, max-age=60"
    pack = services.pack
    return WidgetConfig(
        company_name=pack.company_name, greeting=pack.greeting, max_message_chars=services.settings.max_message_chars
    )


def _demo_page(services: ServicesDep, request: Request) -> Response:
    # Demo pages show the widget on a pretend company site; they are no part of a production install.
    if services.settings.mode != "local":
        raise ApiError(404, "not_found", "Not Found")
    body = (STATIC_DIR / DEMO_PAGES[request.url.path]).read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


for _path in DEMO_PAGES:
    router.add_api_route(_path, _demo_page, methods=["GET"], include_in_schema=False)
