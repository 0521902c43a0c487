"""batch and transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction).

A transaction is atomic: ids are assigned and `urn:uuid:` / conditional references resolved
first, then the entries run in the order the specification prescribes (DELETE, POST, PUT/PATCH,
then GET) inside one database transaction; the first failure aborts everything. A batch runs
each entry on its own and reports each outcome.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import FhirError, Issue, bad_request, error, operation_outcome
from fhir_server.engine.interactions import Interactions, query_items
from fhir_server.engine.model import ID_PATTERN, RequestContext, Result, etag, instant, new_id
from fhir_server.formats.json import parse_json

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}

GetHandler = Callable[[str, list[tuple[str, str]], RequestContext], Result]


@dataclass
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: list[tuple[str, str]]
    raw: dict
    url: str

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


class BundleProcessor:
    def __init__(self, definitions: Definitions, interactions: Interactions, get_handler: GetHandler,
                 max_entries: int = 10_000) -> None:
        self.definitions = definitions
        self.interactions = interactions
        self.get_handler = get_handler       # runs a GET url (read, vread, search, history)
        self.max_entries = max_entries
        # Business checks of a whole bundle before it runs (e.g. an ITI-65 provide bundle): each
        # takes the bundle and the context and returns the bundle to run, or raises FhirError.
        self.rules: list[Callable[[dict, RequestContext], dict]] = []

    def process(self, bundle: Any, ctx: RequestContext) -> dict:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise bad_request("POST to the base URL takes a Bundle of type batch or transaction", "resourceType")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise bad_request(f"Bundle.type must be 'batch' or 'transaction' here, not {kind!r}", "Bundle.type")
        raw_entries = bundle.get("entry") or []
        if len(raw_entries) > self.max_entries:
            raise error(413, "too-costly", f"A {kind} may hold at most {self.max_entries} entries",
                        "Bundle.entry")
        # Entry resources are validated one by one when each entry runs, so that a batch can
        # report each entry's own outcome; here only the Bundle's own structure is checked.
        issues = self.interactions.validate(_without_entry_resources(bundle), "Bundle")
        if any(i.severity in ("error", "fatal") for i in issues):
            raise FhirError(400, issues)
        for rule in self.rules:
            bundle = rule(bundle, ctx)
        raw_entries = bundle.get("entry") or []
        if kind == "transaction":
            return self._transaction(raw_entries, ctx)
        return self._batch(raw_entries, ctx)

    # -- transaction -------------------------------------------------------------------------
    def _transaction(self, raw_entries: list[dict], ctx: RequestContext) -> dict:
        if not self.interactions.store.supports_transactions:
            raise error(501, "not-supported",
                        "Transaction bundles need a MongoDB replica set or sharded cluster (multi-document "
                        "transactions); this database is a standalone server. Use a batch, or a replica set.")
        entries = [self._parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
        _check_unique_full_urls(raw_entries)
        references = self._assign_identities(entries, ctx)
        for entry in entries:
            if "resource" in entry.raw:
                entry.raw = {**entry.raw, "resource": self._resolve_references(entry, references, ctx)}
        results: dict[int, Result] = {}
        ordered = sorted(entries, key=lambda e: METHOD_ORDER[e.method])
        writes = [e for e in ordered if e.method not in ("GET", "HEAD")]
        def run_writes(session: Any) -> None:
            for entry in writes:
                results[entry.index] = self._guarded(entry, lambda e=entry: self._write(e, ctx, session))

        self.interactions.store.run_in_transaction(run_writes)
        for entry in ordered:
            if entry.method in ("GET", "HEAD"):
                results[entry.index] = self._guarded(entry, lambda e=entry: self._get(e, ctx))
        return {"resourceType": "Bundle", "type": "transaction-response",
                "entry": [_response_entry(results[e.index], ctx) for e in entries]}

    def _assign_identities(self, entries: list[_Entry], ctx: RequestContext) -> dict[str, str]:
        """fullUrl -> `Type/id` for every entry that creates or updates a resource."""
        references: dict[str, str] = {}
        for entry in entries:
            full_url = entry.raw.get("fullUrl")
            target: str | None = None
            if entry.method == "POST":
                target = self._identity_for_create(entry, ctx)
            elif entry.method == "PUT":
                target = self._identity_for_update(entry, ctx)
            if full_url and target:
                references[full_url] = target
        return references

    def _identity_for_create(self, entry: _Entry, ctx: RequestContext) -> str:
        condition = entry.raw["request"].get("ifNoneExist")
        if condition:
            matches = self._guarded_search(entry, query_items(condition), ctx)
            if len(matches) == 1:
                entry.raw = {**entry.raw, "_existing": matches[0]}
                return f"{entry.resource_type}/{matches[0]}"
        entry.resource_id = new_id()
        return f"{entry.resource_type}/{entry.resource_id}"

    def _identity_for_update(self, entry: _Entry, ctx: RequestContext) -> str:
        if entry.resource_id:
            return f"{entry.resource_type}/{entry.resource_id}"
        matches = self._guarded_search(entry, entry.query, ctx)
        if len(matches) > 1:
            raise _at(entry, error(412, "conflict", "The conditional update matches several resources"))
        body_id = (entry.raw.get("resource") or {}).get("id")
        entry.resource_id = matches[0] if matches else body_id or new_id()
        return f"{entry.resource_type}/{entry.resource_id}"

    def _guarded_search(self, entry: _Entry, query: list[tuple[str, str]], ctx: RequestContext) -> list[str]:
        try:
            return self.interactions.matching(ctx, entry.resource_type, query)
        except FhirError as exc:
            raise _at(entry, exc) from None

    def _resolve_references(self, entry: _Entry, references: dict[str, str], ctx: RequestContext) -> dict:
        """Rewrite references to bundle entries (urn:uuid:, fullUrl) and resolve conditional
        references (`Patient?identifier=...`) to the one resource they match."""

        def rewrite(node: Any, path: str) -> Any:
            if isinstance(node, dict):
                out = {}
                for key, value in node.items():
                    child = f"{path}.{key}"
                    if key == "reference" and isinstance(value, str):
                        out[key] = self._resolve_one(entry, value, references, child, ctx)
                    else:
                        out[key] = rewrite(value, child)
                return out
            if isinstance(node, list):
                return [rewrite(item, f"{path}[{i}]") for i, item in enumerate(node)]
            if isinstance(node, str) and node.startswith("urn:uuid:") and node in references:
                return references[node]      # e.g. Attachment.url pointing at a Binary entry
            return node

        resource = entry.raw["resource"]
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            return resource     # a nested Bundle (a FHIR document) resolves its references itself
        return rewrite(entry.raw["resource"], f"{entry.where}.resource")

    def _resolve_one(self, entry: _Entry, value: str, references: dict[str, str], path: str,
                     ctx: RequestContext) -> str:
        if value in references:
            return references[value]
        if value.startswith(("urn:uuid:", "urn:oid:")):
            raise _at(entry, error(404, "not-found",
                                   f"The reference {value} points at no entry of this transaction", path))
        head, _, query = value.partition("?")
        if query and "/" not in head and self.definitions.is_resource_type(head):
            matches = self.interactions.matching(ctx, head, query_items(query))
            if len(matches) != 1:
                found = "no resource" if not matches else "several resources"
                raise _at(entry, error(404 if not matches else 412, "not-found" if not matches else "conflict",
                                       f"The conditional reference {value} matches {found}; it must match "
                                       "exactly one", path))
            return f"{head}/{matches[0]}"
        return value

    def _write(self, entry: _Entry, ctx: RequestContext, session: Any) -> Result:
        interactions = self.interactions
        request = entry.raw["request"]
        resource = entry.raw.get("resource")
        if entry.method == "POST":
            existing = entry.raw.get("_existing")
            if existing:
                return interactions.read(entry.resource_type, existing, ctx, session)
            return interactions.create(entry.resource_type, resource, ctx, session=session,
                                       resource_id=entry.resource_id)
        if entry.method == "PUT":
            body = {**resource, "id": entry.resource_id} if isinstance(resource, dict) else resource
            return interactions.update(entry.resource_type, entry.resource_id, body, ctx,
                                       if_match=request.get("ifMatch"), session=session)
        if entry.method == "PATCH":
            patch_body, patch_format = _patch_of(entry)
            if entry.resource_id is None:
                return interactions.conditional_patch(entry.resource_type, entry.query, patch_body, patch_format,
                                                      ctx, session=session)
            return interactions.patch(entry.resource_type, entry.resource_id, patch_body, patch_format, ctx,
                                      if_match=request.get("ifMatch"), session=session)
        if entry.resource_id is None:
            return interactions.conditional_delete(entry.resource_type, entry.query, ctx, session=session)
        return interactions.delete(entry.resource_type, entry.resource_id, ctx,
                                   if_match=request.get("ifMatch"), session=session)

    def _get(self, entry: _Entry, ctx: RequestContext) -> Result:
        return self.get_handler(entry.url, entry.query, ctx)

    @staticmethod
    def _guarded(entry: _Entry, action: Callable[[], Result]) -> Result:
        try:
            return action()
        except FhirError as exc:
            raise _at(entry, exc) from None

    # -- batch -------------------------------------------------------------------------------
    def _batch(self, raw_entries: list[dict], ctx: RequestContext) -> dict:
        out = []
        for index, raw in enumerate(raw_entries):
            try:
                entry = self._parse_entry(index, raw)
                if entry.method in ("GET", "HEAD"):
                    result = self._get(entry, ctx)
                else:
                    if entry.method == "POST":
                        entry.resource_id = None
                        condition = raw["request"].get("ifNoneExist")
                        result = self.interactions.create(entry.resource_type, raw.get("resource"), ctx,
                                                          if_none_exist=condition)
                    elif entry.method == "PUT" and entry.resource_id is None:
                        result = self.interactions.conditional_update(entry.resource_type, entry.query,
                                                                      raw.get("resource"), ctx)
                    else:
                        result = self._write(entry, ctx, None)
                out.append(_response_entry(result, ctx))
            except FhirError as exc:
                out.append({"response": {"status": str(exc.status),
                                         "outcome": operation_outcome(_at(_stub(index), exc).issues)}})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": out}

    # -- parsing -----------------------------------------------------------------------------
    def _parse_entry(self, index: int, raw: Any) -> _Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict):
            raise bad_request(f"{where} must be an object", where)
        request = raw.get("request")
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise bad_request(f"{where}.request with method and url is required in a batch or transaction",
                              f"{where}.request")
        method = str(request["method"]).upper()
        if method not in METHOD_ORDER:
            raise bad_request(f"{where}.request.method {method!r} is not supported", f"{where}.request.method")
        url = str(request["url"])
        parts = urlsplit(url)
        path = parts.path.strip("/")
        segments = [s for s in path.split("/") if s]
        query = query_items(parts.query) if parts.query else []
        resource_type = segments[0] if segments else ""
        resource_id = segments[1] if len(segments) > 1 and not segments[1].startswith("$") else None
        if method != "GET" and method != "HEAD":
            if not self.definitions.is_resource_type(resource_type):
                raise error(404, "not-supported", f"{where}.request.url: unknown resource type {resource_type!r}",
                            f"{where}.request.url")
            if resource_id is not None and not ID_PATTERN.match(resource_id):
                raise bad_request(f"{where}.request.url: {resource_id!r} is not a valid id", f"{where}.request.url")
            if method in ("POST", "PUT") and not isinstance(raw.get("resource"), dict):
                raise bad_request(f"{where} needs a resource for {method}", f"{where}.resource")
            if method == "PUT" and resource_id is None and not query:
                raise bad_request(f"{where}.request.url: PUT needs Type/id or search criteria",
                                  f"{where}.request.url")
        return _Entry(index, method, resource_type, resource_id, query, raw, url)


def _patch_of(entry: _Entry) -> tuple[Any, str]:
    resource = entry.raw.get("resource")
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource, "fhirpath-patch"
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            content = base64.b64decode(resource.get("data", ""))
            if str(resource.get("contentType", "")).split(";")[0].strip() == "application/xml-patch+xml":
                return content, "xml-patch"
            return parse_json(content), "json-patch"          # decimals kept exact, as in any FHIR JSON
        except (ValueError, FhirError):
            raise bad_request("The Binary of a patch entry must hold a JSON Patch (or, with contentType "
                              "application/xml-patch+xml, an XML Patch) in base64", f"{entry.where}.resource.data") \
                from None
    raise bad_request("A PATCH entry carries a Parameters resource (FHIRPath Patch) or a Binary holding a "
                      "JSON Patch or an XML Patch", f"{entry.where}.resource")


def _without_entry_resources(bundle: dict) -> dict:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return bundle
    stripped = [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries]
    return {**bundle, "entry": stripped}


def _check_unique_full_urls(raw_entries: list[dict]) -> None:
    seen: set[str] = set()
    for index, raw in enumerate(raw_entries):
        full_url = raw.get("fullUrl") if isinstance(raw, dict) else None
        if full_url and full_url in seen:
            raise bad_request(f"fullUrl {full_url} appears more than once in the transaction",
                              f"Bundle.entry[{index}].fullUrl")
        if full_url:
            seen.add(full_url)


def _response_entry(result: Result, ctx: RequestContext) -> dict:
    response: dict[str, Any] = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    if result.location:
        response["location"] = result.location
    if result.version_id:
        response["etag"] = etag(result.version_id)
    if result.last_modified:
        response["lastModified"] = instant(result.last_modified)
    entry: dict[str, Any] = {}
    body = result.body
    if body is not None and body.get("resourceType") == "OperationOutcome":
        response["outcome"] = body
    elif body is not None and ctx.prefer_return != "minimal":
        entry["resource"] = body
    if body is not None and "id" in body and body.get("resourceType") != "Bundle":
        entry["fullUrl"] = f"{ctx.base_url}/{body['resourceType']}/{body['id']}"
    entry["response"] = response
    return entry


def _stub(index: int) -> _Entry:
    return _Entry(index, "GET", "", None, [], {}, "")


def _at(entry: _Entry, exc: FhirError) -> FhirError:
    """Name the failing entry in every issue, so the integrator sees which entry to fix."""
    prefix = f"{entry.where}"
    issues = []
    for issue in exc.issues:
        expressions = tuple(_rebase(e, entry) for e in issue.expression) or (prefix,)
        diagnostics = issue.diagnostics if issue.diagnostics.startswith("Bundle.entry[") else \
            f"{prefix}: {issue.diagnostics}"
        issues.append(Issue(issue.severity, issue.code, diagnostics, expressions))
    return FhirError(exc.status, issues, exc.headers)


def _rebase(expression: str, entry: _Entry) -> str:
    if expression.startswith("Bundle.entry["):
        return expression
    head, dot, rest = expression.partition(".")
    if head and head[0].isupper():
        return f"{entry.where}.resource" + (f".{rest}" if dot else "")
    return f"{entry.where}.{expression}"


