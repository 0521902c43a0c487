"""The bytes of a Binary, wherever they are kept: inline in `data` (small documents) or in GridFS
(large ones, streamed on read).

A Binary whose content exceeds the inline threshold is stored without `data`; in its place the
primitive's extension (`_data.extension`) names the GridFS file and the content's size and SHA-1.
Only the server writes that extension: a client sending it is refused, so a Binary can never be
made to point at someone else's file. Reads in the document's own media type stream the file;
reads as a FHIR resource put `data` back (see the Binary parts of `rest/router.py`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from fhir_server.engine.errors import error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.mhd.documents import decode_base64
from fhir_server.storage.binaries import BinaryStore

GRIDFS_CONTENT = "https://espace.example.org/fhir/StructureDefinition/binary-gridfs-content"


@dataclass(frozen=True)
class ContentFacts:
    size: int
    sha1: bytes

    @property
    def hash(self) -> str:
        """The SHA-1 as `Attachment.hash` carries it (base64)."""
        return base64.b64encode(self.sha1).decode()


class BinaryContent:
    def __init__(self, store: BinaryStore, inline_max_bytes: int) -> None:
        self.store = store
        self.inline_max_bytes = inline_max_bytes

    # -- write side: rule and hook on Binary writes --------------------------------------------------
    def offload_large_content(self, event: WriteEvent) -> None:
        """Write rule: a content above the threshold goes to GridFS before the write's transaction
        (GridFS cannot join it) and the stored resource keeps a pointer instead of `data`.

        The rule edits `event.new` in place: it is the very dict the engine stores and answers
        with, and nothing indexed on a Binary depends on `data`."""
        if event.resource_type != "Binary" or event.new is None:
            return
        pointer = gridfs_pointer(event.new)
        if pointer is not None and pointer != gridfs_pointer(event.old or {}):
            raise error(422, "processing", "Binary._data carries an extension only this server may set "
                        f"({GRIDFS_CONTENT}); send the document in Binary.data", "Binary._data")
        data = event.new.get("data")
        if not isinstance(data, str) or len(data) * 3 // 4 <= self.inline_max_bytes:
            return
        content = decode_base64(data)
        if content is None:
            raise error(400, "invalid", "Binary.data is not valid base64", "Binary.data")
        stored = self.store.upload(content, event.new.get("contentType"), f"Binary/{event.resource_id}")
        del event.new["data"]
        event.new["_data"] = {"extension": [_pointer_extension(stored.file_id, stored.size, stored.sha1)]}

    def commit_content(self, event: WriteEvent) -> None:
        """Write hook (in the transaction): the GridFS file now belongs to a stored Binary."""
        if event.resource_type == "Binary" and event.new is not None:
            pointer = gridfs_pointer(event.new)
            if pointer is not None and pointer != gridfs_pointer(event.old or {}):
                self.store.commit(pointer.file_id, event.session)

    # -- read side ------------------------------------------------------------------------------------
    def facts(self, binary: dict) -> ContentFacts | None:
        """Size and SHA-1 of a Binary's content (None when it has none or it is not valid base64)."""
        pointer = gridfs_pointer(binary)
        if pointer is not None:
            return ContentFacts(pointer.size, pointer.sha1)
        content = decode_base64(binary.get("data")) if "data" in binary else None
        return None if content is None else ContentFacts(len(content), hashlib.sha1(content).digest())

    @staticmethod
    def is_external(binary: dict) -> bool:
        """Is the content kept outside the resource (in GridFS)?"""
        return gridfs_pointer(binary) is not None

    @staticmethod
    def without_pointer(binary: dict) -> dict:
        """The Binary as clients see it: the server's storage pointer removed."""
        return {k: v for k, v in binary.items() if k != "_data"} if gridfs_pointer(binary) else binary

    def size(self, binary: dict) -> int:
        pointer = gridfs_pointer(binary)
        if pointer is not None:
            return pointer.size
        return len(decode_base64(binary.get("data")) or b"")

    def chunks(self, binary: dict) -> Iterator[bytes]:
        """The content as a stream of byte chunks (one chunk for an inline content)."""
        pointer = gridfs_pointer(binary)
        if pointer is not None:
            yield from self.store.chunks(pointer.file_id)
            return
        content = decode_base64(binary.get("data"))
        if content:
            yield content


@dataclass(frozen=True)
class GridFsPointer:
    file_id: str
    size: int
    sha1: bytes


def gridfs_pointer(binary: dict) -> GridFsPointer | None:
    extras = binary.get("_data")
    extensions = extras.get("extension") if isinstance(extras, dict) else None
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == GRIDFS_CONTENT:
            parts = {p.get("url"): p for p in extension.get("extension", []) if isinstance(p, dict)}
            try:
                return GridFsPointer(parts["file"]["valueString"], int(parts["size"]["valueInteger"]),
                                     base64.b64decode(parts["sha1"]["valueBase64Binary"]))
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _pointer_extension(file_id: str, size: int, sha1: bytes) -> dict:
    return {"url": GRIDFS_CONTENT, "extension": [
        {"url": "file", "valueString": file_id},
        {"url": "size", "valueInteger": size},
        {"url": "sha1", "valueBase64Binary": base64.b64encode(sha1).decode()},
    ]}
