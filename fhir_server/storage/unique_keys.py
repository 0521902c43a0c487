"""Keys that one resource at a time may hold (e.g. a document's masterIdentifier), enforced by the
database: one document per key in `_unique_keys`, `{_id: key, owner: "Type/id"}`.

A writer claims its keys inside its own transaction. Two concurrent writers of the same key
cannot both insert it: the `_id` index decides (the second gets a duplicate key, or a write
conflict that makes its transaction retry and then see the first one's key). Works on every
MongoDB-wire server (no partial unique index needed), across resource types.
"""

from __future__ import annotations

import contextlib

from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.storage.mongo import MongoStore, Session

KEYS = "_unique_keys"


class UniqueKeys:
    def __init__(self, store: MongoStore) -> None:
        self.db = store.db

    def ensure(self) -> None:
        """Create the collection up front: transactions cannot create collections."""
        if KEYS not in set(self.db.list_collection_names()):
            with contextlib.suppress(OperationFailure):
                self.db.create_collection(KEYS)

    def owner(self, key: str, session: Session = None) -> str | None:
        found = self.db[KEYS].find_one({"_id": key}, session=session)
        return found["owner"] if found else None

    def claim(self, key: str, owner: str, session: Session = None) -> bool:
        """Take a free key; False when someone holds it (possibly a writer that just committed)."""
        try:
            self.db[KEYS].insert_one({"_id": key, "owner": owner}, session=session)
        except DuplicateKeyError:
            return False
        return True

    def take_over(self, key: str, previous: str, owner: str, session: Session = None) -> bool:
        """Move a key whose holder no longer uses it; False when it changed hands meanwhile."""
        result = self.db[KEYS].update_one({"_id": key, "owner": previous}, {"$set": {"owner": owner}},
                                          session=session)
        return result.modified_count == 1

    def release(self, keys: list[str], owner: str, session: Session = None) -> None:
        if keys:
            self.db[KEYS].delete_many({"_id": {"$in": keys}, "owner": owner}, session=session)
