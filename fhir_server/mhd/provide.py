"""ITI-65 Provide Document Bundle: what a PDSm provide bundle must satisfy before the shared
transaction engine runs it (ids, `urn:uuid:` rewriting, ordering, atomicity stay the engine's).

A transaction is a provide bundle when it claims a provide-bundle profile or carries an MHD
submission set. Its checks, all made before anything is written, every failure naming its entry:

1. the entries are those the profile allows (closed slicing): one submission set, document entries
   and/or folders, Binaries or FHIR documents (Bundles of type document), and optionally the
   patient and patches superseding entries;
2. each resource conforms to its PDSm profile (submission set, document entry, folder, patch);
3. each document entry's `attachment.url` points at a Binary of the bundle or a stored Binary, or at
   a FHIR document of the bundle, whose bytes (for a FHIR document: as serialized, see
   fhir_documents.py) have exactly the declared `size`, SHA-1 `hash` and `contentType`;
4. the submission set lists every document entry and folder of the bundle; all concern one patient;
   a masterIdentifier and an entryUUID appear once;
5. what a folder files that is not in the bundle is a stored document of the same patient (folders.py).

Steps 1 and 2 are the provide-bundle profile's rules (closed slicing by profile and request method)
applied entry by entry: validating the whole bundle against that profile gives the same verdict,
with messages that only say "matches none of the slices", at ten times the cost.

The bundle handed back to the engine differs in four ways: each Binary of a document entry gets
`securityContext` = that entry (see binary_access.py), unless the client set one; each document
entry, submission set and folder without an entryUUID gets one (entry_uuid.py; a folder's new
version keeps the stored one); the submission set lists the stored documents newly filed in folders;
its `authorOrg` naming a contained Organization gets that organisation's identifier too, by which
`authorOrg` searches find it (submission_source.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from fhir_server.engine.errors import FhirError, Issue
from fhir_server.engine.model import RequestContext, new_id
from fhir_server.mhd import canonical
from fhir_server.mhd.content import BinaryContent, ContentFacts
from fhir_server.mhd.documents import (
    attachments,
    binary_id,
    claims_profile,
    decode_base64,
    list_kind,
    master_identifier,
    subject_reference,
)
from fhir_server.mhd.entry_uuid import entry_uuid_identifiers, entry_uuid_problems, with_entry_uuid
from fhir_server.mhd.fhir_documents import MEDIA_TYPES, document_facts, document_id, is_fhir_document
from fhir_server.mhd.folders import FindIds, FolderEntry, FolderFiling, ReadResource
from fhir_server.mhd.profiles import ProfileCheck
from fhir_server.mhd.submission_source import with_author_org_identifier

# Entry kinds of a provide bundle (the slices of the MHD / PDSm provide-bundle profile).
SUBMISSION_SET, DOCUMENT_REFS, UPDATE_DOCUMENT_REFS = "SubmissionSet", "DocumentRefs", "UpdateDocumentRefs"
DOCUMENTS, FHIR_DOCUMENTS, FOLDERS, PATIENT = "Documents", "FhirDocuments", "Folders", "Patient"
ENTRY_PROFILES = {SUBMISSION_SET: canonical.SUBMISSION_SET, DOCUMENT_REFS: canonical.COMPREHENSIVE_DOCUMENT,
                  FOLDERS: canonical.FOLDER, UPDATE_DOCUMENT_REFS: canonical.PATCH_PARAMETERS}

NAMED_BY_ENTRY_UUID = (SUBMISSION_SET, DOCUMENT_REFS, FOLDERS)


@dataclass
class _Entry:
    index: int
    raw: dict
    method: str
    kind: str | None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def resource(self) -> dict:
        resource = self.raw.get("resource")
        return resource if isinstance(resource, dict) else {}

    @property
    def full_url(self) -> str | None:
        value = self.raw.get("fullUrl")
        return value if isinstance(value, str) else None


@dataclass
class _Check:
    """One bundle under check: its entries and the issues found so far."""

    bundle: dict
    entries: list[_Entry]
    ctx: RequestContext
    issues: list[Issue] = field(default_factory=list)
    facts: dict[int, ContentFacts | None] = field(default_factory=dict)     # content entry -> its facts
    owners: dict[int, int] = field(default_factory=dict)                     # content entry -> document entry
    refiled: list[str] = field(default_factory=list)                         # stored documents filed anew
    kept_entry_uuids: dict[int, str] = field(default_factory=dict)           # folder entry -> stored entryUUID

    def of_kind(self, *kinds: str) -> list[_Entry]:
        return [e for e in self.entries if e.kind in kinds]

    def add(self, code: str, diagnostics: str, expression: str) -> None:
        self.issues.append(Issue("error", code, diagnostics, (expression,)))

    def fail_if_any(self, status: int = 422) -> None:
        if self.issues:
            raise FhirError(status, self.issues)


def is_provide_bundle(bundle: dict) -> bool:
    if bundle.get("type") != "transaction":
        return False
    if claims_profile(bundle, canonical.PROVIDE_BUNDLES):
        return True
    return any(_classify(raw) == SUBMISSION_SET for raw in bundle.get("entry") or [] if isinstance(raw, dict))


class ProvideBundleChecks:
    def __init__(self, profiles: ProfileCheck, content: BinaryContent, read: ReadResource, find_ids: FindIds) -> None:
        self.profiles = profiles
        self.content = content
        self.read = read
        self.folders = FolderFiling(read, find_ids)

    def __call__(self, bundle: dict, ctx: RequestContext) -> dict:
        """The bundle the engine should run: unchanged when it is no provide bundle."""
        if not isinstance(bundle, dict) or not is_provide_bundle(bundle):
            return bundle
        raw_entries = [r if isinstance(r, dict) else {} for r in bundle.get("entry") or []]
        check = _Check(bundle, [_Entry(i, r, _method(r), _classify(r)) for i, r in enumerate(raw_entries)], ctx)
        self._entry_kinds(check)
        self._entry_profiles(check)
        check.fail_if_any()
        for document in check.of_kind(DOCUMENT_REFS):
            self._document_contents(check, document)
        self._fhir_documents_are_described(check)
        self._submission_set_lists_everything(check)
        self._one_patient(check)
        self._unique_master_identifiers(check)
        self._unique_entry_uuids(check)
        self._folder_filing(check)
        check.fail_if_any()
        bundle = _with_entry_uuids(_with_security_contexts(check), check)
        return _with_refiling(_with_author_org_identifier(bundle, check), check)

    # -- 1. closed slicing --------------------------------------------------------------------------
    def _entry_kinds(self, check: _Check) -> None:
        for entry in check.entries:
            if entry.kind is None:
                what = f"{entry.method} {entry.resource.get('resourceType') or entry.raw.get('request', {}).get('url')}"
                check.add("structure", f"{entry.where}: a provide bundle holds one submission set (POST List), "
                          "document entries (POST DocumentReference), their Binaries or FHIR documents (POST "
                          "Bundle), and optionally folders, "
                          f"the Patient and patches superseding entries; '{what}' is none of them", entry.where)
        counts = {kind: len(check.of_kind(kind)) for kind in (SUBMISSION_SET, DOCUMENT_REFS, FOLDERS, PATIENT)}
        if counts[SUBMISSION_SET] != 1:
            check.add("structure", f"A provide bundle has exactly one submission set (a POST of a List coded "
                      f"{canonical.LIST_TYPES}|submissionset); this one has {counts[SUBMISSION_SET]}", "Bundle.entry")
        if counts[DOCUMENT_REFS] + counts[FOLDERS] < 1:
            check.add("structure", "A provide bundle adds at least one document entry (POST DocumentReference), or "
                      "files documents in a folder (POST or PUT List)", "Bundle.entry")
        if counts[PATIENT] > 1:
            check.add("structure", "A provide bundle holds the Patient at most once", "Bundle.entry")

    # -- 2. PDSm profiles ---------------------------------------------------------------------------
    def _entry_profiles(self, check: _Check) -> None:
        for entry in check.entries:
            profile = ENTRY_PROFILES.get(entry.kind or "")
            if profile and entry.resource.get("resourceType") != "Binary":     # a JSON Patch travels as a Binary
                check.issues += self.profiles.errors(entry.resource, profile, f"{entry.where}.resource")

    # -- 3. documents: size, hash, media type ---------------------------------------------------------
    def _document_contents(self, check: _Check, document: _Entry) -> None:
        for found in attachments(document.resource):
            where = f"{document.where}.resource.content[{found.index}].attachment"
            url = found.attachment.get("url")
            fhir_document = _bundle_entry(check, url)
            if fhir_document is not None:
                self._fhir_document_content(check, document, fhir_document, found.attachment, where)
                continue
            located = self._locate_binary(check, url, where)
            if located is None:
                continue
            binary, binary_entry = located
            if binary_entry is not None:
                check.owners.setdefault(binary_entry.index, document.index)
                if binary_entry.index not in check.facts:
                    check.facts[binary_entry.index] = _entry_facts(binary)
                facts = check.facts[binary_entry.index]
                source = f"{binary_entry.where} (Binary)"
            else:
                facts = self.content.facts(binary)
                source = f"Binary/{binary.get('id')}"
            if facts is None:
                check.add("invalid", f"{source} holds no valid base64 content", where)
                continue
            _compare(check, found.attachment, binary, facts, source, where)

    def _fhir_document_content(self, check: _Check, document: _Entry, bundle: _Entry, attachment: dict,
                               where: str) -> None:
        """A FHIR document of the bundle: a Bundle of type document, whose serialization in the
        declared media type has the declared size and hash."""
        check.owners.setdefault(bundle.index, document.index)
        if not is_fhir_document(bundle.resource):
            check.add("value", f"{bundle.where}.resource.type is {bundle.resource.get('type')!r}: the FHIR document "
                      f"{where}.url points at is a Bundle of type document", f"{bundle.where}.resource.type")
            return
        media = _media(attachment.get("contentType"))
        facts = document_facts(bundle.resource, media)
        if facts is None:
            check.add("value", f"{where}.contentType is {media or 'missing'}: a FHIR document is "
                      f"{' or '.join(sorted(MEDIA_TYPES))}", f"{where}.contentType")
            return
        _compare(check, attachment, {}, facts, f"{bundle.where} (FHIR document serialized as {media})", where)

    def _fhir_documents_are_described(self, check: _Check) -> None:
        """A FHIR document is the content of a document entry of the bundle: it takes its access rules
        from that entry (binary_access.py), and has none of its own."""
        for entry in check.of_kind(FHIR_DOCUMENTS):
            if entry.index not in check.owners:
                check.add("required", f"{entry.where}: a FHIR document of a provide bundle is the content of one of "
                          "its document entries (their content.attachment.url is its fullUrl); no document "
                          f"entry points at {entry.full_url or 'this entry, which has no fullUrl'}", entry.where)

    def _locate_binary(self, check: _Check, url: object, where: str) -> tuple[dict, _Entry | None] | None:
        """The Binary an attachment.url points at: a bundle entry (by fullUrl, or `Binary/[id]` of a
        PUT entry), else a stored Binary the requester may read."""
        for entry in check.of_kind(DOCUMENTS):
            request_url = (entry.raw.get("request") or {}).get("url")
            if url is not None and (url == entry.full_url or binary_id(url) and request_url == url):
                return entry.resource, entry
        if document_id(url) is not None:
            check.add("value", f"{where}.url points at a stored {url}: a FHIR document is provided in the bundle "
                      "itself (a POST Bundle entry, named by its fullUrl)", f"{where}.url")
            return None
        stored_id = binary_id(url)
        if stored_id is None:
            check.add("value", f"{where}.url must point at a Binary or a FHIR document of this bundle (its fullUrl) "
                      f"or a stored Binary (Binary/[id]), not {url!r}", f"{where}.url")
            return None
        try:
            return self.read("Binary", stored_id, check.ctx), None
        except FhirError:
            check.add("not-found", f"{where}.url points at Binary/{stored_id}, which does not exist",
                      f"{where}.url")
            return None

    # -- 4. submission set, patient, unique ids -------------------------------------------------------
    def _submission_set_lists_everything(self, check: _Check) -> None:
        sets = check.of_kind(SUBMISSION_SET)
        if len(sets) != 1:
            return
        submission = sets[0]
        items = {e.get("item", {}).get("reference") for e in submission.resource.get("entry") or []
                 if isinstance(e, dict) and isinstance(e.get("item"), dict)}
        for entry in check.of_kind(DOCUMENT_REFS, FOLDERS):
            names = {entry.full_url, (entry.raw.get("request") or {}).get("url")} - {None}
            if not names & items:
                check.add("required", f"The submission set ({submission.where}) must list every document entry "
                          f"and folder it submits in List.entry.item; {entry.where} "
                          f"({entry.full_url or 'without fullUrl'}) is missing", f"{submission.where}.resource.entry")

    def _one_patient(self, check: _Check) -> None:
        sets = check.of_kind(SUBMISSION_SET)
        expected = subject_reference(sets[0].resource) if sets else None
        for entry in check.of_kind(DOCUMENT_REFS, FOLDERS):
            subject = subject_reference(entry.resource)
            if expected and subject and subject != expected:
                check.add("business-rule", f"{entry.where}: every resource of a provide bundle concerns the patient "
                          f"of its submission set ({expected}), not {subject}", f"{entry.where}.resource.subject")

    def _unique_master_identifiers(self, check: _Check) -> None:
        seen: dict[tuple[str, str], int] = {}
        for entry in check.of_kind(DOCUMENT_REFS):
            identifier = master_identifier(entry.resource)
            if identifier in seen:
                check.add("duplicate", f"{entry.where} has the masterIdentifier of Bundle.entry[{seen[identifier]}]: "
                          "each document has its own unique id", f"{entry.where}.resource.masterIdentifier")
            elif identifier:
                seen[identifier] = entry.index

    def _unique_entry_uuids(self, check: _Check) -> None:
        seen: dict[str, int] = {}
        for entry in check.of_kind(*NAMED_BY_ENTRY_UUID):
            check.issues += entry_uuid_problems(entry.resource, f"{entry.where}.resource")
            for index, identifier in entry_uuid_identifiers(entry.resource):
                value = identifier.get("value")
                where = f"{entry.where}.resource.identifier[{index}]"
                if value in seen:
                    check.add("duplicate", f"{where}: entryUUID {value} is already the one of "
                              f"Bundle.entry[{seen[value]}]; each entry has its own", where)
                elif isinstance(value, str):
                    seen[value] = entry.index

    # -- 5. folders ------------------------------------------------------------------------------------
    def _folder_filing(self, check: _Check) -> None:
        folders = [FolderEntry(e.where, e.resource, str((e.raw.get("request") or {}).get("url", "")))
                   for e in check.of_kind(FOLDERS)]
        if not folders:
            return
        sets = check.of_kind(SUBMISSION_SET)
        patient = subject_reference(sets[0].resource) if sets else None
        in_bundle = {e.full_url for e in check.of_kind(DOCUMENT_REFS) if e.full_url}
        filing = self.folders.check(folders, in_bundle, patient, check.ctx)
        check.issues += filing.issues
        check.refiled = filing.refiled
        by_where = {e.where: e.index for e in check.of_kind(FOLDERS)}
        check.kept_entry_uuids = {by_where[where]: value for where, value in filing.kept_entry_uuids.items()}


# -- helpers -----------------------------------------------------------------------------------------
def _method(raw: dict) -> str:
    request = raw.get("request")
    return str(request.get("method", "")).upper() if isinstance(request, dict) else ""


def _classify(raw: dict) -> str | None:
    """Which slice of the provide-bundle profile an entry belongs to (None: none)."""
    method = _method(raw)
    resource = raw.get("resource") if isinstance(raw.get("resource"), dict) else {}
    resource_type = resource.get("resourceType")
    if resource_type == "List":
        kind = list_kind(resource)
        if kind == canonical.SUBMISSIONSET_CODE and method == "POST":
            return SUBMISSION_SET
        if kind == canonical.FOLDER_CODE and method in ("POST", "PUT"):
            return FOLDERS
        return None
    url = str((raw.get("request") or {}).get("url", ""))
    if method == "PATCH":       # a FHIRPath Patch (Parameters), or a JSON or XML Patch (in a Binary)
        return UPDATE_DOCUMENT_REFS if url.startswith("DocumentReference") else None
    if resource_type is None and method == "GET":
        return PATIENT if url.startswith("Patient") else None
    return {
        ("DocumentReference", "POST"): DOCUMENT_REFS, ("Binary", "POST"): DOCUMENTS, ("Binary", "PUT"): DOCUMENTS,
        ("Bundle", "POST"): FHIR_DOCUMENTS, ("Patient", "POST"): PATIENT, ("Patient", "PUT"): PATIENT,
    }.get((resource_type, method))


def _bundle_entry(check: _Check, url: object) -> _Entry | None:
    """The FHIR document entry an attachment.url names by its fullUrl."""
    return next((e for e in check.of_kind(FHIR_DOCUMENTS) if url is not None and url == e.full_url), None)


def _entry_facts(binary: dict) -> ContentFacts | None:
    content = decode_base64(binary.get("data"))
    if content is None:
        return None
    return ContentFacts(len(content), hashlib.sha1(content).digest())


def _compare(check: _Check, attachment: dict, binary: dict, facts: ContentFacts, source: str, where: str) -> None:
    size = attachment.get("size")
    if size != facts.size:
        check.add("value", f"{where}.size is {size} but the document in {source} is {facts.size} bytes long",
                  f"{where}.size")
    declared = _hash_bytes(attachment.get("hash"))
    if declared != facts.sha1:
        check.add("value", f"{where}.hash ({attachment.get('hash')}) is not the SHA-1 of the document in {source} "
                  f"({facts.hash}): the document was altered or the metadata describe another one", f"{where}.hash")
    declared_type, actual_type = _media(attachment.get("contentType")), _media(binary.get("contentType"))
    if declared_type and actual_type and declared_type != actual_type:
        check.add("value", f"{where}.contentType is {declared_type} but {source} is {actual_type}",
                  f"{where}.contentType")


def _hash_bytes(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _media(value: object) -> str:
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else ""


def _with_security_contexts(check: _Check) -> dict:
    """The bundle with each Binary bound to the document entry that describes it."""
    if not check.owners:
        return check.bundle
    raw_entries = list(check.bundle.get("entry") or [])
    by_index = {e.index: e for e in check.entries}
    for binary_index, document_index in check.owners.items():
        binary, document = by_index[binary_index], by_index[document_index]
        if binary.kind != DOCUMENTS or "securityContext" in binary.resource:
            continue
        if document.full_url is None:          # the engine resolves references to fullUrls only
            raw_entries[document.index] = {**raw_entries[document.index], "fullUrl": f"urn:uuid:{new_id()}"}
            document.raw = raw_entries[document.index]
        resource = {**binary.resource, "securityContext": {"reference": document.full_url}}
        raw_entries[binary.index] = {**raw_entries[binary.index], "resource": resource}
    return {**check.bundle, "entry": raw_entries}


def _with_entry_uuids(bundle: dict, check: _Check) -> dict:
    """The bundle with an entryUUID on each submission set, document entry and folder."""
    raw_entries = list(bundle.get("entry") or [])
    for entry in check.of_kind(*NAMED_BY_ENTRY_UUID):
        raw = raw_entries[entry.index]
        resource = with_entry_uuid(raw["resource"], check.kept_entry_uuids.get(entry.index))
        if resource is not raw["resource"]:
            raw_entries[entry.index] = {**raw, "resource": resource}
    return {**bundle, "entry": raw_entries}


def _with_author_org_identifier(bundle: dict, check: _Check) -> dict:
    """The bundle whose submission set names its contained author organisation by identifier too."""
    sets = check.of_kind(SUBMISSION_SET)
    if len(sets) != 1:
        return bundle
    raw_entries = list(bundle.get("entry") or [])
    raw = raw_entries[sets[0].index]
    resource = with_author_org_identifier(raw["resource"])
    if resource is raw["resource"]:
        return bundle
    raw_entries[sets[0].index] = {**raw, "resource": resource}
    return {**bundle, "entry": raw_entries}


def _with_refiling(bundle: dict, check: _Check) -> dict:
    """The bundle whose submission set also lists the stored documents it files in folders."""
    sets = check.of_kind(SUBMISSION_SET)
    if not check.refiled or len(sets) != 1:
        return bundle
    raw_entries = list(bundle.get("entry") or [])
    raw = raw_entries[sets[0].index]
    listed = [e for e in raw["resource"].get("entry") or [] if isinstance(e, dict)]
    present = {(e.get("item") or {}).get("reference") for e in listed}
    added = [{"item": {"reference": reference}} for reference in check.refiled if reference not in present]
    raw_entries[sets[0].index] = {**raw, "resource": {**raw["resource"], "entry": [*listed, *added]}}
    return {**bundle, "entry": raw_entries}
