"""Metadata update of a shared document (PDSm flux 03): `PATCH DocumentReference?identifier=...`
(JSON Patch, XML Patch or FHIRPath Patch) may change the status, the security labels and the archive
flag, nothing else, and each of them only by those entitled to.

The rule compares the stored entry with the patched one rather than reading the patch, so all three
patch formats (and a patch entry of a transaction) are judged the same way.

Who may change what:
- status (current / superseded): an author, or the server when a new version replaces the entry;
  `entered-in-error` is not a status of a shared entry: a logical deletion is a DELETE;
- MASQUE_PS (masked from professionals): the patient or an author;
- INVISIBLE_PATIENT (not yet shown to the patient, e.g. before an announcement consultation): an
  author only, never the patient;
- other labels (confidentiality N / R / V): an author;
- the archive flag: the patient or an author.
A trusted back-end system may do all of it.
"""

from __future__ import annotations

from fhir_server.access.policy import INVISIBLE_TO_PATIENT, MASKED_FROM_PROFESSIONALS
from fhir_server.engine.errors import error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.mhd import canonical
from fhir_server.mhd.actors import is_author, is_owner, is_trusted
from fhir_server.mhd.documents import as_list, is_archived, label_codes

UPDATABLE = ("status", "securityLabel", "extension[isArchived]")
SHARED_STATUSES = frozenset({"current", "superseded"})
_SERVER_MANAGED = frozenset({"resourceType", "id", "meta"})


def check_metadata_update(event: WriteEvent) -> None:
    """Write rule for patches of a DocumentReference."""
    if event.resource_type != "DocumentReference" or event.interaction != "patch" or event.old is None:
        return
    new = event.new or {}
    changed = first_change_outside_metadata(event.old, new)
    if changed is not None:
        raise error(405, "not-supported", f"DocumentReference.{changed} cannot be changed: a metadata update of a "
                    f"shared document (PDSm flux 03) may only change {', '.join(UPDATABLE)}; to correct the document "
                    "itself, provide a new version that replaces it (relatesTo.code = replaces)",
                    f"DocumentReference.{changed}")
    status = new.get("status")
    if status != event.old.get("status") and status not in SHARED_STATUSES:
        raise error(422, "business-rule", f"DocumentReference.status cannot become {status!r}: a shared document is "
                    "current or superseded; to delete it logically, DELETE it (its author or the patient)",
                    "DocumentReference.status")
    _check_entitled(event)


def first_change_outside_metadata(old: dict, new: dict) -> str | None:
    """The path of the first difference outside status, securityLabel and the isArchived
    extension (None when there is none)."""
    for name in sorted((set(old) | set(new)) - _SERVER_MANAGED - {"status", "_status", "securityLabel"}):
        if name == "extension":
            before, after = _other_extensions(old), _other_extensions(new)
            path = _difference(before, after, "extension")
        else:
            path = _difference(old.get(name), new.get(name), name)
        if path is not None:
            return path
    return None


def _check_entitled(event: WriteEvent) -> None:
    ctx, old, new, acl = event.ctx, event.old or {}, event.new or {}, event.acl
    if is_trusted(ctx):
        return
    author, owner = is_author(ctx, acl), is_owner(ctx, acl)
    if new.get("status") != old.get("status") and not author:
        raise _forbidden("DocumentReference.status", "only an author of the document changes its status")
    for code in label_codes(old) ^ label_codes(new):
        if code == INVISIBLE_TO_PATIENT and not author:
            raise _forbidden("DocumentReference.securityLabel", f"only an author sets or lifts {code}")
        if code == MASKED_FROM_PROFESSIONALS and not (author or owner):
            raise _forbidden("DocumentReference.securityLabel",
                             f"only the patient or an author masks or unmasks the document ({code})")
        if code not in (INVISIBLE_TO_PATIENT, MASKED_FROM_PROFESSIONALS) and not author:
            raise _forbidden("DocumentReference.securityLabel", f"only an author changes the confidentiality ({code})")
    if is_archived(old) != is_archived(new) and not (author or owner):
        raise _forbidden("DocumentReference.extension", "only the patient or an author archives the document")


def _forbidden(expression: str, why: str) -> Exception:
    return error(403, "forbidden", f"{expression}: {why}", expression)


def _other_extensions(resource: dict) -> list:
    return [e for e in as_list(resource.get("extension"))
            if not (isinstance(e, dict) and e.get("url") == canonical.IS_ARCHIVED)]


def _difference(before: object, after: object, path: str) -> str | None:
    if before == after:
        return None
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            found = _difference(before.get(key), after.get(key), f"{path}.{key}")
            if found is not None:
                return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (one, other) in enumerate(zip(before, after, strict=True)):
            found = _difference(one, other, f"{path}[{index}]")
            if found is not None:
                return found
    return path
