"""Local terminology for the token modifiers: ValueSet expansion for `:in` / `:not-in`, and
subsumption in a CodeSystem's hierarchy for `:below` / `:above`.

Only what can be answered from the definitions we hold: enumerated concepts, whole CodeSystems,
other ValueSets, and excludes. Filters (`is-a`...) in ValueSets would need a terminology server.
Subsumption needs the whole CodeSystem: as HAPI FHIR does, a `:below` / `:above` on a system we do
not hold never widens the search (it would otherwise be ignored and return everything); it is a
400 saying which system is missing.
"""

from __future__ import annotations

import functools

from fhir_server.definitions import Definitions
from fhir_server.search.criteria import MalformedValue, UnsupportedModifier
from fhir_server.terminology import Terminology


class LocalTerminology:
    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.hierarchies = Terminology(definitions)

    def subsumed(self, system: str | None, code: str, direction: str, binding: str | None) -> list[str]:
        """Token entries (`system|code`) subsumed by (`below`) or subsuming (`above`) the code.
        Without a system, the system is the one the element's bound ValueSet gives that code (HAPI
        does the same); when none or several do, the client has to name it."""
        system = system or self._system_from_binding(code, binding)
        if not system:
            raise MalformedValue(f":{direction} needs system|code: no system given for {code!r}, and none "
                                 "follows from the element's binding")
        codes = self.hierarchies.subsumed(system, code, direction)
        if codes is None:
            raise MalformedValue(f":{direction} needs the hierarchy of the CodeSystem {system}, which this server "
                                 "does not hold completely")
        return sorted(f"{system}|{c}" for c in codes)

    def _system_from_binding(self, code: str, binding: str | None) -> str | None:
        if not binding:
            return None
        members = self.hierarchies.expand(binding) or frozenset()
        systems = {system for system, member in members if member == code}
        return systems.pop() if len(systems) == 1 else None

    def expand(self, url: str) -> list[str]:
        """Token entries (`system|code`) of every code in the ValueSet."""
        return sorted(self._expand(url.split("|", 1)[0], ()))

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one terminology object per registry
    def _expand(self, url: str, visiting: tuple[str, ...]) -> frozenset[str]:
        if url in visiting:
            return frozenset()
        value_set = self.definitions.value_sets.get(url)
        if value_set is None:
            raise MalformedValue(f"unknown ValueSet {url}")
        expansion = value_set.get("expansion", {}).get("contains")
        if expansion and not value_set.get("compose"):
            return frozenset(_contains(expansion))
        compose = value_set.get("compose") or {}
        codes: set[str] = set()
        for include in compose.get("include", ()):
            codes |= self._component(include, (*visiting, url))
        for exclude in compose.get("exclude", ()):
            codes -= self._component(exclude, (*visiting, url))
        return frozenset(codes)

    def _component(self, component: dict, visiting: tuple[str, ...]) -> set[str]:
        if component.get("filter"):
            raise UnsupportedModifier("ValueSets defined by filters need a terminology server")
        system = component.get("system")
        codes: set[str] | None = None
        if system:
            if component.get("concept"):
                codes = {f"{system}|{c['code']}" for c in component["concept"] if c.get("code")}
            else:
                codes = {f"{system}|{code}" for code in self._code_system(system)}
        for nested in component.get("valueSet", ()):
            nested_codes = set(self._expand(nested.split("|", 1)[0], visiting))
            codes = nested_codes if codes is None else codes & nested_codes
        return codes or set()

    def _code_system(self, url: str) -> list[str]:
        code_system = self.definitions.code_systems.get(url)
        if code_system is None or code_system.get("content") not in (None, "complete", "fragment"):
            raise UnsupportedModifier(f"the CodeSystem {url} is not available locally")
        codes: list[str] = []
        stack = list(code_system.get("concept", ()))
        while stack:
            concept = stack.pop()
            if concept.get("code"):
                codes.append(concept["code"])
            stack.extend(concept.get("concept", ()))
        return codes


def _contains(items: list[dict]) -> list[str]:
    out = []
    for item in items:
        if item.get("code") and item.get("system"):
            out.append(f"{item['system']}|{item['code']}")
        out.extend(_contains(item.get("contains", ())))
    return out
