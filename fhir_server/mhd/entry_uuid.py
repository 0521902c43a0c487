"""The entryUUID of a document entry, submission set or folder (MHD `EntryUUIDIdentifier`): the
`identifier` with `use = official` (or typed MHDIdentifierType#entryUUID) holding `urn:uuid:...`,
by which an XDS registry names the entry. The Document Recipient assigns it when the source leaves
it out; once assigned it never changes, and no two entries share one (see unique_ids.py).

The server assigns it where the MHD transactions arrive, in the provide bundle (ITI-65, and ITI-105
which becomes one), before the engine runs: the stored resource and its search index then both
carry it. A write outside them keeps the one it has; a malformed one is refused.
"""

from __future__ import annotations

import copy
import re
import uuid

from fhir_server.engine.errors import Issue, error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.mhd import canonical
from fhir_server.mhd.documents import as_list, list_kind

_UUID_URN = re.compile(r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def has_entry_uuid(resource_type: str, resource: dict) -> bool:
    """Is this a resource MHD names by an entryUUID (a DocumentReference, an MHD List)?"""
    return resource_type == "DocumentReference" or (resource_type == "List" and list_kind(resource) is not None)


def entry_uuid_identifiers(resource: dict) -> list[tuple[int, dict]]:
    """(index in identifier, identifier) of the entryUUID identifiers of a resource."""
    return [(index, identifier) for index, identifier in enumerate(as_list(resource.get("identifier")))
            if isinstance(identifier, dict) and _is_entry_uuid(identifier)]


def entry_uuid(resource: dict) -> str | None:
    found = entry_uuid_identifiers(resource)
    value = found[0][1].get("value") if found else None
    return value if isinstance(value, str) else None


def new_entry_uuid() -> dict:
    return {"use": "official",
            "type": {"coding": [{"system": canonical.MHD_IDENTIFIER_TYPE, "code": canonical.ENTRY_UUID_CODE}]},
            "system": canonical.RFC3986, "value": f"urn:uuid:{uuid.uuid4()}"}


def with_entry_uuid(resource: dict, kept: str | None = None) -> dict:
    """The resource with an entryUUID: its own, else `kept` (the one of its stored version), else a
    new one. Unchanged (the same object) when it already has one."""
    if entry_uuid_identifiers(resource):
        return resource
    identifier = new_entry_uuid()
    if kept is not None:
        identifier["value"] = kept
    changed = copy.copy(resource)
    changed["identifier"] = [*as_list(resource.get("identifier")), identifier]
    return changed


def entry_uuid_problems(resource: dict, location: str) -> list[Issue]:
    """What is wrong with the entryUUID the submitter gave (`location`: where the resource is)."""
    found = entry_uuid_identifiers(resource)
    problems = [Issue("error", "value", f"{location}.identifier[{index}]: an entryUUID identifier (use official) "
                      f"holds urn:uuid: and a UUID in system {canonical.RFC3986}, not "
                      f"{identifier.get('system')}|{identifier.get('value')}", (f"{location}.identifier[{index}]",))
                for index, identifier in found if not _well_formed(identifier)]
    if len(found) > 1:
        problems.append(Issue("error", "business-rule", f"{location} has {len(found)} entryUUID identifiers (use "
                              "official); an entry has one", (f"{location}.identifier[{found[1][0]}]",)))
    return problems


def check_entry_uuid(event: WriteEvent) -> None:
    """Write rule: a well-formed entryUUID, which an update keeps."""
    if event.new is None or not has_entry_uuid(event.resource_type, event.new):
        return
    problems = entry_uuid_problems(event.new, event.resource_type)
    if problems:
        raise error(422, problems[0].code, problems[0].diagnostics, *problems[0].expression)
    before = entry_uuid(event.old or {})
    if before is not None and entry_uuid(event.new) != before:
        raise error(422, "business-rule", f"{event.resource_type}.identifier: the entryUUID of an entry ({before}) "
                    "is assigned once and never changes or goes away", f"{event.resource_type}.identifier")


def _is_entry_uuid(identifier: dict) -> bool:
    if identifier.get("use") == "official":
        return True
    codings = as_list((identifier.get("type") or {}).get("coding")) if isinstance(identifier.get("type"), dict) else []
    return any(isinstance(c, dict) and c.get("code") == canonical.ENTRY_UUID_CODE for c in codings)


def _well_formed(identifier: dict) -> bool:
    value = identifier.get("value")
    return identifier.get("system") in (None, canonical.RFC3986) and isinstance(value, str) \
        and _UUID_URN.match(value) is not None
