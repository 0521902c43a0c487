"""Binary contents: the storage pointer only the server may write, and the base64 encoding of a
stream of chunks used when a large Binary is read as a FHIR resource."""

from __future__ import annotations

import base64
import os

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext
from fhir_server.mhd.content import GRIDFS_CONTENT, BinaryContent, gridfs_pointer
from fhir_server.rest.router import _base64_chunks


class FakeStore:
    def __init__(self) -> None:
        self.uploads: list[bytes] = []

    def upload(self, data, content_type, owner):
        from fhir_server.storage.binaries import StoredContent

        self.uploads.append(data)
        return StoredContent("6b042e89dc4daf87828fb3e9", len(data), b"\x01" * 20)


def pointer(file_id: str = "6b042e89dc4daf87828fb3e9") -> dict:
    return {"extension": [{"url": GRIDFS_CONTENT, "extension": [
        {"url": "file", "valueString": file_id}, {"url": "size", "valueInteger": 3},
        {"url": "sha1", "valueBase64Binary": base64.b64encode(b"\x01" * 20).decode()}]}]}


def event(new: dict, old: dict | None = None) -> WriteEvent:
    return WriteEvent(RequestContext("http://x"), "update" if old else "create", "Binary", "b1", old, new, None, 1)


@pytest.mark.parametrize("sizes", [[1], [2, 2, 2], [1024, 1, 3, 5, 7], [3, 3], []])
def test_base64_of_a_stream_is_the_base64_of_the_whole(sizes):
    chunks = [os.urandom(n) for n in sizes]
    assert b"".join(_base64_chunks(chunks)) == base64.b64encode(b"".join(chunks))


def test_small_content_stays_inline_and_large_content_is_offloaded():
    store = FakeStore()
    content = BinaryContent(store, inline_max_bytes=10)
    small = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"court").decode()}
    content.offload_large_content(event(small))
    assert "data" in small and store.uploads == []
    large = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"x" * 100).decode()}
    content.offload_large_content(event(large))
    assert "data" not in large and store.uploads == [b"x" * 100]
    assert gridfs_pointer(large).size == 100
    assert content.facts(large).size == 100


def test_a_client_cannot_set_the_pointer():
    content = BinaryContent(FakeStore(), inline_max_bytes=10)
    with pytest.raises(FhirError) as raised:
        content.offload_large_content(event({"resourceType": "Binary", "_data": pointer()}))
    assert raised.value.status == 422
    kept = {"resourceType": "Binary", "_data": pointer()}
    content.offload_large_content(event(kept, old={"resourceType": "Binary", "_data": pointer()}))  # a patch
    with pytest.raises(FhirError):
        content.offload_large_content(event({"resourceType": "Binary", "_data": pointer("6b042e89dc4daf87828fb3ea")},
                                            old={"resourceType": "Binary", "_data": pointer()}))


def test_invalid_base64_is_refused():
    content = BinaryContent(FakeStore(), inline_max_bytes=1)
    with pytest.raises(FhirError) as raised:
        content.offload_large_content(event({"resourceType": "Binary", "data": "pas du base64 !" * 3}))
    assert raised.value.status == 400
