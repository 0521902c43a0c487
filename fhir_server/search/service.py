"""SearchService: searches (type, system and compartment level), conditional matching,
Patient/$everything and reindexing, on top of the registry and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhir_server.engine.errors import Issue, bad_request, not_found
from fhir_server.search import bundle as bundles
from fhir_server.search.contained import (
    CONTAINED_FIELD,
    ContainedSearch,
    Mark,
    Match,
    Source,
    container_types,
    record_containers,
)
from fhir_server.search.criteria import CriteriaBuilder
from fhir_server.search.filters import ExtraFilter, and_filters, extra_for, is_operator_dict, or_filters
from fhir_server.search.fitting import IndexFittedStore
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
    IncludeSpec,
    QueryCompiler,
    SearchRequest,
    Store,
    parse_request,
    unsupported,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.terminology import LocalTerminology

if TYPE_CHECKING:
    from fhir_server.engine.interactions import WriteEvent

ESTIMATE_LIMIT = 10_000          # `_total=estimate` counts up to this many, then stops
REINDEX_BATCH = 500
# Version of what `_index` holds. Databases written with an older one are upgraded once, at start
# (2: prefixes of looked-up strings, contained resources; 3: the meta parameters' terms).
INDEX_LAYOUT_KEY = "search:index-layout"
INDEX_LAYOUT_VERSION = 3
# The resources whose `_index` layout 3 changes: those with meta values (or contained resources with some).
_WITH_META_VALUES = {"$or": [{f"resource.meta.{element}": {"$exists": True}}
                             for element in ("tag", "security", "profile", "source")]
                     + [{"resource.contained": {"$exists": True}}]}


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
        self.store = IndexFittedStore(store, registry.index_fields)
        self.terminology = LocalTerminology(registry.definitions)

    # -- search --------------------------------------------------------------------------------
    def search(self, resource_type: str | None, params: list[tuple[str, str]], *, base_url: str,
               strict: bool = False, extra_filter: ExtraFilter = None,
               compartment: tuple[str, str] | None = None, found_acls: dict[str, dict | None] | None = None) -> dict:
        """A complete searchset Bundle. `extra_filter` is AND-ed into every query (matches,
        includes, totals, chain and `_has` links): a filter for all collections, or a function
        `resource_type -> filter` when access rules differ by type. `compartment` = ("Patient", id)
        for Patient/id/[type]. `found_acls`, when given, receives the access data (`_acl`) of
        each match by "Type/id", read with it (the audit trail needs them)."""
        request = parse_request(params, strict)
        self._check_includes(request, strict)
        compiler = self._compiler(base_url, extra_filter, strict, request.warnings)
        types = self._types(resource_type, request, compartment, strict)
        if request.contained != "false" and self._contained_applies(resource_type, compartment, request, strict):
            assert resource_type is not None
            return self._search_contained(resource_type, request, compiler, base_url, extra_filter)
        self._check_sort(types, request, strict)
        plans = [self._plan(t, request, compiler, compartment, extra_filter) for t in types]
        plans = [p for p in plans if p.alternatives]
        if not request.sort and len(plans) == 1:
            plans[0].keys = self._implicit_keys(plans[0])
        page, total = self._page(plans, request, found_acls is not None)
        if found_acls is not None:
            found_acls.update({f"{t}/{d['_id']}": d.get("_acl") for t, d in page.matches})
        if total is None:
            total = self._total(plans, request)
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

    def _page(self, plans: list[_Plan], request: SearchRequest, with_acl: bool = False) -> tuple[_Page, int | None]:
        """The matches of the requested page: after (or, for a `previous` link, before) the
        cursor position, one more than asked to know whether another page follows. With them the
        accurate total when the same query gave it (else None: counted on its own)."""
        if request.count == 0 or request.summary == "count" or not plans:
            return _Page(), None
        position, backwards = (decode_cursor(request.cursor, len(plans[0].keys))
                               if request.cursor else (None, False))
        counting = _total_mode(request) == "accurate"
        projection = self._projection(request, plans)
        if with_acl:
            projection = _without_collisions({**projection, "_acl.deny": 1})
        fetched, total = self._fetch(plans, position, backwards, request.count + 1, projection, counting)
        more = len(fetched) > request.count
        fetched = fetched[:request.count]
        if backwards:
            fetched.reverse()
        page = _Page([f for _p, f in fetched], has_more=more or backwards,
                     has_before=more if backwards else position is not None)
        if fetched:
            page.first, page.last = fetched[0][0], fetched[-1][0]
        return page, total

    def _check_includes(self, request: SearchRequest, strict: bool) -> None:
        """An `_include`/`_revinclude` must name a reference parameter of its source type (and a
        known target type): otherwise it would silently include nothing."""
        for name, specs in (("_include", request.includes), ("_revinclude", request.revincludes)):
            kept = []
            for spec in specs:
                problem = self._include_problem(spec)
                if problem is None:
                    kept.append(spec)
                else:
                    unsupported(f"{name}={spec.text}: {problem}", name, strict, request.warnings)
            specs[:] = kept

    def _include_problem(self, spec: IncludeSpec) -> str | None:
        if spec.source == "*":
            return None
        if spec.source not in self.registry.known_types:
            return f"{spec.source} is not a resource type"
        if spec.target is not None and spec.target not in self.registry.known_types:
            return f"{spec.target} is not a resource type"
        if spec.param == "*":
            return None
        param = self.registry.params_for(spec.source).get(spec.param)
        if param is None or param.type != "reference":
            return f"{spec.source} has no reference search parameter {spec.param}"
        if spec.target is not None and param.targets and spec.target not in param.targets:
            return f"{spec.source}:{spec.param} does not refer to {spec.target}"
        return None

    def _compiler(self, base_url: str, extra_filter: ExtraFilter, strict: bool,
                  warnings: list[Issue]) -> QueryCompiler:
        builder = CriteriaBuilder(self.registry.timezone, base_url, self.terminology.expand,
                                  subsume=self.terminology.subsumed)
        return QueryCompiler(self.registry, self.store, builder, extra_filter, strict, warnings)

    # -- contained resources (see contained.py) ---------------------------------------------------
    @staticmethod
    def _contained_applies(resource_type: str | None, compartment: tuple[str, str] | None,
                           request: SearchRequest, strict: bool) -> bool:
        if resource_type is None or compartment is not None:
            unsupported("_contained is supported on searches of one resource type (Type?_contained=...)",
                        "_contained", strict, request.warnings)
            return False
        if request.sort:
            unsupported("_sort does not apply with _contained: results come by container, then contained id",
                        "_sort", strict, request.warnings)
            request.sort = []
        return True

    def _search_contained(self, resource_type: str, request: SearchRequest, compiler: QueryCompiler,
                          base_url: str, extra_filter: ExtraFilter) -> dict:
        search = ContainedSearch(self.store, self._contained_sources(resource_type, request, compiler, extra_filter))
        total = search.total() if _total_mode(request) != "none" else None
        matches, more = _contained_page(search, request)
        resolver = IncludeResolver(self.registry, self.store, extra_filter)
        included = resolver.resolve([m.found() for m in matches], request.includes, request.revincludes) \
            if matches else []
        entries = [self._contained_match_entry(base_url, m, request) for m in matches]
        entries += [bundles.entry(base_url, t, d["resource"], "include") for t, d in included]
        if request.warnings:
            entries.append(bundles.outcome_entry(_unique(request.warnings)))
        links = _contained_links(base_url, resource_type, request, matches, more)
        return bundles.searchset(entries, links, total)

    def _contained_sources(self, resource_type: str, request: SearchRequest, compiler: QueryCompiler,
                           extra_filter: ExtraFilter) -> list[Source]:
        """One source per collection holding containers of `resource_type` (each AND-ed with its
        own access filter), and with `_contained=both` the resources themselves."""
        entry, on_container = compiler.compile_contained(resource_type, request.criteria)
        own = compiler.compile(resource_type, request.criteria) if request.contained == "both" else None
        expand = request.contained_type == "contained"
        sources: list[Source] = []
        for container in container_types(self.store, resource_type):
            query = and_filters({CONTAINED_FIELD: {"$elemMatch": entry}}, on_container)
            if own is not None and not expand and container == resource_type:
                query, own = or_filters([own, query]), None     # one document, once
            sources.append(Source(container, and_filters(query, extra_for(extra_filter, container)),
                                  entry if expand else None))
        if own is not None:
            sources.append(Source(resource_type, and_filters(own, extra_for(extra_filter, resource_type))))
        return sources

    def _contained_match_entry(self, base_url: str, match: Match, request: SearchRequest) -> dict:
        resource = match.contained or match.document["resource"]
        resource = bundles.subset(self.registry.definitions, resource, request.summary, request.elements)
        if match.contained is None:
            return bundles.entry(base_url, match.source.resource_type, resource, "match")
        return bundles.contained_entry(base_url, match.source.resource_type, match.document["_id"], resource,
                                       "match")

    def on_write(self, event: WriteEvent) -> None:
        """Write hook (`Interactions.write_hooks`): a resource holding contained resources makes its
        collection one that `_contained` searches read."""
        if event.new is not None and event.new.get("contained"):
            record_containers(self.store, event.resource_type, event.new, event.session)

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
               projection: dict, counting: bool = False) -> tuple[list[tuple[Position, Found]], int | None]:
        """The page, and, when `counting` and a single query makes the page (one type, one
        alternative, one keyset branch), the number of its matches from the same database pass."""
        lists = []
        total = None
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
                if counting and len(plans) == 1 and len(plan.alternatives) == 1 and len(branches) == 1 \
                        and not _contradicts(alternative, branches[0]):
                    documents, total = self.store.find_and_count(plan.resource_type, alternative, branches[0],
                                                                 sort, limit, projection)
                    branches = []
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
        return merge_sorted(lists, merge_keys, id_descending, limit), total

    def _total(self, plans: list[_Plan], request: SearchRequest) -> int | None:
        mode = _total_mode(request)
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
        return sum(self._reindex_where(resource_type, {}) for resource_type in resource_types)

    def _reindex_where(self, resource_type: str, where: dict) -> int:
        changed = 0
        last_id = None
        while True:
            query = and_filters(where, {"_id": {"$gt": last_id}} if last_id is not None else None)
            batch = self.store.find(resource_type, query, [("_id", 1)], REINDEX_BATCH, {"resource": 1, "_index": 1})
            for document in batch:
                index = self.registry.extract_index(document["resource"])
                if index != document.get("_index"):
                    changed += self.store.update_many(resource_type, {"_id": document["_id"]},
                                                      {"$set": {"_index": index}})
                if document["resource"].get("contained"):
                    record_containers(self.store, resource_type, document["resource"])
            if len(batch) < REINDEX_BATCH:
                return changed
            last_id = batch[-1]["_id"]

    def upgrade_index_layout(self) -> int:
        """At start, once per database: resources stored with an older `_index` layout get what the
        current one adds (2: prefixes of looked-up strings, their contained resources' values, and
        their containers are recorded; 3: the meta parameters' terms). Returns the number of
        resources rewritten."""
        state = self.store.get_meta(INDEX_LAYOUT_KEY)
        version = state.get("version", 0) if state is not None else 0
        if version >= INDEX_LAYOUT_VERSION:
            return 0
        changed = self._upgrade_to_2() if version < 2 else 0
        changed += sum(self._reindex_where(t, _WITH_META_VALUES) for t in self.registry.resource_types)
        self.store.put_meta(INDEX_LAYOUT_KEY, {"version": INDEX_LAYOUT_VERSION})
        return changed

    def _upgrade_to_2(self) -> int:
        prefixed = [t for t in self.registry.resource_types
                    if any(p.prefix_indexed for p in self.registry.params_for(t).values())]
        changed = self.reindex(prefixed)
        for resource_type in self.registry.resource_types:
            if resource_type not in prefixed:
                changed += self._reindex_where(resource_type, {"resource.contained": {"$exists": True}})
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


def _contained_page(search: ContainedSearch, request: SearchRequest) -> tuple[list[Match], bool]:
    if not request.count or request.summary == "count":
        return [], False
    mark = Mark.decode(request.cursor) if request.cursor else None
    projection = {"resource": 1, **({"_index": 1} if request.includes or request.revincludes else {})}
    return search.page(mark, request.count, projection)


def _contained_links(base_url: str, path: str, request: SearchRequest, matches: list[Match],
                     more: bool) -> list[dict]:
    """self, first, and previous/next as for other searches (`_links`): `previous` reads before the
    first result, `next` after the last. `more` tells whether results follow in the direction the
    page was read; the other direction holds results whenever the page was reached by a cursor."""
    params = request.link_params
    self_params = params + ([("_cursor", request.cursor)] if request.cursor else [])
    links = [bundles.link(base_url, path, self_params, "self"), bundles.link(base_url, path, params, "first")]
    if not matches:
        return links
    backwards = request.cursor is not None and Mark.decode(request.cursor).backwards
    has_before = more if backwards else request.cursor is not None
    has_after = more or backwards
    if has_before:
        links.append(bundles.link(base_url, path, [*params, ("_cursor", matches[0].mark.cursor(True))], "previous"))
    if has_after:
        links.append(bundles.link(base_url, path, [*params, ("_cursor", matches[-1].mark.cursor(False))], "next"))
    return links


def _total_mode(request: SearchRequest) -> str:
    """`_total`, made `accurate` when the client asked for the count only."""
    if request.summary == "count" or request.count == 0:
        return "accurate" if request.total == "none" else request.total
    return request.total


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

