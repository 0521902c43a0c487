"""Vaccination record: a child's record (examples/vaccination), its search, the rules of an
Immunization, bulk feeds through batch and transaction Bundles, and `$vaccination-status`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ATC = "http://www.whocc.no/atc"
CIS = "https://smt.esante.gouv.fr/terminologie-bdpm"
CHILD = "exemple-enfant-martin"
CHILD_INS = "224117511234557"
ELODIE_INS = "284037512345640"
PEDIATRICIAN_RPPS = "10101010105"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def vaccination(**changes) -> dict:
    """A dose of hexavalent vaccine for the child, given by the paediatrician."""
    resource = {
        "resourceType": "Immunization", "status": "completed",
        "vaccineCode": {"coding": [{"system": ATC, "code": "J07CA09"}], "text": "Vaccin hexavalent"},
        "patient": {"reference": f"Patient/{CHILD}"}, "occurrenceDateTime": "2025-10-06T10:00:00+02:00",
        "primarySource": True, "lotNumber": "HX5012B",
        "performer": [{"actor": {"reference": "Practitioner/exemple-pediatre"}}],
        "protocolApplied": [{"doseNumberPositiveInt": 3, "seriesDosesPositiveInt": 3}],
    }
    resource.update(changes)
    return resource


@pytest.fixture(scope="module")
def world(client):
    for name in ("patient-ins.json", "practitioner-rpps.json", "immunization-dtcap.json"):
        resource = example(name)
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    response = client.post("/fhir", json=example("vaccination/carnet-enfant-martin.json"))
    assert response.status_code == 200, response.text
    assert all(e["response"]["status"].startswith("20") for e in response.json()["entry"])
    client.put("/fhir/Patient/sans-naissance", json={"resourceType": "Patient", "id": "sans-naissance"})
    return client


@pytest.fixture(scope="module")
def pediatrician(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(PEDIATRICIAN_RPPS, "10"))


@pytest.fixture(scope="module")
def elodie(issuer_dir):
    return bearer(issuer_dir, patient_claims(ELODIE_INS))


def matches(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


# -- search ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "count"), [
    ({"patient": CHILD}, 7),
    ({"patient": CHILD, "vaccine-code": f"{ATC}|J07CA09"}, 2),
    ({"patient": CHILD, "date": "ge2025-03-01"}, 4),
    ({"patient": CHILD, "date": "lt2025-03-01", "status": "completed"}, 3),
    ({"patient": CHILD, "status": "not-done"}, 0),
    ({"patient": CHILD, "lot-number": "HX4821A"}, 1),
])
def test_the_record_is_searchable(world, pediatrician, params, count):
    response = world.get("/fhir/Immunization", params=params, headers=pediatrician)
    assert response.status_code == 200
    assert len(matches(response.json())) == count


# -- rules ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "where"), [
    ({"vaccineCode": {"text": "vaccin"}}, "Immunization.vaccineCode"),
    ({"vaccineCode": {"coding": [{"system": CIS, "code": "ABC"}]}}, "Immunization.vaccineCode.coding[0].code"),
    ({"vaccineCode": {"coding": [{"system": ATC, "code": "N02BE01"}]}}, "Immunization.vaccineCode.coding[0].code"),
    ({"occurrenceDateTime": "2099-01-01"}, "Immunization.occurrence"),
    ({"occurrenceDateTime": "2023-01-01"}, "Immunization.occurrence"),
    ({"lotNumber": None}, "Immunization.lotNumber"),
    ({"status": "not-done"}, "Immunization.statusReason"),
    ({"protocolApplied": [{"doseNumberPositiveInt": 4, "seriesDosesPositiveInt": 3}]},
     "Immunization.protocolApplied[0].doseNumber"),
])
def test_a_vaccination_that_breaks_a_rule_is_refused(world, pediatrician, changes, where):
    resource = {k: v for k, v in vaccination(**changes).items() if v is not None}
    response = world.post("/fhir/Immunization", json=resource, headers=pediatrician)
    assert response.status_code == 422, response.text
    assert issue_expressions(response.json()) == [where]


def test_a_transcription_needs_no_lot_number(world, pediatrician):
    resource = vaccination(primarySource=False, reportOrigin={"text": "Carnet de santé"})
    del resource["lotNumber"]
    assert world.post("/fhir/Immunization", json=resource, headers=pediatrician).status_code == 201


def test_a_cis_code_names_the_vaccine(world, pediatrician):
    resource = vaccination(vaccineCode={"coding": [{"system": CIS, "code": "61402736", "display": "VAXIGRIPTETRA"}]})
    assert world.post("/fhir/Immunization", json=resource, headers=pediatrician).status_code == 201


def test_the_patient_adds_transcriptions_only(world, elodie):
    own = {"resourceType": "Immunization", "status": "completed",
           "vaccineCode": {"coding": [{"system": ATC, "code": "J07BD52"}], "text": "ROR"},
           "patient": {"reference": "Patient/exemple-patient-ins"}, "occurrenceDateTime": "1985-06-20",
           "primarySource": True}
    refused = world.post("/fhir/Immunization", json=own, headers=elodie)
    assert refused.status_code == 422
    assert issue_expressions(refused.json()) == ["Immunization.primarySource"]
    own.update(primarySource=False, reportOrigin={"text": "Carnet de santé"})
    created = world.post("/fhir/Immunization", json=own, headers=elodie)
    assert created.status_code == 201
    assert world.delete(f"/fhir/Immunization/{created.json()['id']}", headers=elodie).status_code in (200, 204)


def test_the_patient_cannot_alter_what_a_professional_recorded(world, elodie):
    recorded = world.get("/fhir/Immunization/exemple-vaccination-rappel-dtp").json()
    changed = {**copy.deepcopy(recorded), "lotNumber": "AUTRE"}
    response = world.put("/fhir/Immunization/exemple-vaccination-rappel-dtp", json=changed, headers=elodie)
    assert response.status_code == 403
    assert world.delete("/fhir/Immunization/exemple-vaccination-rappel-dtp", headers=elodie).status_code == 403


# -- bulk feeds -------------------------------------------------------------------------------------
def test_a_batch_reports_each_vaccination(world, pediatrician):
    doses = [vaccination(lotNumber=f"LOT{i:03d}", occurrenceDateTime="2025-10-06") for i in range(30)]
    doses[7].pop("lotNumber")
    doses[21]["occurrenceDateTime"] = "2099-10-06"
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": d, "request": {"method": "POST", "url": "Immunization"}} for d in doses]}
    response = world.post("/fhir", json=bundle, headers=pediatrician)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert [i for i, s in enumerate(statuses) if not s.startswith("201")] == [7, 21]
    assert statuses[7] == statuses[21] == "422"
    outcome = response.json()["entry"][7]["response"]["outcome"]
    assert "lot number" in outcome["issue"][0]["diagnostics"]


def test_a_transaction_is_all_or_nothing(world, pediatrician):
    before = len(matches(world.get("/fhir/Immunization", params={"patient": CHILD, "_count": "1000"}).json()))
    doses = [vaccination(lotNumber="T1"), vaccination(lotNumber="T2"), vaccination(vaccineCode={"text": "?"})]
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": d, "request": {"method": "POST", "url": "Immunization"}} for d in doses]}
    response = world.post("/fhir", json=bundle, headers=pediatrician)
    assert response.status_code == 422
    assert "Bundle.entry[2].resource.vaccineCode" in issue_expressions(response.json())
    after = len(matches(world.get("/fhir/Immunization", params={"patient": CHILD, "_count": "1000"}).json()))
    assert after == before


# -- $vaccination-status ------------------------------------------------------------------------------
def recommendations(response) -> dict[str, dict]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "collection"
    [recommendation] = [e["resource"] for e in bundle["entry"]]
    assert recommendation["resourceType"] == "ImmunizationRecommendation"
    return {r["series"]: r for r in recommendation["recommendation"]}


def dates(item: dict) -> list[str]:
    return [c["value"] for c in item.get("dateCriterion", [])]


def status(item: dict) -> str:
    return item["forecastStatus"]["coding"][0]["code"]


def test_the_child_is_due_the_eleven_month_doses(world, pediatrician):
    found = recommendations(world.get(f"/fhir/Patient/{CHILD}/$vaccination-status", params={"date": "2025-09-01"},
                                      headers=pediatrician))
    assert set(found) == {"dtp", "hib", "hepb", "pneumo", "menc", "menb", "ror", "hpv"}
    dtp = found["dtp"]
    assert (status(dtp), dates(dtp), dtp["doseNumberPositiveInt"], dtp["seriesDosesPositiveInt"]) == \
        ("due", ["2025-10-05", "2025-11-05"], 3, 3)
    assert dtp["vaccineCode"][0]["coding"][0]["code"] == "J07CA09"
    assert dtp["forecastReason"][0]["text"].startswith("Vaccination obligatoire")
    assert [s["reference"] for s in dtp["supportingImmunization"]] == [
        "Immunization/exemple-enfant-martin-hexa-1", "Immunization/exemple-enfant-martin-hexa-2"]
    assert (dates(found["menc"])[0], found["menc"]["doseNumberPositiveInt"]) == ("2025-11-05", 2)
    assert (status(found["ror"]), found["ror"]["doseNumberPositiveInt"]) == ("due", 1)
    assert dates(found["hpv"])[0] == "2035-11-05"                       # next, years ahead


def test_late_doses_become_overdue(world, pediatrician):
    found = recommendations(world.post(f"/fhir/Patient/{CHILD}/$vaccination-status", headers=pediatrician, json={
        "resourceType": "Parameters", "parameter": [{"name": "date", "valueDate": "2026-02-01"}]}))
    assert status(found["menb"]) == status(found["ror"]) == "overdue"


def test_an_adult_is_told_the_next_booster(world, elodie):
    found = recommendations(world.get("/fhir/Patient/exemple-patient-ins/$vaccination-status",
                                      params={"date": "2026-11-25"}, headers=elodie))
    assert (status(found["dtp"]), dates(found["dtp"])[0]) == ("due", "2049-03-17")      # rappel de 65 ans
    assert "Rappel de 65 ans" in found["dtp"]["description"]
    assert "doseNumberPositiveInt" not in found["dtp"]
    assert status(found["ror"]) == "overdue"        # born after 1980, no dose recorded: catch-up
    assert "hib" not in found and "hpv" not in found


@pytest.mark.parametrize(("path", "params", "status_code", "where"), [
    ("Patient/sans-naissance", {}, 422, "Patient.birthDate"),
    ("Patient/inconnu", {}, 404, None),
    (f"Patient/{CHILD}", {"date": "demain"}, 400, "date"),
])
def test_status_failures(world, pediatrician, path, params, status_code, where):
    response = world.get(f"/fhir/{path}/$vaccination-status", params=params, headers=pediatrician)
    assert response.status_code == status_code
    if where:
        assert issue_expressions(response.json()) == [where]


def test_a_patient_sees_only_their_own_status(world, elodie):
    assert world.get(f"/fhir/Patient/{CHILD}/$vaccination-status", headers=elodie).status_code == 404
