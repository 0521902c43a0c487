"""Profile validation: a resource walked along the compiled snapshot of its StructureDefinitions.

`ProfileValidator.validate(resource)` checks the resource against the profiles it declares in
`meta.profile` that the server knows (or against its base type definition when it declares none),
`validate(resource, [url, ...])` against the given profiles. A profile's snapshot contains every
rule of the base definition, so a declared profile replaces the base walk instead of repeating it.

At each element: cardinality (including per slice), types and choice types, Reference target
types (and target profiles when the target can be resolved), fixed and pattern values, slicing,
extensions by URL, bindings, and FHIRPath invariants (invariants.py). One engine for every type:
nothing here knows about Patient or Observation.

Issue expressions are FHIRPath locations with indexes on repeating elements, using JSON property
names for choices (`Observation.component[1].valueQuantity.code`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fhir_server.definitions import PRIMITIVE_TYPES, Definitions
from fhir_server.engine.errors import Issue
from fhir_server.terminology import Terminology
from fhir_server.validation.invariants import (
    EvaluationServices,
    Invariant,
    InvariantEngine,
    InvariantScope,
    evaluation_services,
)
from fhir_server.validation.plan import CORE_PREFIX, MISSING, ElementRule, Plan, PlanRegistry
from fhir_server.validation.slicing import SliceMatcher
from fhir_server.validation.values import codes_in, equals_fixed, matches_pattern, show

Resolver = Callable[[str], dict | None]   # reference -> the resource in the store, or None

AGGREGATION_WORDS = {"contained": "a contained resource", "bundled": "an entry of the same bundle",
                     "referenced": "a resource outside the bundle"}
_BACKBONE_TYPES = frozenset({"BackboneElement", "Element", ""})
_ANY_RESOURCE = frozenset({"Resource", "DomainResource"})


class ProfileValidator:
    """Validates resources against StructureDefinitions (compiled once per profile URL)."""

    def __init__(self, definitions: Definitions, terminology: Terminology, resolver: Resolver | None = None) -> None:
        self.definitions = definitions
        self.terminology = terminology
        self.resolver = resolver
        self.invariants = InvariantEngine()
        self.plans = PlanRegistry(definitions, self.invariants)
        self.slices = SliceMatcher(self.plans)
        self._type_invariants: dict[tuple[int, str, int], tuple[Invariant, ...]] = {}

    def validate(self, resource: dict, profile_urls: list[str] | None = None) -> list[Issue]:
        """Every issue found (empty when the resource conforms). With `profile_urls` None, the
        resource's known `meta.profile` entries are used (unknown ones give a warning)."""
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource_type, str) or not self.definitions.is_resource_type(resource_type):
            return [Issue("error", "structure", f"Unknown or missing resourceType: {resource_type!r}",
                          ("resourceType",))]
        walk = _Walk(self)
        with evaluation_services(walk):
            walk.resource(resource, resource_type, requested=profile_urls)
        return walk.issues

    def prepare(self, urls: Iterable[str]) -> dict[str, str]:
        """Compile the plans of these StructureDefinitions now rather than on first use (a first
        validation of a type otherwise costs 5-50 ms). Returns url -> why it cannot be used, for the
        unknown ones and those whose snapshot cannot be generated."""
        problems = {}
        for url in urls:
            if self.plans.get(url) is None:
                problems[url] = self.plans.error(url) or "unknown StructureDefinition"
        return problems

    def invalidate(self) -> None:
        """Forget compiled plans and expansions, after StructureDefinitions or ValueSets changed."""
        self.plans.invalidate()
        self.slices.invalidate()
        self.terminology.invalidate()
        self._type_invariants.clear()

    def invariants_for(self, rule: ElementRule, code: str, type_plan: Plan | None) -> tuple[Invariant, ...]:
        """The element's own invariants plus those of its datatype (Period's per-1, Quantity's
        qty-3...), which snapshots do not copy onto the elements using the type."""
        key = (id(rule), code, id(type_plan))
        cached = self._type_invariants.get(key)
        if cached is None:
            type_root = (type_plan or self.plans.base(code)) if code not in _BACKBONE_TYPES else None
            extra = type_root.root.invariants if type_root is not None else ()
            keys = {i.key for i in rule.invariants}
            cached = rule.invariants + tuple(i for i in extra if i.key not in keys)
            self._type_invariants[key] = cached
        return cached


