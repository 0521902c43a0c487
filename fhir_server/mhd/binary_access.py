"""A document's Binary (or FHIR document Bundle) is protected exactly like its DocumentReference (ITI-68).

Binary is in no patient compartment, so the access policy gives it no access data of its own and
every professional could read it. A Binary that carries `securityContext` = its DocumentReference
(R4: "the resource to use as a proxy of the security sensitivity of the Binary") gets a copy of
that DocumentReference's `_acl` instead, in the current version and in its history, inside the
write's transaction:

- when the Binary is written, from the DocumentReference if it is already stored;
- when the DocumentReference is written (created, masked, unmasked...), onto its Binaries;
- when a Consent of the patient changes (the policy rewrites the DocumentReferences' `_acl`),
  onto the Binaries of that patient's documents.

So the read filter of a masked document hides its Binary from the same professionals, and the
patient reads the Binaries of the documents they see. The Binaries of an ITI-65 bundle or an
ITI-105 publication get their securityContext from the server (see provide.py / publish.py).
Only Binaries that name the document are synchronised: a DocumentReference cannot lend its access
rights to somebody else's Binary by pointing its attachment at it.

A FHIR document (a Bundle of type document, see fhir_documents.py) cannot name its entry: it is bound
by the entry's `attachment.url` = `Bundle/[id]` instead, which only a provide bundle carrying that
document, or the server itself (VSM sharing), sets; one entry per Bundle (lifecycle.py). Its access
data are copied the same way, from whichever of the two is written last.
"""

from __future__ import annotations

from fhir_server.engine.interactions import WriteEvent
from fhir_server.mhd.documents import attachments
from fhir_server.mhd.fhir_documents import document_id
from fhir_server.storage import MongoStore, Session

HISTORY = "_history"
SECURITY_CONTEXT = "resource.securityContext.reference"
ATTACHMENT_URL = "resource.content.attachment.url"
# Look-ups of a document's content and of a content's document (declared through server.extra_indexes).
BINARY_INDEXES = [[(SECURITY_CONTEXT, 1)]]
DOCUMENT_REFERENCE_INDEXES = [[(ATTACHMENT_URL, 1)]]


class BinaryAccessSync:
    def __init__(self, store: MongoStore) -> None:
        self.store = store

    def on_write(self, event: WriteEvent) -> None:
        """Write hook for Binary, Bundle, DocumentReference and Consent writes."""
        if event.resource_type == "Binary" and event.new is not None:
            self._from_document(event)
        elif event.resource_type == "Bundle" and event.new is not None:
            self.fhir_document_from_entry(event.resource_id, event.session)
        elif event.resource_type == "DocumentReference" and event.new is not None:
            self.copy_to_binaries(f"DocumentReference/{event.resource_id}", event.acl, event.session)
            self._copy_to_fhir_documents(event.new, event.acl, event.session)
        elif event.resource_type == "Consent":
            for patient in _patients_of(event):
                self.resync_patient(patient, event.session)

    def _from_document(self, event: WriteEvent) -> None:
        reference = _security_context(event.new or {})
        if not reference or not reference.startswith("DocumentReference/"):
            return
        document = self.store.get("DocumentReference", reference.split("/", 1)[1], event.session)
        if document is not None:           # else the document comes later in the transaction
            self._set_acl("Binary", [event.resource_id], document.get("_acl"), event.session)

    def fhir_document_from_entry(self, bundle_id: str, session: Session) -> None:
        """A FHIR document takes the access data of the entry describing it, if it is stored yet."""
        entries = self.store.find("DocumentReference", {ATTACHMENT_URL: f"Bundle/{bundle_id}"},
                                  limit=1, projection={"_acl": 1}, session=session)
        if entries:
            self._set_acl("Bundle", [bundle_id], entries[0].get("_acl"), session)

    def _copy_to_fhir_documents(self, document: dict, acl: dict | None, session: Session) -> None:
        bundle_ids = [i for i in (document_id(a.attachment.get("url")) for a in attachments(document)) if i]
        present = [b["_id"] for b in self.store.find("Bundle", {"_id": {"$in": bundle_ids}}, projection={"_id": 1},
                                                     session=session)] if bundle_ids else []
        self._set_acl("Bundle", present, acl, session)

    def copy_to_binaries(self, document: str, acl: dict | None, session: Session) -> list[str]:
        ids = [d["_id"] for d in self.store.find("Binary", {SECURITY_CONTEXT: document}, projection={"_id": 1},
                                                 session=session)]
        self._set_acl("Binary", ids, acl, session)
        return ids

    def resync_patient(self, patient: str, session: Session) -> None:
        """After the policy rewrote the access data of a patient's resources."""
        binaries = self.store.find("Binary", {"_acl.patients": patient},
                                   projection={"_id": 1, SECURITY_CONTEXT: 1}, session=session)
        documents = {_security_context(b.get("resource", {})) for b in binaries} - {None}
        for document in sorted(d for d in documents if d.startswith("DocumentReference/")):
            stored = self.store.get("DocumentReference", document.split("/", 1)[1], session)
            if stored is not None:
                self.copy_to_binaries(document, stored.get("_acl"), session)
        for bundle in self.store.find("Bundle", {"_acl.patients": patient}, projection={"_id": 1}, session=session):
            self.fhir_document_from_entry(bundle["_id"], session)

    def _set_acl(self, resource_type: str, ids: list[str], acl: dict | None, session: Session) -> None:
        if not ids:
            return
        update = {"$set": {"_acl": acl}} if acl is not None else {"$unset": {"_acl": ""}}
        self.store.update_many(resource_type, {"_id": {"$in": ids}}, update, session)
        self.store.update_many(HISTORY, {"type": resource_type, "id": {"$in": ids}}, update, session)


def _security_context(binary: dict) -> str | None:
    context = binary.get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    return reference if isinstance(reference, str) else None


def _patients_of(event: WriteEvent) -> set[str]:
    patients = set()
    for consent in (event.old, event.new):
        reference = (consent or {}).get("patient", {})
        literal = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(literal, str) and "Patient/" in literal:
            patients.add("Patient/" + literal.rsplit("Patient/", 1)[1])
    return patients

