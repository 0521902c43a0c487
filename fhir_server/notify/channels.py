"""The R4 channels: what one delivery attempt does.

- rest-hook without payload: `POST [endpoint]` with an empty body ("something matching your
  criteria changed: search again").
- rest-hook with payload: the endpoint is a FHIR base; `PUT [endpoint]/[type]/[id]` with the
  resource in the payload's format (R4 SubscriptionChannelType definition).
- websocket: `ping <subscription id>` to the clients bound to the subscription in this process.

A rest-hook attempt first asks the endpoint policy (endpoints.py) for the address to call, then
connects to that very address (the host name still goes in the Host header and TLS checks), with
no proxy from the environment and no redirect followed: nothing else may choose where it goes.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.formats.json import dump_json
from fhir_server.formats.xml import resource_to_xml
from fhir_server.notify.endpoints import EndpointPolicy, EndpointRefused
from fhir_server.notify.hub import WebsocketHub

JSON_PAYLOADS = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
XML_PAYLOADS = frozenset({"application/fhir+xml", "application/xml", "application/xml+fhir"})
SUPPORTED_CHANNELS = frozenset({"rest-hook", "websocket"})
USER_AGENT = "Espace-FHIR-Subscriptions/1.0"


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt. `skipped` means there was nobody to tell (no websocket client
    bound): not a failure of the subscriber's endpoint, so it does not count towards `error`."""

    ok: bool
    status: int | None = None
    error: str | None = None
    skipped: bool = False
    refused: bool = False            # the endpoint policy forbids calling it: retrying will not help


def header_pairs(headers: list[str]) -> list[tuple[str, str]]:
    """R4 `channel.header` values are whole HTTP header lines: `Name: value`."""
    pairs = []
    for line in headers:
        name, separator, value = line.partition(":")
        if not separator or not name.strip():
            raise ValueError(f"channel.header {line!r} is not an HTTP header line 'Name: value'")
        pairs.append((name.strip(), value.strip()))
    return pairs


def payload_kind(payload: str | None) -> str | None:
    """None (empty notification), "json" or "xml"; ValueError for an unsupported MIME type."""
    if not payload:
        return None
    mime = payload.split(";")[0].strip().lower()
    if mime in JSON_PAYLOADS:
        return "json"
    if mime in XML_PAYLOADS:
        return "xml"
    raise ValueError(f"channel.payload {payload!r} is not supported (use application/fhir+json or "
                     "application/fhir+xml, or leave it empty)")


def rest_hook(channel: dict, resource: dict | None, timeout: float, policy: EndpointPolicy) -> Outcome:
    """One rest-hook attempt. `resource` is the current version of the resource that triggered
    it (sent only when the channel asks for a payload)."""
    kind = payload_kind(channel.get("payload"))
    endpoint = channel["endpoint"]
    headers = {"User-Agent": USER_AGENT, **dict(header_pairs(channel.get("headers") or []))}
    if kind is None or resource is None:
        # no data: an empty POST (Content-Length: 0) without an invented Content-Type
        request = urllib.request.Request(endpoint, data=None, method="POST", headers=headers)
    else:
        body = dump_json(resource) if kind == "json" else resource_to_xml(resource)
        headers["Content-Type"] = f"application/fhir+{kind}; charset=utf-8"
        url = f"{endpoint.rstrip('/')}/{resource['resourceType']}/{resource['id']}"
        request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    try:
        address = policy.address_for(request.full_url)
    except EndpointRefused as exc:
        return Outcome(False, None, f"{request.get_method()} {request.full_url} refused: {exc}", refused=True)
    except OSError as exc:
        return Outcome(False, None, f"{request.get_method()} {request.full_url} failed: cannot resolve the host: {exc}")
    return _send(request, timeout, address)


def _send(request: urllib.request.Request, timeout: float, address: str) -> Outcome:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects(), _PinnedHandler(address))
    try:
        with opener.open(request, timeout=timeout) as response:
            return Outcome(True, response.status)
    except urllib.error.HTTPError as exc:
        return Outcome(False, exc.code, f"{request.get_method()} {request.full_url} answered {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(False, None, f"{request.get_method()} {request.full_url} failed: {reason}")


def _pinned(connection_class: type[http.client.HTTPConnection], address: str) -> Callable[..., Any]:
    """A connection class bound to `address` whatever its host resolves to now."""
    def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        made = connection_class(host, **kwargs)
        # http.client keeps its socket factory as an attribute for this kind of substitution;
        # HTTPS then wraps the socket with the host name (SNI, certificate check).
        made._create_connection = lambda target, *args: socket.create_connection((address, target[1]), *args)
        return made
    return connection


class _PinnedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http and https connections to one checked address."""

    def __init__(self, address: str) -> None:
        urllib.request.HTTPSHandler.__init__(self)
        self.address = address

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_pinned(http.client.HTTPConnection, self.address), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_pinned(http.client.HTTPSConnection, self.address), req)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere, past the endpoint policy: it is an answer, not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:
        return None


def websocket(hub: WebsocketHub, subscription_id: str) -> Outcome:
    received = hub.publish(subscription_id, f"ping {subscription_id}")
    if received:
        return Outcome(True)
    return Outcome(True, error="no websocket client was bound to the subscription", skipped=True)
