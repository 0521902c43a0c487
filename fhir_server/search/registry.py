"""The SearchParameter registry: every parameter the server searches on, compiled per resource type.

Sources, later ones overriding earlier ones on the same (resource type, code):
1. the official R4 core package (1,400 SearchParameters),
2. our own SearchParameters under `profiles/` (French IGs: PDSm, MHD, GAP, TDE),
3. SearchParameters POSTed at run time (`register`), whose values are then recomputed for the
   stored resources by `SearchService.reindex`.

Each (parameter, resource type) is compiled once, lazily, the first time the type is used.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from typing import Any

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import bad_request
from fhir_server.search.fhirpath import CompiledExpression, Value, compile_expression, split_union
from fhir_server.search.index import (
    CONTAINED,
    CONTAINED_TYPE,
    DATE_TYPES,
    META_TERMS,
    META_TERMS_FIELD,
    PREFIX_SUFFIX,
    PRIMITIVE_TOKEN_TYPES,
    QUANTITY_TYPES,
    entries_for,
    meta_terms,
    prefix_entries,
)
from fhir_server.search.normalize import DEFAULT_TIMEZONE

log = logging.getLogger(__name__)

SEARCH_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri", "composite"})

# Parameters stored on the document itself rather than under `_index`.
DOCUMENT_FIELDS = {"_id": "_id", "_lastUpdated": "_lastUpdated"}

# Not resource types, and no SearchParameter with base DomainResource applies to them.
_NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})

_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_ELEMENT_PATH = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)+$")
_ELEMENT_NAMES = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)*$")

# Compound indexes for the queries practice software sends all day (opening a patient file,
# agenda views). Parameter codes; `_id` is appended so that keyset pages stay on the index.
HOT_QUERIES: dict[str, list[tuple[str, ...]]] = {
    "DocumentReference": [("patient", "status", "date"), ("patient", "date"), ("patient", "status")],
    "Immunization": [("patient", "date"), ("patient", "status", "date")],
    "Appointment": [("actor", "date"), ("actor", "status", "date"), ("patient", "date")],
    "Observation": [("patient", "date"), ("code", "patient")],     # code first: `code=` alone and `_has` too
    "Condition": [("patient", "clinical-status")],
    "Encounter": [("patient", "date")],
    "Composition": [("patient", "type", "date")],
    "MedicationRequest": [("patient", "status", "authoredon")],
    "AuditEvent": [("patient", "date"), ("agent", "date")],
    "Consent": [("patient", "status")],
    "Communication": [("patient", "sent")],
    "List": [("patient", "status")],
    "Slot": [("schedule", "start")],
}

# Single-parameter indexes for directory-style look-ups (besides `identifier`, always indexed).
LOOKUPS: dict[str, tuple[str, ...]] = {
    "Patient": ("family", "given", "birthdate", "name"),
    "Practitioner": ("family", "given", "name"),
    "PractitionerRole": ("practitioner", "organization"),
    "Organization": ("name",),
    "Location": ("name",),
    "RelatedPerson": ("patient",),
}
# Not looked up alone: numbers and quantities (a threshold compares the values of every analyte; it
# comes with `code`, whose index serves it, or as `code-value-quantity`, served the same way).

# A date written as a date or dateTime covers at most a year (366 days, 2024); one more day of margin.
DATE_VALUE_SPAN = timedelta(days=367)


@dataclass(eq=False)
class Component:
    """One component of a composite parameter, evaluated relative to the composite's element."""

    param: SearchParam
    expression: str
    registry: SearchRegistry
    _compiled: dict[tuple[str | None, str | None], CompiledExpression] = field(default_factory=dict)

    def evaluate(self, value: Any, type_code: str | None, path: str | None, root: dict) -> list[Value]:
        key = (type_code, path)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_expression(self.registry.definitions, self.expression, type_code or "Element",
                                          path, known_types=self.registry.known_types,
                                          native=path is not None)
            self._compiled[key] = compiled
        return compiled.evaluate(value, root)


