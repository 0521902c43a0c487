"""`POST Composition/$import-cda`: a CDA R2 medical summary (VSM) into the patient's space.

Input: the CDA as a Binary resource (`contentType` text/xml or application/xml, `data` base64),
or a Parameters with a `document` part holding that Binary (`resource`) or an Attachment
(`valueAttachment` with `data`).

In one transaction:
1. the original CDA is kept as a Binary (`securityContext` -> its DocumentReference) and shared
   as a DocumentReference (type 60591-5, url `Binary/[id]`, size and SHA-1) that supersedes the
   patient's previous current summary (`sharing.py`);
2. the coded entries of the problems, allergies, treatments, immunizations and procedures
   sections become Condition, AllergyIntolerance, MedicationStatement, Immunization, Procedure
   (`cda_mapping.py`);
3. a summary Composition (type 60591-5) lists them by section, with the CDA narrative as the
   section text; its section 55107-7 (source documents) references the original, which holds
   what could not be mapped. A mandatory section without mapped entries gets emptyReason
   `unavailable` when its content is only in the original (or absent from the CDA), `nilknown`
   when the CDA says there is nothing. `relatesTo transforms` names the CDA.

The patient is found by the INS of the header (it must already be known here); the author is
kept as a logical reference (national id "8" + RPPS). The answer is a Parameters: `composition`,
`documentReference`, one `created` reference per resource, and an `outcome` OperationOutcome that
lists what was not mapped (kept in the original only).
"""

from __future__ import annotations

import base64
import binascii
import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_server.engine.errors import Issue, bad_request, error, operation_outcome
from fhir_server.engine.model import RequestContext, Result, new_id
from fhir_server.engine.operations import OperationCall
from fhir_server.vsm import cda, sharing
from fhir_server.vsm.cda_mapping import MappingContext, map_section
from fhir_server.vsm.sections import (
    EMPTY_REASON,
    MANDATORY,
    SECTIONS,
    SOURCE_DOCUMENTS,
    VSM_TITLE,
    section_code,
    vsm_type,
)

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

CDA_CONTENT_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-cda+xml"})
STORED_CONTENT_TYPE = "text/xml"          # the MIME type of CDA documents in the DMP (IHE XDS)
TEXT_LIMIT = 20_000


@dataclass
class ImportPlan:
    """Everything an import will create, with ids chosen up front so that they can reference
    each other inside one transaction."""

    binary: dict
    document: dict
    resources: list[dict] = field(default_factory=list)
    composition: dict = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)       # sections with content kept only in the CDA


class CdaImport:
    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def operation(self, call: OperationCall) -> Result:
        data = cda_bytes(call.body)
        document = cda.parse(data)
        patient_id = self._patient(document.header.patient_identifier)
        patient = self.server.interactions.read("Patient", patient_id, call.ctx).body or {}
        plan = self.plan(document, data, patient)
        created = self._create(plan, call.ctx)
        return Result(200, _answer(plan, created))

    def _patient(self, ins: dict) -> str:
        matches = self.server.search.matching_ids("Patient", [("identifier", f"{ins['system']}|{ins['value']}")])
        if len(matches) != 1:
            found = "no patient" if not matches else "several patients"
            raise error(422, "processing", f"The CDA document's INS {ins['value']} matches {found} here: the "
                        "patient must be known (and once) before their summary is imported")
        return matches[0]

    # -- planning ---------------------------------------------------------------------------------
    @staticmethod
    def plan(document: cda.CdaDocument, data: bytes, patient: dict) -> ImportPlan:
        header = document.header
        subject = {"reference": f"Patient/{patient['id']}"}
        title = header.title or VSM_TITLE
        binary_id, document_id, composition_id = new_id(), new_id(), new_id()
        binary = {"resourceType": "Binary", "id": binary_id, "contentType": STORED_CONTENT_TYPE,
                  "securityContext": {"reference": f"DocumentReference/{document_id}"},
                  "data": base64.b64encode(data).decode()}
        shared = sharing.SharedSummary(
            id=document_id, patient=patient, authors=[sharing.author_resource(header.author)],
            custodian=header.custodian, title=title, master_identifier=header.identifier,
            attachment=sharing.attachment_of(STORED_CONTENT_TYPE, f"Binary/{binary_id}", data, header.date),
            period_start=header.service_start or header.date,
            related=[{"reference": f"Composition/{composition_id}"}], facility_type=header.facility_type,
            practice_setting=header.practice_setting, confidentiality=header.confidentiality)
        plan = ImportPlan(binary, sharing.document_reference(shared))
        context = MappingContext(subject, header.author, header.date)
        sections = [_section(plan, s, context) for s in document.sections]
        present = {s.code for s in document.sections}
        sections += [_absent(code) for code in MANDATORY if code not in present]
        sections.append(_sources(plan))
        plan.composition = _composition(composition_id, header, subject, title, sections)
        return plan

    # -- creating ---------------------------------------------------------------------------------
    def _create(self, plan: ImportPlan, ctx: RequestContext) -> list[dict]:
        interactions = self.server.interactions
        created = []
        with self.server.store.transaction() as session:
            created.append(interactions.create("Binary", plan.binary, ctx, session=session,
                                               resource_id=plan.binary["id"]).body)
            created.append(sharing.share(self.server, plan.document, ctx, session))
            for resource in plan.resources:
                created.append(interactions.create(resource["resourceType"], resource, ctx, session=session,
                                                   resource_id=resource["id"]).body)
            created.append(interactions.create("Composition", plan.composition, ctx, session=session,
                                               resource_id=plan.composition["id"]).body)
        return [c for c in created if c]


