"""Deciding which slice an element belongs to, from the slicing discriminators.

A discriminator is a (type, path) pair. On the instance side we follow the path through the item's
JSON (choice properties, `extension('url')`, `resolve()`, `ofType(T)` and `$this` included). On the
definition side we follow the same path through the slice's rules, descending into datatype plans
when the snapshot does not list the children, and into nested slices (a `code.coding.code`
discriminator finds its fixed code in `code.coding:loinc.code`). When the path ends inside a fixed
or pattern value (`code` has a patternCodeableConcept, the path is `code.coding.code`), the expected
values are read from that value.

- value / pattern: some instance value equals the fixed value / matches the pattern (or, lacking
  both, is in the element's required value set);
- exists: the element is present when the slice requires it, absent when the slice forbids it;
- type: the instance's type is one of the slice's types (any resource for a Reference without targetProfile);
- profile: the instance conforms to one of the slice's profiles (target profiles after `resolve()`); a
  slice type without profile stands for the type's own definition, as HAPI and Firely read it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from fhir_server.validation.plan import CORE_PREFIX, MISSING, Discriminator, ElementRule, Plan, PlanRegistry
from fhir_server.validation.values import equals_fixed, matches_pattern

_FUNCTION = re.compile(r"^(\w+)\((.*)\)$")
_ANY_RESOURCE = frozenset({"Resource", "DomainResource"})


class SlicingServices(Protocol):
    def resolve(self, reference: str) -> dict | None: ...

    def type_in_reference(self, reference: str) -> str | None: ...

    def conforms(self, value: object, type_code: str, profile: str) -> bool | None: ...

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None: ...


@dataclass(frozen=True)
class _Point:
    """Where a discriminator path leads in the definition."""

    rule: ElementRule
    plan: Plan
    type_filter: str | None = None
    resolved: bool = False


class SliceMatcher:
    def __init__(self, plans: PlanRegistry) -> None:
        self._plans = plans
        # What a slice expects at a discriminator path depends on the definitions only: computed once.
        self._points: dict[tuple[int, str], list[_Point]] = {}
        self._expected: dict[tuple[int, str], list[tuple[str, object]]] = {}

    def invalidate(self) -> None:
        self._points.clear()
        self._expected.clear()

    def matches(self, value: object, type_code: str, slice_rule: ElementRule, plan: Plan,
                discriminators: tuple[Discriminator, ...], services: SlicingServices) -> bool:
        return all(self._matches_one(value, type_code, slice_rule, plan, d, services) for d in discriminators)

    def _matches_one(self, value: object, type_code: str, slice_rule: ElementRule, plan: Plan,
                     discriminator: Discriminator, services: SlicingServices) -> bool:
        segments = split_path(discriminator.path)
        found = self._instance_values(value, type_code, segments, services)
        if discriminator.type in ("value", "pattern"):
            return self._value_matches(found, slice_rule, plan, segments, services)
        key = (id(slice_rule), discriminator.path)
        points = self._points.get(key)
        if points is None:
            points = self._points[key] = self._definition_points(slice_rule, plan, segments)
        if discriminator.type == "exists":
            return _exists_matches(bool(found), points)
        if discriminator.type == "type":
            return self._type_matches(found, points)
        if discriminator.type == "profile":
            return any(services.conforms(v, code or "", profile)
                       for v, code in found if v is not None for profile in _slice_profiles(points, code))
        return False

    # -- the instance side ----------------------------------------------------------------------------
    def _instance_values(self, value: object, type_code: str, segments: tuple[str, ...],
                         services: SlicingServices) -> list[tuple[object, str | None]]:
        current: list[tuple[object, str | None]] = [(value, type_code)]
        for segment in segments:
            current = [step for item in current for step in self._instance_step(item, segment, services)]
        return current

    def _instance_step(self, item: tuple[object, str | None], segment: str,
                       services: SlicingServices) -> Iterator[tuple[object, str | None]]:
        value, code = item
        function = _FUNCTION.match(segment)
        if segment == "$this":
            yield item
        elif function and function.group(1) == "extension":
            url = _unquote(function.group(2))
            for extension in _as_list(value.get("extension") if isinstance(value, dict) else None):
                if isinstance(extension, dict) and extension.get("url") == url:
                    yield extension, "Extension"
        elif function and function.group(1) == "resolve":
            reference = value.get("reference") if isinstance(value, dict) else None
            target = services.resolve(reference) if isinstance(reference, str) else None
            if target is not None:
                yield target, target.get("resourceType")
            elif isinstance(reference, str) and (type_name := services.type_in_reference(reference)):
                yield None, type_name      # unresolved, but `Observation/123` still tells the type
        elif function and function.group(1) == "ofType":
            wanted = function.group(2).strip()
            if code == wanted or (isinstance(value, dict) and value.get("resourceType") == wanted):
                yield item
        elif isinstance(value, dict):
            if segment in value:
                for child in _as_list(value[segment]):
                    yield child, child.get("resourceType") if isinstance(child, dict) else None
                return
            for key, child in value.items():         # a choice: `value` finds valueQuantity
                suffix_type = self._plans.type_suffixes.get(key[len(segment):]) if key.startswith(segment) else None
                if suffix_type:
                    for one in _as_list(child):
                        yield one, suffix_type

    # -- the definition side --------------------------------------------------------------------------
    def _definition_points(self, slice_rule: ElementRule, plan: Plan, segments: tuple[str, ...]) -> list[_Point]:
        points = [_Point(slice_rule, plan)]
        for segment in segments:
            points = [step for point in points for step in self._definition_step(point, segment)]
        return points

    def _definition_step(self, point: _Point, segment: str) -> Iterator[_Point]:
        function = _FUNCTION.match(segment)
        if segment == "$this":
            yield point
        elif function and function.group(1) == "resolve":
            yield _Point(point.rule, point.plan, point.type_filter, resolved=True)
        elif function and function.group(1) == "ofType":
            yield _Point(point.rule, point.plan, function.group(2).strip(), point.resolved)
        elif function and function.group(1) == "extension":
            url = _unquote(function.group(2))
            for extension_rule, plan in self._children_named(point, "extension"):
                for candidate in extension_rule.slices:
                    if _extension_url(candidate) == url:
                        yield _Point(candidate, plan)
        else:
            for child, plan in self._children_named(point, segment):
                yield _Point(child, plan)
                for slice_rule in child.slices:        # fixed values often live in nested slices
                    yield _Point(slice_rule, plan)

    def _children_named(self, point: _Point, name: str) -> Iterator[tuple[ElementRule, Plan]]:
        codes = [point.type_filter] if point.type_filter else sorted(point.rule.type_codes) or ["BackboneElement"]
        for code in codes:
            container, type_plan = self._plans.children_for(point.rule, code, point.plan)
            if container is None:
                continue
            for child in container.children:
                if child.name in (name, name + "[x]"):
                    yield child, type_plan or point.plan

    def _type_matches(self, found: list[tuple[object, str | None]], points: list[_Point]) -> bool:
        allowed: set[str] = set()
        for point in points:
            if point.resolved:           # Reference(X): the types of the target profiles
                targets = (self._plans.get(p) for t in point.rule.types for p in t.target_profiles)
                allowed |= {plan.type for plan in targets if plan is not None}
                if any(not t.target_profiles for t in point.rule.types):
                    allowed |= _ANY_RESOURCE     # Reference without targetProfile: any target
            elif point.type_filter:
                allowed.add(point.type_filter)
            else:
                allowed |= point.rule.type_codes
        if not found:
            return False
        return all(code in allowed or (code and allowed & _ANY_RESOURCE) for _, code in found)

    def _value_matches(self, found: list[tuple[object, str | None]], slice_rule: ElementRule, plan: Plan,
                       segments: tuple[str, ...], services: SlicingServices) -> bool:
        values = [v for v, _ in found]
        if segments == ("url",) and (url := _extension_url(slice_rule)) is not None:
            return url in values       # extension slices: the URL is the extension's profile
        key = (id(slice_rule), ".".join(segments))
        expectations = self._expected.get(key)
        if expectations is None:
            expectations = self._expected[key] = list(self._expectations(_Point(slice_rule, plan), segments))
        if not expectations:
            return True        # nothing in the slice to tell items apart: any item fits
        for kind, expected in expectations:
            if kind == "fixed" and any(equals_fixed(v, expected) for v in values):
                return True
            if kind == "pattern" and any(matches_pattern(v, expected) for v in values):
                return True
            if kind == "binding" and any(_in_value_set(v, expected, services) for v in values):
                return True
        return False

    def _expectations(self, point: _Point, segments: tuple[str, ...]) -> Iterator[tuple[str, object]]:
        """('fixed' | 'pattern' | 'binding', expected) pairs the discriminated value must meet."""
        segments = _without_this(segments)
        rule = point.rule
        if not segments:
            if rule.fixed is not MISSING:
                yield "fixed", rule.fixed
            elif rule.pattern is not MISSING:
                yield "pattern", rule.pattern
            elif rule.binding is not None and rule.binding.strength == "required":
                yield "binding", rule.binding.value_set
            return
        declared = rule.fixed if rule.fixed is not MISSING else rule.pattern
        if declared is not MISSING:        # the rest of the path lies inside the fixed/pattern value
            for value in _navigate_data(declared, segments):
                yield "pattern", value
            return
        for step in self._definition_step(point, segments[0]):
            yield from self._expectations(step, segments[1:])


def _exists_matches(present: bool, points: list[_Point]) -> bool:
    if not points:
        return True
    rule = points[0].rule
    if rule.min > 0:
        return present
    if rule.max == 0:
        return not present
    return True


def _slice_profiles(points: list[_Point], instance_type: str | None) -> list[str]:
    """The profiles an instance of `instance_type` is checked against to belong to the slice: those its
    types (or, after resolve(), its reference targets) name; a type naming none stands for the type's
    own definition, which every instance of that type meets (as HAPI and Firely read it)."""
    profiles = []
    for point in points:
        for type_ref in point.rule.types:
            named = type_ref.target_profiles if point.resolved else type_ref.profiles
            if named:
                profiles.extend(named)
            elif (base := _base_definition(type_ref.code, instance_type, point.resolved)) is not None:
                profiles.append(base)
    return profiles


def _base_definition(slice_type: str, instance_type: str | None, resolved: bool) -> str | None:
    """The core StructureDefinition of a slice type declared without profile. Reference(Any) and
    Resource accept any resource: the instance's own type is the one that must match."""
    if resolved or slice_type in _ANY_RESOURCE:
        return CORE_PREFIX + instance_type if instance_type else None
    return CORE_PREFIX + slice_type