@dataclass
class _Occurrence:
    """One value of an element: a JSON value and, for primitives, its `_name` companion."""

    value: object
    extra: dict | None
    type_code: str
    expression: str

    @property
    def data(self) -> object:
        return self.value if self.value is not None else self.extra


@dataclass
class _Scope:
    resource: dict
    root: dict               # %rootResource: the container of a contained resource
    bundle: dict | None      # the innermost Bundle around this resource, for bundle-local references
    invariants: InvariantScope


class _Walk(EvaluationServices):
    """The state of one `validate` call: issues found and the stack of resources being walked."""

    def __init__(self, validator: ProfileValidator) -> None:
        self.v = validator
        self.issues: list[Issue] = []
        self._seen: set[Issue] = set()
        self._scopes: list[_Scope] = []
        self._unexpandable: set[str] = set()
        self._resolved: dict[str, dict | None] = {}
        self._checking: set[tuple[int, str]] = set()

    def add(self, severity: str, code: str, diagnostics: str, expression: str) -> None:
        issue = Issue(severity, code, diagnostics, (expression,) if expression else ())
        if issue not in self._seen:       # several profiles share their base rules
            self._seen.add(issue)
            self.issues.append(issue)

    # -- resources ------------------------------------------------------------------------------------
    def resource(self, resource: dict, expression: str, requested: list[str] | None,
                 contained: bool = False, type_profiles: tuple[str, ...] = ()) -> None:
        plans = self._plans_for(resource, expression, requested, type_profiles)
        outer = self._scopes[-1] if self._scopes else None
        bundle = outer.resource if outer and outer.resource.get("resourceType") == "Bundle" else (
            outer.bundle if outer else None)
        root = outer.root if contained and outer else resource
        self._scopes.append(_Scope(resource, root, bundle, InvariantScope(resource, root)))
        try:
            for plan in plans:
                self._check_invariants(plan.root.invariants, resource, None, expression)
                self._children(plan.root, plan, resource, expression)
        finally:
            self._scopes.pop()

    def _plans_for(self, resource: dict, expression: str, requested: list[str] | None,
                   type_profiles: tuple[str, ...]) -> list[Plan]:
        resource_type = resource["resourceType"]
        strict = requested is not None
        meta = resource.get("meta")
        declared = meta.get("profile") if isinstance(meta, dict) else None
        declared = declared if isinstance(declared, list) else []
        urls = list(requested) if strict else [u for u in declared if isinstance(u, str)]
        plans: list[Plan] = []
        for position, url in enumerate([*urls, *type_profiles]):
            where = expression if strict or position >= len(urls) else f"{expression}.meta.profile[{position}]"
            plan = self.v.plans.get(url)
            if plan is None:
                self._unusable_profile(url, where, strict)
            elif plan.type != resource_type:
                self.add("error", "invalid", f"Profile {url} applies to {plan.type} resources, "
                         f"not to a {resource_type}", where)
            elif plan not in plans:
                plans.append(plan)
        if not plans:
            base = self.v.plans.base(resource_type)
            plans = [base] if base else []
        return plans

    def _unusable_profile(self, url: str, where: str, strict: bool) -> None:
        reason = self.v.plans.error(url)
        if reason:
            message = f"Profile {url} cannot be used: {reason}"
        else:
            message = f"Profile {url} is not known to this server"
        if not strict:
            message += "; the resource was checked against the other profiles or the base FHIR definition only"
        self.add("error" if strict else "warning", "not-supported" if not reason else "processing", message, where)

    # -- elements -------------------------------------------------------------------------------------
    def _children(self, container: ElementRule, plan: Plan, obj: dict, expression: str) -> None:
        groups: dict[ElementRule, list[_Occurrence]] = {}
        names: dict[ElementRule, str] = {}       # the JSON name found (`valueCode` for `value[x]`)
        for key in obj:
            name = key[1:] if key.startswith("_") else key
            if name != key and name in obj:
                continue                   # `_given` is read together with `given`
            entry = container.child_index.get(name)
            if entry is None:
                continue                   # unknown properties: the structure validator's job
            rule, choice_type = entry
            groups.setdefault(rule, []).extend(self._occurrences(obj, name, rule, choice_type, expression))
            names.setdefault(rule, name)
        for rule, occurrences in groups.items():
            self._group(rule, plan, occurrences, f"{expression}.{names[rule]}")
        for rule in container.required_children:
            if rule not in groups:
                self._group(rule, plan, [], f"{expression}.{rule.name.removesuffix('[x]')}")

    def _occurrences(self, obj: dict, name: str, rule: ElementRule, choice_type: str | None,
                     expression: str) -> list[_Occurrence]:
        value, extra = obj.get(name), obj.get("_" + name)
        type_code = choice_type or _single_type(rule)
        if isinstance(value, list) or isinstance(extra, list):
            values = value if isinstance(value, list) else []
            extras = extra if isinstance(extra, list) else []
            return [
                _Occurrence(values[i] if i < len(values) else None,
                            extras[i] if i < len(extras) and isinstance(extras[i], dict) else None,
                            type_code, f"{expression}.{name}[{i}]")
                for i in range(max(len(values), len(extras)))
            ]
        return [_Occurrence(value, extra if isinstance(extra, dict) else None, type_code, f"{expression}.{name}")]

    def _group(self, rule: ElementRule, plan: Plan, occurrences: list[_Occurrence], expression: str) -> None:
        """All occurrences of one element (or of one slice): cardinality, slicing, then each value."""
        self._cardinality(rule, plan, len(occurrences), expression)
        if rule.slices:
            self._slicing(rule, plan, occurrences, expression)
        else:
            for occurrence in occurrences:
                self._occurrence(rule, plan, occurrence)

    def _cardinality(self, rule: ElementRule, plan: Plan, count: int, expression: str) -> None:
        subject = rule.label() + _by(plan)
        if count < rule.min:
            self.add("error", "required", f"{subject}: at least {rule.min} required, {count} found", expression)
        if rule.max is not None and count > rule.max:
            if rule.max == 0:
                self.add("error", "structure", f"{subject}: not allowed (max 0), {count} found", expression)
            else:
                self.add("error", "structure", f"{subject}: at most {rule.max} allowed, {count} found", expression)

    def _slicing(self, rule: ElementRule, plan: Plan, occurrences: list[_Occurrence], expression: str) -> None:
        slicing = rule.effective_slicing()
        assert slicing is not None
        matched: dict[int, list[_Occurrence]] = {i: [] for i in range(len(rule.slices))}
        last_slice, seen_unmatched = -1, False
        for occurrence in occurrences:
            index = self._slice_of(rule, plan, occurrence, slicing.discriminators)
            if index is None:
                seen_unmatched = True
                self._unmatched(rule, plan, occurrence, slicing.rules)
                continue
            if slicing.rules == "openAtEnd" and seen_unmatched:
                self.add("error", "structure", f"{occurrence.expression} matches slice "
                         f"'{rule.slices[index].slice_name}' of {rule.path} but comes after an element that "
                         "matches no slice (open at end)", occurrence.expression)
            if slicing.ordered and index < last_slice:
                self.add("error", "structure", f"{occurrence.expression}: the slices of {rule.path} must appear "
                         f"in order; '{rule.slices[index].slice_name}' comes too late", occurrence.expression)
            last_slice = max(last_slice, index)
            matched[index].append(occurrence)
        for index, slice_rule in enumerate(rule.slices):
            self._group(slice_rule, plan, matched[index], expression)

    def _slice_of(self, rule: ElementRule, plan: Plan, occurrence: _Occurrence, discriminators: tuple) -> int | None:
        for index, slice_rule in enumerate(rule.slices):
            if self.v.slices.matches(occurrence.data, occurrence.type_code, slice_rule, plan, discriminators, self):
                return index
        return None

    def _unmatched(self, rule: ElementRule, plan: Plan, occurrence: _Occurrence, rules: str) -> None:
        if rules == "closed":
            names = ", ".join(f"'{s.slice_name}'" for s in rule.slices)
            self.add("error", "structure", f"{occurrence.expression} matches none of the slices of {rule.path} "
                     f"({names}) and the slicing is closed{_by(plan)}", occurrence.expression)
        self._occurrence(rule, plan, occurrence)

    def _occurrence(self, rule: ElementRule, plan: Plan, occurrence: _Occurrence) -> None:
        """One value against one element rule: type, values, bindings, references, invariants,
        then its own children."""
        code = occurrence.type_code
        if rule.types and code not in rule.type_codes and not (rule.type_codes & _ANY_RESOURCE):
            allowed = ", ".join(sorted(rule.type_codes))
            self.add("error", "structure", f"{occurrence.expression}: type {code} is not allowed by "
                     f"{rule.label()}{_by(plan)} (allowed: {allowed})", occurrence.expression)
            return
        if self.v.plans.is_resource_type(code):
            self._nested_resource(rule, occurrence)
            return
        value = occurrence.value
        if value is not None:
            self._values(rule, plan, occurrence)
            if rule.binding is not None:
                self._binding(rule, occurrence)
            if code == "Reference" and isinstance(value, dict):
                self._reference(rule, occurrence)
        container, type_plan = self._content_of(rule, plan, occurrence)
        fhirpath_type = rule.fhirpath_type if code in _BACKBONE_TYPES else code
        self._check_invariants(self.v.invariants_for(rule, code, type_plan), occurrence.data, fhirpath_type,
                               occurrence.expression)
        holder = occurrence.extra if code in PRIMITIVE_TYPES else value
        if container is not None and isinstance(holder, dict):
            self._children(container, type_plan or plan, holder, occurrence.expression)

    def _content_of(self, rule: ElementRule, plan: Plan,
                    occurrence: _Occurrence) -> tuple[ElementRule | None, Plan | None]:
        """Where the children of this value are defined; a plain extension is looked up by URL."""
        type_ref = rule.type_ref(occurrence.type_code)
        if occurrence.type_code == "Extension" and not rule.children and not (type_ref and type_ref.profiles):
            url = occurrence.value.get("url") if isinstance(occurrence.value, dict) else None
            extension_plan = self.v.plans.get(url) if isinstance(url, str) and ":" in url else None
            if extension_plan is not None and extension_plan.type == "Extension":
                return extension_plan.root, extension_plan
            self._unknown_extension(rule, occurrence, url)
        return self.v.plans.children_for(rule, occurrence.type_code, plan)

    def _unknown_extension(self, rule: ElementRule, occurrence: _Occurrence, url: object) -> None:
        if not isinstance(url, str):
            return                          # a missing url is reported by the Extension definition
        reason = self.v.plans.error(url)
        detail = f"its definition cannot be used ({reason})" if reason else "it is not defined on this server"
        if rule.name == "modifierExtension":
            self.add("error", "extension", f"Unknown modifier extension {url}: {detail}, and a modifier "
                     "extension that is not understood makes the resource unsafe to process",
                     occurrence.expression)
        else:
            self.add("warning", "extension", f"Unknown extension {url}: {detail}; its content was not checked",
                     occurrence.expression)

    def _nested_resource(self, rule: ElementRule, occurrence: _Occurrence) -> None:
        value = occurrence.value
        resource_type = value.get("resourceType") if isinstance(value, dict) else None
        if not self._known_type(resource_type):
            return                           # reported by the structure validator
        specific = rule.type_codes - _ANY_RESOURCE
        if specific and resource_type not in specific:
            self.add("error", "structure", f"{occurrence.expression}: a {resource_type} is not allowed by "
                     f"{rule.label()} (allowed: {', '.join(sorted(specific))})", occurrence.expression)
            return
        type_ref = rule.type_ref(resource_type) or rule.type_ref("Resource")
        self.resource(value, occurrence.expression, requested=None, contained=rule.name == "contained",
                      type_profiles=type_ref.profiles if type_ref else ())

    # -- values -----------------------------------------------------------------------------------------
    def _values(self, rule: ElementRule, plan: Plan, occurrence: _Occurrence) -> None:
        value = occurrence.value
        if rule.fixed is not MISSING and not equals_fixed(value, rule.fixed):
            self.add("error", "value", f"{occurrence.expression}: value {show(value)} is not the fixed value "
                     f"{show(rule.fixed)} required by {plan.name}", occurrence.expression)
        if rule.pattern is not MISSING and not matches_pattern(value, rule.pattern):
            self.add("error", "value", f"{occurrence.expression}: value {show(value)} does not match the pattern "
                     f"{show(rule.pattern)} required by {plan.name}", occurrence.expression)

    def _binding(self, rule: ElementRule, occurrence: _Occurrence) -> None:
        binding = rule.binding
        assert binding is not None
        if binding.strength not in ("required", "extensible"):
            return                           # preferred and example bindings are advice only
        codes = codes_in(occurrence.value, occurrence.type_code)
        if codes is None:
            return                           # not a coded type
        terminology = self.v.terminology
        if not codes:
            if occurrence.type_code == "CodeableConcept" and binding.strength == "required" \
                    and terminology.expand(binding.value_set) is not None:
                self.add("error", "code-invalid", f"{occurrence.expression}: a coding from value set "
                         f"{self._value_set_name(binding.value_set)} is required, none given", occurrence.expression)
            return
        answers = [terminology.validate_code(binding.value_set, system, code) for system, code in codes]
        if any(answer is True for answer in answers):
            return
        if all(answer is False for answer in answers):
            shown = ", ".join(f"{system}|{code}" if system else f"'{code}'" for system, code in codes)
            if binding.strength == "required":
                self.add("error", "code-invalid", f"{occurrence.expression}: {shown} is not in the value set "
                         f"{self._value_set_name(binding.value_set)} required here", occurrence.expression)
            else:
                self.add("warning", "code-invalid", f"{occurrence.expression}: {shown} is not in the value set "
                         f"{self._value_set_name(binding.value_set)} (extensible binding: use a code from it "
                         "when one fits)", occurrence.expression)
            return
        if binding.value_set not in self._unexpandable:
            # codes of systems the server does not hold (LOINC, SNOMED CT...): accepted, with a warning
            self._unexpandable.add(binding.value_set)
            self.add("warning", "not-supported", f"Value set {binding.value_set} cannot be expanded by this "
                     "server (not held here, or drawing on code systems it does not hold); the codes of "
                     f"{rule.path} were accepted without being checked against it", occurrence.expression)

    def _value_set_name(self, url: str) -> str:
        value_set = self.v.definitions.value_sets.get(url)
        title = (value_set or {}).get("title") or (value_set or {}).get("name")
        return f"'{title}' ({url})" if title else url

    # -- references -------------------------------------------------------------------------------------
    def _reference(self, rule: ElementRule, occurrence: _Occurrence) -> None:
        type_ref = rule.type_ref("Reference")
        if type_ref and type_ref.aggregation:
            self._aggregation(type_ref.aggregation, occurrence)
        allowed = self._target_types(type_ref.target_profiles if type_ref else ())
        if allowed is None:
            return
        value = occurrence.value
        assert isinstance(value, dict)
        reference = value.get("reference") if isinstance(value.get("reference"), str) else None
        target = self.resolve(reference) if reference and reference.startswith(("#", "urn:")) else None
        actual = value.get("type") or (target or {}).get("resourceType") or (
            self.type_in_reference(reference) if reference else None)
        if not isinstance(actual, str):
            return                           # a logical reference (identifier only) or an unknown target
        if actual not in allowed:
            self.add("error", "structure", f"{occurrence.expression}: a reference to a {actual} is not allowed "
                     f"here (allowed: {', '.join(sorted(allowed))})", occurrence.expression)
            return
        profiles = [p for p in allowed[actual] if self.v.plans.get(p) is not None]
        if not profiles or reference is None:
            return
        target = target or self.resolve(reference)
        contained = reference.startswith("#")
        if target is not None and not any(self.conforms(target, actual, p, contained) for p in profiles):
            self.add("error", "structure", f"{occurrence.expression}: the referenced {actual} ({reference}) does not "
                     f"conform to {' or '.join(profiles)}", occurrence.expression)

    def _aggregation(self, modes: tuple[str, ...], occurrence: _Occurrence) -> None:
        """ElementDefinition.type.aggregation: the target must be contained, in the same bundle, or
        elsewhere (e.g. PDSm: a document's author is a contained resource). A warning, not an error:
        DMP feeds (and the ANS's own PDSm examples) point `sourcePatientInfo` at the Patient rather than
        at a contained copy, and refusing them would refuse documents that are otherwise sound."""
        reference = occurrence.value.get("reference") if isinstance(occurrence.value, dict) else None
        if not isinstance(reference, str):
            return                           # a logical reference: nothing to tell
        if reference.startswith("#"):
            mode = "contained"
        elif any(s.bundle is not None and _in_bundle(s.bundle, reference) is not None for s in self._scopes):
            mode = "bundled"
        else:
            mode = "referenced"
        if mode not in modes:
            wanted = " or ".join(AGGREGATION_WORDS[m] for m in modes if m in AGGREGATION_WORDS)
            self.add("warning", "structure", f"{occurrence.expression}: the reference {reference} should point to "
                     f"{wanted} (aggregation), not to {AGGREGATION_WORDS[mode]}", occurrence.expression)

    def _target_types(self, target_profiles: tuple[str, ...]) -> dict[str, list[str]] | None:
        """Allowed target type -> the profiles a target of that type must meet one of (none to meet
        when the list is empty); None: anything goes. A target meets any one of its type's target
        profiles, and the core definition of the type, when listed, is met by every resource of it."""
        if not target_profiles:
            return None
        allowed: dict[str, list[str]] = {}
        base_listed: set[str] = set()
        for url in target_profiles:
            sd = self.v.definitions.structures.get(url)
            target_type = sd.get("type") if sd else None
            if target_type is None or target_type in _ANY_RESOURCE:
                return None                  # an unknown profile or Reference(Any): cannot restrict
            allowed.setdefault(target_type, [])
            if url == CORE_PREFIX + target_type:
                base_listed.add(target_type)
            else:
                allowed[target_type].append(url)
        for target_type in base_listed:
            allowed[target_type] = []
        return allowed

    def _known_type(self, resource_type: object) -> bool:
        return isinstance(resource_type, str) and self.v.definitions.is_resource_type(resource_type)

    def type_in_reference(self, reference: str) -> str | None:
        """`Patient/1`, `http://x/fhir/Patient/1/_history/2` -> Patient."""
        parts = reference.split("/_history/")[0].split("?")[0].rstrip("/").split("/")
        if len(parts) >= 2 and self.v.definitions.is_resource_type(parts[-2]):
            return parts[-2]
        return None

    # -- services for FHIRPath functions and slicing ----------------------------------------------------
    def resolve(self, reference: str) -> dict | None:
        scope = self._scopes[-1] if self._scopes else None
        if reference.startswith("#"):
            container = scope.root if scope else None
            if container is None:
                return None
            if reference == "#":
                return container
            contained = container.get("contained")
            return next((c for c in contained if isinstance(c, dict) and c.get("id") == reference[1:]), None) \
                if isinstance(contained, list) else None
        for outer in reversed(self._scopes):
            if outer.bundle is not None:
                found = _in_bundle(outer.bundle, reference)
                if found is not None:
                    return found
        if self.v.resolver is None:
            return None
        if reference not in self._resolved:
            self._resolved[reference] = self.v.resolver(reference)
        return self._resolved[reference]

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        return self.v.terminology.validate_code(value_set, system, code)

    def conforms_to(self, resource: dict, profile: str) -> bool | None:
        return self.conforms(resource, resource.get("resourceType", ""), profile)

    def conforms(self, value: object, type_code: str, profile: str, contained: bool = False) -> bool | None:
        """Does `value` meet `profile` without errors? None when the profile is unknown."""
        plan = self.v.plans.get(profile)
        if plan is None:
            return None
        is_resource = isinstance(value, dict) and "resourceType" in value
        if is_resource and not self._known_type(value["resourceType"]):
            return False
        if not is_resource and type_code and plan.type != type_code:
            return False                     # a boolean does not conform to a Quantity profile
        key = (id(value), profile)
        if key in self._checking:
            return True                      # a reference cycle: do not recurse forever
        saved = self.issues, self._seen, self._unexpandable
        self.issues, self._seen, self._unexpandable = [], set(), set(self._unexpandable)
        self._checking.add(key)
        try:
            if is_resource:
                self.resource(value, value["resourceType"], requested=[profile], contained=contained)
            else:
                self._occurrence(plan.root, plan, _Occurrence(value, None, type_code or plan.type, plan.type))
            return not any(issue.severity in ("error", "fatal") for issue in self.issues)
        finally:
            self._checking.discard(key)
            self.issues, self._seen, self._unexpandable = saved

    def _check_invariants(self, invariants: tuple[Invariant, ...], data: object, fhirpath_type: str | None,
                          expression: str) -> None:
        scope = self._scopes[-1].invariants
        engine = self.v.invariants
        for invariant in invariants:
            if engine.check(invariant, data, fhirpath_type, scope) is False:
                self.add(invariant.severity, "invariant", f"Constraint {invariant.key} failed: {invariant.human}",
                         expression)


def _by(plan: Plan) -> str:
    """` (profile X)` for rules that come from a profile rather than from the FHIR base types."""
    return "" if plan.url == CORE_PREFIX + plan.type else f" (profile {plan.name})"


def _single_type(rule: ElementRule) -> str:
    if not rule.types:
        return "BackboneElement"           # contentReference elements
    return rule.types[0].code


def _in_bundle(bundle: dict, reference: str) -> dict | None:
    """A bundle entry by fullUrl, or by `Type/id` for entries identified that way."""
    type_and_id = "/" in reference and "://" not in reference and not reference.startswith("urn:")
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        resource = entry["resource"]
        full_url = entry.get("fullUrl")
        if full_url == reference:
            return resource
        if type_and_id and (
            (isinstance(full_url, str) and full_url.endswith("/" + reference))
            or f"{resource.get('resourceType')}/{resource.get('id')}" == reference
        ):
            return resource
    return None
