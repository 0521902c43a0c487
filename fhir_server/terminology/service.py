"""ValueSet expansion and code validation against the CodeSystems held in `Definitions`.

An expansion is computed once per value set and cached. Internally every partial result records
two facts so that we never answer wrongly when we only know part of a value set:
- `complete`: every member of the value set is in `codes` (so "not in codes" means "not a member");
- `certain`: every code in `codes` is a member (so "in codes" means "a member").
A value set that includes all of SNOMED CT, say, plus three listed codes is neither complete nor
unusable: the three listed codes are certain members, anything else is unknown.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fhir_server.definitions import Definitions

Code = tuple[str, str]   # (system, code)


def strip_version(canonical: str) -> str:
    """`http://x/ValueSet/y|1.2` -> `http://x/ValueSet/y` (we hold one version of each resource)."""
    return canonical.split("|", 1)[0]


@dataclass(frozen=True)
class _Expansion:
    codes: frozenset[Code]
    complete: bool
    certain: bool

    @functools.cached_property
    def bare_codes(self) -> frozenset[str]:
        """The codes without their systems, for `code` elements that carry no system."""
        return frozenset(code for _, code in self.codes)


_UNKNOWN = _Expansion(frozenset(), complete=False, certain=True)


class Terminology:
    """Local terminology operations over `definitions.value_sets` and `definitions.code_systems`."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        self._expansions: dict[str, _Expansion] = {}
        self._code_systems: dict[str, _CodeSystemIndex | None] = {}
        self._lock = threading.Lock()
        # A CodeSystem may declare the value set of "all its codes" without that ValueSet being shipped.
        self._implicit_value_sets = {
            strip_version(cs["valueSet"]): url
            for url, cs in definitions.code_systems.items() if isinstance(cs.get("valueSet"), str)
        }

    # -- public API ---------------------------------------------------------------------------
    def expand(self, valueset_url: str) -> frozenset[Code] | None:
        """Every (system, code) of the value set, or None when it cannot be expanded completely
        (unknown value set, code systems we do not hold, unsupported filters)."""
        expansion = self._expansion(strip_version(valueset_url), ())
        return expansion.codes if expansion.complete and expansion.certain else None

    def validate_code(self, valueset_url: str, system: str | None, code: str) -> bool | None:
        """True / False when we know whether the code is in the value set, None when we cannot tell.
        Without a system (a bare `code` element) any system of the value set matches."""
        expansion = self._expansion(strip_version(valueset_url), ())
        if system is not None:
            system = strip_version(system)
            found = (system, code) in expansion.codes
        else:
            found = code in expansion.bare_codes
        if found and expansion.certain:
            return True
        if not found and expansion.complete:
            return False
        return None

    def lookup(self, system: str, code: str) -> str | None:
        """The display of a code in a CodeSystem we hold, or None."""
        index = self._code_system(strip_version(system))
        if index is None:
            return None
        concept = index.concepts.get(code)
        return concept.get("display") if concept else None

    def subsumed(self, system: str, code: str, direction: str) -> frozenset[str] | None:
        """Codes of a CodeSystem we hold completely that are subsumed by `code` ("below": the code
        and its descendants) or that subsume it ("above": the code and its ancestors). Empty for a
        code the system does not define; None when we do not hold the whole system."""
        index = self._code_system(strip_version(system))
        if index is None or not index.complete:
            return None
        if code not in index.concepts:
            return frozenset()
        related = index.descendants(code) if direction == "below" else index.ancestors(code)
        return frozenset({code, *related})

    def invalidate(self) -> None:
        """Forget cached expansions, after ValueSets or CodeSystems changed."""
        with self._lock:
            self._expansions.clear()
            self._code_systems.clear()

    def has_value_set(self, valueset_url: str) -> bool:
        url = strip_version(valueset_url)
        return url in self._definitions.value_sets or url in self._implicit_value_sets

    # -- expansion ----------------------------------------------------------------------------
    def _expansion(self, url: str, in_progress: tuple[str, ...]) -> _Expansion:
        cached = self._expansions.get(url)
        if cached is not None:
            return cached
        if url in in_progress:          # an import cycle: give up on this branch, honestly
            return _UNKNOWN
        expansion = self._compute(url, in_progress + (url,))
        with self._lock:
            self._expansions[url] = expansion
        return expansion

    def _compute(self, url: str, in_progress: tuple[str, ...]) -> _Expansion:
        value_set = self._definitions.value_sets.get(url)
        if value_set is None:
            system = self._implicit_value_sets.get(url)
            return self._whole_system(system) if system else _UNKNOWN
        compose = value_set.get("compose")
        if compose is None:
            return _stored_expansion(value_set)
        included = _union(self._include(part, in_progress) for part in compose.get("include", []))
        if not compose.get("exclude"):
            return included
        excluded = _union(self._include(part, in_progress) for part in compose["exclude"])
        return _Expansion(
            codes=included.codes - excluded.codes,
            # removing codes that may not really be excluded could lose members...
            complete=included.complete and excluded.certain,
            # ...and codes we could not see in the exclusion may still be excluded
            certain=included.certain and excluded.complete,
        )

    def _include(self, part: dict, in_progress: tuple[str, ...]) -> _Expansion:
        """One compose.include (or exclude): its system selection intersected with its imports."""
        pieces: list[_Expansion] = []
        system = part.get("system")
        if system:
            pieces.append(self._system_part(strip_version(system), part))
        for imported in part.get("valueSet", []):
            pieces.append(self._expansion(strip_version(imported), in_progress))
        if not pieces:
            return _Expansion(frozenset(), complete=True, certain=True)
        codes = pieces[0].codes
        for piece in pieces[1:]:
            codes = codes & piece.codes
        return _Expansion(codes, all(p.complete for p in pieces), all(p.certain for p in pieces))

    def _system_part(self, system: str, part: dict) -> _Expansion:
        if part.get("concept"):
            # an enumeration is exact even when we do not hold the code system (LOINC codes listed)
            return _Expansion(frozenset((system, c["code"]) for c in part["concept"]), True, True)
        filters = part.get("filter", [])
        if not filters:
            return self._whole_system(system)
        index = self._code_system(system)
        if index is None or not index.complete:
            return _UNKNOWN
        selected: set[str] | None = None
        for flt in filters:
            codes = index.filter(flt.get("property", ""), flt.get("op", ""), str(flt.get("value", "")))
            if codes is None:
                return _UNKNOWN
            selected = codes if selected is None else selected & codes
        return _Expansion(frozenset((system, c) for c in selected or ()), True, True)

    def _whole_system(self, system: str) -> _Expansion:
        index = self._code_system(system)
        if index is None or not index.complete:
            return _UNKNOWN
        return _Expansion(frozenset((system, c) for c in index.concepts), True, True)

    def _code_system(self, url: str) -> _CodeSystemIndex | None:
        if url not in self._code_systems:
            resource = self._definitions.code_systems.get(url)
            index = _CodeSystemIndex.build(resource) if resource else None
            with self._lock:
                self._code_systems[url] = index
        return self._code_systems[url]