@dataclass(eq=False)
class SearchParam:
    """A search parameter as it applies to one resource type."""

    code: str
    type: str
    resource_type: str
    url: str
    definition: dict
    expression: CompiledExpression | None = None
    multi: bool = True
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    prefix_indexed: bool = False         # strings: every prefix stored and indexed (`code:prefix`)
    binding: str | None = None           # tokens: the one ValueSet bound to the elements read
    leading: str | None = None           # composites: the parameter holding the first component's values

    @property
    def field(self) -> str:
        """Where the values are stored in the document."""
        return DOCUMENT_FIELDS.get(self.code) or f"_index.{self.code}"

    @property
    def point(self) -> bool:
        """A date stored as one instant rather than a {lo, hi} range: `_lastUpdated` and single
        `instant` elements (DocumentReference.date, Appointment.start, AuditEvent.recorded).
        Every date prefix is then a range on one field, so `date=ge..&date=lt..` is one index
        range (agenda views) instead of conditions on two fields."""
        if self.code == "_lastUpdated":
            return True
        return self.type == "date" and not self.multi and self.value_types == frozenset({"instant"})

    @property
    def sort_field(self) -> str:
        # Dates sort on their end: the newest-first order that patient files use rides the same
        # `{patient, status, date.hi}` index as the `date=ge...` filters.
        if self.type == "date" and not self.point:
            return self.field + ".hi"
        if self.type == "quantity":
            return self.field + ".v"
        return self.field

    @property
    def index_fields(self) -> tuple[str, ...]:
        """The fields a single-parameter index needs: the sorted one, plus the canonical value of
        quantities (searches with a unit compare canonical values)."""
        if self.type == "quantity":
            return self.sort_field, self.field + ".cv"
        return (self.sort_field,)

    @property
    def span(self) -> timedelta | None:
        """Dates: the longest range one stored value covers, when bounded (dates and dateTimes, not
        Periods or Timings, which may be open-ended)."""
        types = self.value_types
        if self.type != "date" or not types or not types <= DATE_TYPES | {"string"}:
            return None
        return DATE_VALUE_SPAN

    @property
    def value_types(self) -> frozenset[str] | None:
        return self.expression.types if self.expression else None

    @property
    def primitive_tokens(self) -> bool:
        """Token values are plain codes (no system): stored as one entry per value."""
        types = self.value_types
        return bool(types) and types <= PRIMITIVE_TOKEN_TYPES

    @property
    def indexed(self) -> bool:
        return self.code not in DOCUMENT_FIELDS and (self.expression is not None or bool(self.components))


def _entries_per_value_is_one(kind: str, types: frozenset[str] | None) -> bool:
    """Whether one value of the expression yields exactly one index entry."""
    if types is None:
        return False
    if kind == "token":
        return types <= PRIMITIVE_TOKEN_TYPES
    if kind == "string":
        return types <= {"string", "markdown", "code", "id", "uri", "url"}
    if kind == "reference":
        return types <= {"Reference"}
    if kind == "date":
        return types <= DATE_TYPES | {"Period", "string"}     # a string (occurrenceString) yields none
    if kind == "quantity":
        return types <= QUANTITY_TYPES
    return kind in ("number", "uri")


