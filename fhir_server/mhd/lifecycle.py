"""The life of a shared document entry, as write rules (before a write is stored; they refuse it)
and write hooks (inside its transaction; they make the consequences happen atomically):

- an entry (and an MHD List) names its patient by a literal `Patient/[id]`: the access data of a
  document come from that reference, so a conditional or logical one left unresolved would leave
  the document without an owner (readable by any professional);
- a masterIdentifier (the document's uniqueId) is used once;
- replacement: an entry with `relatesTo.code = replaces` must replace a current entry of the same
  patient, which becomes `superseded` in the same transaction;
- logical deletion: only the patient or an author deletes an entry (the server keeps every
  version; reads answer 410 Gone); the entry's Binaries are deleted with it;
- a stored Binary an entry points at and that belongs to no document yet (a document uploaded
  raw to /Binary first) is bound to the entry (`securityContext`), so it gets its access rules;
- a shared entry is not rewritten (PUT) by a patient or a professional: its metadata change by
  PATCH (flux 03), its document by a new version that replaces it; and the bytes of a document
  bound to an entry never change (the entry holds their hash), nor does the binding;
- the same holds for a FHIR document (a Bundle the entry's `attachment.url` names): it belongs to one
  entry, does not change, and is deleted with it.
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.engine.errors import FhirError, error
from fhir_server.engine.interactions import Interactions, WriteEvent
from fhir_server.mhd.actors import ServerStepContext, is_author, is_owner, is_trusted
from fhir_server.mhd.binary_access import ATTACHMENT_URL, SECURITY_CONTEXT
from fhir_server.mhd.content import BinaryContent
from fhir_server.mhd.documents import (
    attachments,
    binary_id,
    is_patient_reference,
    list_kind,
    master_identifier,
    replaced_targets,
    subject_reference,
)
from fhir_server.mhd.fhir_documents import document_id
from fhir_server.storage import Session

FindIds = Callable[[str, list[tuple[str, str]]], list[str]]
SUPERSEDE = [{"op": "replace", "path": "/status", "value": "superseded"}]


class DocumentLifecycle:
    def __init__(self, interactions: Interactions, find_ids: FindIds, content: BinaryContent) -> None:
        self.interactions = interactions
        self.store = interactions.store
        self.find_ids = find_ids
        self.content = content

    # -- rules ------------------------------------------------------------------------------------------
    def check(self, event: WriteEvent) -> None:
        """Write rule on DocumentReference, MHD List and Binary writes."""
        if event.resource_type == "List" and event.new is not None and list_kind(event.new):
            _require_literal_patient(event.new, "List")
        if event.resource_type == "Binary":
            self._check_document_binary(event)
        if event.resource_type == "Bundle" and event.old is not None:
            self._check_fhir_document(event)
        if event.resource_type != "DocumentReference":
            return
        if event.interaction == "delete":
            self._check_deletion(event)
            return
        if event.interaction == "update" and event.old is not None and not is_trusted(event.ctx):
            raise error(405, "not-supported", "A shared document entry is not rewritten: PATCH its status, security "
                        "labels or archive flag (PDSm flux 03), or provide a new version that replaces it "
                        "(relatesTo.code = replaces)", "DocumentReference")
        _require_literal_patient(event.new or {}, "DocumentReference")
        if event.interaction == "create":
            self._check_unique_master_identifier(event)
            self._check_replacements(event)
            self._check_fhir_document_binding(event)

    def _check_unique_master_identifier(self, event: WriteEvent) -> None:
        identifier = master_identifier(event.new or {})
        if identifier is None:
            return
        system, value = identifier
        existing = [i for i in self.find_ids("DocumentReference", [("identifier", f"{system}|{value}")])
                    if i != event.resource_id]
        if existing:
            raise error(409, "duplicate", f"A document with masterIdentifier {system}|{value} already exists: each "
                        "document has its own unique id; a new version replaces the old one with relatesTo",
                        "DocumentReference.masterIdentifier")

    def _check_replacements(self, event: WriteEvent) -> None:
        new = event.new or {}
        for index, reference in replaced_targets(new):
            where = f"DocumentReference.relatesTo[{index}].target"
            replaced = self._replaced(event, reference, where)
            if replaced.get("status") != "current":
                raise error(422, "business-rule", f"{where}: {reference} is {replaced.get('status')}; only a current "
                            "document can be replaced", where)
            if subject_reference(replaced) != subject_reference(new):
                raise error(422, "business-rule", f"{where}: {reference} concerns {subject_reference(replaced)}, "
                            f"not {subject_reference(new)}: a new version concerns the same patient", where)

    def _replaced(self, event: WriteEvent, reference: str, where: str) -> dict:
        resource_type, _, resource_id = reference.rpartition("/")
        if resource_type.rsplit("/", 1)[-1] != "DocumentReference" or not resource_id:
            raise error(422, "business-rule", f"{where} must reference the replaced DocumentReference "
                        f"(DocumentReference/[id], or a conditional reference in a transaction), not {reference!r}",
                        where)
        visible = self.interactions.read_filter(event.ctx, "DocumentReference")
        stored = self.store.get("DocumentReference", resource_id, event.session, visible)
        if stored is None:
            raise error(422, "business-rule", f"{where}: the document to replace, {reference}, does not exist",
                        where)
        return stored["resource"]

    def _check_document_binary(self, event: WriteEvent) -> None:
        """The document of an entry is immutable: same bytes, same binding (deleted with its entry only)."""
        old = event.old or {}
        bound = old.get("securityContext")
        if not (isinstance(bound, dict) and str(bound.get("reference", "")).startswith("DocumentReference/")):
            return
        if event.new is None:
            if not isinstance(event.ctx, ServerStepContext):
                raise error(405, "not-supported", f"This Binary is the document of {bound['reference']}: it is deleted "
                            "with its entry (DELETE the DocumentReference)", "Binary")
            return
        if event.new.get("securityContext") != bound or self.content.facts(event.new) != self.content.facts(old):
            raise error(405, "not-supported", f"This Binary is the document of {bound['reference']}, which holds its "
                        "size and hash: its bytes and binding do not change; provide a new version of the document "
                        "that replaces it", "Binary")

    def _check_fhir_document(self, event: WriteEvent) -> None:
        """A FHIR document bound to an entry: same content (meta aside), deleted with its entry only."""
        entries = self._entries_of_fhir_document(event.resource_id, event.session)
        if not entries:
            return
        if event.new is None:
            if not isinstance(event.ctx, ServerStepContext):
                raise error(405, "not-supported", f"This Bundle is the document of {entries[0]}: it is deleted with "
                            "its entry (DELETE the DocumentReference)", "Bundle")
            return
        if _without_meta(event.new) != _without_meta(event.old or {}):
            raise error(405, "not-supported", f"This Bundle is the document of {entries[0]}, which holds its size "
                        "and hash: it does not change; provide a new version of the document that replaces it",
                        "Bundle")

    def _check_fhir_document_binding(self, event: WriteEvent) -> None:
        """A FHIR document is the content of one entry only (it takes that entry's access rules)."""
        for found in attachments(event.new or {}):
            bundle_id = document_id(found.attachment.get("url"))
            others = [e for e in self._entries_of_fhir_document(bundle_id, event.session)
                      if e != f"DocumentReference/{event.resource_id}"] if bundle_id else []
            if others:
                raise error(422, "business-rule", f"{found.expression}.url: Bundle/{bundle_id} is already the "
                            f"document of {others[0]}; a new entry describes a document of its own",
                            f"{found.expression}.url")

    def _entries_of_fhir_document(self, bundle_id: str, session: Session) -> list[str]:
        found = self.store.find("DocumentReference", {ATTACHMENT_URL: f"Bundle/{bundle_id}"}, limit=2,
                                projection={"_id": 1}, session=session)
        return [f"DocumentReference/{d['_id']}" for d in found]

    def _check_deletion(self, event: WriteEvent) -> None:
        if is_trusted(event.ctx) or is_owner(event.ctx, event.acl) or is_author(event.ctx, event.acl):
            return
        raise error(403, "forbidden", "Only the patient or an author of a document deletes it (logical deletion)",
                    "DocumentReference")

    # -- hooks ------------------------------------------------------------------------------------------
    def apply(self, event: WriteEvent) -> None:
        """Write hook on DocumentReference writes: supersede, delete Binaries, bind Binaries."""
        if event.resource_type != "DocumentReference":
            return
        if event.interaction == "delete":
            self._delete_binaries(event)
            return
        if event.interaction == "create":
            self._supersede_replaced(event)
        self._bind_stored_binaries(event)

    def _supersede_replaced(self, event: WriteEvent) -> None:
        step = ServerStepContext.of(event.ctx)
        for _, reference in replaced_targets(event.new or {}):
            replaced_id = reference.rsplit("/", 1)[-1]
            stored = self.store.get("DocumentReference", replaced_id, event.session)
            if stored is not None and stored["resource"].get("status") == "current":
                self.interactions.patch("DocumentReference", replaced_id, SUPERSEDE, "json-patch", step,
                                        session=event.session)

    def _delete_binaries(self, event: WriteEvent) -> None:
        document = f"DocumentReference/{event.resource_id}"
        step = ServerStepContext.of(event.ctx)
        for found in self.store.find("Binary", {SECURITY_CONTEXT: document}, projection={"_id": 1},
                                     session=event.session):
            self.interactions.delete("Binary", found["_id"], step, session=event.session)
        for content in attachments(event.old or {}):
            bundle_id = document_id(content.attachment.get("url"))
            if bundle_id and self.store.get("Bundle", bundle_id, event.session) is not None:
                self.interactions.delete("Bundle", bundle_id, step, session=event.session)

    def _bind_stored_binaries(self, event: WriteEvent) -> None:
        document = f"DocumentReference/{event.resource_id}"
        for found in attachments(event.new or {}):
            stored_id = binary_id(found.attachment.get("url"))
            stored = self.store.get("Binary", stored_id, event.session) if stored_id else None
            if stored is None or "securityContext" in stored["resource"]:
                continue
            patch = [{"op": "add", "path": "/securityContext", "value": {"reference": document}}]
            try:
                self.interactions.patch("Binary", stored_id, patch, "json-patch", event.ctx, session=event.session)
            except FhirError as exc:
                raise error(exc.status, "forbidden" if exc.status == 403 else "processing",
                            f"{found.expression}.url: Binary/{stored_id} cannot be bound to this document: {exc}",
                            f"{found.expression}.url") from None


def _without_meta(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def _require_literal_patient(resource: dict, resource_type: str) -> None:
    reference = subject_reference(resource)
    if not is_patient_reference(reference):
        raise error(422, "business-rule", f"{resource_type}.subject must reference the patient of this server as "
                    f"Patient/[id] (a conditional reference is resolved in a transaction only), not {reference!r}",
                    f"{resource_type}.subject")
