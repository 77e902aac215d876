"""``GET /viewer``: a page that watches a stream live (service/viewer/index.html, no build step).

The page lists the service's streams (``GET /v1/streams``), follows the chosen one over
``WS /v1/streams/{id}/watch`` and draws its frames with boxes, track ids and trails, a table of
the current tracks, latency and fps. It holds no data itself, so it needs no API key; the key
typed into it is sent with the calls the page makes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(tags=["viewer"])

VIEWER_PAGE = Path(__file__).resolve().parent.parent / "viewer" / "index.html"


@router.get("/viewer", include_in_schema=False)
async def viewer() -> FileResponse:
    return FileResponse(VIEWER_PAGE, media_type="text/html")
