"""The instance and type level interactions: create, read, vread, update, patch, delete and
history, with their conditional and version-aware variants.

Every write stores the resource exactly as accepted (only `meta.versionId` and `meta.lastUpdated`
are set by the server), its extracted search index, and a history version, in one transaction
when the deployment has transactions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode

from fhir_server.engine import patch as patching
from fhir_server.engine.errors import (
    FhirError,
    Issue,
    bad_request,
    error,
    gone,
    not_found,
    precondition_failed,
)
from fhir_server.engine.model import (
    ID_PATTERN,
    RequestContext,
    Result,
    decode_time_cursor,
    encode_time_cursor,
    etag,
    instant,
    new_id,
    now,
    parse_etag,
    parse_instant_param,
)
from fhir_server.storage import MongoStore, Session, StorageConflict, restricted

if TYPE_CHECKING:
    from fhir_server.access.policy import AccessPolicy

DEFAULT_HISTORY_COUNT = 20
MAX_HISTORY_COUNT = 1000
# An update or patch without If-Match that loses a race is applied again to the new current
# version (last writer wins, as the client did not ask for a version check).
UNVERSIONED_WRITE_ATTEMPTS = 5


class ConcurrentModification(FhirError):
    """409: another writer changed the resource between our read and our write."""


class Search(Protocol):
    def matching_ids(self, resource_type: str, params: list[tuple[str, str]], limit: int = 2,
                     extra_filter: Any = None) -> list[str]: ...


class Indexer(Protocol):
    def extract_index(self, resource: dict) -> dict: ...


Validate = Callable[[dict, str], list[Issue]]


@dataclass
class WriteEvent:
    """One write, as business modules see it: before it is stored (rules may refuse it by raising
    FhirError) and once stored, inside its transaction (hooks: audit, notifications, consent)."""

    ctx: RequestContext
    interaction: str                 # create | update | patch | delete
    resource_type: str
    resource_id: str
    old: dict | None                 # the current resource before the write
    new: dict | None                 # the resource being stored (None for a delete)
    acl: dict | None                 # access data of the new (or, for a delete, the old) version
    version: int
    session: Session = None
    old_acl: dict | None = None      # access data of the current version before the write


WriteHook = Callable[[WriteEvent], None]


class Interactions:
    def __init__(self, store: MongoStore, indexer: Indexer, search: Search, validate: Validate,
                 policy: AccessPolicy | None = None) -> None:
        self.store = store
        self.indexer = indexer
        self.search = search
        self.validate = validate
        self.policy = policy
        # Business modules plug in here: rules run before a write is stored and may refuse it;
        # hooks run once it is stored, in the same transaction (audit, notifications, consent).
        self.write_rules: list[WriteHook] = []
        self.write_hooks: list[WriteHook] = []
        # Creates a module may take over case by case (e.g. ITI-105 publication of an inline
        # document): each returns a Result to handle the create, or None to let it through.
        self.create_interceptors: list[Callable[..., Result | None]] = []
        # Types whose create is handled by their module (e.g. AuditEvent joins the audit chain).
        self.create_overrides: dict[str, Callable[[dict, RequestContext, Session], Result]] = {}

    # -- read side ---------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str, ctx: RequestContext, session: Session = None) -> Result:
        self._guard(ctx, resource_type, "read")
        where = self.read_filter(ctx, resource_type)
        doc = self.store.get(resource_type, resource_id, session, where)
        if doc is None:
            raise self._missing(resource_type, resource_id, session, where)
        ctx.read_acls[f"{resource_type}/{resource_id}"] = doc.get("_acl")
        return _result(200, doc["resource"], doc["_ver"], doc["_lastUpdated"])

    def vread(self, resource_type: str, resource_id: str, version: str, ctx: RequestContext) -> Result:
        self._guard(ctx, resource_type, "vread")
        if not version.isdigit():
            raise not_found(f"Version '{version}' of {resource_type}/{resource_id} does not exist")
        entry = self.store.get_version(resource_type, resource_id, int(version), self.read_filter(ctx, resource_type))
        if entry is None:
            raise not_found(f"Version {version} of {resource_type}/{resource_id} does not exist")
        if entry["resource"] is None:
            exc = gone(f"Version {version} of {resource_type}/{resource_id} is a deletion")
            exc.headers["ETag"] = etag(entry["ver"])
            raise exc
        return _result(200, entry["resource"], entry["ver"], entry["lastUpdated"])

    def _missing(self, resource_type: str, resource_id: str, session: Session, where: dict | None = None
                 ) -> FhirError:
        latest = self.store.latest_version(resource_type, resource_id, session, where)
        if latest is not None and latest["resource"] is None:
            exc = gone(f"{resource_type}/{resource_id} was deleted (version {latest['ver']})")
            exc.headers["ETag"] = etag(latest["ver"])
            return exc
        return not_found(f"{resource_type}/{resource_id} does not exist")

    # -- create ------------------------------------------------------------------------------
    def create(self, resource_type: str, resource: Any, ctx: RequestContext,
               if_none_exist: str | None = None, session: Session = None,
               resource_id: str | None = None) -> Result:
        self._guard(ctx, resource_type, "create")
        if if_none_exist:
            matches = self.matching(ctx, resource_type, _query_items(if_none_exist))
            if len(matches) > 1:
                raise precondition_failed(
                    f"If-None-Exist '{if_none_exist}' matches {len(matches)} resources; it must match at most one")
            if matches:
                existing = self.read(resource_type, matches[0], ctx, session)
                existing.status = 200
                return existing
        self._check_body(resource_type, resource)
        for intercept in self.create_interceptors:
            handled = intercept(resource_type, resource, ctx, if_none_exist, session, resource_id)
            if handled is not None:
                return handled
        override = self.create_overrides.get(resource_type)
        if override is not None:
            return self._create_by_module(override, resource_type, resource, ctx, session)
        return self._store_new(resource_type, resource_id or new_id(), resource, ctx, session, version=1)

    def _create_by_module(self, override: Callable[[dict, RequestContext, Session], Result], resource_type: str,
                          resource: dict, ctx: RequestContext, session: Session) -> Result:
        # the module stores it its own way, but the write rules (profiles...) still apply
        self._run(self.write_rules, WriteEvent(ctx, "create", resource_type, str(resource.get("id", "")), None,
                                               resource, None, 1, session))
        return override(resource, ctx, session)

    def _create_by_update(self, resource_type: str, resource_id: str, resource: dict, ctx: RequestContext,
                          session: Session, version: int) -> Result:
        """A resource created by an update (update-as-create, a conditional update matching
        nothing): a type whose creates its module handles goes through the module as a POST would,
        with the id asked for (an AuditEvent PUT joins the audit chain and its checks too)."""
        override = self.create_overrides.get(resource_type)
        if override is None:
            return self._store_new(resource_type, resource_id, resource, ctx, session, version)
        return self._create_by_module(override, resource_type, {**resource, "id": resource_id}, ctx, session)

    def _store_new(self, resource_type: str, resource_id: str, resource: dict, ctx: RequestContext,
                   session: Session, version: int) -> Result:
        stored = _with_meta(resource, resource_id, version)
        moment = self._stamp(stored)
        doc = self._document(resource_type, stored, version, moment, ctx, session)
        event = WriteEvent(ctx, "create" if version == 1 else "update", resource_type, resource_id, None, stored,
                           doc.get("_acl"), version, session)
        self._run(self.write_rules, event)

        def write(s: Session) -> None:
            self.store.insert_with_version(resource_type, doc,
                                           _version_entry(resource_type, doc, "POST" if version == 1 else "PUT"), s)
            self._run(self.write_hooks, event, s)

        self._write(session, write)
        result = _result(201, stored, version, moment)
        result.location = f"{resource_type}/{resource_id}/_history/{version}"
        return result

    # -- update ------------------------------------------------------------------------------
    def update(self, resource_type: str, resource_id: str, resource: Any, ctx: RequestContext,
               if_match: str | None = None, session: Session = None) -> Result:
        self._guard(ctx, resource_type, "update")
        if not ID_PATTERN.match(resource_id):
            raise bad_request(f"'{resource_id}' is not a valid FHIR id ([A-Za-z0-9-.], 1 to 64 characters)")
        self._check_body(resource_type, resource)
        body_id = resource.get("id")
        if body_id is None:
            raise bad_request("The resource in an update must carry its id (it must equal the id in the URL)",
                              f"{resource_type}.id")
        if body_id != resource_id:
            raise bad_request(f"The resource id '{body_id}' does not match the id '{resource_id}' in the URL",
                              f"{resource_type}.id")
        return self._last_writer_wins(if_match, session, lambda: self._update_once(
            resource_type, resource_id, resource, ctx, if_match, session))

    def _update_once(self, resource_type: str, resource_id: str, resource: dict, ctx: RequestContext,
                     if_match: str | None, session: Session) -> Result:
        current = self._visible_current(resource_type, resource_id, ctx, session)
        if current is None:
            if if_match:
                raise precondition_failed(f"{resource_type}/{resource_id} does not exist; If-Match cannot hold")
            latest = self.store.latest_version(resource_type, resource_id, session)
            if latest is not None and self.store.latest_version(
                    resource_type, resource_id, session, self.read_filter(ctx, resource_type)) is None:
                # a deleted resource the caller may not see: its history may not be taken over
                raise not_found(f"{resource_type}/{resource_id} does not exist")
            version = latest["ver"] + 1 if latest else 1
            return self._create_by_update(resource_type, resource_id, resource, ctx, session, version)
        self._check_if_match(current, if_match)
        return self._replace(resource_type, current, resource, ctx, session, "update")

    def _visible_current(self, resource_type: str, resource_id: str, ctx: RequestContext,
                         session: Session) -> dict | None:
        """The current version; a resource the actor may not see answers as if it did not exist
        (and may not be overwritten by an update-as-create)."""
        where = self.read_filter(ctx, resource_type)
        if where is None:
            return self.store.get(resource_type, resource_id, session)
        # one read when the resource is visible (the usual case); a second tells hidden from absent
        visible = self.store.get(resource_type, resource_id, session, where)
        if visible is not None:
            return visible
        if self.store.get(resource_type, resource_id, session) is not None:
            raise not_found(f"{resource_type}/{resource_id} does not exist")
        return None

    def _replace(self, resource_type: str, current: dict, resource: dict, ctx: RequestContext,
                 session: Session, interaction: str) -> Result:
        version = current["_ver"] + 1
        stored = _with_meta(resource, current["_id"], version)
        moment = self._stamp(stored)
        doc = self._document(resource_type, stored, version, moment, ctx, session)
        event = WriteEvent(ctx, interaction, resource_type, current["_id"], current["resource"], stored,
                           doc.get("_acl"), version, session, old_acl=current.get("_acl"))
        self._run(self.write_rules, event)

        def write(s: Session) -> None:
            entry = _version_entry(resource_type, doc, "PATCH" if interaction == "patch" else "PUT")
            self.store.replace_with_version(resource_type, doc, current["_ver"], entry, s)
            self._run(self.write_hooks, event, s)

        self._write(session, write)
        return _result(200, stored, version, moment)

    def conditional_update(self, resource_type: str, query: list[tuple[str, str]], resource: Any,
                           ctx: RequestContext, session: Session = None) -> Result:
        matches = self._conditional_matches(ctx, resource_type, query, "update")
        self._check_body(resource_type, resource)
        body_id = resource.get("id")
        if not matches:
            if body_id is not None:
                return self.update(resource_type, body_id, resource, ctx, session=session)
            self._guard(ctx, resource_type, "create")
            return self._create_by_update(resource_type, new_id(), resource, ctx, session, version=1)
        if body_id is not None and body_id != matches[0]:
            raise bad_request(
                f"The resource id '{body_id}' differs from the id '{matches[0]}' of the resource the "
                "conditional update matched", f"{resource_type}.id")
        resource = {**resource, "id": matches[0]} if body_id is None else resource
        return self.update(resource_type, matches[0], _with_id_first(resource), ctx, session=session)

    def matching(self, ctx: RequestContext, resource_type: str, query: list[tuple[str, str]]) -> list[str]:
        """At most two ids matching the criteria among what the caller may see."""
        return self.search.matching_ids(resource_type, query, limit=2,
                                        extra_filter=lambda t: self.read_filter(ctx, t))

    def _conditional_matches(self, ctx: RequestContext, resource_type: str, query: list[tuple[str, str]],
                             what: str) -> list[str]:
        if not query:
            raise bad_request(f"A conditional {what} needs search criteria in the URL")
        matches = self.matching(ctx, resource_type, query)
        if len(matches) > 1:
            raise precondition_failed(
                f"The criteria of this conditional {what} match several {resource_type} resources; "
                "they must match one at most")
        return matches

    # -- patch -------------------------------------------------------------------------------
    def patch(self, resource_type: str, resource_id: str, patch_body: Any, patch_format: str,
              ctx: RequestContext, if_match: str | None = None, session: Session = None) -> Result:
        self._guard(ctx, resource_type, "patch")
        return self._last_writer_wins(if_match, session, lambda: self._patch_once(
            resource_type, resource_id, patch_body, patch_format, ctx, if_match, session))

    def _patch_once(self, resource_type: str, resource_id: str, patch_body: Any, patch_format: str,
                    ctx: RequestContext, if_match: str | None, session: Session) -> Result:
        current = self._visible_current(resource_type, resource_id, ctx, session)
        if current is None:
            raise self._missing(resource_type, resource_id, session, self.read_filter(ctx, resource_type))
        self._check_if_match(current, if_match)
        patched = apply_patch(current["resource"], patch_body, patch_format)
        if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
            raise error(422, "processing", "A patch may not change the resourceType or the id", f"{resource_type}.id")
        self._check_body(resource_type, patched)
        return self._replace(resource_type, current, patched, ctx, session, "patch")

    def conditional_patch(self, resource_type: str, query: list[tuple[str, str]], patch_body: Any,
                          patch_format: str, ctx: RequestContext, session: Session = None) -> Result:
        matches = self._conditional_matches(ctx, resource_type, query, "patch")
        if not matches:
            raise not_found(f"No {resource_type} matches the criteria of this conditional patch")
        return self.patch(resource_type, matches[0], patch_body, patch_format, ctx, session=session)

    # -- delete ------------------------------------------------------------------------------
    def delete(self, resource_type: str, resource_id: str, ctx: RequestContext,
               if_match: str | None = None, session: Session = None) -> Result:
        self._guard(ctx, resource_type, "delete")
        current = self._visible_current(resource_type, resource_id, ctx, session)
        if current is None:
            latest = self.store.latest_version(resource_type, resource_id, session,
                                               self.read_filter(ctx, resource_type))
            if latest is None:
                raise not_found(f"{resource_type}/{resource_id} does not exist")
            if if_match:
                raise precondition_failed(f"{resource_type}/{resource_id} is already deleted")
            return _deleted_result(f"{resource_type}/{resource_id} was already deleted", latest["ver"])
        self._check_if_match(current, if_match)
        if self.policy is not None and ctx.access is not None:
            self.policy.check_write(ctx.access, resource_type, current.get("_acl"))
        version = current["_ver"] + 1
        moment = now()
        event = WriteEvent(ctx, "delete", resource_type, resource_id, current["resource"], None, current.get("_acl"),
                           version, session, old_acl=current.get("_acl"))
        self._run(self.write_rules, event)

        def write(s: Session) -> None:
            tombstone = {
                "_id": f"{resource_type}/{resource_id}/{version}", "type": resource_type, "id": resource_id,
                "ver": version, "method": "DELETE", "lastUpdated": moment, "resource": None,
            }
            if current.get("_acl"):
                tombstone["_acl"] = current["_acl"]
            self.store.remove_with_version(resource_type, resource_id, current["_ver"], tombstone, s)
            self._run(self.write_hooks, event, s)

        self._write(session, write)
        result = _deleted_result(f"Deleted {resource_type}/{resource_id} (version {version})", version)
        result.last_modified = moment
        return result

    def conditional_delete(self, resource_type: str, query: list[tuple[str, str]], ctx: RequestContext,
                           session: Session = None) -> Result:
        matches = self._conditional_matches(ctx, resource_type, query, "delete")
        if not matches:
            return Result(200, {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "not-found",
                "diagnostics": f"No {resource_type} matched the criteria: nothing was deleted"}]})
        return self.delete(resource_type, matches[0], ctx, session=session)

    # -- history -----------------------------------------------------------------------------
    def history(self, resource_type: str | None, resource_id: str | None, params: list[tuple[str, str]],
                ctx: RequestContext) -> dict:
        base_url = ctx.base_url
        if resource_type:
            self._guard(ctx, resource_type, "history")
        options = _history_options(params)
        query: dict[str, Any] = {}
        if resource_type:
            query["type"] = resource_type
        if resource_id:
            query["id"] = resource_id
            if self.store.latest_version(resource_type, resource_id, where=self.read_filter(ctx, resource_type)) \
                    is None:
                raise not_found(f"{resource_type}/{resource_id} does not exist")
        if options["since"]:
            # beside the type, tested on the versions the index fetches: the embedded database
            # drops the boundary of `$gte` on the index's descending `lastUpdated` after an
            # equality (MongoDB plans both stages as one find)
            query = restricted(query, {"lastUpdated": {"$gte": options["since"]}})
        where = self.read_filter(ctx, resource_type) if resource_type else self._history_filter(ctx)
        query = restricted(query, where)
        count = options["count"]
        total = None
        if options["at"]:
            skip = options["page"] * count
            versions = self.store.versions_current_at(query, options["at"], count + 1, skip)
        else:
            after = None
            if options["cursor"]:
                moment, key = options["cursor"]
                after = {"$or": [{"lastUpdated": {"$lt": moment}}, {"lastUpdated": moment, "_id": {"$lt": key}}]}
            versions, total = self.store.find_versions_and_count(query, after, [("lastUpdated", -1), ("_id", -1)],
                                                                 count + 1)
        has_more = len(versions) > count
        versions = versions[:count]
        path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "type": "history",
            "total": total,
            "link": [{"relation": "self", "url": _url(base_url, path, params)}],
            "entry": [_history_entry(base_url, v) for v in versions],
        }
        if bundle["total"] is None:
            del bundle["total"]
        if has_more and versions:
            bundle["link"].append({"relation": "next", "url": _url(base_url, path, _next_params(
                params, versions[-1], options))})
        return bundle

    # -- helpers -----------------------------------------------------------------------------
    def _check_body(self, resource_type: str, resource: Any) -> None:
        issues = self.validate(resource, resource_type)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(400, issues)
        resource_id = resource.get("id")
        if resource_id is not None and not (isinstance(resource_id, str) and ID_PATTERN.match(resource_id)):
            raise bad_request(f"'{resource_id}' is not a valid FHIR id", f"{resource_type}.id")

    @staticmethod
    def _check_if_match(current: dict, if_match: str | None) -> None:
        if if_match and parse_etag(if_match) != str(current["_ver"]):
            raise precondition_failed(
                f"If-Match {if_match} does not match the current version {etag(current['_ver'])} of "
                f"{current['resource']['resourceType']}/{current['_id']}: someone changed it; read it again")

    def _stamp(self, stored: dict) -> datetime:
        moment = now()
        stored["meta"]["lastUpdated"] = instant(moment)
        return moment

    def read_filter(self, ctx: RequestContext, resource_type: str) -> dict | None:
        if self.policy is None or ctx.access is None:
            return None
        return self.policy.read_filter(ctx.access, resource_type)

    def _history_filter(self, ctx: RequestContext) -> dict | None:
        """The access filter of a system-level history (versions of every type)."""
        if self.policy is None or ctx.access is None:
            return None
        return self.policy.history_filter(ctx.access)

    def _guard(self, ctx: RequestContext, resource_type: str, interaction: str) -> None:
        if self.policy is not None and ctx.access is not None:
            self.policy.check_interaction(ctx.access, resource_type, interaction)

    def _document(self, resource_type: str, resource: dict, version: int, moment: datetime, ctx: RequestContext,
                  session: Session) -> dict:
        """The stored document: resource, version facts, search index and access data."""
        index = self.indexer.extract_index(resource)
        doc = {"_id": resource["id"], "resource": resource, "_ver": version, "_lastUpdated": moment,
               "_index": index}
        if self.policy is not None:
            acl = self.policy.acl_for(resource_type, resource, index, session)
            if acl is not None:
                doc["_acl"] = acl
            if ctx.access is not None:
                self.policy.check_write(ctx.access, resource_type, acl)
        return doc

    def _write(self, session: Session, action: Callable[[Session], None]) -> None:
        """Run `action` in the caller's transaction, or in a new one (retried as a whole on a
        transient conflict)."""
        try:
            if session is not None:
                action(session)
                return
            self.store.run_in_transaction(action)
        except StorageConflict as exc:
            conflict = error(409, "conflict", f"Concurrent modification: {exc}. Read the resource again and retry")
            raise ConcurrentModification(conflict.status, conflict.issues) from exc

    @staticmethod
    def _last_writer_wins(if_match: str | None, session: Session, attempt: Callable[[], Result]) -> Result:
        """Without If-Match (and outside a caller's transaction, which must fail as a whole), a
        write that lost a race to a concurrent one — e.g. the notification worker activating a
        Subscription just created — is read and applied again instead of answering 409."""
        if if_match or session is not None:
            return attempt()
        for _ in range(UNVERSIONED_WRITE_ATTEMPTS - 1):
            try:
                return attempt()
            except ConcurrentModification:
                continue
        return attempt()

    @staticmethod
    def _run(hooks: list[WriteHook], event: WriteEvent, session: Session = None) -> None:
        if session is not None:
            event.session = session
        for hook in hooks:
            hook(event)


# -- patch formats ----------------------------------------------------------------------------
def apply_patch(resource: dict, patch_body: Any, patch_format: str) -> dict:
    if patch_format == "json-patch":
        if not isinstance(patch_body, list):
            raise bad_request("A JSON Patch document must be a JSON array of operations")
        return patching.apply_json_patch(resource, patch_body)
    if patch_format == "fhirpath-patch":
        return patching.apply_fhirpath_patch(resource, patch_body)
    if patch_format == "xml-patch":
        return patching.apply_xml_patch(resource, patch_body)
    raise error(415, "not-supported", "PATCH accepts application/json-patch+json (JSON Patch), "
                "application/xml-patch+xml (XML Patch) or a FHIR Parameters resource (FHIRPath Patch) in JSON or XML")


# -- pure helpers -----------------------------------------------------------------------------
def _with_meta(resource: dict, resource_id: str, version: int) -> dict:
    """A copy of the resource with the server's id and version; everything else as accepted."""
    stored = _with_id_first({**resource, "id": resource_id})
    meta = copy.deepcopy(resource.get("meta")) or {}
    meta["versionId"] = str(version)
    stored["meta"] = meta
    return stored


def _with_id_first(resource: dict) -> dict:
    ordered = {"resourceType": resource["resourceType"], "id": resource.get("id")}
    ordered.update((k, v) for k, v in resource.items() if k not in ordered)
    if ordered["id"] is None:
        del ordered["id"]
    return ordered


def _version_entry(resource_type: str, doc: dict, method: str) -> dict:
    entry = {"_id": f"{resource_type}/{doc['_id']}/{doc['_ver']}", "type": resource_type, "id": doc["_id"],
             "ver": doc["_ver"], "method": method, "lastUpdated": doc["_lastUpdated"], "resource": doc["resource"]}
    if "_acl" in doc:
        entry["_acl"] = doc["_acl"]
    return entry


def _result(status: int, resource: dict, version: int, moment: datetime) -> Result:
    return Result(status, resource, str(version), moment)


def _deleted_result(message: str, version: int) -> Result:
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": message}]}
    return Result(200, body, str(version))


def _history_entry(base_url: str, version: dict) -> dict:
    ref = f"{version['type']}/{version['id']}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{ref}"}
    if version["resource"] is not None:
        entry["resource"] = version["resource"]
    method = version["method"]
    entry["request"] = {"method": method, "url": version["type"] if method == "POST" else ref}
    entry["response"] = {
        "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}.get(method, "200 OK"),
        "etag": etag(version["ver"]),
        "lastModified": instant(version["lastUpdated"]),
    }
    return entry


