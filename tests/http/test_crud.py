"""create, read, vread, update, delete, conditional and version-aware variants, Prefer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from fhir_server.storage import StorageConflict
from tests.http.conftest import JSON, issue_expressions, patient


def test_create_assigns_id_and_version(client):
    response = client.post("/fhir/Patient", json=patient(birthDate="1984-03-02"),
                           headers={"Content-Type": JSON})
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert "Last-Modified" in response.headers
    read = client.get(f"/fhir/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body


def test_create_ignores_client_id_and_keeps_values_exactly(client):
    observation = {
        "resourceType": "Observation", "id": "client-chosen", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "effectiveDateTime": "2024-05-01T10:00:00.000+02:00",
        "valueQuantity": {"value": 72.50, "unit": "kg"},
    }
    raw = b'{"resourceType":"Observation","id":"client-chosen","status":"final",' \
          b'"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},' \
          b'"effectiveDateTime":"2024-05-01T10:00:00.000+02:00","valueQuantity":{"value":72.50,"unit":"kg"}}'
    response = client.post("/fhir/Observation", content=raw, headers={"Content-Type": JSON})
    assert response.status_code == 201
    new_id = response.json()["id"]
    assert new_id != observation["id"]
    text = client.get(f"/fhir/Observation/{new_id}").text
    assert '"value":72.50' in text
    assert '"effectiveDateTime":"2024-05-01T10:00:00.000+02:00"' in text


def test_read_unknown_is_404_with_outcome(client):
    response = client.get("/fhir/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"


def test_unknown_type_is_404(client):
    response = client.get("/fhir/Patientt/1")
    assert response.status_code == 404
    assert "Patientt" in response.json()["issue"][0]["diagnostics"]


def test_update_creates_versions_and_vread(client):
    created = client.post("/fhir/Patient", json=patient()).json()
    pid = created["id"]
    changed = {**created, "gender": "female"}
    response = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and "gender" not in v1.json()
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v2.json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create(client):
    response = client.put("/fhir/Patient/chosen-by-client", json={**patient(), "id": "chosen-by-client"})
    assert response.status_code == 201
    assert response.json()["id"] == "chosen-by-client"
    assert client.get("/fhir/Patient/chosen-by-client").status_code == 200


def test_update_id_mismatch_and_missing_id(client):
    mismatch = client.put("/fhir/Patient/abc", json={**patient(), "id": "xyz"})
    assert mismatch.status_code == 400
    assert issue_expressions(mismatch.json()) == ["Patient.id"]
    missing = client.put("/fhir/Patient/abc", json=patient())
    assert missing.status_code == 400


def test_if_match_version_aware_update(client):
    created = client.post("/fhir/Patient", json=patient()).json()
    pid = created["id"]
    ok = client.put(f"/fhir/Patient/{pid}", json={**created, "active": True}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json={**created, "active": False}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is True


def test_conditional_read_headers(client):
    created = client.post("/fhir/Patient", json=patient())
    pid = created.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": later}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": earlier}).status_code == 200


def test_delete_then_gone_then_history(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 200
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.headers["ETag"] == 'W/"2"'
    again = client.delete(f"/fhir/Patient/{pid}")
    assert again.status_code == 200
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    recreated = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid})
    assert recreated.status_code == 201
    assert recreated.json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_404(client):
    assert client.delete("/fhir/Patient/never-existed").status_code == 404


def test_prefer_return(client):
    minimal = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"]
    outcome = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_invalid_resource_is_rejected_with_expression_and_not_stored(client):
    before = client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"]
    bad = patient(birthDate="1984-13-45", gender="unknown-value", foo=1)
    response = client.post("/fhir/Patient", json=bad)
    assert response.status_code == 400
    expressions = issue_expressions(response.json())
    assert "Patient.birthDate" in expressions
    assert "Patient.gender" in expressions
    assert "Patient.foo" in expressions
    after = client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"]
    assert after == before


def test_bad_json_and_wrong_type(client):
    response = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers={"Content-Type": JSON})
    assert response.status_code == 400
    assert "JSON" in response.json()["issue"][0]["diagnostics"]
    wrong = client.post("/fhir/Patient", json={"resourceType": "Observation", "status": "final",
                                                "code": {"text": "x"}})
    assert wrong.status_code == 400
    assert issue_expressions(wrong.json()) == ["resourceType"]
    not_object = client.post("/fhir/Patient", content=b"[1, 2]", headers={"Content-Type": JSON})
    assert not_object.status_code == 400


def test_unsupported_media_types(client):
    response = client.post("/fhir/Patient", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    response = client.get("/fhir/metadata", headers={"Accept": "application/pdf"})
    assert response.status_code == 406
    response = client.get("/fhir/metadata", params={"_format": "text/csv"})
    assert response.status_code == 406


def test_method_not_allowed(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    response = client.post(f"/fhir/Patient/{pid}", json=patient())
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


def test_body_too_large(client):
    big = b'{"resourceType":"Binary","contentType":"text/plain","data":"' + b"A" * (65 * 1024 * 1024) + b'"}'
    response = client.post("/fhir/Binary", content=big, headers={"Content-Type": JSON})
    assert response.status_code == 413


def test_binary_raw_round_trip(client):
    created = client.post("/fhir/Binary", content=b"%PDF-1.4 hello", headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201
    bid = created.json()["id"]
    raw = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/pdf"})
    assert raw.content == b"%PDF-1.4 hello"
    assert raw.headers["Content-Type"] == "application/pdf"
    as_fhir = client.get(f"/fhir/Binary/{bid}", headers={"Accept": JSON})
    assert as_fhir.json()["contentType"] == "application/pdf"


def _losing_once(store, monkeypatch) -> list[int]:
    """The next replace of a current version loses a race to a concurrent writer, once."""
    lost: list[int] = []
    real = type(store).replace_with_version

    def replace(self, resource_type, doc, expected_ver, version, session=None):
        if not lost:
            lost.append(expected_ver)
            raise StorageConflict(f"{resource_type}/{doc['_id']} changed concurrently")
        return real(self, resource_type, doc, expected_ver, version, session)
    monkeypatch.setattr(type(store), "replace_with_version", replace)
    return lost


def test_an_unversioned_update_that_loses_a_race_is_applied_again(client, monkeypatch) -> None:
    created = client.post("/fhir/Patient", json=patient(family="Course")).json()
    store = client.app.state.fhir.store
    with monkeypatch.context() as patch:
        lost = _losing_once(store, patch)
        updated = client.put(f"/fhir/Patient/{created['id']}", json={**created, "gender": "female"})
        patched = client.patch(f"/fhir/Patient/{created['id']}", json=[{"op": "add", "path": "/active",
                                                                       "value": True}],
                               headers={"Content-Type": "application/json-patch+json"})
    assert lost and updated.status_code == 200 and patched.status_code == 200, (updated.text, patched.text)
    assert client.get(f"/fhir/Patient/{created['id']}").json()["meta"]["versionId"] == "3"


def test_a_versioned_update_that_loses_a_race_is_a_conflict(client, monkeypatch) -> None:
    created = client.post("/fhir/Patient", json=patient(family="Course")).json()
    store = client.app.state.fhir.store
    with monkeypatch.context() as patch:
        _losing_once(store, patch)
        response = client.put(f"/fhir/Patient/{created['id']}", json={**created, "gender": "female"},
                              headers={"If-Match": 'W/"1"'})
    assert response.status_code == 409, response.text
    assert client.get(f"/fhir/Patient/{created['id']}").json()["meta"]["versionId"] == "1"
