"""The terminology operations over the local content: `ValueSet/$expand`, `$validate-code` (on
ValueSet and CodeSystem) and `CodeSystem/$lookup`.

They answer from the CodeSystems and ValueSets the server holds (`Terminology`). Three situations
are kept apart, so that nobody mistakes a guess for an answer:
- content we hold completely: definitive answers (a code is or is not a member);
- documented subsets (a CodeSystem with content `fragment`, a ValueSet shipped as an unclosed
  expansion): listed codes are confirmed, other codes are "not checked", and `$expand` returns
  what is listed, marked unclosed;
- systems we do not hold at all (LOINC, SNOMED CT, ...): codes are accepted with a message saying
  they could not be checked, and a value set drawing on them cannot be expanded (422).
"""

from __future__ import annotations

import copy
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import bad_request, error, not_found
from fhir_server.engine.model import RequestContext, Result, instant, now
from fhir_server.engine.operations import Operation, OperationCall, OperationRegistry
from fhir_server.terminology.service import Terminology, strip_version

UNCLOSED = "http://hl7.org/fhir/StructureDefinition/valueset-unclosed"
OPERATION_DEFINITIONS = "http://hl7.org/fhir/OperationDefinition/"
MAX_COUNT = 1000

Read = Callable[[str, str, RequestContext], dict]      # (type, id, ctx) -> the stored resource (access-checked)


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str | None = None


