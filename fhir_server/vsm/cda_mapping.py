"""CDA R2 entries (IHE PCC / CI-SIS templates) -> FHIR resources, section by section.

Mapped: problems (Condition), allergies (AllergyIntolerance), treatments (MedicationStatement),
immunizations (Immunization), history of procedures (Procedure). An entry is mapped only when it
carries what the FHIR resource needs (a coded problem, a vaccine coded in CIS or ATC, a date...);
anything else, and every entry of the other sections, is counted as not mapped: it stays in the
original CDA, which the import keeps (Binary + DocumentReference) and which the summary's section
then references, so that nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from fhir_server.engine.errors import FhirError
from fhir_server.vaccination.codes import day_of, today
from fhir_server.vaccination.rules import check_vaccine_code
from fhir_server.vsm.cda import HL7, NS, XSI, CdaSection, concept_of, fhir_datetime

TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
REPORT_ORIGIN = "Volet de synthèse médicale (CDA R2)"


@dataclass(frozen=True)
class MappingContext:
    subject: dict            # Reference to the Patient
    author: dict             # Reference to the summary's author
    date: str                # the summary's date


@dataclass
class MappedSection:
    resources: list[dict]
    unmapped: int


Mapper = Callable[[etree._Element, MappingContext], dict | None]


def map_section(section: CdaSection, context: MappingContext) -> MappedSection:
    mapper = MAPPERS.get(section.code or "")
    if mapper is None:
        return MappedSection([], len(section.entries))
    resources = [r for r in (mapper(entry, context) for entry in section.entries) if r is not None]
    return MappedSection(resources, len(section.entries) - len(resources))


# -- one mapper per section -----------------------------------------------------------------------

def condition(entry: etree._Element, context: MappingContext) -> dict | None:
    observation = _first(entry, "observation")
    problem = _coded(observation.find("hl7:value", NS)) if observation is not None else None
    if problem is None:
        return None
    onset, abatement = _period(observation, entry)
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": _concept(f"{TERMINOLOGY}condition-clinical", "resolved" if abatement else "active"),
        "verificationStatus": _concept(f"{TERMINOLOGY}condition-ver-status", "confirmed"),
        "category": [_concept(f"{TERMINOLOGY}condition-category", "problem-list-item")],
        "code": problem, "subject": context.subject,
    }
    _put(resource, "onsetDateTime", onset)
    _put(resource, "abatementDateTime", abatement)
    resource["recorder"] = context.author
    return resource


def allergy(entry: etree._Element, context: MappingContext) -> dict | None:
    observation = _first(entry, "observation")
    if observation is None:
        return None
    allergen = _coded(observation.find("hl7:participant/hl7:participantRole/hl7:playingEntity/hl7:code", NS)) \
        or _coded(observation.find("hl7:value", NS))
    if allergen is None:
        return None
    onset, _ = _period(observation, entry)
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": _concept(f"{TERMINOLOGY}allergyintolerance-clinical", "active"),
        "verificationStatus": _concept(f"{TERMINOLOGY}allergyintolerance-verification", "confirmed"),
        "code": allergen, "patient": context.subject,
    }
    _put(resource, "onsetDateTime", onset)
    resource["recorder"] = context.author
    return resource


def medication(entry: etree._Element, context: MappingContext) -> dict | None:
    administration = _first(entry, "substanceAdministration")
    material = administration.find(".//hl7:manufacturedMaterial", NS) if administration is not None else None
    if administration is None or material is None:
        return None
    product = concept_of(material.find("hl7:code", NS)) or _named(material)
    if product is None:
        return None
    start, end = _period(administration, entry)
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "status": "completed" if end and (day_of(end) or today()) < today() else "active",
        "medicationCodeableConcept": product, "subject": context.subject,
    }
    if start or end:
        resource["effectivePeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    resource["dateAsserted"] = context.date
    resource["informationSource"] = context.author
    dosage = _dosage(administration)
    if dosage:
        resource["dosage"] = [dosage]
    return resource


def immunization(entry: etree._Element, context: MappingContext) -> dict | None:
    administration = _first(entry, "substanceAdministration")
    material = administration.find(".//hl7:manufacturedMaterial", NS) if administration is not None else None
    if administration is None or material is None:
        return None
    vaccine = concept_of(material.find("hl7:code", NS))
    given = fhir_datetime(_attr(administration, "hl7:effectiveTime", "value")) or \
        _period(administration, entry)[0]
    if vaccine is None or given is None or (day_of(given) or today()) > today():
        return None
    try:
        check_vaccine_code({"vaccineCode": vaccine})     # the vaccination rules would refuse it
    except FhirError:
        return None
    not_done = administration.get("negationInd") == "true"
    resource: dict[str, Any] = {"resourceType": "Immunization", "status": "not-done" if not_done else "completed"}
    if not_done:
        resource["statusReason"] = {"text": "Non réalisée (d'après le volet de synthèse médicale)"}
    resource.update({"vaccineCode": vaccine, "patient": context.subject, "occurrenceDateTime": given,
                     "primarySource": False, "reportOrigin": {"text": REPORT_ORIGIN}})
    lot = material.find("hl7:lotNumberText", NS)
    if lot is not None and (lot.text or "").strip():
        resource["lotNumber"] = lot.text.strip()
    dose = _dose_number(administration)
    if dose:
        resource["protocolApplied"] = [{"doseNumberPositiveInt": dose}]
    return resource


def procedure(entry: etree._Element, context: MappingContext) -> dict | None:
    act = _first(entry, "procedure")
    code = _coded(act.find("hl7:code", NS)) if act is not None else None
    if code is None:
        return None
    start, end = _period(act, entry)
    resource: dict[str, Any] = {"resourceType": "Procedure", "status": "completed", "code": code,
                                "subject": context.subject}
    performed = fhir_datetime(_attr(act, "hl7:effectiveTime", "value"))
    if performed:
        resource["performedDateTime"] = performed
    elif start or end:
        resource["performedPeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    resource["recorder"] = context.author
    return resource


MAPPERS: dict[str, Mapper] = {
    "11450-4": condition,
    "48765-2": allergy,
    "10160-0": medication,
    "11369-6": immunization,
    "47519-4": procedure,
}


# -- helpers ----------------------------------------------------------------------------------------

def _first(entry: etree._Element, local_name: str) -> etree._Element | None:
    return next(entry.iter(f"{{{HL7}}}{local_name}"), None)


def _coded(element: etree._Element | None) -> dict | None:
    """A CodeableConcept with at least one coding (free text alone cannot be a coded entry)."""
    concept = concept_of(element)
    return concept if concept and concept.get("coding") else None


def _named(material: etree._Element) -> dict | None:
    name = material.find("hl7:name", NS)
    text = " ".join(" ".join(name.itertext()).split()) if name is not None else ""
    return {"text": text} if text else None


def _period(element: etree._Element, entry: etree._Element) -> tuple[str | None, str | None]:
    """low/high of the element's interval, else of the entry's first interval."""
    for holder in (element, entry):
        for time in holder.findall(".//hl7:effectiveTime", NS):
            low, high = _attr(time, "hl7:low", "value"), _attr(time, "hl7:high", "value")
            if low or high:
                return fhir_datetime(low), fhir_datetime(high)
    return None, None


def _dosage(administration: etree._Element) -> dict | None:
    dosage: dict[str, Any] = {}
    text = administration.find("hl7:text", NS)
    if text is not None and " ".join(text.itertext()).strip():
        dosage["text"] = " ".join(" ".join(text.itertext()).split())
    route = _coded(administration.find("hl7:routeCode", NS))
    if route:
        dosage["route"] = route
    dose = administration.find("hl7:doseQuantity", NS)
    if dose is not None and _number(dose.get("value")):
        quantity: dict[str, Any] = {"value": _number(dose.get("value"))}
        if dose.get("unit") and dose.get("unit") != "1":
            quantity.update({"unit": dose.get("unit"), "system": "http://unitsofmeasure.org", "code": dose.get("unit")})
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
    return dosage or None


def _dose_number(administration: etree._Element) -> int | None:
    for value in administration.iter(f"{{{HL7}}}value"):
        if value.get(f"{{{XSI}}}type") == "INT" and (value.get("value") or "").isdigit() and int(value.get("value")):
            return int(value.get("value"))
    return None


def _number(value: str | None) -> int | float | None:
    try:
        number = float(value or "")
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


def _attr(element: etree._Element, path: str, name: str) -> str | None:
    found = element.find(path, NS)
    return found.get(name) if found is not None else None


def _concept(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def _put(resource: dict, key: str, value: Any) -> None:
    if value:
        resource[key] = value
