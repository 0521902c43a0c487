"""SearchService: searches (type, system and compartment level), conditional matching,
Patient/$everything and reindexing, on top of the registry and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir_server.engine.errors import Issue, bad_request, not_found
from fhir_server.search import bundle as bundles
from fhir_server.search.criteria import CriteriaBuilder
from fhir_server.search.filters import ExtraFilter, and_filters, extra_for, is_operator_dict, or_filters
from fhir_server.search.includes import Found, IncludeResolver
from fhir_server.search.normalize import date_range
from fhir_server.search.paging import (
    Position,
    SortKey,
    after_filters,
    decode_cursor,
    encode_cursor,
    merge_sorted,
    position_of,
)
from fhir_server.search.query import (
    DEFAULT_COUNT,
    QueryCompiler,
    SearchRequest,
    Store,
    parse_request,
    unsupported,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.terminology import LocalTerminology

ESTIMATE_LIMIT = 10_000          # `_total=estimate` counts up to this many, then stops
REINDEX_BATCH = 500


@dataclass
class _Plan:
    """What to run against one collection: OR-ed alternative filters (compartment links), and the
    sort keys as they apply to that resource type."""

    resource_type: str
    alternatives: list[dict]
    keys: list[SortKey]
    id_descending: bool = False          # `_sort=-_id`: the final tie-break runs backwards


@dataclass
class _Page:
    matches: list[Found] = field(default_factory=list)
    first: Position | None = None
    last: Position | None = None
    has_more: bool = False
    has_before: bool = False


class SearchService:
    def __init__(self, registry: SearchRegistry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.terminology = LocalTerminology(registry.definitions)

    # -- search --------------------------------------------------------------------------------
    def search(self, resource_type: str | None, params: list[tuple[str, str]], *, base_url: str,
               strict: bool = False, extra_filter: ExtraFilter = None,
               compartment: tuple[str, str] | None = None) -> dict:
        """A complete searchset Bundle. `extra_filter` is AND-ed into every query (matches,
        includes, totals, chain and `_has` links): a filter for all collections, or a function
        `resource_type -> filter` when access rules differ by type. `compartment` = ("Patient", id)
        for Patient/id/[type]."""
        request = parse_request(params, strict)
        compiler = self._compiler(base_url, extra_filter, strict, request.warnings)
        types = self._types(resource_type, request, compartment, strict)
        self._check_sort(types, request, strict)
        plans = [self._plan(t, request, compiler, compartment, extra_filter) for t in types]
        plans = [p for p in plans if p.alternatives]
        if not request.sort and len(plans) == 1:
            plans[0].keys = self._implicit_keys(plans[0])
        total = self._total(plans, request)
        page = self._page(plans, request)
        resolver = IncludeResolver(self.registry, self.store, extra_filter)
        included = resolver.resolve(page.matches, request.includes, request.revincludes) if page.matches else []
        for rule in resolver.truncated:
            request.warnings.append(Issue("warning", "too-costly",
                                          f"_revinclude={rule} matched too many resources: results cut"))
        links = self._links(base_url, self._path(resource_type, compartment), request, page)
        entries = [bundles.entry(base_url, t, bundles.subset(self.registry.definitions, d["resource"],
                                                             request.summary, request.elements), "match")
                   for t, d in page.matches]
        entries += [bundles.entry(base_url, t, d["resource"], "include") for t, d in included]
        if request.warnings:
            entries.append(bundles.outcome_entry(_unique(request.warnings)))
        return bundles.searchset(entries, links, total)

    def _page(self, plans: list[_Plan], request: SearchRequest) -> _Page:
        """The matches of the requested page: after (or, for a `previous` link, before) the
        cursor position, one more than asked to know whether another page follows."""
        if request.count == 0 or request.summary == "count" or not plans:
            return _Page()
        position, backwards = (decode_cursor(request.cursor, len(plans[0].keys))
                               if request.cursor else (None, False))
        fetched = self._fetch(plans, position, backwards, request.count + 1, self._projection(request, plans))
        more = len(fetched) > request.count
        fetched = fetched[:request.count]
        if backwards:
            fetched.reverse()
        page = _Page([f for _p, f in fetched], has_more=more or backwards,
                     has_before=more if backwards else position is not None)
        if fetched:
            page.first, page.last = fetched[0][0], fetched[-1][0]
        return page

    def _compiler(self, base_url: str, extra_filter: ExtraFilter, strict: bool,
                  warnings: list[Issue]) -> QueryCompiler:
        builder = CriteriaBuilder(self.registry.timezone, base_url, self.terminology.expand)
        return QueryCompiler(self.registry, self.store, builder, extra_filter, strict, warnings)

    def _types(self, resource_type: str | None, request: SearchRequest, compartment: tuple[str, str] | None,
               strict: bool) -> list[str]:
        if resource_type is not None:
            if resource_type not in self.registry.known_types:
                raise bad_request(f"Unknown resource type {resource_type!r}")
            if request.types:
                unsupported("_type is only used by searches across all types", "_type", strict, request.warnings)
            return [resource_type]
        if request.types:
            unknown = [t for t in request.types if t not in self.registry.known_types]
            if unknown:
                raise bad_request(f"Unknown resource type(s) in _type: {', '.join(unknown)}", "_type")
            return sorted(set(request.types))
        if compartment:
            return sorted({compartment[0], *self.registry.compartment_types(compartment[0])})
        raise bad_request("A search across all resource types needs _type (e.g. ?_type=Patient,Practitioner)",
                          "_type")

    def _plan(self, resource_type: str, request: SearchRequest, compiler: QueryCompiler,
              compartment: tuple[str, str] | None, extra_filter: ExtraFilter) -> _Plan:
        access = extra_for(extra_filter, resource_type)
        criteria = and_filters(compiler.compile(resource_type, request.criteria), access)
        alternatives = [criteria]
        if compartment:
            alternatives = [and_filters(criteria, link)
                            for link in self._compartment_links(compartment, resource_type)]
        keys = self._sort_keys(resource_type, request)
        id_descending = False
        if keys and keys[-1].field == "_id":       # the id is the tie-break itself
            id_descending = keys.pop().descending
        return _Plan(resource_type, alternatives, keys, id_descending)

    def _compartment_links(self, compartment: tuple[str, str], resource_type: str) -> list[dict]:
        """One filter per way a resource belongs to the compartment (subject, performer...): run
        as separate indexed queries and merged, rather than one `$or`."""
        kind, ident = compartment
        if kind not in self.registry.definitions.compartments:
            raise bad_request(f"Unknown compartment {kind!r}")
        reference = f"{kind}/{ident}"
        params = self.registry.params_for(resource_type)
        links = [{params[code].field: reference}
                 for code in self.registry.compartment_params(kind, resource_type)]
        if resource_type == kind:
            links.insert(0, {"_id": ident})
        return links

    def _check_sort(self, types: list[str], request: SearchRequest, strict: bool) -> None:
        """Drop (with a warning) sort parameters that no searched type has."""
        kept = []
        for code, descending in request.sort:
            params = [self.registry.param(t, code) for t in types]
            if any(p is not None and p.type != "composite" for p in params):
                kept.append((code, descending))
            else:
                unsupported(f"Cannot sort by {code!r}: not a search parameter of {', '.join(types)}",
                            "_sort", strict, request.warnings)
        request.sort = kept

    def _sort_keys(self, resource_type: str, request: SearchRequest) -> list[SortKey]:
        keys = []
        params = self.registry.params_for(resource_type)
        for code, descending in request.sort:
            param = params.get(code)
            if param is None:         # a system-level search on types that lack it: sorts as missing
                keys.append(SortKey(f"_index.{code}", descending))
            else:
                keys.append(SortKey(param.sort_field, descending, param.multi))
            if code == "_id":         # unique: later keys would never be looked at
                break
        return keys

    def _implicit_keys(self, plan: _Plan) -> list[SortKey]:
        """Without `_sort`, a query with a range on one date/number (`date=ge2024-06-01`) is
        ordered by it: the range and the keyset condition of the next pages then fall on the same
        index field (`{actor, date, _id}`), where ordering by id alone would not."""
        ranged = {name for alternative in plan.alternatives for name, condition in alternative.items()
                  if not name.startswith("$") and name != "_id" and is_operator_dict(condition)
                  and set(condition) <= _RANGE_OPERATORS}
        if len(ranged) != 1:
            return []
        ranged_field = ranged.pop()
        for param in self.registry.params_for(plan.resource_type).values():
            if param.sort_field == ranged_field and not param.multi and param.type in ("date", "number", "quantity"):
                return [SortKey(ranged_field, False, False)]
        return []

    @staticmethod
    def _projection(request: SearchRequest, plans: list[_Plan]) -> dict:
        """The resource, its sort values (for the cursor) and the references `_include` follows."""
        fields = {"resource": 1, "_lastUpdated": 1}
        if any(spec.param == "*" for spec in request.includes):
            fields["_index"] = 1
        for spec in request.includes:
            fields[f"_index.{spec.param}"] = 1
        for plan in plans:
            for key in plan.keys:
                fields[key.field] = 1
        return _without_collisions(fields)

    # -- paging --------------------------------------------------------------------------------
    def _fetch(self, plans: list[_Plan], position: Position | None, backwards: bool, limit: int,
               projection: dict) -> list[tuple[Position, Found]]:
        lists = []
        id_descending = bool(plans and plans[0].id_descending) != backwards
        for plan in plans:
            keys = [k.reversed() for k in plan.keys] if backwards else plan.keys
            sort = [(k.field, -1 if k.descending else 1) for k in keys] + [("_id", -1 if id_descending else 1)]
            for alternative in plan.alternatives:
                branches = [{}]
                if position is not None:
                    inclusive = plan.resource_type < position.resource_type if id_descending \
                        else plan.resource_type > position.resource_type
                    branches = after_filters(keys, position, id_descending, inclusive)
                documents: list[dict] = []
                for branch in branches:
                    if len(documents) >= limit:
                        break
                    if _contradicts(alternative, branch):
                        continue
                    documents += self.store.find(plan.resource_type, and_filters(alternative, branch), sort,
                                                 limit - len(documents), projection)
                lists.append([(position_of(d, keys, plan.resource_type), (plan.resource_type, d))
                              for d in documents])
        merge_keys = plans[0].keys if plans else []
        if backwards:
            merge_keys = [k.reversed() for k in merge_keys]
        return merge_sorted(lists, merge_keys, id_descending, limit)

    def _total(self, plans: list[_Plan], request: SearchRequest) -> int | None:
        mode = request.total
        if request.summary == "count" or request.count == 0:
            mode = "accurate" if mode == "none" else mode
        if mode == "none":
            return None
        limit = ESTIMATE_LIMIT if mode == "estimate" else 0
        return sum(self.store.count(p.resource_type, or_filters(p.alternatives), limit) for p in plans)

    @staticmethod
    def _path(resource_type: str | None, compartment: tuple[str, str] | None) -> str:
        if compartment:
            return f"{compartment[0]}/{compartment[1]}/{resource_type or '*'}"
        return resource_type or ""

    @staticmethod
    def _links(base_url: str, path: str, request: SearchRequest, page: _Page) -> list[dict]:
        """self, first, and previous/next carrying the query unchanged plus a `_cursor`: the REST
        layer passes their query items back to `search()` as they are."""
        params = request.link_params
        self_params = params + ([("_cursor", request.cursor)] if request.cursor else [])
        links = [bundles.link(base_url, path, self_params, "self"), bundles.link(base_url, path, params, "first")]
        if page.has_before and page.first is not None:
            links.append(bundles.link(base_url, path, [*params, ("_cursor", encode_cursor(page.first, True))],
                                      "previous"))
        if page.has_more and page.last is not None:
            links.append(bundles.link(base_url, path, [*params, ("_cursor", encode_cursor(page.last, False))],
                                      "next"))
        return links

    # -- conditional interactions ----------------------------------------------------------------
    def matching_ids(self, resource_type: str, params: list[tuple[str, str]], limit: int = 2,
                     extra_filter: ExtraFilter = None) -> list[str]:
        """Ids matching a conditional create/update/delete/patch or a conditional reference.
        Unknown parameters are an error here: ignoring one could pick the wrong resource.
        `extra_filter` (the caller's access filter) keeps hidden resources out of the match, so
        that a conditional write cannot reveal what the caller may not see."""
        if resource_type not in self.registry.known_types:
            raise bad_request(f"Unknown resource type {resource_type!r}")
        request = parse_request(params, strict=True)
        if not request.criteria:
            raise bad_request("A conditional operation needs at least one search parameter")
        compiler = self._compiler("", extra_filter, True, request.warnings)
        query = and_filters(compiler.compile(resource_type, request.criteria), extra_for(extra_filter, resource_type))
        return [d["_id"] for d in self.store.find(resource_type, query, [("_id", 1)], limit, {"_id": 1})]

    # -- reindex ---------------------------------------------------------------------------------
    def reindex(self, resource_types: list[str]) -> int:
        """Recompute `_index` of every stored resource of these types (after a SearchParameter
        was added or changed). Returns the number of resources rewritten."""
        changed = 0
        for resource_type in resource_types:
            last_id = None
            while True:
                query = {"_id": {"$gt": last_id}} if last_id is not None else {}
                batch = self.store.find(resource_type, query, [("_id", 1)], REINDEX_BATCH,
                                        {"resource": 1, "_index": 1})
                for document in batch:
                    index = self.registry.extract_index(document["resource"])
                    if index != document.get("_index"):
                        changed += self.store.update_many(resource_type, {"_id": document["_id"]},
                                                          {"$set": {"_index": index}})
                if len(batch) < REINDEX_BATCH:
                    break
                last_id = batch[-1]["_id"]
        return changed

    # -- Patient/$everything -----------------------------------------------------------------------
    def everything(self, patient_id: str, params: list[tuple[str, str]], *, base_url: str,
                   extra_filter: ExtraFilter = None) -> dict:
        """Patient/[id]/$everything: the patient, every resource of its compartment and the
        resources they reference (practitioners, organisations, medications...), paged by
        resource type then id. Supports `_since`, `_type` and `_count`."""
        options = _everything_options(params)
        patient = self.store.find("Patient", and_filters({"_id": patient_id}, extra_for(extra_filter, "Patient")),
                                  limit=1, projection={"_id": 1})
        if not patient:
            raise not_found(f"Patient/{patient_id} is not known")
        types = ["Patient", *sorted(t for t in self.registry.compartment_types("Patient") if t != "Patient")]
        if options.types is not None:
            types = [t for t in types if t in options.types]
        since = {"_lastUpdated": {"$gte": options.since}} if options.since else {}
        page, more = self._everything_page(patient_id, types, since, extra_filter, options)
        included = self._everything_references(page, set(types), extra_filter)
        links = [bundles.link(base_url, f"Patient/{patient_id}/$everything", options.link_params, "self")]
        if more and page:
            cursor = f"{page[-1][0]}/{page[-1][1]['_id']}"
            links.append(bundles.link(base_url, f"Patient/{patient_id}/$everything",
                                      [*options.link_params, ("_cursor", cursor)], "next"))
        entries = [bundles.entry(base_url, t, d["resource"], "match") for t, d in page]
        entries += [bundles.entry(base_url, t, d["resource"], "include") for t, d in included]
        if options.warnings:
            entries.append(bundles.outcome_entry(options.warnings))
        return bundles.searchset(entries, links, None)

    def _everything_page(self, patient_id: str, types: list[str], since: dict, extra_filter: ExtraFilter,
                         options: _EverythingOptions) -> tuple[list[Found], bool]:
        """One page in (type order, id) order from the cursor `Type/id`, each compartment link
        of a type queried on its own index and merged. Returns the page and whether more follow."""
        start, last_id = 0, None
        if options.cursor:
            cursor_type, last_id = options.cursor.split("/", 1)
            if cursor_type not in types:
                raise bad_request("Invalid paging cursor", "_cursor")
            start = types.index(cursor_type)
        page: list[Found] = []
        for resource_type in types[start:]:
            after = {"_id": {"$gt": last_id}} if last_id is not None and resource_type == types[start] else {}
            room = options.count + 1 - len(page)
            base = and_filters(since, extra_for(extra_filter, resource_type))
            lists = []
            for link in self._compartment_links(("Patient", patient_id), resource_type):
                documents = self.store.find(resource_type, and_filters(base, link, after), [("_id", 1)], room,
                                            {"resource": 1, "_index": 1})
                lists.append([(Position((), d["_id"], resource_type), (resource_type, d)) for d in documents])
            page += [f for _p, f in merge_sorted(lists, [], False, room)]
            if len(page) > options.count:
                return page[:options.count], True
        return page, False

    def _everything_references(self, page: list[Found], compartment_types: set[str],
                               extra_filter: ExtraFilter) -> list[Found]:
        """Resources outside the compartment that the page references, fetched per type."""
        wanted: dict[str, set[str]] = {}
        on_page = {(t, d["_id"]) for t, d in page}
        for resource_type, document in page:
            index = document.get("_index") or {}
            for param in self.registry.params_for(resource_type).values():
                if param.type != "reference":
                    continue
                values = index.get(param.code)
                for reference in values if isinstance(values, list) else [values]:
                    if not isinstance(reference, str) or reference.count("/") != 1:
                        continue
                    target, ident = reference.split("/")
                    if target in self.registry.known_types and target != "Patient" \
                            and target not in compartment_types and (target, ident) not in on_page:
                        wanted.setdefault(target, set()).add(ident)
        out: list[Found] = []
        for target, ids in sorted(wanted.items()):
            query = and_filters({"_id": {"$in": sorted(ids)}}, extra_for(extra_filter, target))
            out += [(target, d) for d in self.store.find(target, query, [("_id", 1)], 0, {"resource": 1})]
        return out


@dataclass
class _EverythingOptions:
    since: datetime | None
    types: set[str] | None
    count: int
    cursor: str | None
    link_params: list[tuple[str, str]]
    warnings: list[Issue]


def _everything_options(params: list[tuple[str, str]]) -> _EverythingOptions:
    options = _EverythingOptions(None, None, DEFAULT_COUNT, None, [], [])
    for name, value in params:
        if name in ("_format", "_pretty"):
            continue
        if name != "_cursor":
            options.link_params.append((name, value))
        if name == "_since":
            try:
                options.since = date_range(value, UTC)[0]
            except ValueError:
                raise bad_request(f"_since must be an instant, not {value!r}", "_since") from None
        elif name == "_type":
            options.types = {t.strip() for t in value.split(",") if t.strip()}
        elif name == "_count":
            try:
                options.count = max(1, min(int(value), 1000))
            except ValueError:
                raise bad_request("_count must be a whole number", "_count") from None
        elif name == "_cursor":
            if "/" not in value:
                raise bad_request("Invalid paging cursor", "_cursor")
            options.cursor = value
        else:
            options.warnings.append(Issue("warning", "not-supported", f"Parameter {name} of $everything is "
                                          "not supported and was ignored", (name,)))
    return options


_RANGE_OPERATORS = frozenset({"$gt", "$gte", "$lt", "$lte"})


def _contradicts(criteria: dict, branch: dict) -> bool:
    """A keyset branch asking for a missing value where the criteria require one (a date range
    and "no date"): skipped rather than sent to the database."""
    for name, condition in branch.items():
        if condition is None and name in criteria:
            required = criteria[name]
            if not (isinstance(required, dict) and "$exists" in required) and required is not None:
                return True
    return False


def _without_collisions(fields: dict[str, Any]) -> dict[str, Any]:
    """MongoDB refuses a projection naming both `a` and `a.b`."""
    names = sorted(fields)
    return {n: fields[n] for n in names if not any(n.startswith(other + ".") for other in names if other != n)}


def _unique(issues: list[Issue]) -> list[Issue]:
    seen: list[Issue] = []
    for issue in issues:
        if issue not in seen:
            seen.append(issue)
    return seen

