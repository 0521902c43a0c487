"""SearchParameters POSTed at runtime: compiled, indexed, existing data reindexed."""

from __future__ import annotations

BIRTH_COUNTRY = "https://espace.example.org/fhir/StructureDefinition/test-birth-country"


def with_birth_country(country: str) -> dict:
    return {"resourceType": "Patient", "extension": [{"url": BIRTH_COUNTRY, "valueString": country}]}


def test_custom_search_parameter_reindexes_existing_data(client):
    existing = client.post("/fhir/Patient", json=with_birth_country("Guadeloupe")).json()
    client.post("/fhir/Patient", json=with_birth_country("Réunion"))
    unknown = client.get("/fhir/Patient", params={"birth-country": "guadeloupe"}).json()
    assert any(e["search"]["mode"] == "outcome" for e in unknown.get("entry", []))   # ignored with a warning
    parameter = {
        "resourceType": "SearchParameter", "url": "https://espace.example.org/fhir/SearchParameter/test-birth-country",
        "name": "birthCountry", "status": "active", "description": "Birth country (test)", "code": "birth-country",
        "base": ["Patient"], "type": "string",
        "expression": f"Patient.extension.where(url='{BIRTH_COUNTRY}').value",
    }
    assert client.post("/fhir/SearchParameter", json=parameter).status_code == 201
    found = client.get("/fhir/Patient", params={"birth-country": "guadeloupe"}).json()
    ids = [e["resource"]["id"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]
    assert ids == [existing["id"]]
    accents = client.get("/fhir/Patient", params={"birth-country": "reunion"}).json()
    assert len([e for e in accents.get("entry", []) if e["search"]["mode"] == "match"]) == 1


def test_invalid_search_parameter_is_refused_and_not_stored(client):
    bad = {"resourceType": "SearchParameter", "url": "https://espace.example.org/fhir/SearchParameter/broken",
           "name": "broken", "status": "active", "description": "x", "code": "broken", "base": ["Patient"],
           "type": "string", "expression": "Patient.name.where(("}
    response = client.post("/fhir/SearchParameter", json=bad)
    assert response.status_code == 400
    search = client.get("/fhir/SearchParameter", params={"url": bad["url"]}).json()
    assert [e for e in search.get("entry", []) if e["search"]["mode"] == "match"] == []