def _history_options(params: list[tuple[str, str]]) -> dict:
    options: dict[str, Any] = {"since": None, "at": None, "count": DEFAULT_HISTORY_COUNT, "cursor": None,
                               "page": 0}
    for name, value in params:
        if name == "_since":
            options["since"] = parse_instant_param(value, "_since")
        elif name == "_at":
            options["at"] = parse_instant_param(value, "_at")
        elif name == "_count":
            if not value.isdigit():
                raise bad_request(f"_count={value!r} must be a non-negative integer", "_count")
            options["count"] = max(1, min(int(value), MAX_HISTORY_COUNT))
        elif name == "_cursor":
            options["cursor"] = decode_time_cursor(value)
        elif name == "_page":
            options["page"] = int(value) if value.isdigit() else 0
    return options


def _next_params(params: list[tuple[str, str]], last: dict, options: dict) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in params if k not in ("_cursor", "_page")]
    if options["at"]:
        return [*kept, ("_page", str(options["page"] + 1))]
    return [*kept, ("_cursor", encode_time_cursor(last["lastUpdated"], last["_id"]))]


def _url(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base_url}/{path}" + (f"?{query}" if query else "")


def _query_items(query: str) -> list[tuple[str, str]]:
    query = query.split("?", 1)[1] if "?" in query else query
    return parse_qsl(query, keep_blank_values=True)


query_items = _query_items
