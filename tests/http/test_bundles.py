"""batch and transaction Bundles."""

from __future__ import annotations

from tests.http.conftest import issue_expressions

INS = "urn:oid:1.2.250.1.213.1.4.8"


def transaction(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(full_url: str, resource: dict, **request) -> dict:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], **request}}


def test_transaction_rewrites_urn_uuid_references(client):
    bundle = transaction(
        post("urn:uuid:0c3e3a8e-1111-4a5b-9c2d-000000000001",
             {"resourceType": "Patient", "identifier": [{"system": INS, "value": "1111111111111"}]}),
        post("urn:uuid:0c3e3a8e-1111-4a5b-9c2d-000000000002",
             {"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
              "subject": {"reference": "urn:uuid:0c3e3a8e-1111-4a5b-9c2d-000000000001"}}),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_location = result["entry"][0]["response"]["location"]
    patient_ref = "/".join(patient_location.split("/")[:2])
    observation_id = result["entry"][1]["response"]["location"].split("/")[1]
    stored = client.get(f"/fhir/Observation/{observation_id}").json()
    assert stored["subject"]["reference"] == patient_ref


def test_transaction_is_atomic(client):
    before = client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"]
    bundle = transaction(
        post("urn:uuid:aaaaaaaa-0000-4000-8000-000000000001", {"resourceType": "Patient", "active": True}),
        {"request": {"method": "PUT", "url": "Patient/will-fail"},
         "resource": {"resourceType": "Patient", "id": "will-fail", "birthDate": "not-a-date"}},
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert any(e.startswith("Bundle.entry[1]") for e in issue_expressions(response.json()))
    after = client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"]
    assert after == before
    assert client.get("/fhir/Patient/will-fail").status_code == 404


def test_transaction_rollback_on_failing_later_entry(client):
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
    before = client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"]
    bundle = transaction(
        post("urn:uuid:bbbbbbbb-0000-4000-8000-000000000001", {"resourceType": "Patient", "active": True}),
        {"request": {"method": "DELETE", "url": f"Patient/{created['id']}"}},
        {"request": {"method": "PUT", "url": f"Patient/{created['id']}x", "ifMatch": 'W/"9"'},
         "resource": {"resourceType": "Patient", "id": f"{created['id']}x"}},
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 412
    assert client.get(f"/fhir/Patient/{created['id']}").status_code == 200        # delete rolled back
    assert client.get("/fhir/Patient/_history", params={"_count": "1"}).json()["total"] == before


def test_transaction_processing_order_and_get(client):
    existing = client.post("/fhir/Patient", json={"resourceType": "Patient", "active": False}).json()
    bundle = transaction(
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "PUT", "url": f"Patient/{existing['id']}"},
         "resource": {**existing, "active": True}},
        {"request": {"method": "DELETE", "url": "Patient/nothing-here-yet"}},
    )
    response = client.post("/fhir", json=bundle)
    result = response.json()
    # the DELETE of an unknown resource fails the whole transaction
    assert response.status_code == 404, result
    bundle["entry"].pop()
    result = client.post("/fhir", json=bundle).json()
    assert result["entry"][1]["response"]["status"] == "200 OK"
    assert result["entry"][0]["resource"]["active"] is True          # GET runs after the PUT


def test_conditional_reference_and_if_none_exist(client):
    client.post("/fhir/Patient", json={"resourceType": "Patient",
                                       "identifier": [{"system": INS, "value": "2222222222222"}]})
    bundle = transaction(
        post("urn:uuid:cccccccc-0000-4000-8000-000000000001",
             {"resourceType": "Patient", "identifier": [{"system": INS, "value": "2222222222222"}]},
             ifNoneExist=f"identifier={INS}|2222222222222"),
        post("urn:uuid:cccccccc-0000-4000-8000-000000000002",
             {"resourceType": "Observation", "status": "final", "code": {"text": "taille"},
              "subject": {"reference": f"Patient?identifier={INS}|2222222222222"}}),
    )
    result = client.post("/fhir", json=bundle).json()
    assert result["entry"][0]["response"]["status"] == "200 OK"
    patient_id = result["entry"][0]["resource"]["id"]
    obs_id = result["entry"][1]["response"]["location"].split("/")[1]
    assert client.get(f"/fhir/Observation/{obs_id}").json()["subject"]["reference"] == f"Patient/{patient_id}"
    unresolved = transaction(post("urn:uuid:cccccccc-0000-4000-8000-000000000003",
                                  {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                   "subject": {"reference": f"Patient?identifier={INS}|0000000000000"}}))
    response = client.post("/fhir", json=unresolved)
    assert response.status_code == 404
    assert issue_expressions(response.json()) == ["Bundle.entry[0].resource.subject.reference"]


def test_batch_reports_each_entry(client):
    bundle = transaction(
        post("urn:uuid:dddddddd-0000-4000-8000-000000000001", {"resourceType": "Patient"}),
        post("urn:uuid:dddddddd-0000-4000-8000-000000000002", {"resourceType": "Patient", "gender": "bogus"}),
        {"request": {"method": "GET", "url": "Patient/none-such"}},
        kind="batch",
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "400", "404"]
    outcome = response.json()["entry"][1]["response"]["outcome"]
    assert issue_expressions(outcome) == ["Bundle.entry[1].resource.gender"]


def test_bad_bundles(client):
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400
    no_request = transaction({"resource": {"resourceType": "Patient"}})
    response = client.post("/fhir", json=no_request)
    assert response.status_code == 400
    dup = transaction(post("urn:uuid:eeeeeeee-0000-4000-8000-000000000001", {"resourceType": "Patient"}),
                      post("urn:uuid:eeeeeeee-0000-4000-8000-000000000001", {"resourceType": "Patient"}))
    assert client.post("/fhir", json=dup).status_code == 400
