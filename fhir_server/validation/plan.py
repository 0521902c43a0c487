"""A StructureDefinition snapshot compiled into a tree of element rules, once per profile URL.

The validator walks resources along these trees instead of re-reading ElementDefinitions: each rule
keeps what is checked at one element (cardinality, types, fixed/pattern value, binding, invariants,
slicing) and its children by JSON property name. Elements whose children are not listed in the
snapshot (a datatype that the profile does not constrain) borrow the children of the datatype's own
plan at walk time (`PlanRegistry.children_for`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir_server.definitions import Definitions
from fhir_server.terminology import strip_version
from fhir_server.validation.invariants import Invariant, InvariantEngine
from fhir_server.validation.snapshot import (
    SnapshotError,
    derive_ids,
    ensure_snapshot,
    sliced_element_id,
    type_code,
)

CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
MISSING = object()      # "no fixed/pattern value" (None could be a value in theory)


@dataclass(frozen=True)
class TypeRef:
    code: str
    profiles: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()
    aggregation: tuple[str, ...] = ()      # contained | referenced | bundled; empty: any


@dataclass(frozen=True)
class Binding:
    strength: str
    value_set: str


@dataclass(frozen=True)
class Discriminator:
    type: str          # value | pattern | exists | type | profile
    path: str


@dataclass(frozen=True)
class Slicing:
    discriminators: tuple[Discriminator, ...]
    rules: str         # open | closed | openAtEnd
    ordered: bool


# The slicing assumed when an element has slices but declares none: the R4 core snapshots do that for
# the type slices of a choice (`value[x]:valueQuantity`); extensions are always sliced by url.
IMPLICIT_TYPE_SLICING = Slicing((Discriminator("type", "$this"),), "open", False)
EXTENSION_SLICING = Slicing((Discriminator("value", "url"),), "open", False)


@dataclass(eq=False)
class ElementRule:
    id: str
    path: str
    name: str                       # last path segment: `identifier`, `value[x]`
    min: int
    max: int | None                 # None = unbounded
    types: tuple[TypeRef, ...]
    fixed: object = MISSING
    pattern: object = MISSING
    binding: Binding | None = None
    invariants: tuple[Invariant, ...] = ()
    slicing: Slicing | None = None
    slice_name: str | None = None
    content_reference: str | None = None
    is_modifier: bool = False
    fhirpath_type: str = ""         # the path fhirpathpy knows this element's type by
    children: list[ElementRule] = field(default_factory=list)
    slices: list[ElementRule] = field(default_factory=list)
    child_index: dict[str, tuple[ElementRule, str | None]] = field(default_factory=dict)

    @property
    def is_choice(self) -> bool:
        return self.name.endswith("[x]")

    @property
    def type_codes(self) -> frozenset[str]:
        return frozenset(t.code for t in self.types)

    def type_ref(self, code: str) -> TypeRef | None:
        for type_ref in self.types:
            if type_ref.code == code:
                return type_ref
        return None

    def effective_slicing(self) -> Slicing | None:
        if self.slicing is not None or not self.slices:
            return self.slicing
        return IMPLICIT_TYPE_SLICING if self.is_choice else EXTENSION_SLICING

    @functools.cached_property
    def required_children(self) -> tuple[ElementRule, ...]:
        """Children that must be checked even when absent (a minimum, or slices with one)."""
        return tuple(c for c in self.children if c.min > 0 or any(s.min > 0 for s in c.slices))

    def label(self) -> str:
        """How diagnostics name the element: its path, or its id inside a slice (`Patient.identifier:INS.value`)."""
        if self.slice_name:
            return f"slice '{self.slice_name}' of {self.path}"
        return self.id if ":" in self.id else self.path


@dataclass(eq=False)
class Plan:
    url: str
    type: str
    kind: str
    root: ElementRule
    by_path: dict[str, ElementRule]        # unsliced elements, for contentReference
    name: str = ""


class PlanRegistry:
    """Compiled plans by canonical URL, built on first use and kept for the process lifetime."""

    def __init__(self, definitions: Definitions, invariants: InvariantEngine) -> None:
        self._definitions = definitions
        self._invariants = invariants
        self._plans: dict[str, Plan | None] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.RLock()
        # `valueQuantity` -> Quantity, `valueString` -> string, for every datatype a choice may take
        self.type_suffixes = {
            code[0].upper() + code[1:]: code
            for code, sd in definitions.base_types.items()
            if sd.get("kind") in ("primitive-type", "complex-type")
        }

    def get(self, url: str) -> Plan | None:
        """The plan of a StructureDefinition, or None when unknown or unusable (see `error`)."""
        url = strip_version(url)
        if url not in self._plans:
            with self._lock:
                if url not in self._plans:
                    self._plans[url] = self._build(url)
        return self._plans[url]

    def invalidate(self) -> None:
        with self._lock:
            self._plans.clear()
            self._errors.clear()

    def error(self, url: str) -> str | None:
        return self._errors.get(strip_version(url))

    def base(self, type_name: str) -> Plan | None:
        return self.get(CORE_PREFIX + type_name)

    def is_resource_type(self, code: str) -> bool:
        return code in ("Resource", "DomainResource") or self._definitions.is_resource_type(code)

    def children_for(self, rule: ElementRule, code: str, plan: Plan) -> tuple[ElementRule | None, Plan | None]:
        """The rule whose `children` describe the content of one occurrence of `rule` of type
        `code` (the rule itself when the snapshot lists them, the target of a contentReference, or
        the root of the datatype's plan), and that datatype plan when it was borrowed."""
        if rule.children:
            return rule, None
        if rule.content_reference:
            return plan.by_path.get(rule.content_reference), None
        type_ref = rule.type_ref(code)
        type_plan = None
        if type_ref and type_ref.profiles:
            type_plan = self.get(type_ref.profiles[0])
        if type_plan is None:
            type_plan = self.base(code)
        return (type_plan.root if type_plan else None), type_plan

    def _index(self, children: Iterable[ElementRule]) -> dict[str, tuple[ElementRule, str | None]]:
        """JSON property name -> (child rule, type code when the property names a choice type)."""
        index: dict[str, tuple[ElementRule, str | None]] = {}
        plain = []
        for child in children:
            if child.is_choice:
                stem = child.name[:-3]
                for suffix, code in self.type_suffixes.items():
                    index[stem + suffix] = (child, code)
            else:
                plain.append(child)
        index.update((child.name, (child, None)) for child in plain)   # a real element wins
        return index

    # -- compiling ----------------------------------------------------------------------------------
    def _build(self, url: str) -> Plan | None:
        sd = self._definitions.structures.get(url)
        if sd is None:
            return None
        try:
            sd = ensure_snapshot(sd, self._definitions)
        except SnapshotError as exc:
            self._errors[url] = str(exc)
            return None
        elements = sd["snapshot"]["element"]
        rules: dict[str, ElementRule] = {}
        root: ElementRule | None = None
        for element, element_id in zip(elements, derive_ids(elements), strict=True):
            rule = self._rule(element, element_id)
            rules[element_id] = rule
            parent_id, _, last = element_id.rpartition(".")
            name, _, slice_name = last.partition(":")
            if not parent_id:
                root = rule
            elif slice_name:
                sliced = rules.get(sliced_element_id(parent_id, name, slice_name))
                if sliced is not None:
                    sliced.slices.append(rule)
            elif parent_id in rules:
                rules[parent_id].children.append(rule)
        if root is None:
            return None
        by_path = {r.path: r for r in rules.values() if ":" not in r.id}
        self._index_children(rules.values())
        return Plan(url=url, type=sd.get("type", ""), kind=sd.get("kind", ""), root=root, by_path=by_path,
                    name=sd.get("title") or sd.get("name") or url)

    def _index_children(self, rules: Iterable[ElementRule]) -> None:
        for rule in rules:
            if rule.children:
                rule.child_index = self._index(rule.children)

    def _rule(self, element: dict, element_id: str) -> ElementRule:
        path = element["path"]
        types = tuple(
            TypeRef(type_code(t), tuple(strip_version(p) for p in t.get("profile", [])),
                    tuple(strip_version(p) for p in t.get("targetProfile", [])), tuple(t.get("aggregation", [])))
            for t in element.get("type", [])
        )
        fixed = pattern = MISSING
        for key, value in element.items():
            if key.startswith("fixed"):
                fixed = value
            elif key.startswith("pattern"):
                pattern = value
        binding = element.get("binding")
        slicing = element.get("slicing")
        reference = element.get("contentReference")
        max_ = element.get("max", "*")
        return ElementRule(
            id=element_id,
            path=path,
            name=path.rsplit(".", 1)[-1],
            min=int(element.get("min", 0)),
            max=None if max_ == "*" else int(max_),
            types=types,
            fixed=fixed,
            pattern=pattern,
            binding=Binding(binding["strength"], strip_version(binding["valueSet"]))
            if binding and binding.get("valueSet") and binding.get("strength") else None,
            invariants=self._invariants.compile_all(element.get("constraint", [])),
            slicing=Slicing(
                tuple(Discriminator(d["type"], d["path"]) for d in slicing.get("discriminator", [])),
                slicing.get("rules", "open"), bool(slicing.get("ordered", False)),
            ) if slicing else None,
            slice_name=element.get("sliceName"),
            content_reference=reference.split("#", 1)[-1] if reference else None,
            is_modifier=bool(element.get("isModifier")),
            fhirpath_type=(reference.split("#", 1)[-1] if reference
                           else element.get("base", {}).get("path") or path),
        )
