"""The FastAPI application: one catch-all route under /fhir handing requests to the Router."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.routing import Route

from fhir_server.config import Settings
from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.engine.errors import error
from fhir_server.rest import websocket
from fhir_server.rest.router import HttpRequest, Router, StreamedResponse
from fhir_server.server import FhirServer

BASE_PATH = "/fhir"
IG_SITE = PROJECT_ROOT / "ig" / "site"          # built by `make ig`
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def create_app(settings: Settings, mongodb_uri: str) -> FastAPI:
    server = FhirServer(settings, mongodb_uri)
    router = Router(server)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await run_in_threadpool(server.start)
        # What start-up built (FHIR definitions, profiles, indexes: about 360k objects) lives as
        # long as the process: out of the cyclic collector's reach, a full collection no longer
        # walks it (measured 100-190 ms a pause, several a minute under load, before).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()          # a process that builds another app (tests) can collect this one
        server.close()

    app = FastAPI(title="Espace FHIR R4 server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.fhir = server
    websocket.mount(app, server)             # Subscriptions' websocket channel: /fhir/websocket

    async def handle(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            too_large = router._error(error(413, "too-costly", f"The body is {declared} bytes; the limit is "
                                            f"{settings.max_body_bytes}"), "json", False)
            return Response(too_large.body, too_large.status, too_large.headers)
        body = await request.body()
        base_url = settings.base_url or str(request.base_url).rstrip("/") + BASE_PATH
        http_request = HttpRequest(
            method=request.method,
            path=request.path_params.get("path", ""),
            query=parse_qsl(request.url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=base_url,
        )
        result = await run_in_threadpool(router.handle, http_request)
        if isinstance(result, StreamedResponse):            # large documents, never loaded whole
            return StreamingResponse(result.open(), status_code=result.status, headers=result.headers)
        return Response(content=result.body, status_code=result.status, headers=result.headers)

    if IG_SITE.is_dir():
        app.mount("/ig", StaticFiles(directory=IG_SITE, html=True), name="ig")
    # Plain Starlette routes: the Router does all the parsing, so FastAPI's per-request
    # dependency and parameter resolution would only add latency.
    app.router.routes.append(Route(BASE_PATH, handle, methods=METHODS))
    app.router.routes.append(Route(BASE_PATH + "/{path:path}", handle, methods=METHODS))
    return app