class SearchRegistry:
    """Search parameters by resource type, compiled on first use, plus index extraction."""

    def __init__(self, definitions: Definitions, *, timezone: tzinfo = DEFAULT_TIMEZONE) -> None:
        self.definitions = definitions
        self.timezone = timezone
        self.resource_types: list[str] = list(definitions.resource_types)
        self.known_types: set[str] = set(self.resource_types)
        self._lock = threading.RLock()
        self._sources: dict[str, dict[str, dict]] = {t: {} for t in self.resource_types}
        self._by_url: dict[str, dict] = {}
        self._compiled: dict[str, dict[str, SearchParam]] = {}
        self._indexed: dict[str, list[SearchParam]] = {}
        self._index_fields: dict[str, list[tuple[str, ...]]] = {}
        for definition in definitions.search_parameters:
            if _is_core_example(definition):
                continue
            try:
                self._add(definition)
            except ValueError as exc:    # _text, _content, _filter, near, extension-only ones
                log.debug("SearchParameter %s not supported: %s", definition.get("url"), exc)

    # -- definitions -------------------------------------------------------------------------
    def _bases(self, definition: dict) -> list[str]:
        types: list[str] = []
        for base in definition.get("base") or ():
            if base == "Resource":
                types.extend(self.resource_types)
            elif base == "DomainResource":
                types.extend(t for t in self.resource_types if t not in _NOT_DOMAIN_RESOURCES)
            elif base in self.known_types:
                types.append(base)
            else:
                raise ValueError(f"unknown base resource type {base!r}")
        return types

    def _add(self, definition: dict) -> list[str]:
        code, kind = definition.get("code"), definition.get("type")
        if not isinstance(code, str) or not _CODE.match(code):
            raise ValueError(f"invalid code {code!r}")
        if kind not in SEARCH_TYPES and code not in DOCUMENT_FIELDS:
            raise ValueError(f"search type {kind!r} is not supported")
        if kind != "composite" and code not in DOCUMENT_FIELDS and not definition.get("expression"):
            raise ValueError("no expression")
        types = self._bases(definition)
        if not types:
            raise ValueError("no base resource type")
        with self._lock:
            if definition.get("url"):
                self._by_url[definition["url"]] = definition
            for resource_type in types:
                self._sources[resource_type][code] = definition
                self._compiled.pop(resource_type, None)
                self._indexed.pop(resource_type, None)
                self._index_fields.pop(resource_type, None)
        return types

    def definition(self, url: str) -> dict | None:
        return self._by_url.get(url)

    # -- compiled parameters -----------------------------------------------------------------
    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        """Search parameters of a resource type by code, including `_id`, `_lastUpdated`, `_tag`,
        `_profile`, `_security` and `_source`. Empty for an unknown type."""
        compiled = self._compiled.get(resource_type)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._compiled.get(resource_type)
            if compiled is None:
                compiled = {}
                for code, definition in self._sources.get(resource_type, {}).items():
                    try:
                        compiled[code] = self._compile(resource_type, definition)
                    except ValueError as exc:
                        log.warning("SearchParameter %s on %s ignored: %s", definition.get("url"),
                                    resource_type, exc)
                self._compiled[resource_type] = compiled
            return compiled

    def param(self, resource_type: str, code: str) -> SearchParam | None:
        return self.params_for(resource_type).get(code)

    def _compile(self, resource_type: str, definition: dict, *, strict: bool = False) -> SearchParam:
        code, kind = definition["code"], definition["type"]
        param = SearchParam(code=code, type=kind, resource_type=resource_type,
                            url=definition.get("url", ""), definition=definition,
                            targets=tuple(definition.get("target") or ()))
        if kind == "reference" and not param.targets:
            param.targets = tuple(self.resource_types)
        if code in DOCUMENT_FIELDS:
            param.multi = False
            return param
        if definition.get("expression"):
            param.expression = compile_expression(self.definitions, definition["expression"], resource_type,
                                                  known_types=self.known_types, strict=strict)
        if kind == "composite":
            param.components = tuple(self._components(param, definition))
            param.multi = True
            param.leading = self._leading_param(resource_type, definition)
            return param
        assert param.expression is not None
        param.multi = param.expression.multi or not _entries_per_value_is_one(kind, param.expression.types)
        # A looked-up string parameter with several values per resource: a prefix range on a list
        # is not one index range (see criteria._within), an equality on the stored prefixes is.
        param.prefix_indexed = kind == "string" and param.multi and code in LOOKUPS.get(resource_type, ())
        if kind == "token":
            param.binding = self._binding(resource_type, definition["expression"])
        narrowed = param.expression.reference_targets
        if kind == "reference" and narrowed:
            # `clinical-patient` targets Patient and Group, but Immunization.patient is a
            # Reference(Patient): a bare id then means one reference, not a list
            param.targets = tuple(t for t in param.targets if t in narrowed) or param.targets
        return param

    def _binding(self, resource_type: str, expression: str) -> str | None:
        """The ValueSet bound to the elements a token expression reads (`Patient.gender`), when
        they all have the same one: it tells the system of a code searched without one."""
        sd = self.definitions.base_types.get(resource_type)
        paths = {p.strip("()") for p in split_union(expression) if p.strip("()").startswith(resource_type + ".")}
        if sd is None or not paths or not all(_ELEMENT_PATH.match(p) for p in paths):
            return None
        bound = {str(element["binding"]["valueSet"]).split("|", 1)[0] for element in sd["snapshot"]["element"]
                 if element["path"] in paths and (element.get("binding") or {}).get("valueSet")}
        return bound.pop() if len(bound) == 1 else None

    def _leading_param(self, resource_type: str, definition: dict) -> str | None:
        """The code of the parameter of `resource_type` whose values include every value of the
        composite's first component (`code` for `code-value-quantity`): same definition, and its
        expression reads every element the component does."""
        first = (definition.get("component") or [{}])[0]
        target = self._by_url.get(first.get("definition", ""))
        component = str(first.get("expression", ""))
        if target is None or not _ELEMENT_NAMES.match(component):
            return None
        if self._sources.get(resource_type, {}).get(target["code"]) is not target:
            return None
        read = {p.strip("()") for p in split_union(str(target.get("expression", "")))}
        roots = [p.strip("()") for p in split_union(str(definition.get("expression") or resource_type))]
        if all(_ELEMENT_NAMES.match(root) and f"{root}.{component}" in read for root in roots):
            return target["code"]
        return None

    def _components(self, composite: SearchParam, definition: dict) -> Iterable[Component]:
        for component in definition.get("component") or ():
            target = self._by_url.get(component.get("definition", ""))
            if target is None or not component.get("expression"):
                raise ValueError(f"composite component {component.get('definition')!r} is not a known "
                                 "SearchParameter")
            inner = SearchParam(code=target["code"], type=target["type"], resource_type=composite.resource_type,
                                url=target.get("url", ""), definition=target,
                                targets=tuple(target.get("target") or ()))
            yield Component(inner, component["expression"], self)

    def indexed_params(self, resource_type: str) -> list[SearchParam]:
        indexed = self._indexed.get(resource_type)
        if indexed is None:
            indexed = [p for p in self.params_for(resource_type).values() if p.indexed]
            self._indexed[resource_type] = indexed
        return indexed

    # -- run-time SearchParameters -------------------------------------------------------------
    def register(self, search_parameter: dict) -> list[str]:
        """Add (or replace) a SearchParameter at run time. Returns the resource types whose
        stored resources must be reindexed. Raises a 400 FhirError when it cannot be used."""
        if search_parameter.get("resourceType") != "SearchParameter":
            raise bad_request("Not a SearchParameter", "SearchParameter")
        code = search_parameter.get("code")
        if code in DOCUMENT_FIELDS or (isinstance(code, str) and code.startswith("_")):
            raise bad_request(f"The search parameter {code!r} is reserved", "SearchParameter.code")
        try:
            if not isinstance(code, str) or not _CODE.match(code):
                raise ValueError(f"invalid code {code!r}")
            types = self._bases(search_parameter)
            kind = search_parameter.get("type")
            if kind not in SEARCH_TYPES:
                raise ValueError(f"search type {kind!r} is not supported")
            for resource_type in types:        # compile before touching the registry
                param = self._compile(resource_type, search_parameter, strict=True)
                if param.expression is None and not param.components:
                    raise ValueError("no expression")
            return self._add(search_parameter)
        except ValueError as exc:
            raise bad_request(f"Invalid SearchParameter: {exc}", "SearchParameter.expression") from exc

    # -- index ---------------------------------------------------------------------------------
    def extract_index(self, resource: dict) -> dict:
        """The `_index` sub-document of a resource: normalised values of each search parameter,
        and those of its contained resources (`_contained`, see index.py)."""
        index = self._own_index(resource)
        contained = self._contained_index(resource)
        if contained:
            index[CONTAINED] = contained
        return index

    def _own_index(self, resource: dict) -> dict[str, Any]:
        index: dict[str, Any] = {}
        for param in self.indexed_params(resource.get("resourceType", "")):
            values = param.expression.evaluate(resource) if param.expression else []
            if not values:
                continue
            for key, entries in entries_for(param, values, self.timezone, param.point, resource).items():
                if key == param.code and not param.multi and len(entries) == 1:
                    index[key] = entries[0]
                else:
                    index[key] = entries
            if param.prefix_indexed and param.code in index:
                index[param.code + PREFIX_SUFFIX] = prefix_entries(index[param.code])
        terms = meta_terms(index)
        if terms:
            index[META_TERMS] = terms
        return index

    def _contained_index(self, resource: dict) -> list[dict[str, Any]]:
        """One entry per contained resource that can be addressed (`Container/id#cid`): its type,
        its id and its values, evaluated with itself as the root."""
        entries = []
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and contained.get("resourceType") in self.known_types \
                    and isinstance(contained.get("id"), str) and contained["id"]:
                entries.append({CONTAINED_TYPE: contained["resourceType"], "_id": contained["id"],
                                **self._own_index(contained)})
        return entries

    def compartment_params(self, compartment: str, resource_type: str) -> list[str]:
        definition = self.definitions.compartments.get(compartment) or {}
        for entry in definition.get("resource", ()):
            if entry.get("code") == resource_type:
                return [p for p in entry.get("param", ()) if p in self.params_for(resource_type)]
        return []

    def compartment_types(self, compartment: str) -> list[str]:
        definition = self.definitions.compartments.get(compartment) or {}
        return [entry["code"] for entry in definition.get("resource", ())
                if entry.get("param") and entry.get("code") in self.known_types]

    def index_specs(self) -> dict[str, list[list[tuple[str, int]]]]:
        """Per resource type (all of them), the MongoDB indexes to create: the patient
        compartment first, then the hot compound queries, then identifier/directory look-ups,
        then the meta parameters' terms (`_tag`, `_security`, `_profile`, `_source`)."""
        return {resource_type: self.index_specs_for(resource_type) for resource_type in self.resource_types}

    def index_fields(self, resource_type: str) -> list[tuple[str, ...]]:
        """The fields of each index of `resource_type`, in order (what a query can be fitted to)."""
        fields = self._index_fields.get(resource_type)
        if fields is None:
            fields = [tuple(name for name, _order in spec) for spec in self.index_specs_for(resource_type)]
            self._index_fields[resource_type] = fields
        return fields

    def index_specs_for(self, resource_type: str) -> list[list[tuple[str, int]]]:
        params = self.params_for(resource_type)
        wanted: list[list[tuple[str, int]]] = []

        def add(spec: list[tuple[str, int]]) -> None:
            if spec not in wanted:
                wanted.append(spec)

        compartment = self.compartment_params("Patient", resource_type)
        if "patient" in params and params["patient"].type == "reference":
            compartment = [*compartment, "patient"]
        for code in compartment:
            add([(params[code].field, 1), ("_id", 1)])
        for codes in HOT_QUERIES.get(resource_type, ()):
            spec = self._compound(params, codes)
            if spec:
                add(spec)
        for code in ("identifier", *LOOKUPS.get(resource_type, ())):
            if code in params and params[code].indexed:
                for index_field in params[code].index_fields:
                    add([(index_field, 1)])
            if code in params and params[code].prefix_indexed:
                add([(params[code].field + PREFIX_SUFFIX, 1)])
        add([(META_TERMS_FIELD, 1)])
        return wanted

    @staticmethod
    def _compound(params: dict[str, SearchParam], codes: tuple[str, ...]) -> list[tuple[str, int]] | None:
        """A compound index over `codes` (+ `_id`). MongoDB cannot index two array fields of one
        document together, so at most one multi-valued parameter may take part."""
        if any(code not in params for code in codes):
            return None
        if sum(1 for code in codes if params[code].multi) > 1:
            log.debug("compound index %s skipped: more than one multi-valued parameter", codes)
            return None
        return [*((params[code].sort_field, 1) for code in codes), ("_id", 1)]


def _is_core_example(definition: dict) -> bool:
    """The core package ships example SearchParameters that redefine `_id` and `subject`."""
    return str(definition.get("id", "")).startswith("example") and \
        str(definition.get("url", "")).startswith("http://hl7.org/fhir/SearchParameter/example")