def _extension_url(rule: ElementRule) -> str | None:
    """The URL an extension slice stands for: its type profile, or its fixed `url` child."""
    for type_ref in rule.types:
        if type_ref.profiles:
            return type_ref.profiles[0]
    for child in rule.children:
        if child.name == "url" and isinstance(child.fixed, str):
            return child.fixed
    return None


def _in_value_set(value: object, value_set: str, services: SlicingServices) -> bool:
    if isinstance(value, str):
        return services.member_of(value_set, None, value) is True
    if isinstance(value, dict):
        codings = value.get("coding", [value])
        return any(isinstance(c, dict) and isinstance(c.get("code"), str)
                   and services.member_of(value_set, c.get("system"), c["code"]) is True for c in codings)
    return False


def _without_this(segments: tuple[str, ...]) -> tuple[str, ...]:
    """`$this` names the element itself: `$this.code` is `code`, and `$this` alone is the element."""
    return tuple(segment for segment in segments if segment != "$this")


def _navigate_data(value: object, segments: tuple[str, ...]) -> list[object]:
    current = [value]
    for segment in segments:
        current = [child for item in current if isinstance(item, dict) for child in _as_list(item.get(segment))]
    return current


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _unquote(text: str) -> str:
    return text.strip().strip("'\"")


@functools.lru_cache(maxsize=1024)
def split_path(path: str) -> tuple[str, ...]:
    """`extension('http://a.b/c').value` -> ('extension('http://a.b/c')', 'value') (dots inside
    parentheses or quotes do not split)."""
    segments, current, depth, quote = [], [], 0, None
    for char in path:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))
    return tuple(s for s in segments if s)
