"""Large documents: a Binary above the inline threshold is kept in GridFS and streamed on read,
never loaded whole; a 50 MB document goes through ITI-65 and comes back byte for byte."""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import system_claims
from fhir_server.rest.app import create_app
from fhir_server.rest.router import HttpRequest, Router, StreamedResponse
from fhir_server.storage.binaries import CHUNK_BYTES, BinaryStore
from tests.http.conftest import bearer
from tests.http.test_mhd_support import (
    CR,
    FHIR_JSON,
    PHOTO,
    STRANGER_DOCTOR,
    doctor,
    entry_of,
    example,
    fresh,
    load_patients,
    patient,
    pdf,
    provided_document,
    with_document,
)

FIFTY_MB = 50_000_000
SMALL_THRESHOLD = 1024


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


@pytest.fixture(scope="module")
def small_threshold(mongo_uri, settings, issuer_dir):
    """A second server on the same database that keeps every Binary above 1 KiB in GridFS."""
    os.environ["FHIR_BINARY_INLINE_MAX_BYTES"] = str(SMALL_THRESHOLD)
    try:
        app = create_app(settings, mongo_uri)
    finally:
        del os.environ["FHIR_BINARY_INLINE_MAX_BYTES"]
    headers = bearer(issuer_dir, system_claims("system/*.cruds", "large"))
    with TestClient(app, base_url="http://testserver", headers=headers) as client:
        yield client


def stored_binary(client, binary_id: str) -> dict:
    return client.app.state.fhir.store.get("Binary", binary_id)["resource"]


def test_fifty_megabyte_document(client, issuer_dir):
    content = pdf("Examen d'imagerie - coupes scanner", FIFTY_MB)
    digest = hashlib.sha1(content).digest()
    document = provided_document(client, with_document(fresh(example(CR)), content))
    attachment = document["content"][0]["attachment"]
    assert attachment["size"] == FIFTY_MB
    binary_id = attachment["url"].split("/")[1]
    kept = stored_binary(client, binary_id)
    assert "data" not in kept and "_data" in kept                  # the bytes are in GridFS

    # the router answers a stream of GridFS chunks, never the whole document at once
    router = Router(client.app.state.fhir)
    request = HttpRequest("GET", f"Binary/{binary_id}", [], {"accept": "application/pdf",
                                                             **_lower(doctor(issuer_dir, STRANGER_DOCTOR))},
                          b"", "http://testserver/fhir")
    response = router.handle(request)
    assert isinstance(response, StreamedResponse)
    assert response.headers["Content-Length"] == str(FIFTY_MB)
    sha1, size, largest = hashlib.sha1(), 0, 0
    del content
    tracemalloc.start()
    for chunk in response.open():
        sha1.update(chunk)
        size += len(chunk)
        largest = max(largest, len(chunk))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (size, sha1.digest()) == (FIFTY_MB, digest)
    assert largest <= CHUNK_BYTES and peak < 16 * CHUNK_BYTES          # bounded, whatever the size

    # and over HTTP, with the document's access rules
    raw = client.get(f"/fhir/Binary/{binary_id}", headers={"Accept": "application/pdf"})
    assert raw.status_code == 200 and hashlib.sha1(raw.content).digest() == digest
    assert client.get(f"/fhir/Binary/{binary_id}", headers={**patient(issuer_dir, "190017512345678"),
                                                            "Accept": "application/pdf"}).status_code == 404


def test_large_binary_read_as_fhir_resource(small_threshold):
    content = pdf("Compte rendu opératoire", 50_000)
    created = small_threshold.post("/fhir/Binary", content=content, headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201
    binary_id = created.json()["id"]
    assert "data" not in created.json()
    assert "_data" in stored_binary(small_threshold, binary_id)
    as_json = small_threshold.get(f"/fhir/Binary/{binary_id}", headers={"Accept": FHIR_JSON})
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    body = as_json.json()
    assert "_data" not in body and base64.b64decode(body["data"]) == content
    as_xml = small_threshold.get(f"/fhir/Binary/{binary_id}", headers={"Accept": "application/fhir+xml"})
    assert base64.b64encode(content) in as_xml.content
    head = small_threshold.head(f"/fhir/Binary/{binary_id}", headers={"Accept": "application/pdf"})
    assert head.status_code == 200 and head.headers["content-length"] == str(len(content))


def test_large_binary_update_and_patch(small_threshold):
    first, second = pdf("Version 1", 5000), pdf("Version 2", 6000)
    binary_id = small_threshold.post("/fhir/Binary", content=first, headers={"Content-Type": "application/pdf"}
                                     ).json()["id"]
    updated = small_threshold.put(f"/fhir/Binary/{binary_id}", json={
        "resourceType": "Binary", "id": binary_id, "contentType": "application/pdf",
        "data": base64.b64encode(second).decode()})
    assert updated.status_code == 200, updated.text
    patched = small_threshold.patch(f"/fhir/Binary/{binary_id}", json=[
        {"op": "add", "path": "/securityContext", "value": {"display": "brouillon"}}],
        headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    raw = small_threshold.get(f"/fhir/Binary/{binary_id}", headers={"Accept": "application/pdf"})
    assert raw.content == second
    old = small_threshold.get(f"/fhir/Binary/{binary_id}/_history/1", headers={"Accept": FHIR_JSON}).json()
    assert old["_data"]                                            # each version keeps its own file


def test_large_document_by_iti65_and_iti105(small_threshold):
    load_patients(small_threshold)
    content = pdf("Compte rendu d'hospitalisation", 20_000)
    document = provided_document(small_threshold, with_document(fresh(example(CR)), content))
    binary_id = document["content"][0]["attachment"]["url"].split("/")[1]
    assert "_data" in stored_binary(small_threshold, binary_id)
    raw = small_threshold.get(f"/fhir/Binary/{binary_id}", headers={"Accept": "application/pdf"})
    assert raw.content == content

    publication = example(PHOTO)
    picture = png_like(30_000)
    publication["content"][0]["attachment"]["data"] = base64.b64encode(picture).decode()
    published = small_threshold.post("/fhir/DocumentReference", json=publication)
    assert published.status_code == 201, published.text
    binary_id = published.json()["content"][0]["attachment"]["url"].split("/")[1]
    assert "_data" in stored_binary(small_threshold, binary_id)
    assert small_threshold.get(f"/fhir/Binary/{binary_id}", headers={"Accept": "image/png"}).content == picture


def png_like(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


def test_pending_contents_of_failed_writes_are_swept(small_threshold):
    server = small_threshold.app.state.fhir
    files = server.store.db["binaries.files"]
    bundle = with_document(fresh(example(CR)), pdf("Compte rendu", 10_000))
    entry_of(bundle, "DocumentReference")["resource"]["relatesTo"] = [
        {"code": "replaces", "target": {"reference": "DocumentReference/n-existe-pas"}}]
    binary = entry_of(bundle, "Binary")
    bundle["entry"].remove(binary)
    bundle["entry"].insert(1, binary)                      # stored (uploaded) before the entry fails
    before = files.count_documents({"metadata.state": "pending"})
    assert small_threshold.post("/fhir", json=bundle).status_code == 422
    assert files.count_documents({"metadata.state": "pending"}) == before + 1     # uploaded, never committed
    swept = BinaryStore(server.store).sweep(grace=timedelta(0))
    assert swept >= 1
    assert files.count_documents({"metadata.state": "pending"}) == 0
    assert files.count_documents({"metadata.state": "committed"}) >= 1             # stored documents stay


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}
