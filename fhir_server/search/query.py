"""From the query string to a MongoDB filter.

`parse_request` sorts the parameters into criteria and result parameters (`_sort`, `_count`,
`_include`...). `QueryCompiler` turns the criteria for one resource type into one flat filter;
chained parameters (`subject:Patient.name=x`, any depth) and reverse chains (`_has`) are
resolved first into the ids they match, with one query per link, and become `$in` conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_server.engine.errors import Issue, bad_request, error
from fhir_server.search.criteria import (
    MODIFIERS,
    CriteriaBuilder,
    MalformedValue,
    Target,
    UnsupportedModifier,
)
from fhir_server.search.filters import (
    NOTHING,
    ExtraFilter,
    and_filters,
    extra_for,
    field_names,
    relative_to,
)
from fhir_server.search.index import CONTAINED_TYPE, META_PARAMS, PREFIX_SUFFIX
from fhir_server.search.registry import DOCUMENT_FIELDS, SearchParam, SearchRegistry

DEFAULT_COUNT = 20
MAX_COUNT = 1000
# A chain or `_has` link that matches more resources than this is refused rather than turned
# into a huge `$in` (the client should narrow the inner criteria).
MAX_LINK_MATCHES = 10_000

IGNORED_PARAMS = frozenset({"_format", "_pretty"})
RESULT_PARAMS = frozenset({"_sort", "_count", "_total", "_summary", "_elements", "_include",
                           "_revinclude", "_contained", "_containedType", "_cursor", "_type"})
UNSUPPORTED_PARAMS = frozenset({"_text", "_content", "_filter", "_query", "_security-label"})
SUMMARY_VALUES = frozenset({"true", "false", "text", "data", "count"})
TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
CONTAINED_VALUES = frozenset({"false", "true", "both"})
CONTAINED_TYPE_VALUES = frozenset({"container", "contained"})
# Fields of the container itself: a criterion on them selects containers, not contained resources.
CONTAINER_FIELDS = frozenset({"_lastUpdated"})
# Result parameters beyond the SearchParameters, as CapabilityStatement.rest.searchParam entries.
RESULT_PARAMETERS_CAPABILITY: tuple[dict, ...] = (
    {"name": "_contained", "type": "token",
     "documentation": "false (default), true or both, on searches of one resource type: contained resources are "
                      "searched with their own type's parameters and seen by whoever may see their container. "
                      "_sort does not apply; results come by container, then contained id"},
    {"name": "_containedType", "type": "token",
     "documentation": "contained (default): each matching contained resource is an entry of its own, fullUrl "
                      "[base]/[container type]/[id]#[contained id]; container: the containers are the entries"},
)


class Store(Protocol):
    """What the search engine needs from storage (MongoStore provides it)."""

    def find(self, resource_type: str, query: dict, sort: list[tuple[str, int]] | None = None,
             limit: int = 0, projection: dict | None = None) -> list[dict]: ...

    def count(self, resource_type: str, query: dict, limit: int = 0) -> int: ...

    def find_and_count(self, resource_type: str, query: dict, after: dict | None, sort: list[tuple[str, int]],
                       limit: int, projection: dict | None = None) -> tuple[list[dict], int]: ...

    def update_many(self, resource_type: str, query: dict, update: dict) -> int: ...

    def get_meta(self, key: str, session: Any = None) -> dict | None: ...

    def put_meta(self, key: str, value: dict, session: Any = None) -> None: ...


@dataclass(frozen=True)
class IncludeSpec:
    source: str            # resource type holding the reference, or "*"
    param: str             # reference parameter code, or "*"
    target: str | None     # restrict to this target type
    iterate: bool

    @property
    def text(self) -> str:
        return ":".join(p for p in (self.source, self.param, self.target) if p)


@dataclass
class SearchRequest:
    """A search request, sorted out."""

    criteria: list[tuple[str, str]] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)     # (code, descending)
    count: int = DEFAULT_COUNT
    total: str = "none"
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[IncludeSpec] = field(default_factory=list)
    revincludes: list[IncludeSpec] = field(default_factory=list)
    types: list[str] | None = None
    cursor: str | None = None
    contained: str = "false"                  # _contained: false | true | both
    contained_type: str = "contained"         # _containedType: container | contained
    link_params: list[tuple[str, str]] = field(default_factory=list)   # for paging links
    warnings: list[Issue] = field(default_factory=list)


def unsupported(message: str, name: str, strict: bool, warnings: list[Issue]) -> None:
    """An unknown or unsupported parameter: a warning in the bundle, or a 400 when the client
    asked for `Prefer: handling=strict`."""
    if strict:
        raise bad_request(message, name)
    warnings.append(Issue("warning", "not-supported", message, (name,)))


def parse_request(params: list[tuple[str, str]], strict: bool) -> SearchRequest:
    request = SearchRequest()
    for name, value in params:
        base = name.split(":", 1)[0]
        if base in IGNORED_PARAMS:
            continue
        if base != "_cursor":
            request.link_params.append((name, value))
        if base not in RESULT_PARAMS:
            request.criteria.append((name, value))
            continue
        _result_param(request, name, base, value, strict)
    return request


def _result_param(request: SearchRequest, name: str, base: str, value: str, strict: bool) -> None:
    if base == "_sort":
        request.sort = _parse_sort(value)
    elif base == "_count":
        request.count = _parse_count(value)
    elif base == "_total":
        if value not in TOTAL_VALUES:
            raise bad_request("_total takes none, estimate or accurate", "_total")
        request.total = value
    elif base == "_summary":
        if value not in SUMMARY_VALUES:
            raise bad_request("_summary takes true, false, text, data or count", "_summary")
        request.summary = value
    elif base == "_elements":
        request.elements = [e.strip() for e in value.split(",") if e.strip()]
    elif base in ("_include", "_revinclude"):
        spec = _parse_include(name, value)
        (request.includes if base == "_include" else request.revincludes).append(spec)
    elif base == "_type":
        request.types = [t.strip() for t in value.split(",") if t.strip()]
    elif base == "_cursor":
        request.cursor = value
    elif base == "_contained":
        if value not in CONTAINED_VALUES:
            raise bad_request("_contained takes true, false or both", "_contained")
        request.contained = value
    elif base == "_containedType":
        if value not in CONTAINED_TYPE_VALUES:
            raise bad_request("_containedType takes container or contained", "_containedType")
        request.contained_type = value


def _parse_sort(value: str) -> list[tuple[str, bool]]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        if not item or item == "-":
            raise bad_request("_sort takes a comma-separated list of parameters, `-` for descending", "_sort")
        keys.append((item.lstrip("-"), item.startswith("-")))
    return keys


def _parse_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise bad_request("_count must be a whole number", "_count") from None
    if count < 0:
        raise bad_request("_count cannot be negative", "_count")
    return min(count, MAX_COUNT)


def _parse_include(name: str, value: str) -> IncludeSpec:
    modifier = name.split(":", 1)[1] if ":" in name else None
    if modifier not in (None, "iterate", "recurse"):
        raise bad_request(f"unknown modifier :{modifier} on {name.split(':')[0]}", name)
    if value == "*":
        return IncludeSpec("*", "*", None, modifier is not None)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise bad_request(f"{name} takes SourceType:parameter[:TargetType] or *", name)
    return IncludeSpec(parts[0], parts[1], parts[2] if len(parts) == 3 else None, modifier is not None)


# -- compiling criteria ---------------------------------------------------------------------------

def target_of(param: SearchParam) -> Target:
    return Target(field=param.field, multi=param.multi, kind="token" if param.code == "_id" else param.type,
                  primitive_tokens=param.primitive_tokens, point=param.point,
                  aux_prefix=f"_index.{param.code}",
                  prefix_field=param.field + PREFIX_SUFFIX if param.prefix_indexed else None,
                  binding=param.binding, terms_prefix=f"{param.code}=" if param.code in META_PARAMS else None,
                  span=param.span)


def one_condition_per_list(conditions: list[dict], single_valued: set[str]) -> list[dict]:
    """The conditions, the later of two on the same list field set apart in `$and`. Merged, their
    bounds would read as bounds on one value, which the embedded server's index scan applies as
    such (`value=gt5&value=lt3` would need one value in (5, 3)); MongoDB reads each on any value,
    as FHIR does (each criterion is met by some value)."""
    seen: set[str] = set()
    out: list[dict] = []
    for condition in conditions:
        lists = {name for name in condition if not name.startswith("$") and not _one_value(name, single_valued)}
        out.append({"$and": [condition]} if lists & seen else condition)
        seen |= lists
    return out


def _one_value(name: str, single_valued: set[str]) -> bool:
    return name in single_valued or name.rpartition(".")[0] in single_valued


@dataclass
class QueryCompiler:
    registry: SearchRegistry
    store: Store
    builder: CriteriaBuilder
    extra_filter: ExtraFilter = None
    strict: bool = False
    warnings: list[Issue] = field(default_factory=list)

    def compile(self, resource_type: str, criteria: list[tuple[str, str]]) -> dict:
        """One flat filter for all criteria (AND of parameters, OR of comma-separated values)."""
        conditions = [self.criterion(resource_type, name, value) for name, value in criteria]
        return and_filters(*one_condition_per_list(conditions, self._single_valued(resource_type)))

    def _single_valued(self, resource_type: str) -> set[str]:
        """Fields holding one value per resource (not a list)."""
        params = self.registry.params_for(resource_type).values()
        return {*DOCUMENT_FIELDS.values(), *(p.field for p in params if not p.multi)}

    def compile_contained(self, resource_type: str, criteria: list[tuple[str, str]]) -> tuple[dict, dict]:
        """The criteria for contained resources of `resource_type`: (the condition on one entry of
        the container's `_index._contained`, the condition on the container itself)."""
        entry: list[dict] = [{CONTAINED_TYPE: resource_type}]
        container: list[dict] = []
        for name, value in criteria:
            if name.startswith("_has:") or name == "_list":
                # they select resources by id, and a contained resource is known by no id of its own
                unsupported(f"{name.split(':')[0]} does not apply to contained resources", name, self.strict,
                            self.warnings)
                continue
            condition = self.criterion(resource_type, name, value)
            fields = field_names(condition)
            if fields and fields <= CONTAINER_FIELDS:
                container.append(condition)
            else:
                entry.append(condition)
        entry = one_condition_per_list(entry, self._single_valued(resource_type))
        return relative_to(and_filters(*entry), "_index."), and_filters(*container)

    def criterion(self, resource_type: str, name: str, value: str) -> dict:
        try:
            return self._criterion(resource_type, name, value)
        except MalformedValue as exc:
            raise bad_request(f"Invalid value for search parameter {name}: {exc}", name) from exc
        except UnsupportedModifier as exc:
            unsupported(f"Search parameter {name} ignored: {exc}", name, self.strict, self.warnings)
            return {}

    def _criterion(self, resource_type: str, name: str, value: str) -> dict:
        if value == "" and not name.startswith("_has:"):
            return {}                              # an empty value is ignored (spec)
        if name.startswith("_has:"):
            return self._reverse_chain(resource_type, name, value)
        if name == "_list":
            return self._list(resource_type, value)
        link, _, rest = name.partition(".")
        code, _, modifier = link.partition(":")
        param = self.registry.param(resource_type, code)
        if param is None or code in UNSUPPORTED_PARAMS:
            unsupported(f"Unknown search parameter {code!r} for {resource_type}", name, self.strict, self.warnings)
            return {}
        self._check_modifier(param, modifier or None, bool(rest))
        if rest:
            return self._chain(param, modifier or None, rest, value)
        if param.type == "composite":
            components = [Target(str(i), False, c.param.type) for i, c in enumerate(param.components)]
            leading = self.registry.param(resource_type, param.leading) if param.leading else None
            return self.builder.composite(target_of(param), components, value,
                                          target_of(leading) if leading else None)
        return self.builder.build(target_of(param), modifier or None, value, param.targets)

    def _check_modifier(self, param: SearchParam, modifier: str | None, chained: bool) -> None:
        if modifier is None or modifier == "missing" and not chained:
            return
        if param.type == "reference" and modifier[:1].isupper():
            if modifier not in param.targets:
                raise MalformedValue(f"{modifier} is not a target type of {param.code}")
            return
        if chained:
            raise MalformedValue(f"only a resource type modifier may precede a chain (:{modifier})")
        if modifier not in MODIFIERS.get(param.type, frozenset()):
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on {param.type} parameters")

    # -- chains ----------------------------------------------------------------------------
    def _chain(self, param: SearchParam, type_modifier: str | None, rest: str, value: str) -> dict:
        if param.type != "reference":
            raise MalformedValue(f"{param.code} is not a reference parameter and cannot be chained")
        inner_code = rest.split(".", 1)[0].split(":", 1)[0]
        types = [type_modifier] if type_modifier else \
            [t for t in param.targets if self.registry.param(t, inner_code) is not None]
        if not types:
            raise UnsupportedModifier(f"no target of {param.code} has a search parameter {inner_code!r}")
        references: list[str] = []
        for target_type in types:
            ids = self.matching_ids(target_type, [(rest, value)], MAX_LINK_MATCHES, link=f"{param.code}.{rest}")
            references.extend(f"{target_type}/{i}" for i in ids)
        if len(references) == 1:          # an equality keeps compound indexes usable
            return {param.field: references[0]}
        return {param.field: {"$in": references}} if references else dict(NOTHING)

    def _reverse_chain(self, resource_type: str, name: str, value: str) -> dict:
        # _has:Observation:patient:code=1234 -> Observation?code=1234, their `patient` values
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise MalformedValue("_has takes _has:Type:referenceParameter:parameter=value")
        _, source_type, ref_code, rest = parts
        if source_type not in self.registry.known_types:
            raise MalformedValue(f"unknown resource type {source_type!r}")
        ref_param = self.registry.param(source_type, ref_code)
        if ref_param is None or ref_param.type != "reference":
            raise MalformedValue(f"{ref_code!r} is not a reference parameter of {source_type}")
        inner = self.compile_inner(source_type, [(rest, value)])
        docs = self.store.find(source_type, inner, limit=MAX_LINK_MATCHES + 1,
                               projection={ref_param.field: 1})
        self._check_fan_out(len(docs), name)
        prefix = resource_type + "/"
        ids: list[str] = []
        for doc in docs:
            for reference in _as_list((doc.get("_index") or {}).get(ref_code)):
                if isinstance(reference, str) and reference.startswith(prefix):
                    ids.append(reference[len(prefix):])
        return {"_id": {"$in": sorted(set(ids))}} if ids else dict(NOTHING)

    def _list(self, resource_type: str, value: str) -> dict:
        if value.startswith("$"):
            raise UnsupportedModifier(f"functional list {value} is not supported")
        docs = self.store.find("List", and_filters({"_id": value}, extra_for(self.extra_filter, "List")), limit=1,
                               projection={"resource.entry": 1})
        prefix = resource_type + "/"
        ids = []
        for doc in docs:
            for entry in doc["resource"].get("entry", ()):
                reference = (entry.get("item") or {}).get("reference", "")
                if reference.startswith(prefix):
                    ids.append(reference[len(prefix):].split("/_history/")[0])
        return {"_id": {"$in": ids}} if ids else dict(NOTHING)

    # -- inner queries ---------------------------------------------------------------------
    def compile_inner(self, resource_type: str, criteria: list[tuple[str, str]]) -> dict:
        return and_filters(self.compile(resource_type, criteria), extra_for(self.extra_filter, resource_type))

    def matching_ids(self, resource_type: str, criteria: list[tuple[str, str]], limit: int,
                     link: str | None = None) -> list[str]:
        query = self.compile_inner(resource_type, criteria)
        docs = self.store.find(resource_type, query, limit=limit + 1 if link else limit,
                               projection={"_id": 1})
        if link:
            self._check_fan_out(len(docs), link)
        return [doc["_id"] for doc in docs]

    @staticmethod
    def _check_fan_out(found: int, name: str) -> None:
        if found > MAX_LINK_MATCHES:
            raise error(400, "too-costly", f"{name} matches more than {MAX_LINK_MATCHES} resources: "
                        "narrow the criteria", name)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]

