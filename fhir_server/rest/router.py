"""Maps one HTTP request onto the engine: path and method to interaction, headers to conditions
and preferences, results to status, headers and body. Knows HTTP, not FastAPI."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.access.policy import CONFORMANCE_TYPES
from fhir_server.engine.errors import FhirError, bad_request, error, operation_outcome, transient
from fhir_server.engine.model import RequestContext, Result, etag, parse_etag
from fhir_server.engine.operations import OperationCall
from fhir_server.rest.negotiation import (
    CONTENT_TYPES,
    JSON_PATCH,
    JSON_TYPES,
    XML_TYPES,
    media_type,
    parse_body,
    render,
    response_format,
)
from fhir_server.server import FhirServer
from fhir_server.storage import StorageBusy

FORMAT_PARAMS = {"_format", "_pretty"}
XML_PATCH = "application/xml-patch+xml"        # RFC 5261


@dataclass
class HttpRequest:
    method: str
    path: str                         # below the FHIR base, without leading slash
    query: list[tuple[str, str]]
    headers: dict[str, str]           # lower-case names
    body: bytes
    base_url: str


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Router:
    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            fmt = response_format(_param(request.query, "_format"), request.headers.get("accept"))
        except FhirError as exc:
            if not _is_binary_read(request):       # a Binary is served in its own media type
                return self._error(exc, "json", False)
            fmt = "json"
        pretty = _param(request.query, "_pretty") == "true"
        ctx = _context(request)
        try:
            try:
                return self._dispatch(request, ctx, fmt, pretty)
            except StorageBusy as busy:
                raise transient("The database kept meeting concurrent writes on the same data and gave up; "
                                "nothing was written, retry shortly") from busy
        except FhirError as exc:
            if not ctx.observed:
                self.server.observe_refusal(ctx, request.method, request.path, request.query, exc)
            return self._error(exc, fmt, pretty)

    # -- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, request: HttpRequest, ctx: RequestContext, fmt: str, pretty: bool) -> HttpResponse:
        segments = [s for s in request.path.strip("/").split("/") if s]
        method = "GET" if request.method == "HEAD" else request.method
        # A public request still gets (anonymous) access data: what an `_include`, a chain or a
        # `_has` of a conformance search could reach beyond conformance resources stays hidden.
        actor = None if _is_public(segments, method) else \
            self.server.authenticator.authenticate(request.headers.get("authorization"))
        self.server.context_for(ctx, actor)
        query = [(k, v) for k, v in request.query if k not in FORMAT_PARAMS]
        server = self.server
        interactions = server.interactions

        if segments and segments[-1].startswith("$"):
            return self._operation(request, segments, ctx, fmt, pretty)
        if not segments or segments[0] in ("_history", "metadata", "_search"):
            return self._system(request, segments, method, query, ctx, fmt, pretty)

        resource_type = segments[0]
        server.require_type(resource_type)
        rest = segments[1:]
        if not rest:
            if method == "GET":
                return self._respond(server.get(resource_type, query, ctx), request, fmt, pretty)
            if method == "POST":
                body = self._resource_body(request, resource_type)
                result = interactions.create(resource_type, body, ctx,
                                             if_none_exist=request.headers.get("if-none-exist"))
                return self._respond(result, request, fmt, pretty, ctx)
            if method == "PUT":
                body = self._resource_body(request, resource_type)
                result = interactions.conditional_update(resource_type, _criteria(query), body, ctx)
                return self._respond(result, request, fmt, pretty, ctx)
            if method == "DELETE":
                result = interactions.conditional_delete(resource_type, _criteria(query), ctx)
                return self._respond(result, request, fmt, pretty, ctx)
            if method == "PATCH":
                patch_body, patch_format = self._patch_body(request)
                result = interactions.conditional_patch(resource_type, _criteria(query), patch_body, patch_format,
                                                        ctx)
                return self._respond(result, request, fmt, pretty, ctx)
            raise _method_not_allowed(request.method, request.path)
        if rest == ["_search"] and method == "POST":
            params = query + self._form_params(request)
            return self._respond(server.get(resource_type, params, ctx), request, fmt, pretty)
        if rest == ["_history"] and method == "GET":
            return self._respond(server.get(request.path, query, ctx), request, fmt, pretty)
        resource_id = rest[0]
        if len(rest) == 1:
            return self._instance(request, resource_type, resource_id, method, ctx, fmt, pretty)
        if method == "GET":
            return self._respond(server.get(request.path, query, ctx), request, fmt, pretty)
        raise _method_not_allowed(request.method, request.path)

    def _system(self, request: HttpRequest, segments: list[str], method: str, query: list[tuple[str, str]],
                ctx: RequestContext, fmt: str, pretty: bool) -> HttpResponse:
        if not segments and method == "POST":
            bundle = parse_body(request.body, request.headers.get("content-type"),
                                self.server.settings.max_body_bytes)
            return self._respond(Result(200, self.server.bundles.process(bundle, ctx)), request, fmt, pretty)
        if segments == ["_search"] and method == "POST":
            return self._respond(self.server.get("", query + self._form_params(request), ctx), request, fmt,
                                 pretty)
        if method == "GET" and len(segments) <= 1:
            return self._respond(self.server.get(request.path, query, ctx), request, fmt, pretty)
        raise _method_not_allowed(request.method, request.path)

    def _instance(self, request: HttpRequest, resource_type: str, resource_id: str, method: str,
                  ctx: RequestContext, fmt: str, pretty: bool) -> HttpResponse:
        interactions = self.server.interactions
        if_match = request.headers.get("if-match")
        if method == "GET":
            result = self.server.get(f"{resource_type}/{resource_id}", [], ctx)
            if _not_modified(request, result):
                return HttpResponse(304, headers=_version_headers(result))
            if resource_type == "Binary":
                return self._binary(result, request, fmt, pretty)
            return self._respond(result, request, fmt, pretty)
        if method == "PUT":
            body = self._resource_body(request, resource_type, resource_id)
            return self._respond(interactions.update(resource_type, resource_id, body, ctx, if_match=if_match),
                                 request, fmt, pretty, ctx)
        if method == "DELETE":
            return self._respond(interactions.delete(resource_type, resource_id, ctx, if_match=if_match),
                                 request, fmt, pretty)
        if method == "PATCH":
            patch_body, patch_format = self._patch_body(request)
            result = interactions.patch(resource_type, resource_id, patch_body, patch_format, ctx, if_match=if_match)
            return self._respond(result, request, fmt, pretty, ctx)
        raise _method_not_allowed(request.method, request.path)

    def _binary(self, result: Result, request: HttpRequest, fmt: str, pretty: bool) -> HttpResponse:
        """A Binary read (ITI-68): the document in its own media type, or the Binary resource when
        FHIR JSON / XML is asked for. A large document kept outside the resource is streamed."""
        content = getattr(self.server, "binary_content", None)      # set by fhir_server.mhd
        head_only = request.method == "HEAD"
        if _wants_raw_binary(request):
            return _raw_binary(result, content, head_only)
        if content is None or not content.is_external(result.body or {}):
            return self._respond(result, request, fmt, pretty)
        return _streamed_binary_resource(result, content, fmt, pretty, head_only)

    def _operation(self, request: HttpRequest, segments: list[str], ctx: RequestContext, fmt: str,
                   pretty: bool) -> HttpResponse:
        name = segments[-1][1:]
        resource_type = segments[0] if len(segments) >= 2 else None
        resource_id = segments[1] if len(segments) == 3 else None
        if resource_type:
            self.server.require_type(resource_type)
        if len(segments) > 3:
            raise error(404, "not-found", f"Unknown path {request.path}")
        body = None
        if request.method == "POST" and request.body.strip():
            content_type = media_type(request.headers.get("content-type"))
            if content_type and content_type not in JSON_TYPES | XML_TYPES:
                body = _as_binary(request)         # e.g. a raw CDA document for $import-cda
            else:
                body = parse_body(request.body, request.headers.get("content-type"),
                                  self.server.settings.max_body_bytes)
        query = [(k, v) for k, v in request.query if k not in FORMAT_PARAMS]
        call = OperationCall(name, resource_type, resource_id, request.method, query, body, ctx)
        return self._respond(self.server.call_operation(call), request, fmt, pretty)

    # -- bodies ------------------------------------------------------------------------------
    def _resource_body(self, request: HttpRequest, resource_type: str, resource_id: str | None = None) -> Any:
        content_type = media_type(request.headers.get("content-type"))
        if resource_type == "Binary" and content_type and content_type not in JSON_TYPES | XML_TYPES:
            # A raw document posted to /Binary: wrap it (http://hl7.org/fhir/R4/binary.html#rest)
            return _as_binary(request, resource_id)
        return parse_body(request.body, request.headers.get("content-type"), self.server.settings.max_body_bytes)

    def _patch_body(self, request: HttpRequest) -> tuple[Any, str]:
        content_type = media_type(request.headers.get("content-type"))
        if content_type == XML_PATCH:          # applied to the resource's XML form: kept as bytes
            if len(request.body) > self.server.settings.max_body_bytes:
                raise error(413, "too-costly", f"The body is {len(request.body)} bytes; the limit is "
                            f"{self.server.settings.max_body_bytes}")
            return request.body, "xml-patch"
        body = parse_body(request.body, content_type, self.server.settings.max_body_bytes)
        if content_type == JSON_PATCH:
            return body, "json-patch"
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            return body, "fhirpath-patch"
        raise error(415, "not-supported", "PATCH takes application/json-patch+json, application/xml-patch+xml, "
                    "or a FHIRPath Patch Parameters resource as application/fhir+json or application/fhir+xml")

    def _form_params(self, request: HttpRequest) -> list[tuple[str, str]]:
        if not request.body:
            return []
        if media_type(request.headers.get("content-type")) != "application/x-www-form-urlencoded":
            raise error(415, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters")
        return [(k, v) for k, v in parse_qsl(request.body.decode(), keep_blank_values=True)
                if k not in FORMAT_PARAMS]

    # -- responses ---------------------------------------------------------------------------
    def _respond(self, result: Result, request: HttpRequest, fmt: str, pretty: bool,
                 ctx: RequestContext | None = None) -> HttpResponse:
        headers = _version_headers(result)
        if result.location:
            headers["Location"] = f"{request.base_url}/{result.location}"
        elif ctx is not None and result.body and result.version_id and "id" in result.body:
            body = result.body
            headers["Content-Location"] = \
                f"{request.base_url}/{body['resourceType']}/{body['id']}/_history/{result.version_id}"
        headers.update(result.headers)
        body_dict = result.body
        if ctx is not None and body_dict is not None and body_dict.get("resourceType") != "OperationOutcome":
            if ctx.prefer_return == "minimal":
                body_dict = None
            elif ctx.prefer_return == "OperationOutcome":
                body_dict = operation_outcome([])
        if body_dict is None or request.method == "HEAD":
            return HttpResponse(result.status, b"", headers)
        headers["Content-Type"] = CONTENT_TYPES[fmt]
        return HttpResponse(result.status, render(body_dict, fmt, pretty), headers)

    def _error(self, exc: FhirError, fmt: str, pretty: bool) -> HttpResponse:
        headers = {"Content-Type": CONTENT_TYPES[fmt], **exc.headers}
        return HttpResponse(exc.status, render(operation_outcome(exc.issues), fmt, pretty), headers)


def _is_public(segments: list[str], method: str) -> bool:
    """The CapabilityStatement, conformance resources and type-level $validate of a posted payload
    hold no patient data: they need no token."""
    if segments == ["metadata"]:
        return True
    if segments and segments[0] in CONFORMANCE_TYPES and method == "GET":
        return True
    return len(segments) == 2 and segments[1] == "$validate"


def _context(request: HttpRequest) -> RequestContext:
    prefer = request.headers.get("prefer", "")
    ctx = RequestContext(base_url=request.base_url)
    for part in prefer.split(","):
        key, _, value = part.strip().partition("=")
        value = value.strip('"')
        if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
            ctx.prefer_return = value
        elif key == "handling":
            ctx.strict_handling = value == "strict"
    return ctx


def _param(query: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in query if k == name), None)


def _criteria(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not query:
        raise bad_request("This interaction at type level is conditional: it needs search criteria in the URL")
    return query


def _method_not_allowed(method: str, path: str) -> FhirError:
    return error(405, "not-supported", f"{method} is not allowed on /{path}")


def _version_headers(result: Result) -> dict[str, str]:
    headers = {}
    if result.version_id:
        headers["ETag"] = etag(result.version_id)
    if result.last_modified:
        headers["Last-Modified"] = format_datetime(result.last_modified, usegmt=True)
    return headers


def _not_modified(request: HttpRequest, result: Result) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match:
        return any(parse_etag(tag) in (result.version_id, "*") for tag in if_none_match.split(","))
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since and result.last_modified:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return result.last_modified.replace(microsecond=0) <= since
    return False


def _as_binary(request: HttpRequest, resource_id: str | None = None) -> dict:
    binary: dict[str, Any] = {"resourceType": "Binary"}
    if resource_id:
        binary["id"] = resource_id
    binary["contentType"] = request.headers.get("content-type", "")
    binary["data"] = base64.b64encode(request.body).decode()
    return binary


def _is_binary_read(request: HttpRequest) -> bool:
    segments = [s for s in request.path.strip("/").split("/") if s]
    return request.method in ("GET", "HEAD") and len(segments) == 2 and segments[0] == "Binary"


def _wants_raw_binary(request: HttpRequest) -> bool:
    if _param(request.query, "_format"):
        return False
    accept = media_type(request.headers.get("accept"))
    return not any(media_type(a) in JSON_TYPES | XML_TYPES for a in request.headers.get("accept", "").split(",")) \
        and accept != ""


def _raw_binary(result: Result, content: Any = None, head_only: bool = False) -> HttpResponse:
    body = result.body or {}
    headers = _version_headers(result)
    headers["Content-Type"] = body.get("contentType", "application/octet-stream")
    if content is None or not content.is_external(body):
        return HttpResponse(200, b"" if head_only else base64.b64decode(body.get("data", "")), headers)
    headers["Content-Length"] = str(content.size(body))
    if head_only:
        return HttpResponse(200, b"", headers)
    return StreamedResponse(200, lambda: content.chunks(body), headers)


def _streamed_binary_resource(result: Result, content: Any, fmt: str, pretty: bool, head_only: bool) -> HttpResponse:
    """The Binary resource of a large document, `data` encoded chunk by chunk into the rendering."""
    body = result.body or {}
    headers = {**_version_headers(result), "Content-Type": CONTENT_TYPES[fmt]}
    head, tail = render({**content.without_pointer(body), "data": _DATA_MARK}, fmt, pretty).split(
        _DATA_MARK.encode(), 1)
    if head_only:
        return HttpResponse(200, b"", headers)

    def rendering() -> Iterator[bytes]:
        yield head
        yield from _base64_chunks(content.chunks(body))
        yield tail

    return StreamedResponse(200, rendering, headers)


_DATA_MARK = "ESPACE-BINARY-DATA-9f1c"


def _base64_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Base64 of a byte stream, piece by piece (each piece encodes a multiple of 3 bytes)."""
    rest = b""
    for chunk in chunks:
        chunk = rest + chunk
        cut = len(chunk) - len(chunk) % 3
        rest = chunk[cut:]
        if cut:
            yield base64.b64encode(chunk[:cut])
    if rest:
        yield base64.b64encode(rest)


class StreamedResponse(HttpResponse):
    """A response produced chunk by chunk (a large document read from storage): a front end that
    streams iterates `open()`; `body` joins the chunks for one that cannot."""

    def __init__(self, status: int, open_chunks: Callable[[], Iterable[bytes]], headers: dict[str, str]) -> None:
        self.open = open_chunks
        super().__init__(status, b"", headers)

    @property  # type: ignore[override]
    def body(self) -> bytes:
        return b"".join(self.open())

    @body.setter
    def body(self, value: bytes) -> None:      # the dataclass constructor's assignment: ignored
        pass
