"""Reading a CDA R2 medical summary (VSM, CI-SIS): safe XML parsing, the header (document id,
date, patient INS, author national id) and the structured sections with their entries.

Parsing uses the same hardening as FHIR XML (`fhir_server.formats.xml`): no DTD, no entity
expansion, no network, libxml2's size and depth limits, and any DOCTYPE or entity declaration
refused. Anything wrong with the document is a 422 that says what is wrong, since the request
itself (a Binary or Parameters) was well-formed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from fhir_server.access.identity import INS_SYSTEMS
from fhir_server.engine.errors import FhirError, error
from fhir_server.formats.xml import parse_xml_safely
from fhir_server.vaccination.codes import PARIS
from fhir_server.vsm.sections import VSM_TYPE

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS = {"hl7": HL7, "xsi": XSI}
LOINC_OID = "2.16.840.1.113883.6.1"
NATIONAL_PS_OID = "1.2.250.1.71.4.2.1"            # "8" + RPPS (identifiant national de PS)
# CDA code system OIDs and the FHIR system URIs they are known by.
SYSTEMS = {
    LOINC_OID: "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.73": "http://www.whocc.no/atc",
    "1.2.250.1.213.2.3.1": "https://smt.esante.gouv.fr/terminologie-bdpm",
}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")


def invalid(message: str) -> FhirError:
    return error(422, "invalid", f"The CDA document cannot be imported: {message}")


@dataclass
class CdaHeader:
    identifier: dict
    title: str
    date: str
    patient_identifier: dict                 # {system, value}: the INS
    author: dict                             # a Reference (identifier and display)
    custodian: dict                          # a Reference (identifier and display)
    service_start: str | None = None         # documentationOf/serviceEvent: the period summarised
    service_end: str | None = None
    facility_type: dict | None = None        # healthCareFacility/code (JDV_J02)
    practice_setting: dict | None = None     # representedOrganization/standardIndustryClassCode (JDV_J04)
    confidentiality: str = "N"


@dataclass
class CdaSection:
    code: str | None
    title: str
    text: str
    entries: list[etree._Element] = field(default_factory=list)


@dataclass
class CdaDocument:
    header: CdaHeader
    sections: list[CdaSection]


# -- parsing ------------------------------------------------------------------------------------

def parse(data: bytes) -> CdaDocument:
    root = _parse_safely(data)
    if root.tag != f"{{{HL7}}}ClinicalDocument":
        raise invalid(f"the root element is {root.tag}, not ClinicalDocument in the namespace {HL7}")
    header = _header(root)
    body = root.find("hl7:component/hl7:structuredBody", NS)
    if body is None:
        raise invalid("it has no structuredBody (a non-XML body, e.g. a PDF, has no sections to import: share it "
                      "as a document instead)")
    return CdaDocument(header, [_section(s) for s in body.findall("hl7:component/hl7:section", NS)])


def _parse_safely(data: bytes) -> etree._Element:
    return parse_xml_safely(data, "The CDA document cannot be imported: it", status=422)


def _header(root: etree._Element) -> CdaHeader:
    code = root.find("hl7:code", NS)
    if code is None or code.get("code") != VSM_TYPE:
        found = code.get("code") if code is not None else "none"
        raise invalid(f"its code is {found}, not {VSM_TYPE} (LOINC, synthèse médicale)")
    date = fhir_datetime(_attr(root, "hl7:effectiveTime", "value"))
    if date is None:
        raise invalid("ClinicalDocument/effectiveTime/@value is missing or not an HL7 date")
    service_start, service_end = _service_period(root)
    return CdaHeader(
        identifier=_document_identifier(root), title=_text(root.find("hl7:title", NS)) or "", date=date,
        patient_identifier=_ins(root), author=_author(root), custodian=_custodian(root),
        service_start=service_start, service_end=service_end,
        facility_type=concept_of(root.find(".//hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/"
                                           "hl7:code", NS)),
        practice_setting=concept_of(root.find(".//hl7:representedOrganization/hl7:standardIndustryClassCode", NS)),
        confidentiality=_attr(root, "hl7:confidentialityCode", "code") or "N")


def _service_period(root: etree._Element) -> tuple[str | None, str | None]:
    time = root.find("hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime", NS)
    if time is None:
        return None, None
    return fhir_datetime(_attr(time, "hl7:low", "value")), fhir_datetime(_attr(time, "hl7:high", "value"))


def _document_identifier(root: etree._Element) -> dict:
    element = root.find("hl7:id", NS)
    if element is None or not element.get("root"):
        raise invalid("ClinicalDocument/id is missing")
    return identifier_of(element)


def _ins(root: etree._Element) -> dict:
    for element in root.findall("hl7:recordTarget/hl7:patientRole/hl7:id", NS):
        system = f"urn:oid:{element.get('root')}"
        if system in INS_SYSTEMS and element.get("extension"):
            return {"system": system, "value": element.get("extension")}
    raise invalid("recordTarget/patientRole has no INS (id with root 1.2.250.1.213.1.4.8 and the NIR)")


def _author(root: etree._Element) -> dict:
    assigned = root.find("hl7:author/hl7:assignedAuthor", NS)
    if assigned is None:
        raise invalid("it has no author/assignedAuthor")
    reference: dict[str, Any] = {"type": "Practitioner"}
    for element in assigned.findall("hl7:id", NS):
        if element.get("root") == NATIONAL_PS_OID and element.get("extension"):
            reference["identifier"] = {"system": f"urn:oid:{NATIONAL_PS_OID}", "value": element.get("extension")}
    name = person_name(assigned.find("hl7:assignedPerson/hl7:name", NS))
    if name:
        reference["display"] = name
    if len(reference) == 1:
        raise invalid("author/assignedAuthor has neither a national id (root 1.2.250.1.71.4.2.1) nor a name")
    return reference


def _custodian(root: etree._Element) -> dict:
    organisation = root.find("hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization", NS)
    if organisation is None:
        raise invalid("it has no custodian (the organisation keeping the document)")
    reference: dict[str, Any] = {"type": "Organization"}
    element = organisation.find("hl7:id", NS)
    if element is not None and element.get("extension"):
        reference["identifier"] = identifier_of(element)
    name = _text(organisation.find("hl7:name", NS))
    if name:
        reference["display"] = name
    if len(reference) == 1:
        raise invalid("custodian/.../representedCustodianOrganization has neither an id nor a name")
    return reference


def _section(element: etree._Element) -> CdaSection:
    code = element.find("hl7:code", NS)
    return CdaSection(code=code.get("code") if code is not None else None,
                      title=_text(element.find("hl7:title", NS)) or "",
                      text=_text(element.find("hl7:text", NS)) or "",
                      entries=element.findall("hl7:entry", NS))


# -- values ---------------------------------------------------------------------------------------

def fhir_datetime(value: str | None) -> str | None:
    """HL7 TS (20250312103000+0100, 20250312, 202503) -> FHIR date or dateTime; a time without a
    zone is taken in French time (FHIR needs a zone once there is a time)."""
    match = _TS.match(value or "")
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(second or 0))
    except ValueError:
        return None
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    if not hour:
        return f"{year}-{month}-{day}"
    zone = zone or moment.replace(tzinfo=PARIS).strftime("%z")
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}{zone[:3]}:{zone[3:]}"


def coding_of(element: etree._Element | None) -> dict | None:
    if element is None or not element.get("code"):
        return None
    oid = element.get("codeSystem") or ""
    coding = {"system": SYSTEMS.get(oid, f"urn:oid:{oid}"), "code": element.get("code")}
    if element.get("displayName"):
        coding["display"] = element.get("displayName")
    return coding


def concept_of(element: etree._Element | None) -> dict | None:
    """A CD (code plus translations, originalText) as a CodeableConcept; None when empty."""
    if element is None:
        return None
    codings = [c for c in [coding_of(element), *(coding_of(t) for t in element.findall("hl7:translation", NS))] if c]
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    text = _text(element.find("hl7:originalText", NS)) or element.get("displayName")
    if text:
        concept["text"] = text
    return concept or None


def identifier_of(element: etree._Element) -> dict:
    if element.get("extension"):
        return {"system": f"urn:oid:{element.get('root')}", "value": element.get("extension")}
    return {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{element.get('root')}"}


def person_name(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    parts = [_text(element.find(f"hl7:{part}", NS)) for part in ("prefix", "given", "family")]
    return " ".join(p for p in parts if p) or _text(element)


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    text = " ".join(" ".join(element.itertext()).split())
    return text or None


def _attr(element: etree._Element, path: str, name: str) -> str | None:
    found = element.find(path, NS)
    return found.get(name) if found is not None else None