class TerminologyOperations:
    """Handlers of the terminology operations; `register` adds them to an OperationRegistry."""

    def __init__(self, definitions: Definitions, terminology: Terminology, read: Read) -> None:
        self.definitions = definitions
        self.terminology = terminology
        self.read = read

    def register(self, registry: OperationRegistry) -> None:
        registry.register(Operation(
            name="expand", handler=self.expand, resource_types=("ValueSet",), instance=True,
            definition=OPERATION_DEFINITIONS + "ValueSet-expand",
            documentation="Expansion of the value sets held by the server (filter, count, offset)"))
        registry.register(Operation(
            name="validate-code", handler=self.validate_code, resource_types=("ValueSet", "CodeSystem"),
            instance=True, definition=OPERATION_DEFINITIONS + "ValueSet-validate-code",
            documentation="Is a code in a value set (or a code system)? Codes of systems the server does not "
                          "hold are accepted with a message"))
        registry.register(Operation(
            name="lookup", handler=self.lookup, resource_types=("CodeSystem",),
            definition=OPERATION_DEFINITIONS + "CodeSystem-lookup",
            documentation="Display and properties of a code of a code system held by the server"))

    # -- $expand ------------------------------------------------------------------------------------
    def expand(self, call: OperationCall) -> Result:
        params = Parameters.of(call)
        value_set = self._value_set(call, params)
        terminology, url = self._terminology_for(value_set)
        codes = terminology.expand(url)
        if codes is not None:
            concepts, closed = [self._concept(value_set, system, code) for system, code in codes], True
        else:
            concepts, closed = listed_concepts(value_set), False
            if not concepts:
                name = value_set.get("url", "(posted)")
                raise error(422, "not-supported", f"The value set {name} cannot be expanded by this server: it "
                            f"draws on {_systems_of(value_set) or 'content'} that it does not hold")
        text = params.string("filter")
        if text:
            concepts = [c for c in concepts if _matches(text, c)]
        concepts.sort(key=lambda c: (c.system, c.code))
        offset, count = params.integer("offset", 0), params.integer("count", MAX_COUNT)
        return Result(200, _expanded(value_set, concepts, offset, min(count, MAX_COUNT), closed, params))

    def _value_set(self, call: OperationCall, params: Parameters) -> dict:
        if call.resource_id:
            return self.read("ValueSet", call.resource_id, call.ctx)
        posted = params.resource("valueSet")
        if posted is not None:
            return posted
        url = params.string("url")
        if not url:
            raise bad_request("$expand needs a value set: url=..., a 'valueSet' parameter, or ValueSet/[id]/$expand")
        value_set = self.definitions.value_sets.get(strip_version(url))
        if value_set is None:
            raise not_found(f"The value set {url} is not known to this server")
        return value_set

    def _terminology_for(self, value_set: dict) -> tuple[Terminology, str]:
        """The shared service (and the url to ask it) for a value set the server holds; a private
        one over the same definitions plus this value set for a posted or stored value set it does
        not hold."""
        url = value_set.get("url")
        if isinstance(url, str) and strip_version(url) in self.definitions.value_sets:
            return self.terminology, url
        url = url if isinstance(url, str) and url else f"urn:uuid:{uuid.uuid4()}"
        extended = replace(self.definitions, value_sets={**self.definitions.value_sets, url: {**value_set, "url": url}})
        return Terminology(extended), url

    def _concept(self, value_set: dict, system: str, code: str) -> Concept:
        display = _listed_display(value_set, system, code) or self.terminology.lookup(system, code)
        return Concept(system, code, display)

    # -- $validate-code -------------------------------------------------------------------------------
    def validate_code(self, call: OperationCall) -> Result:
        params = Parameters.of(call)
        candidates = params.codings()
        if not candidates:
            raise bad_request("$validate-code needs a code (code + system), a coding or a codeableConcept")
        display = params.string("display")
        if call.resource_type == "CodeSystem":
            answer = self._in_code_system(call, params, candidates)
        else:
            answer = self._in_value_set(call, params, candidates)
        return Result(200, answer.with_display_check(display).to_parameters())

    def _in_value_set(self, call: OperationCall, params: Parameters, candidates: list[Concept]) -> Answer:
        value_set = self._value_set(call, params)
        terminology, url = self._terminology_for(value_set)
        answers = [(c, terminology.validate_code(url, c.system or None, c.code)) for c in candidates]
        member = next((c for c, a in answers if a is True), None)
        if member is not None:
            return Answer(True, None, self._display_of(value_set, member))
        name = value_set.get("title") or value_set.get("name") or url
        if all(a is False for _, a in answers):
            shown = ", ".join(_show(c) for c in candidates)
            return Answer(False, f"{shown} is not in the value set {name}")
        return Answer(True, f"The code could not be checked: the value set {name} draws on content this server "
                            "does not hold; it is accepted as is", self._display_of(value_set, candidates[0]))

    def _in_code_system(self, call: OperationCall, params: Parameters, candidates: list[Concept]) -> Answer:
        if call.resource_id:
            code_system = self.read("CodeSystem", call.resource_id, call.ctx)
            system = code_system.get("url", "")
        else:
            system = params.string("url") or params.string("system") or candidates[0].system
            code_system = self.definitions.code_systems.get(strip_version(system or ""))
        candidate = next((c for c in candidates if not c.system or c.system == system), candidates[0])
        if not held(code_system):
            return Answer(True, f"The code system {system} is not held by this server: the code {candidate.code} "
                                "could not be checked and is accepted as is")
        concept = find_concept(code_system, candidate.code)
        if concept is not None:
            return Answer(True, None, concept.get("display"))
        name = code_system.get("title") or code_system.get("name") or system
        if code_system.get("content", "complete") == "complete":
            return Answer(False, f"The code {candidate.code} is not in the code system {name}")
        return Answer(True, f"The code {candidate.code} is not in the part of {name} this server holds (content "
                            f"'{code_system.get('content')}'): it could not be checked and is accepted as is")

    def _display_of(self, value_set: dict, concept: Concept) -> str | None:
        return _listed_display(value_set, concept.system, concept.code) or (
            self.terminology.lookup(concept.system, concept.code) if concept.system else None)

    # -- $lookup --------------------------------------------------------------------------------------
    def lookup(self, call: OperationCall) -> Result:
        params = Parameters.of(call)
        candidates = params.codings()
        system = candidates[0].system if candidates else params.string("system")
        if not candidates or not system:
            raise bad_request("$lookup needs a system and a code, or a coding")
        code = candidates[0].code
        code_system = self.definitions.code_systems.get(strip_version(system))
        if not held(code_system):
            return Result(200, _parameters([
                ("name", "valueString", system),
                ("message", "valueString", f"The code system {system} is not held by this server: the code {code} "
                                           "cannot be looked up here")]))
        concept = find_concept(code_system, code)
        if concept is None:
            subset = "" if code_system.get("content", "complete") == "complete" else \
                " (this server holds only part of it)"
            raise not_found(f"The code {code} is not in the code system {system}{subset}")
        return Result(200, _lookup_parameters(code_system, concept))


