"""The searchset Bundle: entries, paging links, `_summary` and `_elements`."""

from __future__ import annotations

import copy
import functools
import uuid
from urllib.parse import urlencode

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import Issue, operation_outcome

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


@functools.cache
def _top_level(definitions: Definitions, resource_type: str) -> tuple[tuple[str, bool, bool, bool], ...]:
    """(name, is_choice, in_summary, mandatory) for each top-level element of a resource type."""
    sd = definitions.base_types.get(resource_type)
    if sd is None:
        return ()
    out = []
    for element in sd["snapshot"]["element"]:
        path = element["path"]
        if path.count(".") != 1:
            continue
        name = path.split(".", 1)[1]
        choice = name.endswith("[x]")
        out.append((name[:-3] if choice else name, choice, bool(element.get("isSummary")),
                    int(element.get("min", 0)) > 0))
    return tuple(out)


def _keep(resource: dict, wanted: set[str], choices: set[str]) -> dict:
    kept = {}
    for key, value in resource.items():
        stem = key[1:] if key.startswith("_") else key         # primitive extensions follow
        if key in _ALWAYS or stem in wanted or any(stem.startswith(c) and stem[len(c):][:1].isupper()
                                                     for c in choices):
            kept[key] = value
    return kept


def _mark_subsetted(resource: dict) -> dict:
    meta = copy.deepcopy(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", ()) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, dict(SUBSETTED)]
    return {**resource, "meta": meta}


def subset(definitions: Definitions, resource: dict, summary: str | None, elements: list[str] | None) -> dict:
    """Apply `_summary` (true, text, data) or `_elements`; a subset is tagged SUBSETTED."""
    if summary in (None, "false", "count") and not elements:
        return resource
    elements_info = _top_level(definitions, resource.get("resourceType", ""))
    if summary == "data":
        return _mark_subsetted({k: v for k, v in resource.items() if k not in ("text", "_text")})
    if summary == "true":
        wanted = {n for n, choice, in_summary, _m in elements_info if in_summary and not choice}
        choices = {n for n, choice, in_summary, _m in elements_info if in_summary and choice}
    elif summary == "text":
        wanted = {"text"} | {n for n, choice, _s, mandatory in elements_info if mandatory and not choice}
        choices = {n for n, choice, _s, mandatory in elements_info if mandatory and choice}
    else:
        requested = {e.split(".", 1)[0] for e in elements or ()}
        mandatory = {n for n, _c, _s, m in elements_info if m}
        wanted = requested | mandatory
        choices = {n for n, choice, _s, _m in elements_info if choice and n in wanted}
    return _mark_subsetted(_keep(resource, wanted, choices))


def entry(base_url: str, resource_type: str, resource: dict, mode: str) -> dict:
    return {"fullUrl": f"{base_url.rstrip('/')}/{resource_type}/{resource.get('id')}", "resource": resource,
            "search": {"mode": mode}}


def contained_entry(base_url: str, container_type: str, container_id: str, resource: dict, mode: str) -> dict:
    """A contained resource as a result of its own (`_containedType=contained`): its fullUrl is its
    container's URL and its id as a fragment, the way it is referenced inside the container."""
    return {"fullUrl": f"{base_url.rstrip('/')}/{container_type}/{container_id}#{resource.get('id')}",
            "resource": resource, "search": {"mode": mode}}


def outcome_entry(issues: list[Issue]) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": operation_outcome(issues),
            "search": {"mode": "outcome"}}


def link(base_url: str, path: str, params: list[tuple[str, str]], relation: str) -> dict:
    url = f"{base_url.rstrip('/')}/{path}" if path else base_url.rstrip("/")
    query = urlencode(params)
    return {"relation": relation, "url": f"{url}?{query}" if query else url}


def searchset(entries: list[dict], links: list[dict], total: int | None) -> dict:
    bundle: dict = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle
