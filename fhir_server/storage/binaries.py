"""Large Binary contents in GridFS, read back as a stream of chunks.

A Binary above the inline threshold keeps its resource (id, contentType, securityContext, meta)
in the `Binary` collection like any resource, and its bytes in the GridFS bucket `binaries`; the
resource then carries the GridFS file id instead of `data` (see `fhir_server.mhd.content`).

pymongo's GridFS refuses to run inside a multi-document transaction, so a content is written in
two steps, the usual pattern for blobs beside a database:

1. `upload` before the transaction, the file marked `pending`;
2. `commit`, inside the transaction that stores the Binary resource, marks it `committed`.

A transaction that aborts (or is retried) leaves a pending file behind; `sweep` deletes pending
files older than a grace period (longer than any transaction), at start-up and now and then.
Committed files are never deleted here: every version of a Binary stays readable in its history.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import gridfs
from bson import ObjectId
from bson.errors import InvalidId

from fhir_server.storage.mongo import MongoStore, Session

BUCKET = "binaries"
CHUNK_BYTES = 1024 * 1024           # 1 MiB chunks: few round trips on read, small documents
PENDING, COMMITTED = "pending", "committed"
SWEEP_GRACE = timedelta(hours=1)
SWEEP_EVERY_SECONDS = 600


@dataclass(frozen=True)
class StoredContent:
    file_id: str
    size: int
    sha1: bytes


class BinaryStore:
    def __init__(self, store: MongoStore, bucket: str = BUCKET) -> None:
        self._db = store.db
        self._bucket = gridfs.GridFSBucket(store.db, bucket_name=bucket, chunk_size_bytes=CHUNK_BYTES)
        self._files = store.db[f"{bucket}.files"]
        self._chunks = store.db[f"{bucket}.chunks"]
        self._last_sweep = 0.0

    def ensure_collections(self) -> None:
        """Create the bucket's collections and indexes before the first transaction touches them
        (no implicit collection creation inside transactions)."""
        existing = set(self._db.list_collection_names())
        for collection in (self._files, self._chunks):
            if collection.name not in existing:
                self._db.create_collection(collection.name)
        self._chunks.create_index([("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1")
        self._files.create_index([("filename", 1), ("uploadDate", 1)], name="filename_1_uploadDate_1")
        self._files.create_index([("metadata.state", 1), ("uploadDate", 1)], name="state_uploadDate")

    # -- writing ---------------------------------------------------------------------------------
    def upload(self, data: bytes, content_type: str | None, owner: str) -> StoredContent:
        """Store `data` as a pending file (outside any transaction); `owner` is `Binary/[id]`."""
        metadata = {"state": PENDING, "owner": owner, "contentType": content_type}
        file_id = self._bucket.upload_from_stream(owner, data, metadata=metadata)
        self._maybe_sweep()
        return StoredContent(str(file_id), len(data), hashlib.sha1(data).digest())

    def commit(self, file_id: str, session: Session) -> None:
        """Mark the file as belonging to a stored Binary version, in the write's transaction."""
        self._files.update_one({"_id": _object_id(file_id)}, {"$set": {"metadata.state": COMMITTED}},
                               session=session)

    def sweep(self, grace: timedelta = SWEEP_GRACE) -> int:
        """Delete the pending files older than `grace` (their transaction never committed)."""
        cutoff = datetime.now(UTC) - grace
        stale = [f["_id"] for f in self._files.find({"metadata.state": PENDING, "uploadDate": {"$lt": cutoff}},
                                                    {"_id": 1})]
        for file_id in stale:
            self._bucket.delete(file_id)
        self._last_sweep = time.monotonic()
        return len(stale)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep > SWEEP_EVERY_SECONDS:
            self.sweep()

    # -- reading ---------------------------------------------------------------------------------
    def length(self, file_id: str) -> int | None:
        found = self._files.find_one({"_id": _object_id(file_id)}, {"length": 1})
        return None if found is None else int(found["length"])

    def chunks(self, file_id: str) -> Iterator[bytes]:
        """The content, one GridFS chunk at a time: never the whole document in memory. The chunks
        are read from the bucket's collection two by two (a GridFS download stream would fetch
        batches of up to 16 MB)."""
        oid = _object_id(file_id)
        stored = self._files.find_one({"_id": oid}, {"length": 1})
        if stored is None:
            raise FileNotFoundError(f"GridFS file {file_id} does not exist")
        expected, read = int(stored["length"]), 0
        cursor = self._chunks.find({"files_id": oid}, {"data": 1}, sort=[("n", 1)], batch_size=2)
        with cursor:
            for chunk in cursor:
                data = chunk["data"]
                read += len(data)
                yield data
        if read != expected:
            raise OSError(f"GridFS file {file_id} is truncated: {read} of {expected} bytes")

    def read(self, file_id: str) -> bytes:
        return b"".join(self.chunks(file_id))

    def digest(self, file_id: str) -> tuple[int, bytes]:
        """(size, SHA-1) of a stored content, computed while streaming it."""
        sha1, size = hashlib.sha1(), 0
        for chunk in self.chunks(file_id):
            sha1.update(chunk)
            size += len(chunk)
        return size, sha1.digest()


def _object_id(file_id: str) -> ObjectId:
    try:
        return ObjectId(file_id)
    except (InvalidId, TypeError):
        raise FileNotFoundError(f"{file_id!r} is not a GridFS file id") from None