def _section(plan: ImportPlan, section: cda.CdaSection, context: MappingContext) -> dict:
    """One CDA section as a Composition section: its mapped entries, its narrative; what was not
    mapped is reported, and stays in the original document (listed in the sources section)."""
    mapped = map_section(section, context)
    entries = []
    for resource in mapped.resources:
        resource["id"] = new_id()
        plan.resources.append(resource)
        entries.append({"reference": f"{resource['resourceType']}/{resource['id']}"})
    name = section.title or section.code or "?"
    if mapped.unmapped:
        plan.unmapped.append(name)
        plan.issues.append(Issue("warning", "informational",
                                 f"Section '{name}' ({section.code}): {mapped.unmapped} of {len(section.entries)} "
                                 "entries not mapped to FHIR, kept in the original CDA document (the summary's "
                                 "section 55107-7 references it)"))
    built: dict[str, Any] = {"title": section.title or _title(section.code),
                             "code": section_code(section.code) if section.code else {"text": name},
                             "text": _narrative(section.text)}
    if entries:
        built["entry"] = entries
    elif section.code in MANDATORY:
        # content only in the original (not structured), or really nothing to say
        built["emptyReason"] = _empty_reason("unavailable" if mapped.unmapped else "nilknown")
    return built


def _sources(plan: ImportPlan) -> dict:
    """The section listing the original CDA document, which holds everything, mapped or not."""
    note = "Document CDA d'origine (volet de synthèse médicale)."
    if plan.unmapped:
        note += " Contenu non structuré conservé dans ce document pour : " + ", ".join(plan.unmapped) + "."
    return {"title": SECTIONS[SOURCE_DOCUMENTS].title, "code": section_code(SOURCE_DOCUMENTS),
            "text": _narrative(note), "entry": [{"reference": f"DocumentReference/{plan.document['id']}"}]}


def cda_bytes(body: Any) -> bytes:
    """The CDA carried by the request: a Binary, or a Parameters `document` (Binary or Attachment)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        part = next((p for p in body.get("parameter", ()) if p.get("name") == "document"), None)
        if part is None:
            raise bad_request("$import-cda takes a Parameters with a 'document' part (a Binary resource or a "
                              "valueAttachment holding the CDA)", "Parameters.parameter")
        body = part.get("resource") or part.get("valueAttachment")
    if not isinstance(body, dict) or body.get("resourceType") not in (None, "Binary"):
        raise bad_request("$import-cda takes the CDA document as a Binary (contentType text/xml, data in base64) or "
                          "a Parameters with a 'document' part", "Binary")
    content_type = str(body.get("contentType") or "").split(";", 1)[0].strip().lower()
    if content_type not in CDA_CONTENT_TYPES:
        raise error(415, "not-supported", f"A CDA document is XML: contentType {content_type or '(none)'} is not "
                    f"one of {', '.join(sorted(CDA_CONTENT_TYPES))}", "Binary.contentType")
    try:
        data = base64.b64decode(body.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("The CDA document's data is not valid base64", "Binary.data") from None
    if not data.strip():
        raise bad_request("The CDA document is empty", "Binary.data")
    return data


def _composition(composition_id: str, header: cda.CdaHeader, subject: dict, title: str,
                 sections: list[dict]) -> dict:
    composition: dict[str, Any] = {
        "resourceType": "Composition", "id": composition_id, "identifier": header.identifier, "status": "final",
        "type": vsm_type(), "subject": subject, "date": header.date, "author": [header.author], "title": title,
        "confidentiality": header.confidentiality,
    }
    composition["custodian"] = header.custodian
    composition["event"] = [{"period": {k: v for k, v in (("start", header.service_start or header.date),
                                                          ("end", header.service_end)) if v}}]
    # "transforms": this Composition was made by transforming the CDA document it names
    composition["relatesTo"] = [{"code": "transforms", "targetIdentifier": header.identifier}]
    composition["section"] = sections
    return composition


def _absent(code: str) -> dict:
    return {"title": SECTIONS[code].title, "code": section_code(code),
            "text": _narrative("Section absente du document CDA d'origine"),
            "emptyReason": _empty_reason("unavailable")}


def _title(code: str | None) -> str:
    kind = SECTIONS.get(code or "")
    return kind.title if kind else "Section"


def _narrative(text: str) -> dict:
    shown = text[:TEXT_LIMIT] + (" […]" if len(text) > TEXT_LIMIT else "") if text else "Aucun texte"
    return {"status": "additional",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(shown, quote=False)}</p></div>'}


def _empty_reason(code: str) -> dict:
    return {"coding": [{"system": EMPTY_REASON, "code": code}]}


def _answer(plan: ImportPlan, created: list[dict]) -> dict:
    by_reference = {f"{r['resourceType']}/{r['id']}": r for r in created}
    composition = by_reference[f"Composition/{plan.composition['id']}"]
    document = by_reference[f"DocumentReference/{plan.document['id']}"]
    issues = plan.issues or [Issue("information", "informational", "Every entry of the CDA document was mapped")]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "composition", "resource": composition},
        {"name": "documentReference", "resource": document},
        *({"name": "created", "valueReference": {"reference": reference}} for reference in by_reference),
        {"name": "outcome", "resource": operation_outcome(issues)},
    ]}