# -- answers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    result: bool
    message: str | None = None
    display: str | None = None

    def with_display_check(self, given: str | None) -> Answer:
        if not given or not self.display or _normalise(given) == _normalise(self.display):
            return self
        note = f"The display '{given}' differs from the display of the code, '{self.display}'"
        return Answer(self.result, f"{self.message}. {note}" if self.message else note, self.display)

    def to_parameters(self) -> dict:
        parts = [("result", "valueBoolean", self.result)]
        if self.message:
            parts.append(("message", "valueString", self.message))
        if self.display:
            parts.append(("display", "valueString", self.display))
        return _parameters(parts)


def _parameters(parts: list[tuple[str, str, Any]]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": n, t: v} for n, t, v in parts]}


def _lookup_parameters(code_system: dict, concept: dict) -> dict:
    parts: list[dict] = [{"name": "name", "valueString": code_system.get("title") or code_system.get("name")
                          or code_system.get("url")}]
    if code_system.get("version"):
        parts.append({"name": "version", "valueString": code_system["version"]})
    if concept.get("display"):
        parts.append({"name": "display", "valueString": concept["display"]})
    if concept.get("definition"):
        parts.append({"name": "property", "part": [{"name": "code", "valueCode": "definition"},
                                                   {"name": "value", "valueString": concept["definition"]}]})
    for designation in concept.get("designation") or []:
        part = [{"name": "value", "valueString": designation.get("value")}]
        if designation.get("language"):
            part.insert(0, {"name": "language", "valueCode": designation["language"]})
        parts.append({"name": "designation", "part": part})
    for prop in concept.get("property") or []:
        value = next(((k, v) for k, v in prop.items() if k.startswith("value")), None)
        if value is not None:
            parts.append({"name": "property", "part": [{"name": "code", "valueCode": prop.get("code")},
                                                       {"name": "value", value[0]: value[1]}]})
    for child in concept.get("concept") or []:
        parts.append({"name": "property", "part": [{"name": "code", "valueCode": "child"},
                                                   {"name": "value", "valueCode": child.get("code")}]})
    return {"resourceType": "Parameters", "parameter": parts}


# -- parameters of an invocation ------------------------------------------------------------------------
@dataclass
class Parameters:
    """The URL parameters and the body `Parameters` of an operation call, read the same way."""

    values: list[tuple[str, Any]]

    @classmethod
    def of(cls, call: OperationCall) -> Parameters:
        values: list[tuple[str, Any]] = list(call.params)
        body = call.body
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            for parameter in body.get("parameter") or []:
                if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
                    values.append((parameter["name"], _value_of(parameter)))
        elif isinstance(body, dict) and body.get("resourceType") == "ValueSet":
            values.append(("valueSet", body))
        return cls(values)

    def first(self, name: str) -> Any:
        return next((v for n, v in self.values if n == name and v is not None), None)

    def string(self, name: str) -> str | None:
        value = self.first(name)
        return value if isinstance(value, str) else None

    def integer(self, name: str, default: int) -> int:
        value = self.first(name)
        if value is None:
            return default
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
        raise bad_request(f"{name}={value!r} must be a non-negative integer", name)

    def resource(self, name: str) -> dict | None:
        value = self.first(name)
        return copy.deepcopy(value) if isinstance(value, dict) and "resourceType" in value else None

    def codings(self) -> list[Concept]:
        """The codes to check: `code` (+ `system`), a `coding`, or every coding of a `codeableConcept`."""
        code = self.string("code")
        if code:
            return [Concept(self.string("system") or "", code)]
        coding = self.first("coding")
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return [Concept(coding.get("system") or "", coding["code"], coding.get("display"))]
        concept = self.first("codeableConcept")
        codings = concept.get("coding") if isinstance(concept, dict) else None
        return [Concept(c.get("system") or "", c["code"], c.get("display")) for c in codings or []
                if isinstance(c, dict) and isinstance(c.get("code"), str)]


def _value_of(parameter: dict) -> Any:
    if "resource" in parameter:
        return parameter["resource"]
    for key, value in parameter.items():
        if key.startswith("value"):
            return value
    return None


# -- value set and code system content ----------------------------------------------------------------
def listed_concepts(value_set: dict) -> list[Concept]:
    """The codes a value set lists explicitly: its stored expansion and its enumerated includes
    (what can be shown of a value set that cannot be expanded completely)."""
    found: dict[tuple[str, str], Concept] = {}
    for item in _contains(((value_set.get("expansion") or {}).get("contains")) or []):
        if item.get("system") and item.get("code"):
            found.setdefault((item["system"], item["code"]), Concept(item["system"], item["code"], item.get("display")))
    for include in (value_set.get("compose") or {}).get("include") or []:
        system = include.get("system")
        for concept in include.get("concept") or [] if system else []:
            if concept.get("code"):
                found.setdefault((system, concept["code"]), Concept(system, concept["code"], concept.get("display")))
    return list(found.values())


def _listed_display(value_set: dict, system: str, code: str) -> str | None:
    for concept in listed_concepts(value_set):
        if concept.system == system and concept.code == code:
            return concept.display
    return None


def _contains(items: list[dict]) -> Iterator[dict]:
    for item in items:
        yield item
        yield from _contains(item.get("contains") or [])


def held(code_system: dict | None) -> bool:
    """Does the server hold (some of) the codes of this CodeSystem? The R4 core package describes
    SNOMED CT, LOINC... with content `not-present`: known by name, no code."""
    return code_system is not None and code_system.get("content") != "not-present"


def find_concept(code_system: dict, code: str) -> dict | None:
    """The concept of `code` anywhere in the (possibly nested) concepts of a CodeSystem."""
    stack = list(code_system.get("concept") or [])
    while stack:
        concept = stack.pop()
        if concept.get("code") == code:
            return concept
        stack.extend(concept.get("concept") or [])
    return None


def _systems_of(value_set: dict) -> str:
    systems = sorted({i.get("system") for i in (value_set.get("compose") or {}).get("include") or []
                      if i.get("system")})
    return ", ".join(systems)


def _expanded(value_set: dict, concepts: list[Concept], offset: int, count: int, closed: bool,
              params: Parameters) -> dict:
    page = concepts[offset:offset + count]
    expansion: dict[str, Any] = {}
    if not closed:
        # the listed codes of a documented subset: more exist than the server can show
        expansion["extension"] = [{"url": UNCLOSED, "valueBoolean": True}]
    expansion.update({"identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": instant(now())})
    if closed:
        expansion["total"] = len(concepts)
    expansion["offset"] = offset
    used = [(name, params.first(name)) for name in ("filter", "count", "offset") if params.first(name) is not None]
    if used:
        expansion["parameter"] = [{"name": name, "valueString" if name == "filter" else "valueInteger":
                                   value if name == "filter" else int(value)} for name, value in used]
    expansion["contains"] = [_contained(c) for c in page]
    result = {"resourceType": "ValueSet"}
    for key in ("id", "url", "version", "name", "title", "status"):
        if key in value_set:
            result[key] = value_set[key]
    result["expansion"] = expansion
    return result


def _contained(concept: Concept) -> dict:
    item = {"system": concept.system, "code": concept.code}
    if concept.display:
        item["display"] = concept.display
    return item


def _matches(text: str, concept: Concept) -> bool:
    wanted = _normalise(text)
    return wanted in _normalise(concept.code) or wanted in _normalise(concept.display or "")


def _normalise(text: str) -> str:
    """Case- and accent-insensitive form (`Élodie` = `elodie`), as French users type."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _show(concept: Concept) -> str:
    return f"{concept.system}|{concept.code}" if concept.system else f"'{concept.code}'"
