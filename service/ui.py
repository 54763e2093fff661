"""The web page the service mounts at ``/ui``, and the sample images it offers
(``service/web/samples``)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

WEB = Path(__file__).parent / "web"


def ui_app(web: Path = WEB) -> Starlette:
    """The page (``/``), the list of samples (``/samples.json``) and each sample's file."""

    async def index(_):
        return FileResponse(web / "index.html")  # text/html, from the name

    async def samples(_):
        return JSONResponse(sorted(p.name for p in (web / "samples").glob("*.jpg")))

    async def sample(request):
        name = request.path_params["name"]  # never holds a "/": the route's {name} stops there
        path = web / "samples" / name
        if not name.endswith(".jpg") or not path.is_file():
            return JSONResponse({"error": f"no sample named {name!r}"}, status_code=404)
        return FileResponse(path)  # image/jpeg, from the name

    return Starlette(
        routes=[
            Route("/", index),
            Route("/samples.json", samples),
            Route("/samples/{name}", sample),
        ]
    )