def _union(parts: Iterable[_Expansion]) -> _Expansion:
    codes: set[Code] = set()
    complete = certain = True
    for part in parts:
        codes |= part.codes
        complete &= part.complete
        certain &= part.certain
    return _Expansion(frozenset(codes), complete, certain)


def _stored_expansion(value_set: dict) -> _Expansion:
    """A value set shipped already expanded (no compose): trust it when it says it is whole."""
    expansion = value_set.get("expansion")
    if not expansion:
        return _UNKNOWN
    codes = frozenset(
        (c["system"], c["code"]) for c in _walk_contains(expansion.get("contains", []))
        if "system" in c and "code" in c
    )
    whole = "offset" not in expansion and expansion.get("total", len(codes)) == len(codes)
    return _Expansion(codes, complete=whole, certain=True)


def _walk_contains(contains: list[dict]) -> Iterator[dict]:
    for item in contains:
        yield item
        yield from _walk_contains(item.get("contains", []))


# -- one CodeSystem, flattened with its hierarchy ------------------------------------------------
@dataclass
class _CodeSystemIndex:
    complete: bool
    concepts: dict[str, dict] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    parents: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, resource: dict) -> _CodeSystemIndex:
        # "fragment", "example", "not-present" and supplements do not list every code
        index = cls(complete=resource.get("content", "complete") == "complete")
        index._add(resource.get("concept", []), parent=None)
        # Hierarchies may also be stated with properties instead of nesting.
        for code, concept in index.concepts.items():
            for prop in concept.get("property", []):
                if prop.get("code") in ("parent", "subsumedBy") and "valueCode" in prop:
                    index._link(prop["valueCode"], code)
                elif prop.get("code") == "child" and "valueCode" in prop:
                    index._link(code, prop["valueCode"])
        return index

    def _add(self, concepts: list[dict], parent: str | None) -> None:
        for concept in concepts:
            code = concept.get("code")
            if code is None:
                continue
            self.concepts[code] = concept
            if parent is not None:
                self._link(parent, code)
            self._add(concept.get("concept", []), code)

    def _link(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)

    def descendants(self, code: str) -> set[str]:
        return _reachable(code, self.children)

    def ancestors(self, code: str) -> set[str]:
        return _reachable(code, self.parents)

    def filter(self, prop: str, op: str, value: str) -> set[str] | None:
        """The codes selected by one compose filter, or None for a filter we do not support."""
        if prop in ("concept", "code"):
            return self._concept_filter(op, value)
        if prop == "parent" and op == "=":
            return set(self.children.get(value, ()))
        if prop == "child" and op == "=":
            return set(self.parents.get(value, ()))
        return self._property_filter(prop, op, value)

    def _concept_filter(self, op: str, value: str) -> set[str] | None:
        if op == "is-a":
            return ({value} | self.descendants(value)) if value in self.concepts else set()
        if op == "descendent-of":
            return self.descendants(value)
        if op == "is-not-a":
            return set(self.concepts) - {value} - self.descendants(value)
        if op in ("=", "in", "not-in"):
            listed = {v.strip() for v in value.split(",")} if op != "=" else {value}
            if op == "not-in":
                return set(self.concepts) - listed
            return listed & set(self.concepts)
        if op == "regex":
            pattern = re.compile(value)
            return {c for c in self.concepts if pattern.fullmatch(c)}
        return None

    def _property_filter(self, prop: str, op: str, value: str) -> set[str] | None:
        if op not in ("=", "in", "exists", "regex"):
            return None
        selected = set()
        pattern = re.compile(value) if op == "regex" else None
        wanted = {v.strip() for v in value.split(",")} if op == "in" else {value}
        for code, concept in self.concepts.items():
            values = [_property_value(p) for p in concept.get("property", []) if p.get("code") == prop]
            if op == "exists":
                if bool(values) == (value.lower() == "true"):
                    selected.add(code)
            elif pattern is not None:
                if any(pattern.fullmatch(v) for v in values):
                    selected.add(code)
            elif any(v in wanted for v in values):
                selected.add(code)
        return selected


def _reachable(code: str, links: dict[str, set[str]]) -> set[str]:
    """Every code reached from `code` by following `links` (children or parents), cycles included once."""
    seen: set[str] = set()
    stack = list(links.get(code, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(links.get(current, ()))
    return seen


def _property_value(prop: dict) -> str:
    for key, value in prop.items():
        if key.startswith("value"):
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, dict):       # valueCoding
                return str(value.get("code", ""))
            return str(value)
    return ""
