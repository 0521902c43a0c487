"""`GET Patient/[id]/$access-history`: who accessed a patient's record, newest first.

Independent of HTTP: takes the patient, the query parameters and the public base URL, returns a
searchset Bundle of the patient's AuditEvents. Each entry carries, in `search.extension`
(`SUMMARY_URL`), a readable summary (who with RPPS, profession and organisation; when; what, by
document title or type; how: read, search, emergency, refused...) so that a patient app can show
the list without understanding AuditEvent.

Parameters: `_count` (default 20, at most 100), `_since` (instant or date: events recorded at or
after), `exclude-self=true` (leave out the patient's own accesses), `_cursor` (keyset position,
only as found in a `next` link). Who may call it (the patient, an auditor) is the caller's
decision.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fhir_server.audit.summary import summarise
from fhir_server.engine.errors import bad_request
from fhir_server.engine.model import decode_time_cursor, encode_time_cursor, parse_instant_param
from fhir_server.storage import MongoStore, restricted

AUDIT_EVENT = "AuditEvent"
DEFAULT_COUNT = 20
MAX_COUNT = 100
NEWEST_FIRST = [("_audit.recorded", -1), ("_id", -1)]


def access_history(store: MongoStore, patient: str, params: list[tuple[str, str]], base_url: str,
                   where: dict | None = None) -> dict:
    """`where`: the caller's access filter on AuditEvent (a patient does not see the events about
    what is invisible to them)."""
    patient = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    options = _options(params)
    query = _query(patient, options)
    query = restricted(query, where)
    found = store.find(AUDIT_EVENT, query, sort=NEWEST_FIRST, limit=options["count"] + 1)
    page, more = found[:options["count"]], len(found) > options["count"]
    base_url = base_url.rstrip("/")
    path = f"{patient}/$access-history"
    links = [{"relation": "self", "url": _url(base_url, path, params)}]
    if more:
        kept = [(k, v) for k, v in params if k != "_cursor"]
        links.append({"relation": "next", "url": _url(base_url, path, [*kept, ("_cursor", _cursor(page[-1]))])})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [_entry(base_url, doc, patient) for doc in page],
    }


def _entry(base_url: str, doc: dict, patient: str) -> dict:
    resource = doc["resource"]
    return {
        "fullUrl": f"{base_url}/{AUDIT_EVENT}/{resource['id']}",
        "resource": resource,
        "search": {"extension": [summarise(resource, patient).to_extension()], "mode": "match"},
    }


def _options(params: list[tuple[str, str]]) -> dict:
    options: dict = {"count": DEFAULT_COUNT, "since": None, "exclude_self": False, "cursor": None}
    for name, value in params:
        if name == "_count":
            if not value.isdigit():
                raise bad_request(f"_count={value!r} must be a non-negative integer", "_count")
            options["count"] = max(1, min(int(value), MAX_COUNT))
        elif name == "_since":
            options["since"] = parse_instant_param(value, "_since")
        elif name == "exclude-self":
            if value not in ("true", "false"):
                raise bad_request(f"exclude-self={value!r} must be true or false", "exclude-self")
            options["exclude_self"] = value == "true"
        elif name == "_cursor":
            options["cursor"] = decode_time_cursor(value)
    return options


def _query(patient: str, options: dict) -> dict:
    """The patient at the top (the store serves it from the index {patient, recorded, _id}), the
    other conditions in `$and`, tested on that patient's events. The date range stays there too:
    the embedded database misreads a range on the descending `recorded` of that index."""
    query: dict = {"_audit.patient": patient}
    tested: list[dict] = []
    if options["since"] is not None:
        tested.append({"_audit.recorded": {"$gte": options["since"]}})
    if options["exclude_self"]:
        tested.append({"_audit.self": {"$ne": True}})
    if options["cursor"] is not None:
        moment, last_id = options["cursor"]
        tested.append({"$or": [{"_audit.recorded": {"$lt": moment}},
                               {"_audit.recorded": moment, "_id": {"$lt": last_id}}]})
    return {**query, "$and": tested} if tested else query


def _cursor(doc: dict) -> str:
    return encode_time_cursor(doc["_audit"]["recorded"], doc["_id"])


def _url(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base_url}/{path}" + (f"?{query}" if query else "")
