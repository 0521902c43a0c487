"""Sharing a medical summary in the patient's space: one DocumentReference per shared summary,
and only one current summary per patient.

The shared summary is what patients and professionals open (`DocumentReference?patient=...
&type=http://loinc.org|60591-5&status=current`). When a new summary is shared (persisted
`$document`, imported CDA), the previous current ones become `superseded` and the new
DocumentReference says `relatesTo replaces` them: the IHE MHD / ANS PDSm way of replacing a
document. Old summaries stay readable (and in history); nothing is marked `entered-in-error`,
which would tell readers that they were wrong when they were only outdated. The Compositions
themselves are never rewritten: a document, once issued, is not edited.

The DocumentReference meets the PDSm "fiche" profile the server requires of every
DocumentReference: authors and patient contained, class, format, size and hash, context.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_server.engine.model import RequestContext, instant, now
from fhir_server.vsm.sections import LOINC, VSM_TYPE, vsm_type

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

NOS = "https://mos.esante.gouv.fr/NOS"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CLASS_SUMMARY = {"system": f"{NOS}/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument", "code": "11",
                 "display": "Synthèse"}
FORMAT_FROM_MIME_TYPE = {"system": f"{NOS}/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
                         "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "Format déduit du type MIME"}
NOT_GIVEN = {"text": "Non renseigné"}
PREVIOUS_LIMIT = 100
# What a contained copy keeps: contained resources carry no meta, narrative or nested resources.
NOT_CONTAINED = frozenset({"id", "meta", "text", "contained"})


@dataclass
class SharedSummary:
    """What the DocumentReference of a shared summary says."""

    patient: dict                        # the Patient resource (copied as sourcePatientInfo)
    authors: list[dict]                  # author resources (copied, contained)
    custodian: dict                      # Reference to the organisation keeping the document
    title: str
    master_identifier: dict
    attachment: dict
    period_start: str
    related: list[dict] = field(default_factory=list)
    facility_type: dict | None = None
    practice_setting: dict | None = None
    confidentiality: str = "N"
    id: str | None = None


def document_reference(summary: SharedSummary) -> dict:
    authors = [contained_copy(a, f"author-{i}") for i, a in enumerate(summary.authors, start=1)]
    patient = contained_copy(summary.patient, "patient")
    reference: dict[str, Any] = {"resourceType": "DocumentReference"}
    if summary.id:
        reference["id"] = summary.id
    reference.update({
        "contained": [*authors, patient],
        "masterIdentifier": summary.master_identifier,
        "status": "current",
        "type": vsm_type(),
        "category": [{"coding": [CLASS_SUMMARY]}],
        "subject": {"reference": f"Patient/{summary.patient['id']}"},
        "date": instant(now()),
        "author": [{"reference": f"#{a['id']}"} for a in authors],
        "custodian": summary.custodian,
        "description": summary.title,
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": summary.confidentiality}]}],
        "content": [{"attachment": {"language": "fr-FR", "title": summary.title, **summary.attachment},
                     "format": FORMAT_FROM_MIME_TYPE}],
        "context": {
            "period": {"start": summary.period_start},
            "facilityType": summary.facility_type or NOT_GIVEN,
            "practiceSetting": summary.practice_setting or NOT_GIVEN,
            "sourcePatientInfo": {"reference": "#patient"},
        },
    })
    if summary.related:
        reference["context"]["related"] = summary.related
    return reference


def contained_copy(resource: dict, local_id: str) -> dict:
    return {"resourceType": resource["resourceType"], "id": local_id,
            **{k: v for k, v in resource.items() if k not in NOT_CONTAINED and k != "resourceType"}}


def author_resource(reference: dict) -> dict:
    """A logical author reference (identifier, display) as a resource to contain."""
    resource: dict[str, Any] = {"resourceType": reference.get("type") or "Practitioner"}
    if reference.get("identifier"):
        resource["identifier"] = [reference["identifier"]]
    if reference.get("display"):
        resource["name"] = [{"text": reference["display"]}]
    return resource


def attachment_of(content_type: str, url: str, data: bytes, creation: str) -> dict:
    """An attachment pointing at `url`, with the size and SHA-1 of its content (MHD)."""
    return {"contentType": content_type, "url": url, "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(), "creation": creation}


def share(server: FhirServer, reference: dict, ctx: RequestContext, session: Any) -> dict:
    """Store the DocumentReference of a new summary; the patient's previous current summaries
    become superseded. Runs in the caller's transaction and as the caller (the audit trail shows
    who replaced what)."""
    subject = reference["subject"]["reference"]
    previous = server.search.matching_ids(
        "DocumentReference", [("patient", subject), ("type", f"{LOINC}|{VSM_TYPE}"), ("status", "current")],
        limit=PREVIOUS_LIMIT)
    if previous:
        reference = {**reference, "relatesTo": [
            {"code": "replaces", "target": {"reference": f"DocumentReference/{i}"}} for i in previous]}
    created = server.interactions.create("DocumentReference", reference, ctx, session=session,
                                         resource_id=reference.get("id"))
    for document_id in previous:
        _supersede(server, document_id, ctx, session)
    return created.body or {}


def _supersede(server: FhirServer, document_id: str, ctx: RequestContext, session: Any) -> None:
    current = server.interactions.read("DocumentReference", document_id, ctx, session).body or {}
    if current.get("status") != "current":
        return
    replaced = {k: v for k, v in current.items() if k != "meta"}
    replaced["status"] = "superseded"
    server.interactions.update("DocumentReference", document_id, replaced, ctx, session=session)
