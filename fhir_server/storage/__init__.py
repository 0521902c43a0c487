"""Persistence: the only package that talks to the database driver.

A stored resource is one document in the collection named after its type:

    {"_id": id, "resource": {...as accepted, with meta.versionId/lastUpdated},
     "_ver": int, "_lastUpdated": datetime (UTC), "_index": {param: [values]}}

Every version (deletes included, as tombstones) is also a document of the `_history` collection:

    {"_id": "Type/id/ver", "type", "id", "ver", "method", "lastUpdated", "resource" | None}
"""

from fhir_server.storage.mongo import (
    CompareAndSet,
    Insert,
    MongoStore,
    Session,
    StorageBusy,
    StorageConflict,
    Write,
    restricted,
)

__all__ = ["CompareAndSet", "Insert", "MongoStore", "Session", "StorageBusy", "StorageConflict", "Write",
           "restricted"]
