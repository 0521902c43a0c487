"""Rules of a medical summary (VSM): checked before every create or update of a Composition whose
type is LOINC 60591-5. Other Compositions are left to the validator.

- the subject is a Patient;
- each section code appears once; the mandatory sections are all there, each with entries or an
  `emptyReason` (and never both: FHIR cmp-2);
- every entry references, by `Type/id`, a resource of a type the section holds (or the source
  DocumentReference), that exists, that the writer may read, and that belongs to the same patient;
- `relatesTo replaces` targets an earlier summary of the same patient.

Failures are 422 with the FHIRPath of the element at fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fhir_server.engine.errors import FhirError, unprocessable
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import ID_PATTERN
from fhir_server.vsm.sections import MANDATORY, SECTIONS, is_vsm, loinc_code

TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# Reads `Type/id` as the writer may see it, inside the write's transaction (None when it cannot).
Reader = Callable[[WriteEvent, str], dict | None]
# The patients (`Patient/id`) whose record holds a resource.
PatientsOf = Callable[[str, dict], list[str]]


class SummaryRules:
    def __init__(self, read: Reader, patients_of: PatientsOf) -> None:
        self.read = read
        self.patients_of = patients_of

    def __call__(self, event: WriteEvent) -> None:
        if event.resource_type != "Composition" or not is_vsm(event.new):
            return
        composition: dict = event.new or {}
        subject = _subject(composition)
        check_sections(composition.get("section") or [])
        for section_code, where, entry in _entries(composition.get("section") or []):
            self._check_entry(event, subject, section_code, entry, where)
        self._check_replaces(event, composition, subject)

    def _check_entry(self, event: WriteEvent, subject: str, code: str | None, entry: Any, where: str) -> None:
        target = literal(entry)
        if target is None:
            raise unprocessable("A summary entry references a resource of this server as Type/id", where)
        resource_type = target.split("/", 1)[0]
        kind = SECTIONS.get(code or "")
        if kind is not None and resource_type not in kind.entry_types:
            holds = ", ".join(sorted(kind.entry_types)) or "text only, no entry"
            raise unprocessable(f"The section '{kind.title}' ({code}) holds {holds}, not {resource_type}", where)
        resource = self.read(event, target)
        if resource is None:
            raise unprocessable(f"{target} does not exist or you may not read it", where)
        owners = self.patients_of(resource_type, resource)
        if owners != [subject]:
            owner = ", ".join(owners) or "no patient"
            raise unprocessable(f"{target} belongs to {owner}, not to {subject}: a summary holds the patient's "
                                "own data only", where)

    def _check_replaces(self, event: WriteEvent, composition: dict, subject: str) -> None:
        for index, relation in enumerate(composition.get("relatesTo") or ()):
            target = literal(relation.get("targetReference"))
            if relation.get("code") != "replaces" or target is None:
                continue
            where = f"Composition.relatesTo[{index}].targetReference"
            previous = self.read(event, target) if target.startswith("Composition/") else None
            if previous is None or not is_vsm(previous) or literal(previous.get("subject")) != subject:
                raise unprocessable(f"{target} is not a medical summary of {subject}: a summary replaces an earlier "
                                    "summary of the same patient", where)


def check_sections(sections: list[dict]) -> None:
    """Section codes unique, mandatory sections present, entries or emptyReason (not both)."""
    seen: dict[str, int] = {}
    for index, section in enumerate(sections):
        code = loinc_code(section.get("code"))
        where = f"Composition.section[{index}]"
        if code in seen:
            raise unprocessable(f"The section {code} appears twice (section[{seen[code]}] and section[{index}])",
                                f"{where}.code")
        if code is not None:
            seen[code] = index
        has_entries = bool(section.get("entry"))
        if has_entries and section.get("emptyReason"):
            raise unprocessable("A section with entries has no emptyReason (cmp-2)", f"{where}.emptyReason")
        if code in MANDATORY and not has_entries and not section.get("emptyReason"):
            raise unprocessable(f"The mandatory section '{SECTIONS[code].title}' ({code}) has no entry: say why "
                                "with emptyReason (e.g. nilknown)", f"{where}.emptyReason")
    missing = [code for code in MANDATORY if code not in seen]
    if missing:
        names = ", ".join(f"'{SECTIONS[c].title}' ({c})" for c in missing)
        raise unprocessable(f"A medical summary has the mandatory sections; missing: {names}. An empty one has an "
                            "emptyReason", "Composition.section")


def _subject(composition: dict) -> str:
    subject = literal(composition.get("subject"))
    if subject is None or not subject.startswith("Patient/"):
        raise unprocessable("A medical summary is about one patient: subject references a Patient (Patient/id)",
                            "Composition.subject")
    return subject


def _entries(sections: list[dict], path: str = "Composition", code: str | None = None
             ) -> Iterator[tuple[str | None, str, Any]]:
    """Every entry as (its top-level section's code, its FHIRPath, the Reference): sub-sections
    hold what their section holds."""
    for index, section in enumerate(sections):
        here = f"{path}.section[{index}]"
        kind = code or loinc_code(section.get("code"))
        for entry_index, entry in enumerate(section.get("entry") or ()):
            yield kind, f"{here}.entry[{entry_index}]", entry
        yield from _entries(section.get("section") or [], here, kind)


def literal(reference: object) -> str | None:
    """`Type/id` of a literal reference to a resource of this server (None otherwise)."""
    if not isinstance(reference, dict):
        return None
    value = reference.get("reference")
    if not isinstance(value, str) or value.startswith(("#", "urn:")) or "?" in value:
        return None
    parts = value.split("/_history/", 1)[0].split("/")
    if len(parts) < 2 or not TYPE_NAME.match(parts[-2]) or not ID_PATTERN.match(parts[-1]):
        return None
    return f"{parts[-2]}/{parts[-1]}"


def reader(interactions: Any) -> Reader:
    def read(event: WriteEvent, target: str) -> dict | None:
        resource_type, _, resource_id = target.partition("/")
        try:
            return interactions.read(resource_type, resource_id, event.ctx, event.session).body
        except FhirError:
            return None
    return read


def patients_reader(policy: Any, registry: Any) -> PatientsOf:
    """The patient compartment of a resource, as the access policy computes it."""
    def patients_of(resource_type: str, resource: dict) -> list[str]:
        return policy.patients_of(resource_type, resource, registry.extract_index(resource))
    return patients_of
