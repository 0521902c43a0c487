"""Documents a patient adds to their own health space (a photo, a PDF), with a patient token.

The patient is the author (a contained Patient carrying their INS, as PDSm wants authors
contained), the practice setting and facility type come from TRE_A00-ProducteurDocNonPS
(EXP_PATIENT: the patient's own expression), and only some media types, up to a size limit, are
accepted (FHIR_MHD_PATIENT_CONTENT_TYPES, FHIR_MHD_PATIENT_MAX_BYTES). ITI-105 fills the author,
the settings and the custodian in when the patient's application leaves them out; the write rule
enforces all of it whatever the transaction (ITI-105 or ITI-65).
"""

from __future__ import annotations

from fhir_server.access.identity import INS_SYSTEMS
from fhir_server.engine.errors import error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext
from fhir_server.mhd import canonical
from fhir_server.mhd.actors import actor_kind, patient_ins
from fhir_server.mhd.config import MhdSettings
from fhir_server.mhd.documents import as_list, attachments

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
AUTHOR_ID = "auteur-patient"
PATIENT_SETTING = {"coding": [{"system": canonical.PRODUCTEUR_NON_PS, "code": canonical.PATIENT_EXPRESSION,
                               "display": "Expression personnelle du patient"}]}


class PatientDocuments:
    def __init__(self, settings: MhdSettings) -> None:
        self.settings = settings

    def fill_in(self, document: dict, ctx: RequestContext) -> dict:
        """The server-managed elements of a patient's publication, where the application left them out."""
        if actor_kind(ctx) != "patient":
            return document
        document = dict(document)
        if not document.get("author"):
            author = {"resourceType": "Patient", "id": AUTHOR_ID,
                      "identifier": [{"system": INS_NIR, "value": patient_ins(ctx)}]}
            document["contained"] = [*as_list(document.get("contained")), author]
            document["author"] = [{"reference": f"#{AUTHOR_ID}"}]
        context = dict(document.get("context") or {})
        context.setdefault("practiceSetting", PATIENT_SETTING)
        context.setdefault("facilityType", PATIENT_SETTING)
        document["context"] = context
        document.setdefault("custodian", {"display": self.settings.custodian_name})
        return document

    def check_content(self, content_type: object, size: int, expression: str) -> None:
        """The media types and the size a patient may publish."""
        media = content_type.split(";", 1)[0].strip().lower() if isinstance(content_type, str) else ""
        if media not in self.settings.patient_content_types:
            accepted = ", ".join(sorted(self.settings.patient_content_types))
            raise error(422, "business-rule", f"A patient may add documents of these types only: {accepted}; "
                        f"not {media or 'a document without contentType'}", f"{expression}.contentType")
        if size > self.settings.patient_max_bytes:
            raise error(413, "too-costly", f"A document added by a patient is at most "
                        f"{self.settings.patient_max_bytes} bytes; this one is {size} bytes", f"{expression}.size")

    def check(self, event: WriteEvent) -> None:
        """Write rule: what a patient creates in their space."""
        if event.resource_type != "DocumentReference" or event.interaction != "create" \
                or actor_kind(event.ctx) != "patient" or event.new is None:
            return
        document = event.new
        for found in attachments(document):
            size = found.attachment.get("size")
            self.check_content(found.attachment.get("contentType"), size if isinstance(size, int) else 0,
                               found.expression)
        if not self._authored_by(document, event.ctx):
            raise error(403, "forbidden", "A document a patient adds has the patient as its only author",
                        "DocumentReference.author")
        settings = [c.get("system") for c in as_list((document.get("context") or {}).get("practiceSetting", {})
                                                       .get("coding")) if isinstance(c, dict)]
        if canonical.PRODUCTEUR_NON_PS not in settings:
            raise error(422, "business-rule", "The practice setting of a document a patient adds comes from "
                        f"TRE_A00-ProducteurDocNonPS ({canonical.PRODUCTEUR_NON_PS}, e.g. "
                        f"{canonical.PATIENT_EXPRESSION})", "DocumentReference.context.practiceSetting")

    @staticmethod
    def _authored_by(document: dict, ctx: RequestContext) -> bool:
        """Every author is the patient: a contained Patient with their INS, or their Patient resource."""
        contained = {c.get("id"): c for c in as_list(document.get("contained")) if isinstance(c, dict)}
        ins, own = patient_ins(ctx), set(ctx.access.patients)
        authors = [a.get("reference") for a in as_list(document.get("author")) if isinstance(a, dict)]
        if not authors:
            return False
        for reference in authors:
            if isinstance(reference, str) and reference.startswith("#"):
                target = contained.get(reference[1:]) or {}
                if target.get("resourceType") != "Patient" or not any(
                        i.get("system") in INS_SYSTEMS and i.get("value") == ins
                        for i in as_list(target.get("identifier")) if isinstance(i, dict)):
                    return False
            elif reference not in own:
                return False
        return True
