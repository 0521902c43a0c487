"""`_include` and `_revinclude`, batched: one `$in` query per resource type and rule, never one
query per result. The access filter is applied to every included resource as to the matches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir_server.search.filters import ExtraFilter, and_filters, extra_for, or_filters
from fhir_server.search.query import IncludeSpec, Store
from fhir_server.search.registry import SearchParam, SearchRegistry

MAX_ITERATIONS = 4               # rounds of :iterate
MAX_REVINCLUDE_PER_RULE = 5000   # a revinclude pulling more than this is cut (and reported)

Found = tuple[str, dict]         # (resource type, stored document)


@dataclass
class IncludeResolver:
    registry: SearchRegistry
    store: Store
    extra_filter: ExtraFilter
    truncated: list[str] = field(default_factory=list)

    def resolve(self, matches: list[Found], includes: list[IncludeSpec], revincludes: list[IncludeSpec]) -> list[Found]:
        seen = {(t, d["_id"]) for t, d in matches}
        included: list[Found] = []
        frontier = matches
        for round_number in range(MAX_ITERATIONS + 1):
            first = round_number == 0
            rules_in = [s for s in includes if first or s.iterate]
            rules_rev = [s for s in revincludes if first or s.iterate]
            if not (rules_in or rules_rev) or not frontier:
                break
            found = [*self._forward(frontier, rules_in), *self._reverse(frontier, rules_rev)]
            fresh = []
            for resource_type, document in found:
                identity = (resource_type, document["_id"])
                if identity not in seen:
                    seen.add(identity)
                    fresh.append((resource_type, document))
            included.extend(fresh)
            frontier = fresh
        return included

    # -- _include ----------------------------------------------------------------------------
    def _forward(self, sources: list[Found], rules: list[IncludeSpec]) -> list[Found]:
        wanted: dict[str, set[str]] = defaultdict(set)
        for resource_type, document in sources:
            index = document.get("_index") or {}
            for rule in rules:
                if rule.source not in ("*", resource_type):
                    continue
                for param in self._reference_params(resource_type, rule.param):
                    for reference in _as_list(index.get(param.code)):
                        target, _, ident = reference.partition("/") if isinstance(reference, str) else ("", "", "")
                        if ident and "/" not in ident and target in self.registry.known_types \
                                and (rule.target in (None, target)):
                            wanted[target].add(ident)
        out: list[Found] = []
        for target, ids in wanted.items():
            query = and_filters({"_id": {"$in": sorted(ids)}}, extra_for(self.extra_filter, target))
            out.extend((target, d) for d in self.store.find(target, query, projection=_PROJECTION))
        return out

    def _reference_params(self, resource_type: str, code: str) -> Iterable[SearchParam]:
        params = self.registry.params_for(resource_type)
        if code == "*":
            return [p for p in params.values() if p.type == "reference"]
        param = params.get(code)
        return [param] if param is not None and param.type == "reference" else []

    # -- _revinclude -------------------------------------------------------------------------
    def _reverse(self, targets: list[Found], rules: list[IncludeSpec]) -> list[Found]:
        references_by_type: dict[str, list[str]] = defaultdict(list)
        for resource_type, document in targets:
            references_by_type[resource_type].append(f"{resource_type}/{document['_id']}")
        out: list[Found] = []
        for rule in rules:
            sources = self.registry.resource_types if rule.source == "*" else [rule.source]
            for source in sources:
                conditions = []
                for param in self._reference_params(source, rule.param):
                    references = [r for t, refs in references_by_type.items()
                                  if t in param.targets and rule.target in (None, t) for r in refs]
                    if references:
                        conditions.append({param.field: {"$in": references}})
                if not conditions:
                    continue
                query = and_filters(or_filters(conditions), extra_for(self.extra_filter, source))
                found = self.store.find(source, query, limit=MAX_REVINCLUDE_PER_RULE + 1, projection=_PROJECTION)
                if len(found) > MAX_REVINCLUDE_PER_RULE:
                    self.truncated.append(rule.text)
                    found = found[:MAX_REVINCLUDE_PER_RULE]
                out.extend((source, d) for d in found)
        return out


_PROJECTION = {"resource": 1, "_index": 1}


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
