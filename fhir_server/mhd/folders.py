"""Folders of a provide bundle (ITI-65), and re-filing: a folder (a new one, POST List, or a new
version of a stored one, PUT List/[id]) may list, besides the document entries of the same bundle,
documents published earlier, by `DocumentReference/[id]` or by a conditional reference
(`DocumentReference?identifier=...`, resolved by the transaction).

Each document filed this way must exist, be visible to the submitter, and concern the patient of
the submission set; a stored folder being updated must be a folder of that patient. The documents
newly filed (those the stored version did not list) are what the submission set records: the
server adds them to its `entry` (provide.py), as XDS records a re-filing in the submission set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from fhir_server.engine.errors import FhirError, Issue
from fhir_server.engine.model import RequestContext
from fhir_server.mhd import canonical
from fhir_server.mhd.documents import as_list, list_kind, subject_reference
from fhir_server.mhd.entry_uuid import entry_uuid

ReadResource = Callable[[str, str, RequestContext], dict]     # (type, id) -> resource; FhirError if unseen
FindIds = Callable[[str, list[tuple[str, str]]], list[str]]


@dataclass(frozen=True)
class FolderEntry:
    """A folder entry of a provide bundle."""

    where: str                # Bundle.entry[i]
    resource: dict
    request_url: str          # `List` (POST), `List/[id]` or `List?criteria` (PUT)


@dataclass
class Filing:
    issues: list[Issue] = field(default_factory=list)
    refiled: list[str] = field(default_factory=list)            # DocumentReference/[id] newly filed
    kept_entry_uuids: dict[str, str] = field(default_factory=dict)   # entry -> entryUUID of its stored version

    def add(self, code: str, diagnostics: str, expression: str) -> None:
        self.issues.append(Issue("error", code, diagnostics, (expression,)))


class FolderFiling:
    def __init__(self, read: ReadResource, find_ids: FindIds) -> None:
        self.read = read
        self.find_ids = find_ids

    def check(self, folders: list[FolderEntry], bundle_documents: set[str], patient: str | None,
              ctx: RequestContext) -> Filing:
        """`bundle_documents`: the fullUrls of the bundle's document entries; `patient`: the
        submission set's subject, as sent."""
        filing = Filing()
        expected = self.resolve("Patient", patient) if patient else None
        for folder in folders:
            stored = self._stored_folder(folder, expected, ctx, filing)
            previously = {reference for _, reference in _items(stored)}
            for index, reference in _items(folder.resource):
                if reference in bundle_documents:
                    continue
                where = f"{folder.where}.resource.entry[{index}].item"
                filed = self._existing_document(reference, expected, where, ctx, filing)
                if filed and filed not in previously and filed not in filing.refiled:
                    filing.refiled.append(filed)
        return filing

    def resolve(self, resource_type: str, reference: str) -> str | None:
        """`Type/id` for a literal or conditional reference to a `resource_type` (None: unresolved)."""
        head, _, query = reference.partition("?")
        if query:
            if head.rsplit("/", 1)[-1] != resource_type:
                return None
            matches = self.find_ids(resource_type, parse_qsl(query, keep_blank_values=True))
            return f"{resource_type}/{matches[0]}" if len(matches) == 1 else None
        kind, _, resource_id = reference.rstrip("/").rpartition("/")
        if kind.rsplit("/", 1)[-1] != resource_type or not resource_id:
            return None
        return f"{resource_type}/{resource_id}"

    def _stored_folder(self, folder: FolderEntry, patient: str | None, ctx: RequestContext,
                       filing: Filing) -> dict | None:
        """The stored version a PUT folder entry updates (None for a new folder)."""
        if folder.request_url in ("List", "List/"):
            return None
        target = self.resolve("List", folder.request_url)
        if target is None:
            return None
        try:
            stored = self.read("List", target.split("/", 1)[1], ctx)
        except FhirError:
            return None               # a PUT with the client's id creates the folder
        where = f"{folder.where}.request.url"
        if list_kind(stored) != canonical.FOLDER_CODE:
            filing.add("business-rule", f"{where}: {target} is not a folder (List coded {canonical.LIST_TYPES}|"
                       f"{canonical.FOLDER_CODE}); a provide bundle updates folders only", where)
            return None
        if patient and subject_reference(stored) != patient:
            filing.add("business-rule", f"{where}: {target} is a folder of {subject_reference(stored)}, not of "
                       f"{patient}, the patient of this submission", where)
        kept = entry_uuid(stored)
        if kept:
            filing.kept_entry_uuids[folder.where] = kept
        return stored

    def _existing_document(self, reference: str, patient: str | None, where: str, ctx: RequestContext,
                           filing: Filing) -> str | None:
        target = self.resolve("DocumentReference", reference)
        if target is None:
            filing.add("not-found", f"{where}: a folder lists document entries of this bundle (their fullUrl) or "
                       f"stored documents (DocumentReference/[id], or a conditional reference matching one); "
                       f"{reference!r} is neither", where)
            return None
        try:
            document = self.read("DocumentReference", target.split("/", 1)[1], ctx)
        except FhirError:
            filing.add("not-found", f"{where}: {target} does not exist, or you may not see it", where)
            return None
        if patient and subject_reference(document) != patient:
            filing.add("business-rule", f"{where}: {target} is a document of another patient "
                       f"({subject_reference(document)}); a folder holds documents of its own patient ({patient})",
                       where)
            return None
        return target


def _items(folder: dict | None) -> list[tuple[int, str]]:
    """(index in entry, reference) of what a folder lists (malformed items skipped)."""
    references = []
    for index, entry in enumerate(as_list((folder or {}).get("entry"))):
        item = entry.get("item") if isinstance(entry, dict) else None
        reference = item.get("reference") if isinstance(item, dict) else None
        if isinstance(reference, str):
            references.append((index, reference))
    return references
