"""The ids no two entries may share: a document's masterIdentifier (its uniqueId), and the
entryUUID of a document entry, submission set or folder.

Searching for a duplicate before writing (lifecycle.py, provide.py) gives early, precise answers,
but two submissions running at the same time would both find nothing. So each write also claims
its ids in the database, inside its transaction (`fhir_server.storage.unique_keys`): of two
concurrent submissions of the same masterIdentifier, exactly one commits; the other gets a 409
naming the element (and, in a bundle, the entry). A deleted entry releases its ids.
"""

from __future__ import annotations

from fhir_server.engine.errors import error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.mhd.documents import master_identifier
from fhir_server.mhd.entry_uuid import entry_uuid_identifiers, has_entry_uuid
from fhir_server.storage import MongoStore, Session
from fhir_server.storage.unique_keys import UniqueKeys


def unique_ids(resource_type: str, resource: dict) -> dict[str, str]:
    """The claimed keys of a resource -> the element holding each (a FHIRPath expression)."""
    if not has_entry_uuid(resource_type, resource):
        return {}
    keys: dict[str, str] = {}
    identifier = master_identifier(resource) if resource_type == "DocumentReference" else None
    if identifier is not None:
        keys["masterIdentifier|" + "|".join(identifier)] = f"{resource_type}.masterIdentifier"
    for index, entry_uuid in entry_uuid_identifiers(resource):
        if isinstance(entry_uuid.get("value"), str):
            keys[f"entryUUID|{entry_uuid['value']}"] = f"{resource_type}.identifier[{index}]"
    return keys


class UniqueIds:
    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.keys = UniqueKeys(store)

    def on_write(self, event: WriteEvent) -> None:
        """Write hook (in the write's transaction) on DocumentReference and MHD List writes."""
        owner = f"{event.resource_type}/{event.resource_id}"
        before = unique_ids(event.resource_type, event.old or {})
        after = unique_ids(event.resource_type, event.new or {})
        self.keys.release([k for k in before if k not in after], owner, event.session)
        for key, expression in after.items():
            if key not in before:
                self._claim(key, expression, owner, event.session)

    def _claim(self, key: str, expression: str, owner: str, session: Session) -> None:
        holder = self.keys.owner(key, session)
        if holder is None:
            claimed = self.keys.claim(key, owner, session)
        elif holder == owner:
            return
        else:     # a holder that no longer carries the id (e.g. a write that failed half-way without transactions)
            claimed = not self._still_holds(holder, key, session) and self.keys.take_over(key, holder, owner, session)
        if not claimed:
            kind, _, value = key.partition("|")
            raise error(409, "duplicate", f"{expression}: {kind} {value} is already the id of another entry; each "
                        "document, submission set and folder has its own (a new version of a document replaces "
                        "the old one with relatesTo, under its own masterIdentifier)", expression)

    def _still_holds(self, holder: str, key: str, session: Session) -> bool:
        resource_type, _, resource_id = holder.partition("/")
        stored = self.store.get(resource_type, resource_id, session)
        return stored is not None and key in unique_ids(resource_type, stored["resource"])
