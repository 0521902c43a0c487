"""Content negotiation: which wire format a request body is in, and which the client wants back."""

from __future__ import annotations

from typing import Any

from fhir_server.engine.errors import error
from fhir_server.formats.json import dump_json, parse_json

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "json", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "xml", "text/xml"}
JSON_PATCH = "application/json-patch+json"
CONTENT_TYPES = {"json": "application/fhir+json; charset=utf-8", "xml": "application/fhir+xml; charset=utf-8"}


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def response_format(format_param: str | None, accept: str | None) -> str:
    """`_format` wins over Accept; JSON when the client does not say."""
    if format_param:
        wanted = media_type(format_param.replace(" ", "+"))
        if wanted in JSON_TYPES:
            return "json"
        if wanted in XML_TYPES:
            return "xml"
        raise error(406, "not-supported", f"_format={format_param} is not supported: use json or xml", "_format")
    if not accept:
        return "json"
    choices = []
    for position, part in enumerate(accept.split(",")):
        kind = media_type(part)
        quality = 1.0
        for parameter in part.split(";")[1:]:
            key, _, value = parameter.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        choices.append((-quality, position, kind))
    for _, _, kind in sorted(choices):
        if kind in JSON_TYPES or kind in ("*/*", "application/*"):
            return "json"
        if kind in XML_TYPES:
            return "xml"
    raise error(406, "not-supported", f"Cannot answer in any of the accepted types ({accept}): "
                "this server speaks application/fhir+json and application/fhir+xml")


def parse_body(body: bytes, content_type: str | None, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise error(413, "too-costly", f"The body is {len(body)} bytes; the limit is {max_bytes}")
    kind = media_type(content_type)
    if not body.strip():
        raise error(400, "required", "The request body is empty")
    if kind in JSON_TYPES or kind == JSON_PATCH:
        return parse_json(body)
    if kind in XML_TYPES:
        from fhir_server.formats.xml import xml_to_resource

        return xml_to_resource(body, max_bytes=max_bytes)
    raise error(415, "not-supported", f"Content-Type {content_type or '(none)'} is not supported: send "
                "application/fhir+json or application/fhir+xml")


def render(body: dict, fmt: str, pretty: bool) -> bytes:
    if fmt == "xml":
        from fhir_server.formats.xml import resource_to_xml

        return resource_to_xml(body, pretty=pretty)
    return dump_json(body, pretty=pretty)
