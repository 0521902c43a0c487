"""The R4 channels: what one delivery attempt does.

- rest-hook without payload: `POST [endpoint]` with an empty body ("something matching your
  criteria changed: search again").
- rest-hook with payload: the endpoint is a FHIR base; `PUT [endpoint]/[type]/[id]` with the
  resource in the payload's format (R4 SubscriptionChannelType definition).
- websocket: `ping <subscription id>` to the clients bound to the subscription in this process.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from fhir_server.formats.json import dump_json
from fhir_server.formats.xml import resource_to_xml
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


def rest_hook(channel: dict, resource: dict | None, timeout: float) -> Outcome:
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
    return _send(request, timeout)


def _send(request: urllib.request.Request, timeout: float) -> Outcome:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Outcome(True, response.status)
    except urllib.error.HTTPError as exc:
        return Outcome(False, exc.code, f"{request.get_method()} {request.full_url} answered {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(False, None, f"{request.get_method()} {request.full_url} failed: {reason}")


def websocket(hub: WebsocketHub, subscription_id: str) -> Outcome:
    received = hub.publish(subscription_id, f"ping {subscription_id}")
    if received:
        return Outcome(True)
    return Outcome(True, error="no websocket client was bound to the subscription", skipped=True)
