"""Small value types shared by the interactions."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dateutil import parser as date_parser

from fhir_server.engine.errors import bad_request

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-\.]{1,64}$")


@dataclass
class RequestContext:
    """What an interaction needs to know about the request, independent of HTTP."""

    base_url: str
    prefer_return: str = "representation"      # minimal | representation | OperationOutcome
    strict_handling: bool = False               # Prefer: handling=strict
    access: Any = None                          # access.policy.RequestAccess of the authenticated actor
    observed: bool = False                      # the access observers (audit) have seen this request
    # Access data (`_acl`) of the current versions this request read, by "Type/id": the audit
    # trail learns from them what it would otherwise look up again.
    read_acls: dict[str, dict | None] = field(default_factory=dict)
    # The same for the matches of the search this request ran last (set afresh by each search).
    found_acls: dict[str, dict | None] = field(default_factory=dict)


@dataclass
class Result:
    """The outcome of one interaction: a status, an optional body, and version facts for headers."""

    status: int
    body: dict | None = None
    version_id: str | None = None
    last_modified: datetime | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    """Current instant, truncated to the millisecond (BSON dates hold milliseconds)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def etag(version_id: str | int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str) -> str:
    """`W/"3"` or `"3"` -> `3`."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def instant_or_none(value: object) -> datetime | None:
    """A FHIR instant/dateTime string as an aware datetime (UTC when no offset), None when it is
    absent or not a date."""
    if not isinstance(value, str):
        return None
    try:
        moment = date_parser.isoparse(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_instant_param(value: str, name: str) -> datetime:
    """A date/instant search or history parameter (`_since`, `_at`...): 400 naming it when invalid."""
    moment = instant_or_none(value)
    if moment is None:
        raise bad_request(f"{name}={value!r} is not a valid FHIR instant or date", name)
    return moment


def encode_time_cursor(moment: datetime, key: str) -> str:
    """A stateless keyset cursor (an instant and a tie-breaking key) for `next` links."""
    raw = f"{instant(moment)}|{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_time_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        moment, key = raw.split("|", 1)
        return date_parser.isoparse(moment), key
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The paging cursor is not valid: follow the links the server returned",
                          "_cursor") from None
