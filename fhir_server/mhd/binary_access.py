"""A document's Binary is protected exactly like its DocumentReference (ITI-68).

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
"""

from __future__ import annotations

from fhir_server.engine.interactions import WriteEvent
from fhir_server.storage import MongoStore, Session

HISTORY = "_history"
SECURITY_CONTEXT = "resource.securityContext.reference"
# Binary look-up by the document it belongs to (declared through server.extra_indexes).
BINARY_INDEXES = [[(SECURITY_CONTEXT, 1)]]


class BinaryAccessSync:
    def __init__(self, store: MongoStore) -> None:
        self.store = store

    def on_write(self, event: WriteEvent) -> None:
        """Write hook for Binary, DocumentReference and Consent writes."""
        if event.resource_type == "Binary" and event.new is not None:
            self._from_document(event)
        elif event.resource_type == "DocumentReference" and event.new is not None:
            self.copy_to_binaries(f"DocumentReference/{event.resource_id}", event.acl, event.session)
        elif event.resource_type == "Consent":
            for patient in _patients_of(event):
                self.resync_patient(patient, event.session)

    def _from_document(self, event: WriteEvent) -> None:
        reference = _security_context(event.new or {})
        if not reference or not reference.startswith("DocumentReference/"):
            return
        document = self.store.get("DocumentReference", reference.split("/", 1)[1], event.session)
        if document is not None:           # else the document comes later in the transaction
            self._set_acl([event.resource_id], document.get("_acl"), event.session)

    def copy_to_binaries(self, document: str, acl: dict | None, session: Session) -> list[str]:
        ids = [d["_id"] for d in self.store.find("Binary", {SECURITY_CONTEXT: document}, projection={"_id": 1},
                                                 session=session)]
        self._set_acl(ids, acl, session)
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

    def _set_acl(self, binary_ids: list[str], acl: dict | None, session: Session) -> None:
        if not binary_ids:
            return
        update = {"$set": {"_acl": acl}} if acl is not None else {"$unset": {"_acl": ""}}
        self.store.update_many("Binary", {"_id": {"$in": binary_ids}}, update, session)
        self.store.update_many(HISTORY, {"type": "Binary", "id": {"$in": binary_ids}}, update, session)


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

